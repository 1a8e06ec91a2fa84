//! CustomResourceDefinitions with the real kubectl against a real `capstan server`: the CRD corpus (real CRDs of
//! cert-manager, prometheus-operator, Argo CD, Flux, sample-controller and the Kubernetes docs) accepted and
//! Established, every sample read back with its schema defaults, every invalid sample refused naming its field; and
//! the verbs on custom resources (get with printer columns, describe, explain, scale, status, edit, watch, `get all`,
//! field selectors, several versions, deleting a CRD deleting its objects).

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{eventually, fails, ok, Server};
use serde_json::Value;

/// The CRD corpus (a copy lives in tests/fixtures/crds; `CAPSTAN_CRD_CORPUS` overrides).
fn crd_corpus() -> PathBuf {
    match std::env::var_os("CAPSTAN_CRD_CORPUS") {
        Some(p) => PathBuf::from(p),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/crds"),
    }
}

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    out.retain(|p| p.extension().is_some_and(|e| e == "yaml"));
    out.sort();
    out
}

fn projects() -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(crd_corpus())
        .expect("the CRD corpus")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    out.sort();
    out
}

fn get_json(s: &Server, path: &str) -> Value {
    let (code, v) = s.call("GET", path, "", "");
    assert_eq!(code, 200, "GET {path}: {v}");
    v
}

fn established(s: &Server, name: &str) -> bool {
    let (code, v) = s.call(
        "GET",
        &format!("/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}"),
        "",
        "",
    );
    code == 200
        && v["status"]["conditions"].as_array().is_some_and(|cs| {
            cs.iter()
                .any(|c| c["type"] == "Established" && c["status"] == "True")
        })
}

