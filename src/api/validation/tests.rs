use super::*;
use crate::api::registry::lookup;
use serde_json::json;

#[test]
fn structural_pass_names_wrong_types_and_unknown_fields() {
    let k = lookup("deployment").unwrap();
    let obj = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x"},
        "spec": {"replicas": "three", "selector": {"matchLabels": {"a": "b"}}, "bogus": 1,
          "template": {"spec": {"containers": [{"name": "c", "image": "i", "imagePullPolice": "x",
             "lifecycle": {"anything": true}, "securityContext": {"runAsUser": "root"},
             "resources": {"limits": {"cpu": "lots"}}}]}}}});
    let s = structural(k, &obj);
    assert!(
        s.errors
            .iter()
            .any(|e| e.starts_with("spec.replicas: expected integer")),
        "{:?}",
        s.errors
    );
    assert!(
        s.errors
            .iter()
            .any(|e| e.starts_with("spec.template.spec.containers[0].resources.limits.cpu")),
        "{:?}",
        s.errors
    );
    assert!(s.unknown.contains(&"spec.bogus".to_string()));
    assert!(s
        .unknown
        .contains(&"spec.template.spec.containers[0].imagePullPolice".to_string()));
    assert_eq!(
        s.opaque,
        vec!["spec.template.spec.containers[0].lifecycle".to_string()]
    );
    assert!(
        s.errors.iter().any(|e| e.starts_with(
            "spec.template.spec.containers[0].securityContext.runAsUser: expected integer"
        )),
        "{:?}",
        s.errors
    );
}

#[test]
fn semantic_pass_checks_names_selectors_and_images() {
    let k = lookup("deployment").unwrap();
    let obj = json!({"metadata": {"name": "Bad_Name"},
        "spec": {"selector": {"matchLabels": {"app": "a"}},
          "template": {"metadata": {"labels": {"app": "b"}}, "spec": {"containers": [{"name": "c"}]}}}});
    let errs = semantic(k, &obj);
    let fields: Vec<&str> = errs.iter().map(|e| e.field.as_str()).collect();
    assert!(fields.contains(&"metadata.name"), "{fields:?}");
    assert!(
        fields.contains(&"spec.template.metadata.labels"),
        "{fields:?}"
    );
    assert!(
        fields.contains(&"spec.template.spec.containers[0].image"),
        "{fields:?}"
    );
}

#[test]
fn service_needs_named_ports_when_several() {
    let k = lookup("svc").unwrap();
    let obj =
        json!({"metadata": {"name": "s"}, "spec": {"ports": [{"port": 80}, {"port": 70000}]}});
    let errs = semantic(k, &obj);
    assert!(errs.iter().any(|e| e.field == "spec.ports[1].port"));
    assert!(errs
        .iter()
        .any(|e| e.field == "spec.ports[0].name" && e.reason == Reason::Required));
}

#[test]
fn cron_schedules() {
    assert!(check_cron("*/5 * * * *").is_ok());
    assert!(check_cron("0 0 1 jan-mar mon").is_ok());
    assert!(check_cron("@hourly").is_ok());
    assert!(check_cron("61 * * * *").is_err());
    assert!(check_cron("* * *").is_err());
}

#[test]
fn name_rules() {
    assert!(dns1123_subdomain("a.b-c").is_ok());
    assert!(dns1123_subdomain("A").is_err());
    assert!(dns1035_label("1abc").is_err());
    assert!(dns1123_label("1abc").is_ok());
}
