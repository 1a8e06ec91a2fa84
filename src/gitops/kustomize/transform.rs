//! The built-in transformers, in kustomize's order, each editing the fields its field specs name: patches,
//! namespace, name prefix and suffix, labels, annotations, JSON 6902 patches, replicas, images, replacements; then
//! the transformers a kustomization configures under `transformers` (the same built-ins, as `apiVersion: builtin`
//! objects, inline or in files). Also the build metadata (`buildMetadata: [originAnnotations, ...]`).

use serde_json::{json, Map, Value};

use super::fieldspec::{walk, FieldSpec};
use super::resource::Res;
use super::{patch, replacements, string_map, strings, Acc, Ctx, Kustomization, Problem};

impl<'t> Kustomization<'t> {
    /// Runs this level's transformers over everything accumulated.
    pub(super) fn transform(&self, ctx: &Ctx<'t>, acc: &mut Acc) -> Result<(), Vec<Problem>> {
        let one = |field: &str| {
            let f = field.to_string();
            move |e: String| vec![self.err(&f, e)]
        };
        // `buildMetadata: [transformerAnnotations]`: every object a transformer ran over records it.
        let record = |acc: &mut Acc, kind: &str, meta: &Value| {
            if !ctx.record_transformers {
                return;
            }
            let mut rec = format!(
                "- configuredIn: {}\n  configuredBy:\n    apiVersion: builtin\n    kind: {kind}\n",
                super::relative(&ctx.top, &self.file)
            );
            for f in ["name", "namespace"] {
                if let Some(v) = meta[f].as_str() {
                    rec.push_str(&format!("    {f}: {v}\n"));
                }
            }
            for r in acc.res.iter_mut() {
                r.transformations.push_str(&rec);
            }
        };
        let strategic = patch::legacy_strategic(self, ctx)?;
        for p in &strategic {
            p.apply(&mut acc.res)
                .map_err(one("patchesStrategicMerge"))?;
        }
        if !strategic.is_empty() {
            record(acc, "PatchStrategicMergeTransformer", &Value::Null);
        }
        for p in patch::patches(self, ctx, &self.k["patches"], "patches")? {
            p.apply(&mut acc.res).map_err(one("patches"))?;
            record(acc, "PatchTransformer", &Value::Null);
        }
        let builtin = |kind: &str, cfg: Value| Builtin {
            kind: kind.to_string(),
            cfg,
            from: self.file.clone(),
        };
        let mut steps = Vec::new();
        if let Some(ns) = self.k.get("namespace").filter(|v| !v.is_null()) {
            steps.push((
                "namespace",
                builtin("NamespaceTransformer", json!({"namespace": ns})),
            ));
        }
        if let Some(p) = self.k.get("namePrefix").filter(|v| !v.is_null()) {
            steps.push((
                "namePrefix",
                builtin("PrefixTransformer", json!({"prefix": p})),
            ));
        }
        if let Some(s) = self.k.get("nameSuffix").filter(|v| !v.is_null()) {
            steps.push((
                "nameSuffix",
                builtin("SuffixTransformer", json!({"suffix": s})),
            ));
        }
        for (field, step) in &steps {
            step.run(ctx, self, acc).map_err(one(field))?;
            record(acc, &step.kind, &Value::Null);
        }
        if self.labels(acc).map_err(one("labels"))? {
            record(acc, "LabelTransformer", &Value::Null);
        }
        if let Some(a) = self.k.get("commonAnnotations").filter(|v| !v.is_null()) {
            let a = string_map(a).map_err(one("commonAnnotations"))?;
            let specs = acc.config.common_annotations.clone();
            add_map(&mut acc.res, &a, &specs, "annotations").map_err(one("commonAnnotations"))?;
            record(acc, "AnnotationsTransformer", &Value::Null);
        }
        for p in patch::patches(self, ctx, &self.k["patchesJson6902"], "patchesJson6902")? {
            p.apply(&mut acc.res).map_err(one("patchesJson6902"))?;
            record(acc, "PatchJson6902Transformer", &Value::Null);
        }
        for entry in self.k["replicas"].as_array().into_iter().flatten() {
            let specs = acc.config.replicas.clone();
            replicas(&mut acc.res, entry, &specs).map_err(one("replicas"))?;
            record(acc, "ReplicaCountTransformer", &Value::Null);
        }
        for field in ["images", "imageTags"] {
            for img in self.k[field].as_array().into_iter().flatten() {
                let specs = acc.config.images.clone();
                images(&mut acc.res, img, &specs).map_err(one(field))?;
                record(acc, "ImageTagTransformer", &Value::Null);
            }
        }
        if let Some(list) = self.k.get("replacements") {
            let list = replacements::load(self, ctx, list)?;
            replacements::apply(&mut acc.res, &list).map_err(one("replacements"))?;
            record(acc, "ReplacementTransformer", &Value::Null);
        }
        for b in Builtin::configured(self, ctx, "transformers")? {
            b.run(ctx, self, acc).map_err(one("transformers"))?;
            record(acc, &b.kind, &b.cfg["metadata"]);
        }
        Ok(())
    }