#[test]
fn the_crd_corpus_installs_its_samples_read_back_with_defaults_and_invalid_ones_are_refused() {
    let Some(kubectl) = common::kubectl() else {
        return;
    };
    let s = Server::start();
    let mut names = Vec::new();
    for project in projects() {
        for crd in yaml_files(&project) {
            let out = s.kubectl(
                &kubectl,
                &["apply", "--server-side", "-f", crd.to_str().unwrap()],
            );
            let text = ok(&out);
            let name = text
                .split_whitespace()
                .next()
                .and_then(|n| n.split('/').nth(1))
                .unwrap_or_else(|| panic!("{}: {text}", crd.display()))
                .to_string();
            names.push(name);
        }
    }
    assert_eq!(names.len(), 18, "{names:?}");
    for n in &names {
        eventually(&format!("{n} Established"), || {
            established(&s, n).then_some(())
        });
    }
    // Discovery lists each CRD's group and resource, with its subresources.
    let groups = get_json(&s, "/apis");
    for g in [
        "cert-manager.io",
        "monitoring.coreos.com",
        "argoproj.io",
        "source.toolkit.fluxcd.io",
    ] {
        assert!(
            groups["groups"]
                .as_array()
                .unwrap()
                .iter()
                .any(|x| x["name"] == g),
            "{g} in /apis"
        );
    }
    let mon = get_json(&s, "/apis/monitoring.coreos.com/v1");
    let res: Vec<&str> = mon["resources"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["name"].as_str())
        .collect();
    for r in [
        "prometheuses",
        "prometheuses/status",
        "prometheuses/scale",
        "servicemonitors",
    ] {
        assert!(res.contains(&r), "{r} in {res:?}");
    }
    // The protected group without approval is accepted, flagged as not conformant.
    let foo = get_json(
        &s,
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/foos.samplecontroller.k8s.io",
    );
    let cond = foo["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "KubernetesAPIApprovalPolicyConformant")
        .cloned()
        .expect("approval condition");
    assert_eq!(cond["status"], "False");

    ok(&s.kubectl(&kubectl, &["create", "namespace", "argocd"]));
    for project in projects() {
        for sample in yaml_files(&project.join("samples")) {
            ok(&s.kubectl(
                &kubectl,
                &["apply", "--server-side", "-f", sample.to_str().unwrap()],
            ));
        }
    }
    let defaults: &[(&str, &str, &str)] = &[
        (
            "/apis/cert-manager.io/v1/namespaces/default/issuers/test",
            "/spec/acme/renewalInformationSource",
            "\"ARI\"",
        ),
        (
            "/apis/monitoring.coreos.com/v1/namespaces/default/prometheuses/prometheus",
            "/spec/evaluationInterval",
            "\"30s\"",
        ),
        (
            "/apis/monitoring.coreos.com/v1/namespaces/default/prometheuses/prometheus",
            "/spec/scrapeInterval",
            "\"30s\"",
        ),
        (
            "/apis/monitoring.coreos.com/v1/namespaces/default/prometheuses/prometheus",
            "/spec/portName",
            "\"web\"",
        ),
        (
            "/apis/kustomize.toolkit.fluxcd.io/v1/namespaces/default/kustomizations/webapp-dev",
            "/spec/force",
            "false",
        ),
        (
            "/apis/kustomize.toolkit.fluxcd.io/v1/namespaces/default/kustomizations/webapp-dev",
            "/status/observedGeneration",
            "-1",
        ),
        (
            "/apis/source.toolkit.fluxcd.io/v1/namespaces/default/gitrepositories/webapp-latest",
            "/spec/timeout",
            "\"60s\"",
        ),
        (
            "/apis/source.toolkit.fluxcd.io/v1/namespaces/default/gitrepositories/webapp-latest",
            "/status/observedGeneration",
            "-1",
        ),
    ];
    for (path, field, want) in defaults {
        let v = get_json(&s, path);
        assert_eq!(
            v.pointer(field).map(Value::to_string).as_deref(),
            Some(*want),
            "{path} {field}"
        );
    }
    // What was sent comes back, with the server's metadata.
    let rules = get_json(&s, "/apis/monitoring.coreos.com/v1/namespaces/default/prometheusrules/prometheus-example-rules");
    assert!(
        rules["metadata"]["creationTimestamp"].is_string(),
        "{rules}"
    );
    assert!(rules["spec"]["groups"][0]["rules"][0]["expr"].is_string());

    let mut refused = 0;
    for project in projects() {
        for bad in yaml_files(&project.join("invalid")) {
            let text = std::fs::read_to_string(&bad).unwrap();
            let first = text.lines().next().unwrap_or("");
            let answer = first
                .split_once("): ")
                .map(|(_, rest)| rest)
                .unwrap_or_else(|| panic!("{}: no expected answer", bad.display()));
            let field = answer.split(": ").next().unwrap();
            let out = s.kubectl(
                &kubectl,
                &["apply", "--server-side", "-f", bad.to_str().unwrap()],
            );
            let err = fails(&out);
            assert!(err.contains("is invalid"), "{}: {err}", bad.display());
            let message = answer.split(" -- ").next().unwrap();
            assert!(
                err.contains(message),
                "{}: want {message:?} in {err}",
                bad.display()
            );
            assert!(err.contains(field), "{}: {err}", bad.display());
            refused += 1;
        }
    }
    assert_eq!(refused, 15);

    // A client-side apply of a CRD larger than 256 KiB fails as in Kubernetes (the last-applied annotation).
    let big = crd_corpus().join("prometheus-operator/monitoring.coreos.com_alertmanagers.yaml");
    ok(&s.kubectl(
        &kubectl,
        &["delete", "crd", "alertmanagers.monitoring.coreos.com"],
    ));
    let err = fails(&s.kubectl(&kubectl, &["apply", "-f", big.to_str().unwrap()]));
    assert!(
        err.contains("metadata.annotations: Too long: must have at most 262144 bytes"),
        "{err}"
    );
}

const CRONTAB_V2: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: crontabs.stable.example.com
spec:
  group: stable.example.com
  scope: Namespaced
  names: {plural: crontabs, singular: crontab, kind: CronTab, shortNames: [ct], categories: [all]}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            properties:
              cronSpec: {type: string, description: "When to run"}
              image: {type: string}
              replicas: {type: integer, minimum: 0, default: 1}
          status:
            type: object
            properties:
              replicas: {type: integer}
              labelSelector: {type: string}
    subresources:
      status: {}
      scale: {specReplicasPath: .spec.replicas, statusReplicasPath: .status.replicas, labelSelectorPath: .status.labelSelector}
    additionalPrinterColumns:
    - {name: Spec, type: string, jsonPath: .spec.cronSpec}
    - {name: Replicas, type: integer, jsonPath: .spec.replicas}
    - {name: Image, type: string, jsonPath: .spec.image, priority: 1}
    - {name: Age, type: date, jsonPath: .metadata.creationTimestamp}
    selectableFields:
    - jsonPath: .spec.image
  - name: v1beta1
    served: true
    storage: false
    deprecated: true
    schema:
      openAPIV3Schema:
        type: object
        x-kubernetes-preserve-unknown-fields: true
"#;

#[test]
fn kubectl_works_on_custom_resources_as_on_built_in_kinds() {
    let Some(kubectl) = common::kubectl() else {
        return;
    };
    let s = Server::start();
    s.kubectl_apply(&kubectl, CRONTAB_V2);
    eventually("Established", || {
        established(&s, "crontabs.stable.example.com").then_some(())
    });
    s.kubectl_apply(
        &kubectl,
        "apiVersion: stable.example.com/v1\nkind: CronTab\nmetadata: {name: nightly}\nspec: {cronSpec: '0 3 * * *', image: backup:1}\n",
    );
    // A watch started now sees the later changes.
    let mut watch = std::process::Command::new(&kubectl)
        .env("KUBECONFIG", s.kubeconfig())
        .arg("--cache-dir")
        .arg(s.data_dir().join("kubectl-cache"))
        .args([
            "get",
            "crontabs",
            "--watch",
            "-o",
            "json",
            "--output-watch-events",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();

    let table = ok(&s.kubectl(&kubectl, &["get", "ct"]));
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["NAME", "SPEC", "REPLICAS", "AGE"], "{table}");
    assert!(
        table.contains("nightly") && table.contains("0 3 * * *"),
        "{table}"
    );
    let row: Vec<&str> = table.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(
        row[row.len() - 2],
        "1",
        "the default replicas, as a printer column: {table}"
    );
    let wide = ok(&s.kubectl(&kubectl, &["get", "crontab", "-o", "wide"]));
    assert!(
        wide.contains("IMAGE") && wide.contains("backup:1"),
        "{wide}"
    );
    let all = ok(&s.kubectl(&kubectl, &["get", "all"]));
    assert!(all.contains("crontab.stable.example.com/nightly"), "{all}");

    let described = ok(&s.kubectl(&kubectl, &["describe", "crontab", "nightly"]));
    assert!(
        described.contains("Cron Spec:") && described.contains("0 3 * * *"),
        "{described}"
    );
    let explained = ok(&s.kubectl(&kubectl, &["explain", "crontabs.spec.cronSpec"]));
    assert!(explained.contains("When to run"), "{explained}");

    ok(&s.kubectl(&kubectl, &["scale", "crontab/nightly", "--replicas=4"]));
    let v = get_json(
        &s,
        "/apis/stable.example.com/v1/namespaces/default/crontabs/nightly",
    );
    assert_eq!(v["spec"]["replicas"], 4);
    assert_eq!(v["metadata"]["generation"], 2);
    ok(&s.kubectl(
        &kubectl,
        &[
            "patch",
            "crontab",
            "nightly",
            "--subresource=status",
            "--type=merge",
            "-p",
            r#"{"status":{"replicas":4,"labelSelector":"app=nightly"},"spec":{"image":"ignored"}}"#,
        ],
    ));
    let v = get_json(
        &s,
        "/apis/stable.example.com/v1/namespaces/default/crontabs/nightly",
    );
    assert_eq!(v["status"]["replicas"], 4);
    assert_eq!(
        v["spec"]["image"], "backup:1",
        "status writes leave spec alone"
    );
    assert_eq!(
        v["metadata"]["generation"], 2,
        "status writes leave generation alone"
    );
    let scale = get_json(
        &s,
        "/apis/stable.example.com/v1/namespaces/default/crontabs/nightly/scale",
    );
    assert_eq!(scale["status"]["selector"], "app=nightly");
    // A create through the main resource drops status (the status subresource owns it).
    s.kubectl_apply(
        &kubectl,
        "apiVersion: stable.example.com/v1\nkind: CronTab\nmetadata: {name: hourly}\nspec: {cronSpec: '0 * * * *', image: report:2}\nstatus: {replicas: 9}\n",
    );
    let v = get_json(
        &s,
        "/apis/stable.example.com/v1/namespaces/default/crontabs/hourly",
    );
    assert!(v.get("status").is_none(), "{v}");

    // kubectl edit, with an editor that changes the image.
    let editor = s.data_dir().join("edit.sh");
    std::fs::write(
        &editor,
        "#!/bin/sh\nsed -i 's/image: backup:1/image: backup:2/' \"$1\"\n",
    )
    .unwrap();
    std::fs::set_permissions(&editor, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let out = std::process::Command::new(&kubectl)
        .env("KUBECONFIG", s.kubeconfig())
        .env("KUBE_EDITOR", &editor)
        .arg("--cache-dir")
        .arg(s.data_dir().join("kubectl-cache"))
        .args(["edit", "crontab", "nightly"])
        .output()
        .unwrap();
    ok(&out);
    let v = get_json(
        &s,
        "/apis/stable.example.com/v1/namespaces/default/crontabs/nightly",
    );
    assert_eq!(v["spec"]["image"], "backup:2");

    // Field selectors: the CRD's selectable field, and a refusal for others.
    let sel = ok(&s.kubectl(
        &kubectl,
        &[
            "get",
            "ct",
            "--field-selector",
            "spec.image=report:2",
            "-o",
            "name",
        ],
    ));
    assert_eq!(sel.trim(), "crontab.stable.example.com/hourly");
    let err = fails(&s.kubectl(
        &kubectl,
        &["get", "ct", "--field-selector", "spec.cronSpec=x"],
    ));
    assert!(
        err.contains("field label not supported: spec.cronSpec"),
        "{err}"
    );

    // The deprecated version serves the same objects, with Kubernetes' warning.
    let out = s.kubectl(
        &kubectl,
        &[
            "get",
            "crontabs.v1beta1.stable.example.com",
            "nightly",
            "-o",
            "json",
        ],
    );
    let text = ok(&out);
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["apiVersion"], "stable.example.com/v1beta1");
    let warned = String::from_utf8_lossy(&out.stderr);
    assert!(
        warned.contains("stable.example.com/v1beta1 CronTab is deprecated"),
        "{warned}"
    );

    // Unknown fields: a warning by default, an error under Strict.
    let path = "/apis/stable.example.com/v1/namespaces/default/crontabs/nightly";
    let (code, v) = s.call(
        "PATCH",
        &format!("{path}?fieldValidation=Strict"),
        "application/merge-patch+json",
        r#"{"spec":{"colour":"red"}}"#,
    );
    assert_eq!(code, 400, "{v}");
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("unknown field \"spec.colour\""),
        "{v}"
    );
    let (code, v) = s.call(
        "PATCH",
        path,
        "application/merge-patch+json",
        r#"{"spec":{"colour":"red"}}"#,
    );
    assert_eq!(code, 200, "{v}");
    assert!(v["spec"].get("colour").is_none(), "pruned: {v}");

    // Deleting the CRD deletes its objects; the watch saw the changes.
    ok(&s.kubectl(&kubectl, &["delete", "crd", "crontabs.stable.example.com"]));
    eventually("the CRD gone", || {
        let (code, _) = s.call(
            "GET",
            "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/crontabs.stable.example.com",
            "",
            "",
        );
        (code == 404).then_some(())
    });
    s.kubectl_apply(&kubectl, CRONTAB_V2);
    eventually("Established again", || {
        established(&s, "crontabs.stable.example.com").then_some(())
    });
    let items = get_json(&s, "/apis/stable.example.com/v1/crontabs");
    assert_eq!(items["items"].as_array().map(Vec::len), Some(0), "{items}");
    std::thread::sleep(Duration::from_millis(300));
    let _ = watch.kill();
    let out = watch.wait_with_output().unwrap();
    let seen: Vec<String> = serde_json::Deserializer::from_slice(&out.stdout)
        .into_iter::<Value>()
        .flatten()
        .map(|e| {
            format!(
                "{} {}",
                e["type"].as_str().unwrap_or(""),
                e["object"]["metadata"]["name"].as_str().unwrap_or("")
            )
        })
        .collect();
    for want in [
        "MODIFIED nightly",
        "ADDED hourly",
        "DELETED nightly",
        "DELETED hourly",
    ] {
        assert!(seen.iter().any(|e| e == want), "{want} in {seen:?}");
    }
}

const WIDGETS: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: widgets.example.com}
spec:
  group: example.com
  scope: Namespaced
  names: {plural: widgets, kind: Widget}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            properties:
              containers:
                type: array
                items: {type: object, properties: {name: {type: string}}}
              rules:
                type: array
                x-kubernetes-list-type: map
                x-kubernetes-list-map-keys: [id]
                items: {type: object, required: [id], properties: {id: {type: integer}, value: {type: string}}}
