//! Table columns per kind, as kubectl prints them (`kubectl get` asks the server for a meta.k8s.io Table). Each kind
//! names its columns (priority 1 = only with `-o wide`) and a function from the object to its cells. The API server
//! builds its Tables from these, and the terminal UI takes its cell texts from them ([`text`]), so the two agree.

use serde_json::{json, Value};

/// One column definition.
pub struct ColumnDef {
    pub name: &'static str,
    pub type_: &'static str,
    pub format: &'static str,
    pub priority: i32,
    pub description: &'static str,
}

/// The columns of a kind and how to fill them.
#[derive(Clone, Copy)]
pub struct Columns {
    pub defs: &'static [ColumnDef],
    pub cells: fn(&Value) -> Vec<Value>,
}

/// The text of the cell of `column` (by its kubectl name: "Ready", "Status") for `obj`; "" when there is none.
pub fn text(cols: &Columns, obj: &Value, column: &str) -> String {
    let Some(i) = cols.defs.iter().position(|d| d.name == column) else {
        return String::new();
    };
    match (cols.cells)(obj).into_iter().nth(i) {
        Some(Value::String(s)) => s,
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    }
}

const fn c(name: &'static str, priority: i32) -> ColumnDef {
    ColumnDef {
        name,
        type_: "string",
        format: "",
        priority,
        description: "",
    }
}
const NAME: ColumnDef = ColumnDef {
    name: "Name",
    type_: "string",
    format: "name",
    priority: 0,
    description: "Name of the object",
};
const AGE: ColumnDef = ColumnDef {
    name: "Age",
    type_: "string",
    format: "",
    priority: 0,
    description: "Time since the object was created",
};

fn s(v: &Value, path: &str) -> String {
    match get(v, path) {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}
fn i(v: &Value, path: &str) -> i64 {
    get(v, path).as_i64().unwrap_or(0)
}
fn get<'a>(v: &'a Value, path: &str) -> &'a Value {
    let mut cur = v;
    for p in path.split('.') {
        cur = match cur.get(p) {
            Some(n) => n,
            None => return &Value::Null,
        };
    }
    cur
}
fn or_none(s: String) -> String {
    if s.is_empty() {
        "<none>".into()
    } else {
        s
    }
}
fn name(v: &Value) -> Value {
    json!(s(v, "metadata.name"))
}

/// Kubernetes' short human duration: `45s`, `5m`, `3h20m`, `4d`, `2y` (shared with the terminal UI).
pub use capstan_units::human_duration;

/// Age of a timestamp field, or `<unknown>`.
pub fn age_of(v: &Value, path: &str) -> String {
    match get(v, path)
        .as_str()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
    {
        Some(t) => human_duration(chrono::Utc::now().signed_duration_since(t).num_seconds()),
        None => "<unknown>".into(),
    }
}
fn age(v: &Value) -> Value {
    json!(age_of(v, "metadata.creationTimestamp"))
}

fn containers_images(v: &Value, spec: &str) -> (String, String) {
    let cs = get(v, spec)
        .get("containers")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let names: Vec<String> = cs.iter().map(|c| s(c, "name")).collect();
    let images: Vec<String> = cs.iter().map(|c| s(c, "image")).collect();
    (names.join(","), images.join(","))
}

fn selector_string(sel: &Value) -> String {
    if let Some(ls) = sel.as_object() {
        let mut parts = Vec::new();
        if ls.contains_key("matchLabels") || ls.contains_key("matchExpressions") {
            for (k, v) in get(sel, "matchLabels").as_object().into_iter().flatten() {
                parts.push(format!("{k}={}", v.as_str().unwrap_or("")));
            }
            for e in get(sel, "matchExpressions")
                .as_array()
                .into_iter()
                .flatten()
            {
                let vals: Vec<String> = get(e, "values")
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|x| x.as_str().unwrap_or("").to_string())
                    .collect();
                parts.push(match s(e, "operator").as_str() {
                    "In" => format!("{} in ({})", s(e, "key"), vals.join(",")),
                    "NotIn" => format!("{} notin ({})", s(e, "key"), vals.join(",")),
                    "Exists" => s(e, "key"),
                    _ => format!("!{}", s(e, "key")),
                });
            }
        } else {
            for (k, v) in ls {
                parts.push(format!("{k}={}", v.as_str().unwrap_or("")));
            }
        }
        return parts.join(",");
    }
    String::new()
}