    /// `commonLabels` (on selectors and templates too) and `labels` (on selectors and templates as each entry
    /// says).
    fn labels(&self, acc: &mut Acc) -> Result<bool, String> {
        let common = string_map(&self.k["commonLabels"])?;
        for l in self.k["labels"].as_array().into_iter().flatten() {
            for key in string_map(&l["pairs"])?.keys() {
                if common.contains_key(key) {
                    return Err(format!(
                        "label name '{key}' exists in both commonLabels and labels"
                    ));
                }
            }
        }
        if !common.is_empty() {
            let specs = acc.config.common_labels.clone();
            add_map(&mut acc.res, &common, &specs, "labels")?;
        }
        for l in self.k["labels"].as_array().into_iter().flatten() {
            let pairs = string_map(&l["pairs"])?;
            let mut specs = vec![FieldSpec {
                path: "metadata/labels".into(),
                create: true,
                ..Default::default()
            }];
            if l["includeSelectors"] == true {
                specs = acc.config.common_labels.clone();
            } else {
                if l["includeTemplates"] == true {
                    specs.extend(acc.config.template_labels.iter().cloned());
                }
                if l["includeVolumeClaimTemplates"] == true {
                    specs.extend(acc.config.volume_claim_template_labels.iter().cloned());
                }
            }
            if l["includeSelectors"] == true && l["includeVolumeClaimTemplates"] == false {
                specs.retain(|s| !s.path.contains("volumeClaimTemplates"));
            }
            specs.extend(acc.config.labels.iter().cloned());
            for f in l["fields"].as_array().into_iter().flatten() {
                specs.push(
                    serde_json::from_value(f.clone()).map_err(|e| format!("labels fields: {e}"))?,
                );
            }
            add_map(&mut acc.res, &pairs, &specs, "labels")?;
        }
        Ok(!common.is_empty() || self.k["labels"].as_array().is_some_and(|l| !l.is_empty()))
    }
}

/// Merges `pairs` into the map each spec reaches (labels or annotations).
pub(super) fn add_map(
    res: &mut [Res],
    pairs: &Map<String, Value>,
    specs: &[FieldSpec],
    what: &str,
) -> Result<(), String> {
    for r in res.iter_mut() {
        let id = r.id();
        for s in specs.iter().filter(|s| s.applies_to(&id)) {
            walk(&mut r.object, &s.path, s.create, &mut |slot| {
                if slot.is_null() {
                    *slot = json!({});
                }
                let Some(m) = slot.as_object_mut() else {
                    return Err(format!("{}: {what} must be a map", s.path));
                };
                for (k, v) in pairs {
                    m.insert(k.clone(), v.clone());
                }
                Ok(())
            })?;
        }
    }
    Ok(())
}