"#;

#[test]
fn server_side_apply_merges_a_custom_objects_map_lists_by_key_and_other_lists_atomically() {
    let Some(kubectl) = common::kubectl() else {
        return;
    };
    let s = Server::start();
    s.kubectl_apply(&kubectl, WIDGETS);
    eventually("Established", || {
        established(&s, "widgets.example.com").then_some(())
    });
    let path = "/apis/example.com/v1/namespaces/default/widgets/w";
    let apply = |manager: &str, spec: &str| {
        s.call(
            "PATCH",
            &format!("{path}?fieldManager={manager}"),
            "application/apply-patch+yaml",
            &format!(r#"{{"apiVersion":"example.com/v1","kind":"Widget","metadata":{{"name":"w"}},"spec":{spec}}}"#),
        )
    };
    let (code, v) = apply(
        "team-a",
        r#"{"containers":[{"name":"a"}],"rules":[{"id":1,"value":"x"}]}"#,
    );
    assert_eq!(code, 201, "{v}");
    // A map list merges by its key: each manager owns its own item.
    let (code, v) = apply("team-b", r#"{"rules":[{"id":2,"value":"y"}]}"#);
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["spec"]["rules"].as_array().map(Vec::len), Some(2), "{v}");
    // Any other list is atomic in a custom object (even one named `containers`): it conflicts instead of merging.
    let (code, v) = apply(
        "team-b",
        r#"{"rules":[{"id":2,"value":"y"}],"containers":[{"name":"b"}]}"#,
    );
    assert_eq!(code, 409, "{v}");
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("conflict with \"team-a\""),
        "{v}"
    );
    // A strategic merge patch is not for custom objects, as in Kubernetes.
    let (code, v) = s.call(
        "PATCH",
        path,
        "application/strategic-merge-patch+json",
        r#"{"spec":{}}"#,
    );
    assert_eq!(code, 415, "{v}");
    let (code, v) = s.call(
        "PATCH",
        path,
        "application/merge-patch+json",
        r#"{"spec":{"containers":[{"name":"c"}]}}"#,
    );
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["spec"]["containers"], serde_json::json!([{"name": "c"}]));
}

