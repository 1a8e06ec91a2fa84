use super::fieldspec::Config;
use super::refs::content_hash;
use super::transform::{images, split_image};
use super::*;
use serde_json::{json, Value};

fn tree(files: &[(&str, &str)]) -> Tree {
    files
        .iter()
        .map(|(p, c)| (p.to_string(), c.as_bytes().to_vec()))
        .collect()
}

const DEPLOY: &str = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  selector:\n    matchLabels: {app: web}\n  template:\n    metadata:\n      labels: {app: web}\n    spec:\n      serviceAccountName: runner\n      containers:\n      - name: web\n        image: nginx:1.25\n        envFrom:\n        - configMapRef: {name: settings}\n      volumes:\n      - name: cfg\n        configMap: {name: settings}\n      - name: tls\n        secret: {secretName: certs}\n";
const SVC: &str = "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\nspec:\n  selector: {app: web}\n  ports: [{port: 80}]\n---\napiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: runner\n";

fn find<'a>(out: &'a [Res], kind: &str) -> &'a Value {
    &out.iter().find(|r| r.kind() == kind).unwrap().object
}

#[test]
fn overlay_on_a_base_renames_labels_and_generates() {
    let t = tree(&[
        ("base/kustomization.yaml", "resources:\n- deploy.yaml\n- svc.yaml\nconfigMapGenerator:\n- name: settings\n  literals:\n  - MODE=base\n  - COLOR=blue\n"),
        ("base/deploy.yaml", DEPLOY),
        ("base/svc.yaml", SVC),
        ("prod/kustomization.yaml", "resources:\n- ../base\nnamespace: shop\nnamePrefix: prod-\nnameSuffix: -v2\ncommonLabels:\n  env: prod\ncommonAnnotations:\n  team: core\nimages:\n- name: nginx\n  newName: mirror/nginx\n  newTag: \"1.27\"\nreplicas:\n- name: web\n  count: 4\nconfigMapGenerator:\n- name: settings\n  behavior: merge\n  literals: [MODE=prod]\n  files: [conf/app.properties]\nsecretGenerator:\n- name: certs\n  envs: [secret.env]\n  type: kubernetes.io/tls\n"),
        ("prod/conf/app.properties", "level=debug\n"),
        ("prod/secret.env", "# certs\ntls.crt=\"CERT\"\ntls.key=KEY\n"),
    ]);
    let out = build(&t, "prod").unwrap();
    assert_eq!(out.len(), 5, "{out:#?}");
    let d = find(&out, "Deployment");
    assert_eq!(d["metadata"]["name"], "prod-web-v2");
    assert_eq!(d["metadata"]["namespace"], "shop");
    assert_eq!(d["metadata"]["labels"]["env"], "prod");
    assert_eq!(d["metadata"]["annotations"]["team"], "core");
    assert_eq!(
        d["spec"]["selector"]["matchLabels"],
        json!({"app": "web", "env": "prod"})
    );
    assert_eq!(d["spec"]["template"]["metadata"]["labels"]["env"], "prod");
    assert_eq!(
        d["spec"]["template"]["metadata"]["annotations"]["team"],
        "core"
    );
    assert_eq!(d["spec"]["replicas"], 4);
    let pod = &d["spec"]["template"]["spec"];
    assert_eq!(pod["containers"][0]["image"], "mirror/nginx:1.27");
    assert_eq!(pod["serviceAccountName"], "prod-runner-v2");

    let cm = find(&out, "ConfigMap");
    let cm_name = cm["metadata"]["name"].as_str().unwrap();
    assert!(
        cm_name.starts_with("prod-settings-v2-") && cm_name.len() == "prod-settings-v2-".len() + 10,
        "{cm_name}"
    );
    assert_eq!(
        cm["data"],
        json!({"COLOR": "blue", "MODE": "prod", "app.properties": "level=debug\n"})
    );
    assert_eq!(cm["metadata"]["namespace"], "shop");
    assert_eq!(
        pod["containers"][0]["envFrom"][0]["configMapRef"]["name"],
        cm_name
    );
    assert_eq!(pod["volumes"][0]["configMap"]["name"], cm_name);

    let s = find(&out, "Secret");
    assert_eq!(s["type"], "kubernetes.io/tls");
    assert_eq!(s["data"]["tls.crt"], "Q0VSVA==");
    assert_eq!(
        pod["volumes"][1]["secret"]["secretName"],
        s["metadata"]["name"]
    );

    let svc = find(&out, "Service");
    assert_eq!(
        svc["spec"]["selector"],
        json!({"app": "web", "env": "prod"})
    );
    let at = |kind: &str| {
        let r = out.iter().find(|r| r.kind() == kind).unwrap();
        (r.file.clone(), r.line)
    };
    assert_eq!(at("Service"), ("base/svc.yaml".to_string(), 1));
    assert_eq!(at("ServiceAccount"), ("base/svc.yaml".to_string(), 9));
}

