//! The access reviews kubectl asks: SelfSubjectAccessReview (`kubectl auth can-i VERB RESOURCE`),
//! SelfSubjectRulesReview (`kubectl auth can-i --list`) and SubjectAccessReview (may user U do this?), answered by
//! the same authorizer that guards requests.

use serde_json::{json, Value};

use super::authn::Identity;
use super::error::{ApiError, Result};
use super::Server;
use crate::api::rbac::{Attributes, ResourceAttributes};

/// The attributes a review's spec asks about.
fn asked(spec: &Value) -> Result<Attributes> {
    if let Some(r) = spec.get("resourceAttributes").filter(|r| r.is_object()) {
        let s = |k: &str| r[k].as_str().unwrap_or("").to_string();
        return Ok(Attributes {
            verb: s("verb"),
            resource: Some(ResourceAttributes {
                group: s("group"),
                resource: s("resource"),
                subresource: s("subresource"),
                namespace: s("namespace"),
                name: s("name"),
            }),
            path: String::new(),
        });
    }
    if let Some(n) = spec.get("nonResourceAttributes").filter(|r| r.is_object()) {
        return Ok(Attributes {
            verb: n["verb"].as_str().unwrap_or("").to_string(),
            resource: None,
            path: n["path"].as_str().unwrap_or("").to_string(),
        });
    }
    Err(ApiError::bad_request(
        "spec: exactly one of resourceAttributes or nonResourceAttributes is required",
    ))
}

impl Server {
    async fn decide(&self, who: &Identity, body: &Value, kind: &str) -> Result<Value> {
        let a = asked(&body["spec"])?;
        let (allowed, reason) = match self.authorize(who, &a).await {
            Ok(()) => (true, "allowed by the cluster's authorizers".to_string()),
            Err(e) if e.code == 403 => (false, String::new()),
            Err(e) => return Err(e),
        };
        let mut out = json!({"apiVersion": "authorization.k8s.io/v1", "kind": kind,
            "metadata": {"creationTimestamp": null}, "spec": body["spec"].clone(),
            "status": {"allowed": allowed}});
        if !reason.is_empty() {
            out["status"]["reason"] = json!(reason);
        }
        Ok(out)
    }

    /// `POST .../selfsubjectaccessreviews`: may the caller do what the spec asks?
    pub async fn self_subject_access_review(&self, who: &Identity, body: &Value) -> Result<Value> {
        self.decide(who, body, "SelfSubjectAccessReview").await
    }

    /// `POST .../subjectaccessreviews`: may `spec.user` (in `spec.groups`) do what the spec asks?
    pub async fn subject_access_review(&self, body: &Value) -> Result<Value> {
        let spec = &body["spec"];
        let user = spec["user"].as_str().unwrap_or("").to_string();
        let groups: Vec<String> = spec["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|g| g.as_str().map(String::from))
            .collect();
        if user.is_empty() && groups.is_empty() {
            return Err(ApiError::bad_request(
                "spec: at least one of user or groups must be specified",
            ));
        }
        let who = match user.strip_prefix(super::authn::NODE_USER_PREFIX) {
            Some(node) if groups.iter().any(|g| g == super::authn::NODES_GROUP) => {
                Identity::Node(node.to_string())
            }
            _ => Identity::User { name: user, groups },
        };
        self.decide(&who, body, "SubjectAccessReview").await
    }

    /// `POST .../selfsubjectrulesreviews`: the caller's rules in `spec.namespace`.
    pub async fn self_subject_rules_review(&self, who: &Identity, body: &Value) -> Result<Value> {
        let ns = body["spec"]["namespace"].as_str().unwrap_or("");
        let (user, groups) = who.user_info();
        let mut resource_rules = Vec::new();
        let mut non_resource_rules = vec![json!({"verbs": ["get"], "nonResourceURLs": [
            "/api", "/api/*", "/apis", "/apis/*", "/healthz", "/livez", "/openapi", "/openapi/*", "/readyz",
            "/version", "/version/"]})];
        resource_rules.push(
            json!({"verbs": ["create"], "apiGroups": ["authorization.k8s.io"],
            "resources": ["selfsubjectaccessreviews", "selfsubjectrulesreviews"]}),
        );
        resource_rules.push(
            json!({"verbs": ["create"], "apiGroups": ["authentication.k8s.io"],
            "resources": ["selfsubjectreviews"]}),
        );
        for r in self.rules_for(&user, &groups, ns).await? {
            match &r.non_resource_urls {
                Some(urls) if !urls.is_empty() => {
                    non_resource_rules.push(json!({"verbs": r.verbs, "nonResourceURLs": urls}))
                }
                _ => {
                    let mut v = json!({"verbs": r.verbs,
                        "apiGroups": r.api_groups.unwrap_or_default(),
                        "resources": r.resources.unwrap_or_default()});
                    if let Some(names) = r.resource_names.filter(|n| !n.is_empty()) {
                        v["resourceNames"] = json!(names);
                    }
                    resource_rules.push(v);
                }
            }
        }
        if groups.iter().any(|g| g == "system:masters") {
            resource_rules.push(json!({"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}));
            non_resource_rules.push(json!({"verbs": ["*"], "nonResourceURLs": ["*"]}));
        }
        // A node's permissions come from the node authorizer, which has no rules to list.
        let incomplete = matches!(who, Identity::Node(_));
        Ok(
            json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectRulesReview",
            "metadata": {"creationTimestamp": null}, "spec": body["spec"].clone(),
            "status": {"resourceRules": resource_rules, "nonResourceRules": non_resource_rules,
                "incomplete": incomplete}}),
        )
    }
}