#[test]
fn capstan_app_crd_describes_applications_well_enough_for_a_server_to_validate_them() {
    let Some(kubectl) = common::kubectl() else {
        return;
    };
    let s = Server::start();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_capstan"))
        .args(["app", "crd"])
        .output()
        .unwrap();
    let text = ok(&out);
    // Served under another group (the built-in kind owns gitops.capstan.io), it is a CRD like any other.
    let renamed = text
        .replace(
            "applications.gitops.capstan.io",
            "applications.gitops.example.com",
        )
        .replace("group: gitops.capstan.io", "group: gitops.example.com");
    s.kubectl_apply(&kubectl, &renamed);
    eventually("Established", || {
        established(&s, "applications.gitops.example.com").then_some(())
    });
    s.kubectl_apply(
        &kubectl,
        "apiVersion: gitops.example.com/v1\nkind: Application\nmetadata: {name: shop}\nspec:\n  source: {repoURL: 'https://example.com/shop.git', path: app}\n",
    );
    let bad = s.data_dir().join("bad.yaml");
    std::fs::write(&bad, "apiVersion: gitops.example.com/v1\nkind: Application\nmetadata: {name: bad}\nspec:\n  source: {path: app}\n").unwrap();
    let err = fails(&s.kubectl(&kubectl, &["apply", "-f", bad.to_str().unwrap()]));
    assert!(err.contains("spec.source.repoURL: Required value"), "{err}");
}

