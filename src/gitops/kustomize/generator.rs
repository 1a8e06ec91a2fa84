//! The generators: one ConfigMap or Secret from a `configMapGenerator`/`secretGenerator` entry (literals, files, env
//! files, per-entry and shared `generatorOptions`), placed per its `behavior` among the objects the resources gave.
//! A generator's errors are message text: the caller files each as a [`super::Problem`] under the generator's field
//! (with the kustomization's file and the field's line).

use std::collections::BTreeMap;

use base64::Engine;
use serde_json::{json, Map, Value};

use super::{resolve, string_map, strings, text_of, Res, Tree};

/// The fields a generator entry may have.
const KNOWN: [&str; 10] = [
    "name",
    "namespace",
    "behavior",
    "literals",
    "files",
    "envs",
    "env",
    "type",
    "options",
    "immutable",
];

/// One ConfigMap or Secret from a generator entry.
pub(super) fn generate(
    tree: &Tree,
    dir: &str,
    kfile: &str,
    kind: &str,
    g: &Value,
    options: &Value,
) -> Result<Res, String> {
    if let Some(bad) = g
        .as_object()
        .and_then(|m| m.keys().find(|k| !KNOWN.contains(&k.as_str())))
    {
        return Err(format!("{bad} is not supported in a generator"));
    }
    let name = g["name"].as_str().ok_or("every generator needs a name")?;
    let mut contents = Contents::new(name);
    contents.read(tree, dir, g)?;
    let own = &g["options"];
    let opt = |key: &str| {
        if own.get(key).is_some() {
            &own[key]
        } else {
            &options[key]
        }
    };
    let mut object = json!({
        "apiVersion": "v1",
        "kind": kind,
        "metadata": metadata(name, g, options)?,
    });
    contents.store(&mut object, kind, g);
    if g["immutable"].as_bool() == Some(true) || opt("immutable").as_bool() == Some(true) {
        object["immutable"] = json!(true);
    }
    let mut r = Res::new(kfile, 1, object);
    r.hash = opt("disableNameSuffixHash").as_bool() != Some(true);
    r.behavior = g["behavior"].as_str().map(str::to_string);
    Ok(r)
}

/// The name, namespace, labels and annotations (the shared options' merged with the entry's own) of a generated
/// object.
fn metadata(name: &str, g: &Value, options: &Value) -> Result<Value, String> {
    let own = &g["options"];
    let mut meta = json!({"name": name});
    if let Some(ns) = g["namespace"].as_str() {
        meta["namespace"] = json!(ns);
    }
    for key in ["labels", "annotations"] {
        let mut merged = if options[key].is_null() {
            Map::new()
        } else {
            string_map(&options[key])?
        };
        if !own[key].is_null() {
            merged.extend(string_map(&own[key])?);
        }
        if !merged.is_empty() {
            meta[key] = Value::Object(merged);
        }
    }
    Ok(meta)
}

/// The keys of a generated object: UTF-8 values as text, anything else as binary.
struct Contents<'n> {
    name: &'n str,
    data: BTreeMap<String, String>,
    binary: BTreeMap<String, Vec<u8>>,
}

impl<'n> Contents<'n> {
    fn new(name: &'n str) -> Self {
        Contents {
            name,
            data: BTreeMap::new(),
            binary: BTreeMap::new(),
        }
    }

    fn put(&mut self, key: String, value: Vec<u8>, from: &str) -> Result<(), String> {
        if self.data.contains_key(&key) || self.binary.contains_key(&key) {
            return Err(format!("{}: key {key} is given twice ({from})", self.name));
        }
        match String::from_utf8(value) {
            Ok(s) => {
                self.data.insert(key, s);
            }
            Err(e) => {
                self.binary.insert(key, e.into_bytes());
            }
        }
        Ok(())
    }

    /// Reads `literals`, `envs` (and the older `env`) and `files`, in kustomize's order.
    fn read(&mut self, tree: &Tree, dir: &str, g: &Value) -> Result<(), String> {
        for lit in strings(&g["literals"], "literals")? {
            let (k, v) = lit
                .split_once('=')
                .ok_or_else(|| format!("{}: literal {lit:?} is not KEY=VALUE", self.name))?;
            self.put(k.to_string(), unquote(v).as_bytes().to_vec(), "literals")?;
        }
        let mut envs = strings(&g["envs"], "envs")?;
        if let Some(env) = g["env"].as_str() {
            envs.push(env.to_string());
        }
        for env in envs {
            let path = resolve(dir, &env).ok_or_else(|| format!("{env}: leaves the repository"))?;
            let text = text_of(tree, &path).map_err(|e| e.to_string())?;
            for (n, line) in text.lines().enumerate() {
                let line = line.trim();
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                let (k, v) = line
                    .split_once('=')
                    .ok_or_else(|| format!("{path}:{}: not KEY=VALUE", n + 1))?;
                self.put(k.trim().to_string(), unquote(v).as_bytes().to_vec(), &path)?;
            }
        }
        for file in strings(&g["files"], "files")? {
            let (key, rel) = match file.split_once('=') {
                Some((k, p)) => (k.to_string(), p.to_string()),
                None => (
                    file.rsplit('/').next().unwrap_or(&file).to_string(),
                    file.clone(),
                ),
            };
            let path = resolve(dir, &rel).ok_or_else(|| format!("{rel}: leaves the repository"))?;
            let bytes = tree
                .get(&path)
                .ok_or_else(|| format!("{}: file {rel} ({path}) does not exist", self.name))?;
            self.put(key, bytes.clone(), &path)?;
        }
        Ok(())
    }