/// Sets a namespace on every namespaced object, and on the fields its specs name.
pub(super) fn namespace(
    res: &mut [Res],
    ns: &str,
    specs: &[FieldSpec],
    unset_only: bool,
    subjects: &str,
) -> Result<(), String> {
    for r in res.iter_mut() {
        r.store_prev();
        let id = r.id();
        if r.namespaced() {
            let meta = &mut r.object["metadata"];
            if !(unset_only && meta["namespace"].as_str().is_some_and(|s| !s.is_empty())) {
                meta["namespace"] = json!(ns);
            }
        }
        for s in specs.iter().filter(|s| s.applies_to(&id)) {
            if s.path == "metadata/namespace"
                || (s.path == "metadata/name" && r.api_version() != "v1")
            {
                continue;
            }
            if matches!(id.kind.as_str(), "RoleBinding" | "ClusterRoleBinding")
                && s.path == "subjects/namespace"
            {
                continue;
            }
            walk(&mut r.object, &s.path, s.create, &mut |slot| {
                if unset_only && slot.as_str().is_some_and(|s| !s.is_empty()) {
                    return Ok(());
                }
                *slot = json!(ns);
                Ok(())
            })?;
        }
        if matches!(id.kind.as_str(), "RoleBinding" | "ClusterRoleBinding") {
            for s in r.object["subjects"].as_array_mut().into_iter().flatten() {
                let set = match subjects {
                    "none" => false,
                    "allServiceAccounts" => s["kind"] == "ServiceAccount",
                    "" | "defaultOnly" => s["name"] == "default",
                    other => {
                        return Err(format!(
                            "invalid value {other:?} for setRoleBindingSubjects: must be one of \"defaultOnly\", \"none\" or \"allServiceAccounts\""
                        ))
                    }
                };
                if set {
                    s["namespace"] = json!(ns);
                }
            }
        }
    }
    let mut seen: Vec<super::Id> = Vec::new();
    for r in res.iter() {
        let id = r.id();
        if seen.iter().any(|s| s.same(&id)) {
            return Err(format!(
                "namespace transformation produces ID conflict: {id}"
            ));
        }
        seen.push(id);
    }
    Ok(())
}

/// Adds a prefix and a suffix to names (kustomize leaves Namespaces, CRDs and APIServices alone).
pub(super) fn prefix_suffix(
    res: &mut [Res],
    prefix: &str,
    suffix: &str,
    specs: &[FieldSpec],
) -> Result<(), String> {
    for r in res.iter_mut() {
        let org = r.org_id();
        if matches!(org.kind.as_str(), "CustomResourceDefinition" | "Namespace")
            || (org.kind == "APIService" && org.group == "apiregistration.k8s.io")
        {
            continue;
        }
        for s in specs.iter().filter(|s| s.applies_to(&org)) {
            if s.path == "metadata/name" {
                if !prefix.is_empty() {
                    r.prefixes.push(prefix.to_string());
                }
                if !suffix.is_empty() {
                    r.suffixes.push(suffix.to_string());
                }
                if !prefix.is_empty() || !suffix.is_empty() {
                    r.store_prev();
                }
            }
            walk(&mut r.object, &s.path, s.create, &mut |slot| {
                if let Some(v) = slot.as_str() {
                    *slot = json!(format!("{prefix}{v}{suffix}"));
                }
                Ok(())
            })?;
        }
    }
    Ok(())
}

/// `replicas`: a count for the workloads of a name (now or before renames).
fn replicas(res: &mut [Res], entry: &Value, specs: &[FieldSpec]) -> Result<(), String> {
    let name = entry["name"].as_str().ok_or("every entry needs a name")?;
    let count = entry["count"]
        .as_i64()
        .ok_or_else(|| format!("{name}: count must be an integer"))?;
    for r in res
        .iter_mut()
        .filter(|r| r.all_ids().iter().any(|i| i.name == name))
    {
        let id = r.id();
        for s in specs.iter().filter(|s| s.applies_to(&id)) {
            walk(&mut r.object, &s.path, s.create, &mut |slot| {
                *slot = json!(count);
                Ok(())
            })?;
        }
    }
    Ok(())
}

/// Splits an image reference into its name and the rest (`:tag`, `@digest` or both).
pub(super) fn split_image(image: &str) -> (&str, &str) {
    let head = &image[..image.find('@').unwrap_or(image.len())];
    let slash = head.rfind('/').map_or(0, |i| i + 1);
    let name_end = head[slash..].rfind(':').map_or(head.len(), |c| slash + c);
    image.split_at(name_end)
}