pub const DEFAULT: Columns = Columns {
    defs: &[NAME, AGE],
    cells: |v| vec![name(v), age(v)],
};

pub const NAMESPACE: Columns = Columns {
    defs: &[NAME, c("Status", 0), AGE],
    cells: |v| vec![name(v), json!(s(v, "status.phase")), age(v)],
};

/// The STATUS column of a pod, computed the way kubectl's printer does.
pub fn pod_status(v: &Value) -> String {
    if get(v, "metadata.deletionTimestamp").is_string() {
        return "Terminating".into();
    }
    let mut reason = s(v, "status.reason");
    if reason.is_empty() {
        reason = s(v, "status.phase");
    }
    if reason.is_empty() {
        reason = "Pending".into();
    }
    for (idx, cs) in get(v, "status.initContainerStatuses")
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        let term = get(cs, "state.terminated");
        if term.is_object() && i(term, "exitCode") == 0 {
            continue;
        }
        if term.is_object() {
            return format!("Init:{}", or_default(s(term, "reason"), "Error"));
        }
        let waiting = s(cs, "state.waiting.reason");
        if !waiting.is_empty() && waiting != "PodInitializing" {
            return format!("Init:{waiting}");
        }
        let total = get(v, "spec.initContainers").as_array().map_or(0, Vec::len);
        return format!("Init:{idx}/{total}");
    }
    let mut has_running = false;
    for cs in get(v, "status.containerStatuses")
        .as_array()
        .into_iter()
        .flatten()
        .rev()
    {
        let w = s(cs, "state.waiting.reason");
        let t = get(cs, "state.terminated");
        if !w.is_empty() {
            reason = w;
        } else if t.is_object() {
            reason = or_default(
                s(t, "reason"),
                if i(t, "signal") != 0 {
                    "Signal"
                } else {
                    "ExitCode"
                },
            );
        } else if get(cs, "state.running").is_object() && get(cs, "ready").as_bool() == Some(true) {
            has_running = true;
        }
    }
    if reason == "Completed" && has_running {
        reason = "Running".into();
    }
    reason
}

fn or_default(s: String, d: &str) -> String {
    if s.is_empty() {
        d.into()
    } else {
        s
    }
}

pub const POD: Columns = Columns {
    defs: &[
        NAME,
        c("Ready", 0),
        c("Status", 0),
        ColumnDef {
            name: "Restarts",
            type_: "string",
            format: "",
            priority: 0,
            description: "",
        },
        AGE,
        c("IP", 1),
        c("Node", 1),
        c("Nominated Node", 1),
        c("Readiness Gates", 1),
    ],
    cells: |v| {
        let statuses = get(v, "status.containerStatuses")
            .as_array()
            .cloned()
            .unwrap_or_default();
        let total = get(v, "spec.containers").as_array().map_or(0, Vec::len);
        let ready = statuses
            .iter()
            .filter(|c| c["ready"].as_bool() == Some(true))
            .count();
        let restarts: i64 = statuses
            .iter()
            .map(|c| c["restartCount"].as_i64().unwrap_or(0))
            .sum();
        vec![
            name(v),
            json!(format!("{ready}/{total}")),
            json!(pod_status(v)),
            json!(restarts.to_string()),
            age(v),
            json!(or_none(s(v, "status.podIP"))),
            json!(or_none(s(v, "spec.nodeName"))),
            json!(or_none(s(v, "status.nominatedNodeName"))),
            json!("<none>"),
        ]
    },
};

