//! From a pod's container to what the runtime runs: the environment (service links, downward API, ConfigMaps and
//! Secrets), volumes and bind mounts, the pod's `resolv.conf` per its `dnsPolicy`, user and group from the security
//! contexts, resource limits and registry logins. Whatever cannot be built yet is a [`ConfigError`]: the container
//! waits in `CreateContainerConfigError` and the worker tries again.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use super::Worker;
use crate::api::core::{Container, PodStatus};
use crate::node::runtime::security::Security;
use crate::node::runtime::ContainerSpec;
use crate::node::{env, logs, volumes, ConfigError};

/// The `resolv.conf` of a pod that uses cluster DNS: the node's server, Kubernetes' search path and `ndots:5`.
pub fn resolv_conf(nameserver: Ipv4Addr, ns: &str) -> String {
    let domain = crate::api::CLUSTER_DOMAIN;
    format!("nameserver {nameserver}\nsearch {ns}.svc.{domain} svc.{domain} {domain}\noptions ndots:5\n")
}

impl Worker {
    /// The pod's resolv.conf per its dnsPolicy (ClusterFirst: the node's cluster DNS and the search path; None: its
    /// dnsConfig; Default: the machine's own, so nothing to mount).
    pub(super) fn resolv_conf(&self) -> Result<Option<PathBuf>, ConfigError> {
        let spec = self.spec();
        let policy = spec.dns_policy.as_deref().unwrap_or("ClusterFirst");
        let mut text = match (policy, self.shared.dns) {
            ("ClusterFirst" | "ClusterFirstWithHostNet", Some(ip)) => resolv_conf(ip, self.ns()),
            ("None", _) => String::new(),
            _ => return Ok(None),
        };
        if let Some(cfg) = &spec.dns_config {
            for n in cfg.nameservers.iter().flatten() {
                text.push_str(&format!("nameserver {n}\n"));
            }
            if let Some(searches) = cfg.searches.as_ref().filter(|s| !s.is_empty()) {
                text.push_str(&format!("search {}\n", searches.join(" ")));
            }
            for o in cfg.options.iter().flatten() {
                let name = o.name.as_deref().unwrap_or("");
                match &o.value {
                    Some(v) => text.push_str(&format!("options {name}:{v}\n")),
                    None => text.push_str(&format!("options {name}\n")),
                }
            }
        }
        if text.is_empty() {
            return Ok(None);
        }
        let path = self.dir.join("resolv.conf");
        std::fs::write(&path, text).map_err(ConfigError::io("writing resolv.conf"))?;
        Ok(Some(path))
    }

    /// The pod's host name: spec.hostname when set (Indexed Jobs, StatefulSets), else its name.
    fn hostname(&self) -> &str {
        self.spec()
            .hostname
            .as_deref()
            .filter(|h| !h.is_empty())
            .unwrap_or(self.name())
    }

    /// The container's environment: the agent's variables, service links, then the container's own.
    async fn environment(&self, c: &Container) -> Result<Vec<(String, String)>, ConfigError> {
        let mut base = vec![("HOSTNAME".to_string(), self.hostname().to_string())];
        let services = self.shared.services.list();
        if self.spec().enable_service_links != Some(false) {
            base.extend(env::service_links(self.ns(), &services));
        } else {
            // The API server's Service is always there (KUBERNETES_SERVICE_HOST/PORT).
            let only: Vec<_> = services
                .into_iter()
                .filter(|s| env::is_kubernetes(s))
                .collect();
            base.extend(env::service_links(self.ns(), &only));
        }
        // On the process runtime pods share the host's network: tell them the address that is theirs.
        if self.shared.runtime.name() == "process" {
            base.extend([
                ("POD_NAME".to_string(), self.name().to_string()),
                ("POD_NAMESPACE".to_string(), self.ns().to_string()),
                ("POD_IP".to_string(), self.state.ip.clone()),
                (
                    "NODE_NAME".to_string(),
                    self.shared.config.node_name.clone(),
                ),
            ]);
        }
        // The downward API sees the addresses this agent gave the pod, before its status says so.
        let mut pod = (*self.pod).clone();
        let status = pod.status.get_or_insert_with(PodStatus::default);
        status.pod_ip = Some(self.state.ip.clone());
        status.host_ip = Some(self.shared.node_ip.clone());
        env::resolve(&pod, c, self.shared.as_ref(), &base).await
    }

    /// The container's bind mounts: its volumes, and the pod's resolv.conf.
    async fn mounts(&self, c: &Container) -> Result<Vec<volumes::Mount>, ConfigError> {
        let prepared = volumes::prepare(&self.shared, &self.pod).await?;
        let mut mounts = volumes::mounts_for(c, &prepared, &self.pod)?;
        if let Some(conf) = self.resolv_conf()? {
            mounts.push(volumes::Mount {
                source: conf,
                target: PathBuf::from("/etc/resolv.conf"),
                read_only: true,
                optional: false,
            });
        }
        Ok(mounts)
    }