/// `images`: a new name, tag or digest for the images of a name - in every `containers` and `initContainers` list
/// anywhere in an object (as kustomize's image transformer looks), and in the fields its specs name.
pub(super) fn images(res: &mut [Res], img: &Value, specs: &[FieldSpec]) -> Result<(), String> {
    let name = img["name"].as_str().ok_or("every image needs a name")?;
    let tag = match &img["newTag"] {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    };
    let update = |slot: &mut Value| {
        let Some(image) = slot.as_str() else {
            return;
        };
        let (current, rest) = split_image(image);
        if current != name {
            return;
        }
        let new_name = img["newName"].as_str().unwrap_or(current);
        let new = if let Some(d) = img["digest"].as_str() {
            format!("{new_name}@{d}")
        } else if let Some(t) = &tag {
            format!("{new_name}:{t}")
        } else {
            format!("{new_name}{rest}")
        };
        *slot = json!(new);
    };
    fn containers(v: &mut Value, update: &dyn Fn(&mut Value)) {
        match v {
            Value::Object(m) => {
                for (k, child) in m.iter_mut() {
                    if matches!(k.as_str(), "containers" | "initContainers") {
                        if let Value::Array(list) = child {
                            for c in list.iter_mut() {
                                if let Some(i) = c.get_mut("image") {
                                    update(i);
                                }
                            }
                        }
                    }
                    containers(child, update);
                }
            }
            Value::Array(a) => a.iter_mut().for_each(|x| containers(x, update)),
            _ => {}
        }
    }
    for r in res.iter_mut() {
        containers(&mut r.object, &update);
        let id = r.id();
        for s in specs.iter().filter(|s| s.applies_to(&id)) {
            walk(&mut r.object, &s.path, false, &mut |slot| {
                update(slot);
                Ok(())
            })?;
        }
    }
    Ok(())
}

/// A built-in transformer configured as an object (`apiVersion: builtin`, `kind: PrefixSuffixTransformer`, ...).
pub(super) struct Builtin {
    kind: String,
    cfg: Value,
    /// The file it was written in (a kustomization, for inline ones).
    from: String,
}

impl Builtin {
    /// The built-ins a kustomization lists under `field`: inline objects, or files holding them.
    pub(super) fn configured(
        k: &Kustomization,
        ctx: &Ctx,
        field: &str,
    ) -> Result<Vec<Builtin>, Vec<Problem>> {
        let mut out = Vec::new();
        for entry in k.k[field].as_array().into_iter().flatten() {
            let Some(text) = entry.as_str() else {
                return Err(vec![k.err(field, "every entry must be a string")]);
            };
            let docs: Vec<(Value, String)> = if text.contains('\n')
                || text.trim_start().starts_with("apiVersion")
            {
                super::output::yaml_docs(text)
                    .map_err(|e| vec![k.err(field, e)])?
                    .into_iter()
                    .map(|d| (d, k.file.clone()))
                    .collect()
            } else {
                let path = super::resolve(&k.dir, text)
                    .ok_or_else(|| vec![k.err(field, format!("{text}: leaves the repository"))])?;
                if !ctx.tree.contains_key(&path) && super::is_dir(ctx.tree, &path) {
                    // A kustomization whose output is the configurations.
                    let mut sub = Ctx {
                        tree: ctx.tree,
                        opts: ctx.opts,
                        stack: ctx.stack.clone(),
                        top: ctx.top.clone(),
                        record_transformers: ctx.record_transformers,
                    };
                    let kfile = sub
                        .single_kustomization(&path)
                        .map_err(|e| vec![k.err(field, e)])?;
                    let kk = Kustomization::read(ctx.tree, &path, &kfile, false)?;
                    let built = sub.target(&kk, Acc::new())?;
                    built.res.into_iter().map(|r| (r.object, r.file)).collect()
                } else {
                    let loaded = k.load(ctx, field, text)?;
                    super::output::yaml_docs(loaded)
                        .map_err(|e| vec![k.err(field, format!("{text}: {e}"))])?
                        .into_iter()
                        .map(|d| (d, path.clone()))
                        .collect()
                }
            };
            for (d, from) in docs.into_iter().filter(|(d, _)| !d.is_null()) {
                let kind = d["kind"].as_str().unwrap_or("").to_string();
                out.push(Builtin { kind, cfg: d, from });
            }
        }
        Ok(out)
    }

    pub(super) fn kind(&self) -> &str {
        &self.kind
    }
    pub(super) fn cfg(&self) -> &Value {
        &self.cfg
    }
    pub(super) fn from(&self) -> &str {
        &self.from
    }