pub const NODE: Columns = Columns {
    defs: &[
        NAME,
        c("Status", 0),
        c("Roles", 0),
        AGE,
        c("Version", 0),
        c("Internal-IP", 1),
        c("External-IP", 1),
        c("OS-Image", 1),
        c("Kernel-Version", 1),
        c("Container-Runtime", 1),
    ],
    cells: |v| {
        let ready = get(v, "status.conditions")
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["type"] == "Ready")
            .map(|c| {
                if c["status"] == "True" {
                    "Ready"
                } else {
                    "NotReady"
                }
            })
            .unwrap_or("Unknown");
        let mut status = ready.to_string();
        if get(v, "spec.unschedulable").as_bool() == Some(true) {
            status.push_str(",SchedulingDisabled");
        }
        let roles: Vec<String> = get(v, "metadata.labels")
            .as_object()
            .into_iter()
            .flatten()
            .filter_map(|(k, _)| {
                k.strip_prefix("node-role.kubernetes.io/")
                    .map(str::to_string)
            })
            .collect();
        let addr = |t: &str| {
            get(v, "status.addresses")
                .as_array()
                .into_iter()
                .flatten()
                .find(|a| a["type"] == t)
                .map(|a| s(a, "address"))
                .unwrap_or_else(|| "<none>".into())
        };
        vec![
            name(v),
            json!(status),
            json!(or_none(roles.join(","))),
            age(v),
            json!(s(v, "status.nodeInfo.kubeletVersion")),
            json!(addr("InternalIP")),
            json!(addr("ExternalIP")),
            json!(s(v, "status.nodeInfo.osImage")),
            json!(s(v, "status.nodeInfo.kernelVersion")),
            json!(s(v, "status.nodeInfo.containerRuntimeVersion")),
        ]
    },
};

pub const SERVICE: Columns = Columns {
    defs: &[
        NAME,
        c("Type", 0),
        c("Cluster-IP", 0),
        c("External-IP", 0),
        c("Port(s)", 0),
        AGE,
        c("Selector", 1),
    ],
    cells: |v| {
        let ports: Vec<String> = get(v, "spec.ports")
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| {
                let proto = or_default(s(p, "protocol"), "TCP");
                match p.get("nodePort").and_then(Value::as_i64) {
                    Some(np) => format!("{}:{np}/{proto}", i(p, "port")),
                    None => format!("{}/{proto}", i(p, "port")),
                }
            })
            .collect();
        let ty = or_default(s(v, "spec.type"), "ClusterIP");
        let mut external: Vec<String> = get(v, "status.loadBalancer.ingress")
            .as_array()
            .into_iter()
            .flatten()
            .map(|i| or_default(s(i, "ip"), &s(i, "hostname")))
            .collect();
        for ip in get(v, "spec.externalIPs").as_array().into_iter().flatten() {
            external.push(ip.as_str().unwrap_or("").into());
        }
        let ext = if ty == "ExternalName" {
            s(v, "spec.externalName")
        } else if external.is_empty() {
            if ty == "LoadBalancer" {
                "<pending>".into()
            } else {
                "<none>".into()
            }
        } else {
            external.join(",")
        };
        vec![
            name(v),
            json!(ty),
            json!(or_none(s(v, "spec.clusterIP"))),
            json!(ext),
            json!(or_none(ports.join(","))),
            age(v),
            json!(or_none(selector_string(get(v, "spec.selector")))),
        ]
    },
};

pub const ENDPOINTS: Columns = Columns {
    defs: &[NAME, c("Endpoints", 0), AGE],
    cells: |v| {
        let mut eps = Vec::new();
        for sub in get(v, "subsets").as_array().into_iter().flatten() {
            for a in get(sub, "addresses").as_array().into_iter().flatten() {
                for p in get(sub, "ports").as_array().into_iter().flatten() {
                    eps.push(format!("{}:{}", s(a, "ip"), i(p, "port")));
                }
            }
        }
        vec![name(v), json!(or_none(eps.join(","))), age(v)]
    },
};