    /// Writes the keys into the object: a Secret's all base64 under `data` (with its `type`), a ConfigMap's text
    /// under `data` and the rest base64 under `binaryData`.
    fn store(self, object: &mut Value, kind: &str, g: &Value) {
        let encoded = |m: BTreeMap<String, Vec<u8>>| -> Map<String, Value> {
            m.into_iter()
                .map(|(k, v)| (k, json!(base64_lines(&v))))
                .collect()
        };
        if kind == "Secret" {
            let mut all = encoded(
                self.data
                    .into_iter()
                    .map(|(k, v)| (k, v.into_bytes()))
                    .collect(),
            );
            all.extend(encoded(self.binary));
            object["type"] = json!(g["type"].as_str().unwrap_or("Opaque"));
            if !all.is_empty() {
                object["data"] = Value::Object(all);
            }
        } else {
            if !self.data.is_empty() {
                object["data"] = json!(self.data);
            }
            if !self.binary.is_empty() {
                object["binaryData"] = Value::Object(encoded(self.binary));
            }
        }
    }
}

/// Base64 as kustomize writes generated values: a value of 70 characters or more is cut into lines of 70, each
/// ending with a line break.
fn base64_lines(v: &[u8]) -> String {
    let enc = base64::engine::general_purpose::STANDARD.encode(v);
    if enc.len() < 70 {
        return enc;
    }
    let mut out = String::new();
    for chunk in enc.as_bytes().chunks(70) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or(""));
        out.push('\n');
    }
    out
}

/// Strips one pair of matching quotes, as kustomize does for literal and env-file values.
fn unquote(v: &str) -> &str {
    for q in ['"', '\''] {
        if v.len() >= 2 && v.starts_with(q) && v.ends_with(q) {
            return &v[1..v.len() - 1];
        }
    }
    v
}

/// Adds a generated object per its `behavior`: create (the default; the name must be new), merge or replace (an
/// object of that name must be there already).
pub(super) fn place(out: &mut Vec<Res>, mut res: Res) -> Result<(), String> {
    let behavior = res.behavior.clone().unwrap_or_else(|| "create".into());
    let name = res.name().to_string();
    let ns = res.namespace().map(str::to_string);
    let kind = res.kind().to_string();
    let existing = out.iter_mut().find(|r| {
        r.kind() == kind
            && r.all_ids().iter().any(|i| i.name == name)
            && r.id().effective_namespace() == res.id().effective_namespace()
    });
    match (behavior.as_str(), existing) {
        ("create", None) => out.push(res),
        ("create", Some(r)) => {
            return Err(format!(
                "id {} exists; behavior must be merge or replace (it comes from {})",
                res.id(),
                r.file
            ));
        }
        ("merge", Some(r)) => {
            for field in ["data", "binaryData"] {
                if let Some(Value::Object(new)) = res.object.get(field).cloned() {
                    let target = r.object.get_mut(field).and_then(Value::as_object_mut);
                    match target {
                        Some(t) => t.extend(new),
                        None => r.object[field] = Value::Object(new),
                    }
                }
            }
            for key in ["labels", "annotations"] {
                if let Some(Value::Object(m)) = res.object["metadata"].get(key).cloned() {
                    merge_into(&mut r.object["metadata"], key, &m);
                }
            }
            r.hash = res.hash;
        }
        ("replace", Some(r)) => {
            // The old object's labels and annotations stay (the new ones win).
            for key in ["labels", "annotations"] {
                let mut merged = r.meta_map(key);
                merged.extend(res.meta_map(key));
                if !merged.is_empty() {
                    res.object["metadata"][key] = Value::Object(merged);
                }
            }
            res.object["metadata"]["name"] = r.object["metadata"]["name"].clone();
            match r.namespace() {
                Some(ns) => res.object["metadata"]["namespace"] = json!(ns),
                None => {
                    if let Some(m) = res.object["metadata"].as_object_mut() {
                        m.remove("namespace");
                    }
                }
            }
            res.prev = r.prev.clone();
            res.prefixes = r.prefixes.clone();
            res.suffixes = r.suffixes.clone();
            *r = res;
        }
        ("merge" | "replace", None) => {
            let _ = ns;
            return Err(format!(
                "{name}: behavior {behavior} needs a {kind} of that name from the resources"
            ));
        }
        (other, _) => {
            return Err(format!(
                "{name}: behavior {other:?} is not one of create, merge, replace"
            ));
        }
    }
    Ok(())
}