#[test]
fn a_changed_literal_changes_the_hash_and_the_hash_is_kustomizes() {
    let a = tree(&[(
        "k/kustomization.yaml",
        "configMapGenerator:\n- name: my-configmap\n  literals: [foo=bar]\n",
    )]);
    let b = tree(&[(
        "k/kustomization.yaml",
        "configMapGenerator:\n- name: my-configmap\n  literals: [foo=baz]\n",
    )]);
    let na = build(&a, "k").unwrap()[0].object["metadata"]["name"].clone();
    let nb = build(&b, "k").unwrap()[0].object["metadata"]["name"].clone();
    assert_ne!(na, nb);
    // The hash kustomize gives this ConfigMap (kustomize's TestDataEndsWithQuotes).
    let doc = json!({"kind": "ConfigMap", "metadata": {"name": "test"},
        "data": {"TEST": "this is a 'test'"}});
    assert_eq!(content_hash(&doc), "k9cc55dfm5");
    let c = tree(&[("k/kustomization.yaml", "generatorOptions:\n  disableNameSuffixHash: true\nconfigMapGenerator:\n- name: plain\n  literals: [foo=bar]\n")]);
    assert_eq!(
        build(&c, "k").unwrap()[0].object["metadata"]["name"],
        "plain"
    );
}

#[test]
fn unsupported_and_wrong_input_is_named() {
    let t = tree(&[
        ("k/kustomization.yaml", "resources:\n- missing.yaml\n- https://example.invalid/x\n- ../../out\nhelmCharts:\n- name: x\n"),
    ]);
    let errs: Vec<String> = build(&t, "k")
        .unwrap_err()
        .iter()
        .map(ToString::to_string)
        .collect();
    assert!(
        errs.iter()
            .any(|e| e
                .starts_with("k/kustomization.yaml:5: helmCharts: Helm charts are not supported")),
        "{errs:?}"
    );
    let t = tree(&[(
        "k/kustomization.yaml",
        "resources:\n- missing.yaml\n- https://example.invalid/x\n- ../../out\n",
    )]);
    let errs: Vec<String> = build(&t, "k")
        .unwrap_err()
        .iter()
        .map(ToString::to_string)
        .collect();
    assert!(
        errs[0].contains(
            "k/kustomization.yaml:1: resources: accumulating resources: missing.yaml: no such file"
        ),
        "{errs:?}"
    );
    assert!(
        errs[1].contains("remote resources are not supported"),
        "{errs:?}"
    );
    assert!(
        errs[2].contains("../../out: leaves the repository"),
        "{errs:?}"
    );

    let cyc = tree(&[
        ("a/kustomization.yaml", "resources: [../b]\n"),
        ("b/kustomization.yaml", "resources: [../a]\n"),
    ]);
    assert!(build(&cyc, "a").unwrap_err()[0]
        .to_string()
        .contains("cycle"));

    let dup = tree(&[
        (
            "k/kustomization.yaml",
            "resources: [cm.yaml]\nconfigMapGenerator:\n- name: c\n  literals: [a=b]\n",
        ),
        (
            "k/cm.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n",
        ),
    ]);
    assert!(build(&dup, "k").unwrap_err()[0]
        .to_string()
        .contains("behavior must be merge or replace (it comes from k/cm.yaml)"));
    let bad_yaml = tree(&[("k/kustomization.yaml", "resources: [a\n")]);
    assert!(build(&bad_yaml, "k").unwrap_err()[0]
        .to_string()
        .starts_with("k/kustomization.yaml:"));
}

#[test]
fn images_match_by_name_whatever_the_tag() {
    assert_eq!(split_image("nginx:1.25"), ("nginx", ":1.25"));
    assert_eq!(
        split_image("localhost:5000/app"),
        ("localhost:5000/app", "")
    );
    assert_eq!(
        split_image("localhost:5000/app:v1"),
        ("localhost:5000/app", ":v1")
    );
    assert_eq!(split_image("app@sha256:abc"), ("app", "@sha256:abc"));
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": [{"image": "app:v1"}, {"image": "other"}], "initContainers": [{"image": "app"}]}});
    let mut res = vec![Res::new("p.yaml", 1, pod)];
    images(
        &mut res,
        &json!({"name": "app", "digest": "sha256:feed"}),
        &Config::defaults().images,
    )
    .unwrap();
    let spec = &res[0].object["spec"];
    assert_eq!(spec["containers"][0]["image"], "app@sha256:feed");
    assert_eq!(spec["containers"][1]["image"], "other");
    assert_eq!(spec["initContainers"][0]["image"], "app@sha256:feed");
}