pub const CONFIGMAP: Columns = Columns {
    defs: &[
        NAME,
        ColumnDef {
            name: "Data",
            type_: "integer",
            format: "",
            priority: 0,
            description: "",
        },
        AGE,
    ],
    cells: |v| {
        let n = get(v, "data").as_object().map_or(0, |m| m.len())
            + get(v, "binaryData").as_object().map_or(0, |m| m.len());
        vec![name(v), json!(n), age(v)]
    },
};

pub const SECRET: Columns = Columns {
    defs: &[
        NAME,
        c("Type", 0),
        ColumnDef {
            name: "Data",
            type_: "integer",
            format: "",
            priority: 0,
            description: "",
        },
        AGE,
    ],
    cells: |v| {
        vec![
            name(v),
            json!(s(v, "type")),
            json!(get(v, "data").as_object().map_or(0, |m| m.len())),
            age(v),
        ]
    },
};

pub const SERVICEACCOUNT: Columns = Columns {
    defs: &[
        NAME,
        ColumnDef {
            name: "Secrets",
            type_: "integer",
            format: "",
            priority: 0,
            description: "",
        },
        AGE,
    ],
    cells: |v| {
        vec![
            name(v),
            json!(get(v, "secrets").as_array().map_or(0, Vec::len)),
            age(v),
        ]
    },
};

pub const EVENT: Columns = Columns {
    defs: &[
        c("Last Seen", 0),
        c("Type", 0),
        c("Reason", 0),
        c("Object", 0),
        c("Message", 0),
        NAME,
    ],
    cells: |v| {
        let last = if get(v, "lastTimestamp").is_string() {
            age_of(v, "lastTimestamp")
        } else {
            age_of(v, "metadata.creationTimestamp")
        };
        vec![
            json!(last),
            json!(s(v, "type")),
            json!(s(v, "reason")),
            json!(format!(
                "{}/{}",
                s(v, "involvedObject.kind").to_ascii_lowercase(),
                s(v, "involvedObject.name")
            )),
            json!(s(v, "message")),
            name(v),
        ]
    },
};

fn access_modes(v: &Value) -> String {
    get(v, "spec.accessModes")
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| match m.as_str().unwrap_or("") {
            "ReadWriteOnce" => "RWO",
            "ReadOnlyMany" => "ROX",
            "ReadWriteMany" => "RWX",
            "ReadWriteOncePod" => "RWOP",
            other => other,
        })
        .collect::<Vec<_>>()
        .join(",")
}

pub const PV: Columns = Columns {
    defs: &[
        NAME,
        c("Capacity", 0),
        c("Access Modes", 0),
        c("Reclaim Policy", 0),
        c("Status", 0),
        c("Claim", 0),
        c("StorageClass", 0),
        c("VolumeAttributesClass", 0),
        c("Reason", 0),
        AGE,
        c("VolumeMode", 1),
    ],
    cells: |v| {
        let claim = if get(v, "spec.claimRef").is_object() {
            format!(
                "{}/{}",
                s(v, "spec.claimRef.namespace"),
                s(v, "spec.claimRef.name")
            )
        } else {
            String::new()
        };
        vec![
            name(v),
            json!(s(v, "spec.capacity.storage")),
            json!(access_modes(v)),
            json!(s(v, "spec.persistentVolumeReclaimPolicy")),
            json!(s(v, "status.phase")),
            json!(claim),
            json!(s(v, "spec.storageClassName")),
            json!(or_none(s(v, "spec.volumeAttributesClassName"))),
            json!(s(v, "status.reason")),
            age(v),
            json!(s(v, "spec.volumeMode")),
        ]
    },
};