    /// Runs it over everything accumulated.
    fn run(&self, ctx: &Ctx, k: &Kustomization, acc: &mut Acc) -> Result<(), String> {
        let c = &self.cfg;
        let specs = |own: &Value, default: &[FieldSpec]| -> Result<Vec<FieldSpec>, String> {
            if own.is_null() {
                return Ok(default.to_vec());
            }
            serde_json::from_value(own.clone())
                .map_err(|e| format!("{}: fieldSpecs: {e}", self.kind))
        };
        match self.kind.as_str() {
            "NamespaceTransformer" => {
                let ns = c["namespace"].as_str().or(c["metadata"]["namespace"].as_str()).unwrap_or("");
                let s = specs(&c["fieldSpecs"], &acc.config.namespace)?;
                namespace(
                    &mut acc.res,
                    ns,
                    &s,
                    c["unsetOnly"] == true,
                    c["setRoleBindingSubjects"].as_str().unwrap_or(""),
                )
            }
            "PrefixTransformer" | "SuffixTransformer" | "PrefixSuffixTransformer" => {
                let p = c["prefix"].as_str().unwrap_or("");
                let s = c["suffix"].as_str().unwrap_or("");
                let default = if p.is_empty() { &acc.config.name_suffix } else { &acc.config.name_prefix };
                let f = specs(&c["fieldSpecs"], default)?;
                if !p.is_empty() && !s.is_empty() {
                    prefix_suffix(&mut acc.res, p, "", &f)?;
                    prefix_suffix(&mut acc.res, "", s, &f)
                } else {
                    prefix_suffix(&mut acc.res, p, s, &f)
                }
            }
            "LabelTransformer" => {
                let f = specs(&c["fieldSpecs"], &acc.config.common_labels)?;
                add_map(&mut acc.res, &string_map(&c["labels"])?, &f, "labels")
            }
            "AnnotationsTransformer" => {
                let f = specs(&c["fieldSpecs"], &acc.config.common_annotations)?;
                add_map(&mut acc.res, &string_map(&c["annotations"])?, &f, "annotations")
            }
            "ImageTagTransformer" => {
                let f = specs(&c["fieldSpecs"], &acc.config.images)?;
                images(&mut acc.res, &c["imageTag"], &f)
            }
            "ReplicaCountTransformer" => {
                let f = specs(&c["fieldSpecs"], &acc.config.replicas)?;
                replicas(&mut acc.res, &c["replica"], &f)
            }
            "PatchTransformer" | "PatchStrategicMergeTransformer" | "PatchJson6902Transformer" => {
                for p in patch::from_builtin(k, ctx, c).map_err(|e| e.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))? {
                    p.apply(&mut acc.res)?;
                }
                Ok(())
            }
            "ReplacementTransformer" => {
                let list = replacements::load(k, ctx, &c["replacements"])
                    .map_err(|e| e.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))?;
                replacements::apply(&mut acc.res, &list)
            }
            "SortOrderTransformer" => Err(
                "unable to load builtin SortOrderTransformer.builtin.[noGrp]; use sortOptions in the kustomization".into(),
            ),
            other => Err(format!(
                "{other}: not a built-in transformer Capstan's kustomize runs (exec and container plugins are not supported)"
            )),
        }
    }
}

/// `buildMetadata`: `originAnnotations` (where each object came from), `managedByLabel`, `transformerAnnotations`.
pub(super) fn build_metadata(k: &Kustomization, res: &mut [Res], top: &str) {
    let wanted = strings(&k.k["buildMetadata"], "buildMetadata").unwrap_or_default();
    if wanted.iter().any(|w| w == "originAnnotations") {
        for r in res.iter_mut() {
            let origin = match &r.origin {
                Some(o) => o.clone(),
                None => format!("path: {}\n", super::relative(top, &r.file)),
            };
            r.object["metadata"]["annotations"]["config.kubernetes.io/origin"] = json!(origin);
        }
    }
    for r in res.iter_mut().filter(|r| !r.transformations.is_empty()) {
        r.object["metadata"]["annotations"]["alpha.config.kubernetes.io/transformations"] =
            json!(r.transformations);
    }
    if wanted.iter().any(|w| w == "managedByLabel") {
        for r in res.iter_mut() {
            r.object["metadata"]["labels"]["app.kubernetes.io/managed-by"] =
                json!("kustomize-capstan");
        }
    }
}