/// CEL rules are costed when the CRD is written, as Kubernetes costs them: a rule that walks an unbounded list
/// inside a walk of the same list is refused with Kubernetes' message at the rule's path, and nothing is created;
/// with `maxItems` and `maxLength` the same rule is affordable, and it runs.
#[test]
fn a_crd_whose_rules_cost_too_much_is_refused_until_its_lists_are_bounded() {
    let Some(kubectl) = common::kubectl() else {
        return;
    };
    let s = Server::start();
    let crd = |bounds: &str| {
        format!(
            r#"apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {{name: rosters.example.com}}
spec:
  group: example.com
  scope: Namespaced
  names: {{plural: rosters, singular: roster, kind: Roster}}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            x-kubernetes-validations:
            - rule: "self.names.all(a, self.names.exists_one(b, a == b))"
              message: names must be unique
            properties:
              names:
                type: array
                {bounds}
                items: {{type: string{item_bounds}}}
"#,
            item_bounds = if bounds.is_empty() {
                ""
            } else {
                ", maxLength: 63"
            }
        )
    };
    let file = s.data_dir().join("roster-crd.yaml");
    std::fs::write(&file, crd("")).unwrap();
    let err = fails(&s.kubectl(&kubectl, &["apply", "-f", file.to_str().unwrap()]));
    assert!(
        err.contains(
            "spec.versions[0].schema.openAPIV3Schema.properties[spec].x-kubernetes-validations[0].rule: \
             Forbidden: estimated rule cost exceeds budget by factor of more than 100x (try simplifying the rule, \
             or adding maxItems, maxProperties, and maxLength where arrays, maps, and strings are declared)"
        ),
        "{err}"
    );
    assert!(
        err.contains("x-kubernetes-validations estimated rule cost total for entire OpenAPIv3 schema exceeds budget"),
        "{err}"
    );
    let (code, _) = s.call(
        "GET",
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/rosters.example.com",
        "",
        "",
    );
    assert_eq!(code, 404, "a refused CRD is not stored");

    std::fs::write(&file, crd("maxItems: 100")).unwrap();
    ok(&s.kubectl(&kubectl, &["apply", "-f", file.to_str().unwrap()]));
    eventually("Established", || {
        established(&s, "rosters.example.com").then_some(())
    });
    s.kubectl_apply(
        &kubectl,
        "apiVersion: example.com/v1\nkind: Roster\nmetadata: {name: ok}\nspec: {names: [ada, grace]}\n",
    );
    let bad = s.data_dir().join("dup.yaml");
    std::fs::write(
        &bad,
        "apiVersion: example.com/v1\nkind: Roster\nmetadata: {name: dup}\nspec: {names: [ada, ada]}\n",
    )
    .unwrap();
    let err = fails(&s.kubectl(&kubectl, &["apply", "-f", bad.to_str().unwrap()]));
    assert!(err.contains("names must be unique"), "{err}");
}