pub const PVC: Columns = Columns {
    defs: &[
        NAME,
        c("Status", 0),
        c("Volume", 0),
        c("Capacity", 0),
        c("Access Modes", 0),
        c("StorageClass", 0),
        c("VolumeAttributesClass", 0),
        AGE,
        c("VolumeMode", 1),
    ],
    cells: |v| {
        vec![
            name(v),
            json!(s(v, "status.phase")),
            json!(s(v, "spec.volumeName")),
            json!(s(v, "status.capacity.storage")),
            json!(access_modes(v)),
            json!(s(v, "spec.storageClassName")),
            json!(or_none(s(v, "spec.volumeAttributesClassName"))),
            age(v),
            json!(s(v, "spec.volumeMode")),
        ]
    },
};

const CONTAINERS: ColumnDef = c("Containers", 1);
const IMAGES: ColumnDef = c("Images", 1);
const SELECTOR: ColumnDef = c("Selector", 1);
const fn n(name: &'static str) -> ColumnDef {
    ColumnDef {
        name,
        type_: "integer",
        format: "",
        priority: 0,
        description: "",
    }
}

pub const DEPLOYMENT: Columns = Columns {
    defs: &[
        NAME,
        c("Ready", 0),
        n("Up-to-date"),
        n("Available"),
        AGE,
        CONTAINERS,
        IMAGES,
        SELECTOR,
    ],
    cells: |v| {
        let (cs, is) = containers_images(v, "spec.template.spec");
        vec![
            name(v),
            json!(format!(
                "{}/{}",
                i(v, "status.readyReplicas"),
                i(v, "spec.replicas")
            )),
            json!(i(v, "status.updatedReplicas")),
            json!(i(v, "status.availableReplicas")),
            age(v),
            json!(cs),
            json!(is),
            json!(selector_string(get(v, "spec.selector"))),
        ]
    },
};

pub const REPLICASET: Columns = Columns {
    defs: &[
        NAME,
        n("Desired"),
        n("Current"),
        n("Ready"),
        AGE,
        CONTAINERS,
        IMAGES,
        SELECTOR,
    ],
    cells: |v| {
        let (cs, is) = containers_images(v, "spec.template.spec");
        vec![
            name(v),
            json!(i(v, "spec.replicas")),
            json!(i(v, "status.replicas")),
            json!(i(v, "status.readyReplicas")),
            age(v),
            json!(cs),
            json!(is),
            json!(selector_string(get(v, "spec.selector"))),
        ]
    },
};

pub const STATEFULSET: Columns = Columns {
    defs: &[NAME, c("Ready", 0), AGE, CONTAINERS, IMAGES],
    cells: |v| {
        let (cs, is) = containers_images(v, "spec.template.spec");
        vec![
            name(v),
            json!(format!(
                "{}/{}",
                i(v, "status.readyReplicas"),
                i(v, "spec.replicas")
            )),
            age(v),
            json!(cs),
            json!(is),
        ]
    },
};

pub const DAEMONSET: Columns = Columns {
    defs: &[
        NAME,
        n("Desired"),
        n("Current"),
        n("Ready"),
        n("Up-to-date"),
        n("Available"),
        c("Node Selector", 0),
        AGE,
        CONTAINERS,
        IMAGES,
        SELECTOR,
    ],
    cells: |v| {
        let (cs, is) = containers_images(v, "spec.template.spec");
        vec![
            name(v),
            json!(i(v, "status.desiredNumberScheduled")),
            json!(i(v, "status.currentNumberScheduled")),
            json!(i(v, "status.numberReady")),
            json!(i(v, "status.updatedNumberScheduled")),
            json!(i(v, "status.numberAvailable")),
            json!(or_none(selector_string(get(
                v,
                "spec.template.spec.nodeSelector"
            )))),
            age(v),
            json!(cs),
            json!(is),
            json!(selector_string(get(v, "spec.selector"))),
        ]
    },
};

pub const CONTROLLERREVISION: Columns = Columns {
    defs: &[NAME, c("Controller", 0), n("Revision"), AGE],
    cells: |v| {
        let ctrl = get(v, "metadata.ownerReferences")
            .as_array()
            .into_iter()
            .flatten()
            .find(|o| o["controller"] == true)
            .map(|o| format!("{}/{}", s(o, "kind").to_ascii_lowercase(), s(o, "name")))
            .unwrap_or_else(|| "<none>".into());
        vec![name(v), json!(ctrl), json!(i(v, "revision")), age(v)]
    },
};

