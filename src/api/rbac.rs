//! rbac.authorization.k8s.io/v1: Role and ClusterRole (rules: verbs on resources of API groups, optionally by name,
//! or on non-resource URLs; a ClusterRole may aggregate others by label), RoleBinding and ClusterRoleBinding
//! (subjects: users, groups, ServiceAccounts). The rule semantics, one place for the authorizer and the reviews.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_with::skip_serializing_none;

use super::core::{kind, object};
use super::meta::{LabelSelector, ObjectMeta};

kind!(Role { pub rules: Option<Vec<PolicyRule>>, });
kind!(ClusterRole {
    pub rules: Option<Vec<PolicyRule>>,
    pub aggregation_rule: Option<AggregationRule>,
});
kind!(RoleBinding { pub subjects: Option<Vec<Subject>>, pub role_ref: RoleRef, });
kind!(ClusterRoleBinding { pub subjects: Option<Vec<Subject>>, pub role_ref: RoleRef, });

object!(PolicyRule {
    pub verbs: Vec<String>,
    pub api_groups: Option<Vec<String>>,
    pub resources: Option<Vec<String>>,
    pub resource_names: Option<Vec<String>>,
    #[serde(rename = "nonResourceURLs")]
    pub non_resource_urls: Option<Vec<String>>,
});
object!(AggregationRule { pub cluster_role_selectors: Option<Vec<LabelSelector>>, });
object!(Subject {
    pub kind: String,
    pub name: String,
    pub namespace: Option<String>,
    pub api_group: Option<String>,
});
object!(RoleRef { pub api_group: String, pub kind: String, pub name: String, });

/// What a request does, as the authorizer sees it (Kubernetes' request attributes).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Attributes {
    pub verb: String,
    /// A resource request: group, resource, subresource, namespace ("" cluster-wide), name ("" for collections).
    pub resource: Option<ResourceAttributes>,
    /// A non-resource request: its path.
    pub path: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ResourceAttributes {
    pub group: String,
    pub resource: String,
    pub subresource: String,
    pub namespace: String,
    pub name: String,
}

fn has(list: &Option<Vec<String>>, want: &str) -> bool {
    list.iter().flatten().any(|v| v == "*" || v == want)
}

impl PolicyRule {
    /// Whether the rule allows `a`.
    pub fn allows(&self, a: &Attributes) -> bool {
        if !self.verbs.iter().any(|v| v == "*" || *v == a.verb) {
            return false;
        }
        match &a.resource {
            Some(r) => {
                // `res` names the resource, "resource/subresource", or a wildcard for either part (no allocation:
                // this runs for every rule on every request).
                let sub = r.subresource.as_str();
                let resource_ok = self.resources.iter().flatten().any(|res| {
                    if res == "*" {
                        return true;
                    }
                    match res.split_once('/') {
                        None => sub.is_empty() && *res == r.resource,
                        Some((base, rest)) => {
                            !sub.is_empty()
                                && ((base == r.resource && (rest == sub || rest == "*"))
                                    || (base == "*" && rest == sub))
                        }
                    }
                });
                let names_ok = match &self.resource_names {
                    None => true,
                    Some(n) if n.is_empty() => true,
                    Some(n) => !r.name.is_empty() && n.contains(&r.name),
                };
                has(&self.api_groups, &r.group) && resource_ok && names_ok
            }
            None => self.non_resource_urls.iter().flatten().any(|u| {
                u == "*"
                    || *u == a.path
                    || u.strip_suffix('*')
                        .is_some_and(|prefix| a.path.starts_with(prefix))
            }),
        }
    }

    /// Whether this rule asks for nothing `held` does not allow (escalation prevention): every combination of its
    /// verbs, groups, resources and names is allowed by some held rule.
    pub fn covered_by(&self, held: &[PolicyRule]) -> bool {
        let one = |v: &[String]| -> Vec<String> {
            if v.is_empty() {
                vec![String::new()]
            } else {
                v.to_vec()
            }
        };
        let verbs = one(&self.verbs);
        if let Some(urls) = &self.non_resource_urls {
            if !urls.is_empty() {
                return verbs.iter().all(|verb| {
                    urls.iter().all(|u| {
                        let a = Attributes {
                            verb: verb.clone(),
                            resource: None,
                            path: u.clone(),
                        };
                        held.iter().any(|h| h.allows_literally(&a))
                    })
                });
            }
        }
        let groups = one(self.api_groups.as_deref().unwrap_or(&[]));
        let resources = one(self.resources.as_deref().unwrap_or(&[]));
        let names = one(self.resource_names.as_deref().unwrap_or(&[]));
        verbs.iter().all(|verb| {
            groups.iter().all(|g| {
                resources.iter().all(|res| {
                    let (resource, sub) = res.split_once('/').unwrap_or((res.as_str(), ""));
                    names.iter().all(|n| {
                        let a = Attributes {
                            verb: verb.clone(),
                            resource: Some(ResourceAttributes {
                                group: g.clone(),
                                resource: resource.to_string(),
                                subresource: sub.to_string(),
                                namespace: String::new(),
                                name: n.clone(),
                            }),
                            path: String::new(),
                        };
                        held.iter().any(|h| h.allows_literally(&a))
                    })
                })
            })
        })
    }