    /// Registry logins for runtimes that pull images; a secret that cannot be read is skipped, like the kubelet.
    async fn pull_secrets(&self) -> Vec<(String, crate::image::registry::Credentials)> {
        let mut out = Vec::new();
        if self.shared.runtime.name() == "process" {
            return out;
        }
        for r in self.spec().image_pull_secrets.iter().flatten() {
            let n = r.name.as_deref().unwrap_or("");
            match env::Lookup::secret(self.shared.as_ref(), self.ns(), n).await {
                Ok(Some(secret)) => {
                    out.extend(crate::image::registry::credentials_from_secret(&secret))
                }
                Ok(None) => {
                    tracing::warn!(pod = %self.key(), secret = n, "image pull secret not found")
                }
                Err(e) => tracing::warn!(pod = %self.key(), secret = n, "image pull secret: {e}"),
            }
        }
        out
    }

    /// The user or group a container runs as: its own securityContext wins over the pod's.
    fn run_as(
        &self,
        c: &Container,
        field: fn(&crate::api::core::SecurityContext) -> Option<i64>,
        pod_field: fn(&crate::api::core::PodSecurityContext) -> Option<i64>,
    ) -> Option<u32> {
        c.security_context
            .as_deref()
            .and_then(field)
            .or_else(|| self.spec().security_context.as_deref().and_then(pod_field))
            .and_then(|v| u32::try_from(v).ok())
    }

    /// The container's security settings: its securityContext over the pod's.
    fn security(&self, c: &Container) -> Security {
        let sc = c.security_context.as_ref();
        let caps = sc.and_then(|s| s.capabilities.as_ref());
        Security {
            run_as_user: self.run_as(c, |s| s.run_as_user, |s| s.run_as_user),
            run_as_group: self.run_as(c, |s| s.run_as_group, |s| s.run_as_group),
            supplemental_groups: self
                .spec()
                .security_context
                .as_ref()
                .and_then(|s| s.supplemental_groups.as_ref())
                .into_iter()
                .flatten()
                .filter_map(|g| u32::try_from(*g).ok())
                .collect(),
            read_only_root: sc.and_then(|s| s.read_only_root_filesystem) == Some(true),
            privileged: sc.and_then(|s| s.privileged) == Some(true),
            cap_add: caps.and_then(|c| c.add.clone()).unwrap_or_default(),
            cap_drop: caps.and_then(|c| c.drop.clone()).unwrap_or_default(),
            no_new_privileges: sc.and_then(|s| s.allow_privilege_escalation) == Some(false),
        }
    }

    /// Resolves the container's spec for the runtime (environment, command line, paths).
    pub(super) async fn build_spec(
        &self,
        c: &Container,
        restart: u32,
    ) -> Result<ContainerSpec, ConfigError> {
        let name = &c.name;
        let env = self.environment(c).await?;
        let mounts = self.mounts(c).await?;
        let resources = c.resources.as_ref();
        let millis = |list: Option<&crate::api::core::ResourceList>, key: &str| {
            list.and_then(|l| l.get(key))
                .and_then(|q| q.millis())
                .and_then(|m| u64::try_from(m).ok())
        };
        let limits = resources.and_then(|r| r.limits.as_ref());
        let requests = resources.and_then(|r| r.requests.as_ref());
        Ok(ContainerSpec {
            id: format!("{}/{name}/{restart}", self.uid),
            pull_secrets: self.pull_secrets().await,
            image: c.image.clone().unwrap_or_default(),
            pull_policy: c
                .image_pull_policy
                .clone()
                .unwrap_or_else(|| "IfNotPresent".into()),
            command: env::expanded(c.command.as_deref(), &env),
            args: env::expanded(c.args.as_deref(), &env),
            env,
            working_dir: c
                .working_dir
                .as_deref()
                .filter(|s| !s.is_empty())
                .map(PathBuf::from),
            log_path: logs::log_path(&self.dir, name, restart),
            state_dir: self.dir.join("run").join(name).join(restart.to_string()),
            mounts,
            netns: self.netns.clone(),
            hostname: self.hostname().to_string(),
            security: self.security(c),
            run_as_non_root: c
                .security_context
                .as_ref()
                .and_then(|s| s.run_as_non_root)
                .or_else(|| {
                    self.spec()
                        .security_context
                        .as_ref()
                        .and_then(|s| s.run_as_non_root)
                })
                .unwrap_or(false),
            pod_label: format!("{}_{}({})", self.name(), self.ns(), self.uid),
            memory_limit: millis(limits, "memory").map(|m| m / 1000),
            cpu_request: millis(requests, "cpu"),
            cpu_limit: millis(limits, "cpu"),
        })
    }
}