pub const JOB: Columns = Columns {
    defs: &[
        NAME,
        c("Status", 0),
        c("Completions", 0),
        c("Duration", 0),
        AGE,
        CONTAINERS,
        IMAGES,
        SELECTOR,
    ],
    cells: |v| {
        let (cs, is) = containers_images(v, "spec.template.spec");
        let conds = get(v, "status.conditions")
            .as_array()
            .cloned()
            .unwrap_or_default();
        let has = |t: &str| {
            conds
                .iter()
                .any(|c| c["type"] == t && c["status"] == "True")
        };
        let status = if has("Failed") {
            "Failed"
        } else if has("Complete") {
            "Complete"
        } else if get(v, "spec.suspend").as_bool() == Some(true) {
            "Suspended"
        } else {
            "Running"
        };
        let completions = match get(v, "spec.completions").as_i64() {
            Some(c) => format!("{}/{c}", i(v, "status.succeeded")),
            None => format!(
                "{}/1 of {}",
                i(v, "status.succeeded"),
                i(v, "spec.parallelism").max(1)
            ),
        };
        let start = get(v, "status.startTime")
            .as_str()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok());
        let end = get(v, "status.completionTime")
            .as_str()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok());
        let duration = match (start, end) {
            (Some(s), Some(e)) => human_duration(e.signed_duration_since(s).num_seconds()),
            (Some(s), None) => {
                human_duration(chrono::Utc::now().signed_duration_since(s).num_seconds())
            }
            _ => String::new(),
        };
        vec![
            name(v),
            json!(status),
            json!(completions),
            json!(duration),
            age(v),
            json!(cs),
            json!(is),
            json!(selector_string(get(v, "spec.selector"))),
        ]
    },
};

pub const CRONJOB: Columns = Columns {
    defs: &[
        NAME,
        c("Schedule", 0),
        c("Timezone", 0),
        c("Suspend", 0),
        n("Active"),
        c("Last Schedule", 0),
        AGE,
        CONTAINERS,
        IMAGES,
        SELECTOR,
    ],
    cells: |v| {
        let (cs, is) = containers_images(v, "spec.jobTemplate.spec.template.spec");
        let last = if get(v, "status.lastScheduleTime").is_string() {
            age_of(v, "status.lastScheduleTime")
        } else {
            "<none>".into()
        };
        vec![
            name(v),
            json!(s(v, "spec.schedule")),
            json!(or_none(s(v, "spec.timeZone"))),
            json!(if get(v, "spec.suspend").as_bool() == Some(true) {
                "True"
            } else {
                "False"
            }),
            json!(get(v, "status.active").as_array().map_or(0, Vec::len)),
            json!(last),
            age(v),
            json!(cs),
            json!(is),
            json!(or_none(selector_string(get(
                v,
                "spec.jobTemplate.spec.selector"
            )))),
        ]
    },
};