/// kustomize's `IAMPolicyGenerator` (cloud `gke`): a ServiceAccount bound to a Google service account through
/// Workload Identity's annotation.
fn iam_policy(c: &Value, from: &str) -> Result<Res, String> {
    if c["cloud"] != "gke" {
        return Err(format!(
            "IAMPolicyGenerator: cloud {} is not supported (only gke)",
            c["cloud"]
        ));
    }
    let ks = &c["kubernetesService"];
    let sa = &c["serviceAccount"];
    let name = ks["name"]
        .as_str()
        .ok_or("IAMPolicyGenerator: kubernetesService.name is required")?;
    let (Some(gsa), Some(project)) = (sa["name"].as_str(), sa["projectId"].as_str()) else {
        return Err("IAMPolicyGenerator: serviceAccount.name and projectId are required".into());
    };
    let mut meta = json!({
        "name": name,
        "annotations": {"iam.gke.io/gcp-service-account": format!("{gsa}@{project}.iam.gserviceaccount.com")},
    });
    if let Some(ns) = ks["namespace"].as_str() {
        meta["namespace"] = json!(ns);
    }
    Ok(Res::new(
        from,
        1,
        json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta}),
    ))
}

/// Merges `add` into the map at `parent[key]` (made when missing).
pub(super) fn merge_into(parent: &mut Value, key: &str, add: &Map<String, Value>) {
    if !parent.is_object() {
        *parent = json!({});
    }
    let slot = &mut parent[key];
    if !slot.is_object() {
        *slot = json!({});
    }
    if let Some(m) = slot.as_object_mut() {
        for (k, v) in add {
            m.insert(k.clone(), v.clone());
        }
    }
}

impl super::Kustomization<'_> {
    /// `configMapGenerator`, `secretGenerator` and the generators configured under `generators`: each entry adds
    /// (or merges into, or replaces) an object.
    pub(super) fn generators(
        &self,
        ctx: &super::Ctx,
        acc: &mut super::Acc,
    ) -> Result<(), Vec<super::Problem>> {
        // (field, kind, entry, shared options, origin)
        let mut entries: Vec<(String, &'static str, Value, Value, String)> = Vec::new();
        let origin = |from: &str, kind: &str, name: &Value| {
            let mut o = format!(
                "configuredIn: {}\nconfiguredBy:\n  apiVersion: builtin\n  kind: {kind}Generator\n",
                super::relative(&ctx.top, from)
            );
            if let Some(n) = name.as_str() {
                o.push_str(&format!("  name: {n}\n"));
            }
            o
        };
        let options = self.k["generatorOptions"].clone();
        for (field, kind) in [
            ("configMapGenerator", "ConfigMap"),
            ("secretGenerator", "Secret"),
        ] {
            match &self.k[field] {
                Value::Null => {}
                Value::Array(list) => {
                    for g in list {
                        entries.push((
                            field.to_string(),
                            kind,
                            g.clone(),
                            options.clone(),
                            origin(&self.file, kind, &Value::Null),
                        ));
                    }
                }
                _ => return Err(vec![self.err(field, "must be a list")]),
            }
        }
        for b in super::transform::Builtin::configured(self, ctx, "generators")? {
            let kind = match b.kind() {
                "ConfigMapGenerator" => "ConfigMap",
                "SecretGenerator" => "Secret",
                "IAMPolicyGenerator" => {
                    let r = iam_policy(b.cfg(), b.from()).map_err(|e| vec![self.err("generators", e)])?;
                    acc.add(r).map_err(|e| vec![self.err("generators", e)])?;
                    continue;
                }
                other => {
                    return Err(vec![self.err(
                        "generators",
                        format!("{other}: not a built-in generator Capstan's kustomize runs (exec and container plugins are not supported)"),
                    )])
                }
            };
            let mut g = b.cfg().clone();
            if g["name"].is_null() {
                g["name"] = g["metadata"]["name"].clone();
            }
            if g["namespace"].is_null() && !g["metadata"]["namespace"].is_null() {
                g["namespace"] = g["metadata"]["namespace"].clone();
            }
            if let Some(m) = g.as_object_mut() {
                m.retain(|k, _| KNOWN.contains(&k.as_str()));
            }
            let o = origin(b.from(), kind, &b.cfg()["metadata"]["name"]);
            entries.push(("generators".into(), kind, g, Value::Null, o));
        }
        for (field, kind, g, options, o) in entries {
            let made =
                generate(ctx.tree, &self.dir, &self.file, kind, &g, &options).and_then(|mut r| {
                    r.origin = Some(o);
                    place(&mut acc.res, r)
                });
            made.map_err(|e| vec![self.err(&field, e)])?;
        }
        Ok(())
    }
}