    /// [`allows`](Self::allows) where a `*` asked for is only covered by a `*` held.
    fn allows_literally(&self, a: &Attributes) -> bool {
        let star_ok = |held: &[String], asked: &str| asked != "*" || held.iter().any(|h| h == "*");
        if !star_ok(&self.verbs, &a.verb) {
            return false;
        }
        if let Some(r) = &a.resource {
            if !star_ok(self.api_groups.as_deref().unwrap_or(&[]), &r.group)
                || !star_ok(self.resources.as_deref().unwrap_or(&[]), &r.resource)
            {
                return false;
            }
            if r.name.is_empty() && self.resource_names.as_ref().is_some_and(|n| !n.is_empty()) {
                return false;
            }
        }
        self.allows(a)
    }
}

impl Subject {
    /// Whether the subject names `user` or one of `groups` (ServiceAccounts by their user name); `binding_ns` is
    /// the namespace of a RoleBinding (a ServiceAccount subject without a namespace is in it).
    pub fn matches(&self, user: &str, groups: &[String], binding_ns: &str) -> bool {
        match self.kind.as_str() {
            "User" => self.name == user,
            "Group" => groups.contains(&self.name),
            "ServiceAccount" => {
                let ns = self
                    .namespace
                    .as_deref()
                    .filter(|n| !n.is_empty())
                    .unwrap_or(binding_ns);
                user.strip_prefix("system:serviceaccount:")
                    .and_then(|rest| rest.split_once(':'))
                    == Some((ns, self.name.as_str()))
            }
            _ => false,
        }
    }
}

/// The labels a ClusterRole must have to be aggregated by `selectors`.
pub fn selected(selectors: &[LabelSelector], labels: &BTreeMap<String, String>) -> bool {
    selectors.iter().any(|s| {
        crate::api::selector::Selector::from_label_selector(s).is_ok_and(|sel| sel.matches(labels))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(verbs: &[&str], groups: &[&str], resources: &[&str]) -> PolicyRule {
        let v = |x: &[&str]| Some(x.iter().map(|s| s.to_string()).collect());
        PolicyRule {
            verbs: verbs.iter().map(|s| s.to_string()).collect(),
            api_groups: v(groups),
            resources: v(resources),
            ..Default::default()
        }
    }

    fn res(verb: &str, group: &str, resource: &str, sub: &str, name: &str) -> Attributes {
        Attributes {
            verb: verb.into(),
            resource: Some(ResourceAttributes {
                group: group.into(),
                resource: resource.into(),
                subresource: sub.into(),
                namespace: "a".into(),
                name: name.into(),
            }),
            path: String::new(),
        }
    }

    #[test]
    fn rules_match_verbs_groups_resources_subresources_and_names() {
        let r = rule(&["get", "list"], &["apps"], &["deployments"]);
        assert!(r.allows(&res("get", "apps", "deployments", "", "web")));
        assert!(!r.allows(&res("delete", "apps", "deployments", "", "web")));
        assert!(!r.allows(&res("get", "", "deployments", "", "web")));
        assert!(
            !r.allows(&res("get", "apps", "deployments", "scale", "web")),
            "subresources are named"
        );
        let scale = rule(&["update"], &["apps"], &["deployments/scale"]);
        assert!(scale.allows(&res("update", "apps", "deployments", "scale", "web")));
        assert!(!scale.allows(&res("update", "apps", "deployments", "", "web")));
        let all = rule(&["*"], &["*"], &["*"]);
        assert!(all.allows(&res("deletecollection", "x.io", "things", "status", "")));
        let mut named = rule(&["get"], &[""], &["configmaps"]);
        named.resource_names = Some(vec!["settings".into()]);
        assert!(named.allows(&res("get", "", "configmaps", "", "settings")));
        assert!(!named.allows(&res("get", "", "configmaps", "", "other")));
        assert!(!named.allows(&res("list", "", "configmaps", "", "")));
        let urls = PolicyRule {
            verbs: vec!["get".into()],
            non_resource_urls: Some(vec!["/healthz".into(), "/apis/*".into()]),
            ..Default::default()
        };
        let path = |p: &str| Attributes {
            verb: "get".into(),
            resource: None,
            path: p.into(),
        };
        assert!(urls.allows(&path("/healthz")));
        assert!(urls.allows(&path("/apis/apps/v1")));
        assert!(!urls.allows(&path("/metrics")));
    }

    #[test]
    fn escalation_is_judged_rule_by_rule() {
        let held = vec![rule(&["get", "list"], &[""], &["pods", "configmaps"])];
        assert!(rule(&["get"], &[""], &["pods"]).covered_by(&held));
        assert!(!rule(&["delete"], &[""], &["pods"]).covered_by(&held));
        assert!(!rule(&["get"], &[""], &["secrets"]).covered_by(&held));
        assert!(
            !rule(&["*"], &[""], &["pods"]).covered_by(&held),
            "a star needs a star"
        );
        assert!(rule(&["*"], &["*"], &["*"]).covered_by(&[rule(&["*"], &["*"], &["*"])]));
    }

    #[test]
    fn subjects_name_users_groups_and_service_accounts() {
        let s = |kind: &str, name: &str, ns: Option<&str>| Subject {
            kind: kind.into(),
            name: name.into(),
            namespace: ns.map(String::from),
            api_group: None,
        };
        let groups = vec!["team-a".to_string()];
        assert!(s("User", "alice", None).matches("alice", &groups, "a"));
        assert!(s("Group", "team-a", None).matches("bob", &groups, "a"));
        assert!(!s("Group", "team-b", None).matches("bob", &groups, "a"));
        assert!(s("ServiceAccount", "ci", Some("a")).matches(
            "system:serviceaccount:a:ci",
            &[],
            "b"
        ));
        assert!(s("ServiceAccount", "ci", None).matches("system:serviceaccount:b:ci", &[], "b"));
        assert!(!s("ServiceAccount", "ci", None).matches("system:serviceaccount:a:ci", &[], "b"));
    }
}
