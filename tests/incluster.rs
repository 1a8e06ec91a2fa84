//! The API server as pods see it: the `kubernetes` Service in `default` (the first address of the service CIDR,
//! port 443) with endpoints to the API server, `KUBERNETES_SERVICE_HOST`/`_PORT` in every container (also with
//! `enableServiceLinks: false`), a `default` ServiceAccount and the `kube-root-ca.crt` ConfigMap in every namespace;
//! as root, a pod connects to the API server through the ClusterIP.

mod common;

use std::time::Duration;

use common::{ok, within, Server};

#[test]
fn pods_find_the_api_server_through_the_kubernetes_service() {
    let Some(k) = common::kubectl() else { return };
    let s = Server::up(&[]);
    let svc = within(Duration::from_secs(30), "the kubernetes Service", || {
        let (code, v) = s.call(
            "GET",
            concat!("/", "api/v1/namespaces/default/services/kubernetes"),
            "",
            "",
        );
        (code == 200).then_some(v)
    });
    let ip = svc["spec"]["clusterIP"].as_str().unwrap().to_string();
    assert!(
        ip.ends_with(".1"),
        "the first address of the service CIDR: {ip}"
    );
    assert_eq!(svc["spec"]["ports"][0]["port"], 443);
    assert!(svc["spec"]["selector"].is_null());
    let port: u16 = s.url.rsplit(':').next().unwrap().parse().unwrap();
    let (_, eps) = s.call(
        "GET",
        concat!("/", "api/v1/namespaces/default/endpoints/kubernetes"),
        "",
        "",
    );
    assert_eq!(eps["subsets"][0]["ports"][0]["port"], port, "{eps}");
    let (code, _) = s.call(
        "GET",
        concat!(
            "/",
            "apis/discovery.k8s.io/v1/namespaces/default/endpointslices/kubernetes"
        ),
        "",
        "",
    );
    assert_eq!(code, 200);

    // Every namespace gets its default ServiceAccount and the cluster CA.
    ok(&s.kubectl(&k, &["create", "namespace", "team"]));
    within(
        Duration::from_secs(30),
        "the default ServiceAccount and kube-root-ca.crt",
        || {
            let (a, _) = s.call(
                "GET",
                concat!("/", "api/v1/namespaces/team/serviceaccounts/default"),
                "",
                "",
            );
            let (b, cm) = s.call(
                "GET",
                concat!("/", "api/v1/namespaces/team/configmaps/kube-root-ca.crt"),
                "",
                "",
            );
            (a == 200 && b == 200 && cm["data"]["ca.crt"].as_str() == Some(s.ca().as_str()))
                .then_some(())
        },
    );

    // Containers are told where it is, whatever their service links; as root they reach it through the ClusterIP.
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let connect = if root {
        "(exec 3<>/dev/tcp/$KUBERNETES_SERVICE_HOST/$KUBERNETES_SERVICE_PORT && echo reached) ; "
            .to_string()
    } else {
        String::new()
    };
    s.kubectl_apply(
        &k,
        &format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: where\n  namespace: team\nspec:\n  enableServiceLinks: false\n  restartPolicy: Never\n  containers:\n  - name: c\n    image: none\n    command: [bash, -c, {:?}]\n",
            format!("{connect}echo host=$KUBERNETES_SERVICE_HOST port=$KUBERNETES_SERVICE_PORT")
        ),
    );
    let log = within(Duration::from_secs(60), "the pod's output", || {
        let out = s.kubectl(&k, &["-n", "team", "logs", "where"]);
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        text.contains("host=").then_some(text)
    });
    assert!(log.contains(&format!("host={ip} port=443")), "{log}");
    if root {
        assert!(log.contains("reached"), "{log}");
    }
}