pub const PDB: Columns = Columns {
    defs: &[
        NAME,
        c("Min Available", 0),
        c("Max Unavailable", 0),
        n("Allowed Disruptions"),
        AGE,
    ],
    cells: |v| {
        let or_na = |p: &str| match get(v, p) {
            Value::Null => "N/A".to_string(),
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        vec![
            name(v),
            json!(or_na("spec.minAvailable")),
            json!(or_na("spec.maxUnavailable")),
            json!(i(v, "status.disruptionsAllowed")),
            age(v),
        ]
    },
};

pub const ROLE: Columns = Columns {
    defs: &[NAME, c("Created At", 0)],
    cells: |v| vec![name(v), json!(s(v, "metadata.creationTimestamp"))],
};

fn role_ref(v: &Value) -> String {
    format!("{}/{}", s(v, "roleRef.kind"), s(v, "roleRef.name"))
}

fn subjects_of(v: &Value, kind: &str) -> String {
    get(v, "subjects")
        .as_array()
        .into_iter()
        .flatten()
        .filter(|x| s(x, "kind") == kind)
        .map(|x| {
            if kind == "ServiceAccount" {
                format!("{}/{}", s(x, "namespace"), s(x, "name"))
            } else {
                s(x, "name")
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

pub const ROLEBINDING: Columns = Columns {
    defs: &[
        NAME,
        c("Role", 0),
        AGE,
        c("Users", 1),
        c("Groups", 1),
        c("ServiceAccounts", 1),
    ],
    cells: |v| {
        vec![
            name(v),
            json!(role_ref(v)),
            age(v),
            json!(subjects_of(v, "User")),
            json!(subjects_of(v, "Group")),
            json!(subjects_of(v, "ServiceAccount")),
        ]
    },
};

pub const CLUSTERROLEBINDING: Columns = ROLEBINDING;

pub const CSR: Columns = Columns {
    defs: &[
        NAME,
        AGE,
        c("SignerName", 0),
        c("Requestor", 0),
        c("RequestedDuration", 0),
        c("Condition", 0),
    ],
    cells: |v| {
        let conditions: Vec<String> = get(v, "status.conditions")
            .as_array()
            .into_iter()
            .flatten()
            .filter(|c| s(c, "status") == "True")
            .map(|c| s(c, "type"))
            .collect();
        let duration = match get(v, "spec.expirationSeconds").as_i64() {
            Some(secs) => human_duration(secs),
            None => "<none>".into(),
        };
        let mut shown = if conditions.is_empty() {
            vec!["Pending".to_string()]
        } else {
            conditions
        };
        if !s(v, "status.certificate").is_empty() {
            shown.push("Issued".into());
        }
        vec![
            name(v),
            age(v),
            json!(s(v, "spec.signerName")),
            json!(s(v, "spec.username")),
            json!(duration),
            json!(shown.join(",")),
        ]
    },
};

pub const LEASE: Columns = Columns {
    defs: &[NAME, c("Holder", 0), AGE],
    cells: |v| vec![name(v), json!(s(v, "spec.holderIdentity")), age(v)],
};

pub const ENDPOINTSLICE: Columns = Columns {
    defs: &[
        NAME,
        c("AddressType", 0),
        c("Ports", 0),
        c("Endpoints", 0),
        AGE,
    ],
    cells: |v| {
        let ports: Vec<String> = get(v, "ports")
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| i(p, "port").to_string())
            .collect();
        let eps: Vec<String> = get(v, "endpoints")
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|e| get(e, "addresses").as_array().cloned().unwrap_or_default())
            .map(|a| a.as_str().unwrap_or("").to_string())
            .collect();
        vec![
            name(v),
            json!(s(v, "addressType")),
            json!(or_none(ports.join(","))),
            json!(or_none(eps.join(","))),
            age(v),
        ]
    },
};

pub const APISERVICE: Columns = Columns {
    defs: &[NAME, c("Service", 0), c("Available", 0), AGE],
    cells: |v| {
        let service = get(v, "spec.service");
        let service = if service.is_null() {
            "Local".to_string()
        } else {
            format!("{}/{}", s(service, "namespace"), s(service, "name"))
        };
        let available = get(v, "status.conditions")
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| s(c, "type") == "Available")
            .map(|c| {
                let status = s(c, "status");
                if status == "True" {
                    status
                } else {
                    format!("{status} ({})", s(c, "reason"))
                }
            })
            .unwrap_or_else(|| "Unknown".into());
        vec![name(v), json!(service), json!(available), age(v)]
    },
};

pub const STORAGECLASS: Columns = Columns {
    defs: &[
        NAME,
        c("Provisioner", 0),
        c("ReclaimPolicy", 0),
        c("VolumeBindingMode", 0),
        c("AllowVolumeExpansion", 0),
        AGE,
    ],
    cells: |v| {
        let mut n = s(v, "metadata.name");
        if get(v, "metadata.annotations")
            .get("storageclass.kubernetes.io/is-default-class")
            .and_then(Value::as_str)
            == Some("true")
        {
            n.push_str(" (default)");
        }
        vec![
            json!(n),
            json!(s(v, "provisioner")),
            json!(or_default(s(v, "reclaimPolicy"), "Delete")),
            json!(or_default(s(v, "volumeBindingMode"), "Immediate")),
            json!(get(v, "allowVolumeExpansion")
                .as_bool()
                .unwrap_or(false)
                .to_string()),
            age(v),
        ]
    },
};

pub const APPLICATION: Columns = Columns {
    defs: &[
        NAME,
        c("Sync Status", 0),
        c("Health Status", 0),
        c("Revision", 0),
        c("Repo", 1),
        c("Path", 1),
        AGE,
    ],
    cells: |v| {
        let rev = s(v, "status.sync.revision");
        vec![
            name(v),
            json!(s(v, "status.sync.status")),
            json!(s(v, "status.health.status")),
            json!(rev.chars().take(7).collect::<String>()),
            json!(s(v, "spec.source.repoURL")),
            json!(s(v, "spec.source.path")),
            age(v),
        ]
    },
};

pub const SYNCRECORD: Columns = Columns {
    defs: &[
        NAME,
        c("Application", 0),
        c("Revision", 0),
        c("Trigger", 0),
        c("Result", 0),
        c("Health", 0),
        c("Message", 1),
        AGE,
    ],
    cells: |v| {
        vec![
            name(v),
            json!(s(v, "spec.application")),
            json!(s(v, "spec.revision").chars().take(7).collect::<String>()),
            json!(s(v, "spec.trigger")),
            json!(s(v, "spec.result")),
            json!(s(v, "spec.health")),
            json!(s(v, "spec.message")),
            age(v),
        ]
    },
};

pub const CRD: Columns = Columns {
    defs: &[
        NAME,
        ColumnDef {
            name: "Created At",
            type_: "date",
            format: "",
            priority: 0,
            description: "",
        },
    ],
    cells: |v| vec![name(v), json!(s(v, "metadata.creationTimestamp"))],
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_durations_match_kubectl() {
        assert_eq!(human_duration(5), "5s");
        assert_eq!(human_duration(150), "2m30s");
        assert_eq!(human_duration(600), "10m");
        assert_eq!(human_duration(3 * 3600 + 1200), "3h20m");
        assert_eq!(human_duration(30 * 3600), "30h");
        assert_eq!(human_duration(4 * 86400), "4d");
    }

    #[test]
    fn pod_status_reads_waiting_reasons() {
        let v = json!({"status": {"phase": "Pending", "containerStatuses": [
            {"name": "c", "ready": false, "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]}});
        assert_eq!(pod_status(&v), "CrashLoopBackOff");
        let d = json!({"metadata": {"deletionTimestamp": "2024-01-01T00:00:00Z"}});
        assert_eq!(pod_status(&d), "Terminating");
    }

    #[test]
    fn every_row_has_one_cell_per_column() {
        for cols in [
            DEFAULT, NAMESPACE, POD, NODE, SERVICE, DEPLOYMENT, JOB, CRONJOB, EVENT, PVC, SECRET,
        ] {
            let cells = (cols.cells)(&json!({"metadata": {"name": "x"}}));
            assert_eq!(cells.len(), cols.defs.len());
        }
    }

    #[test]
    fn text_finds_a_cell_by_column_name() {
        let pod = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "a"}, {"name": "b"}]},
            "status": {"containerStatuses": [{"name": "a", "ready": true, "restartCount": 3}]}});
        assert_eq!(text(&POD, &pod, "Ready"), "1/2");
        assert_eq!(text(&POD, &pod, "Restarts"), "3");
        assert_eq!(text(&POD, &pod, "No Such Column"), "");
    }
}
