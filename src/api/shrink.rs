//! Cached objects at their size: lists decoded straight from JSON text grow as their items arrive, so a one-container
//! pod holds room for four containers (a `Container` is ~600 bytes) - about 5 KB of slack a pod, more than its own
//! struct tree. [`Shrink`] trims a pod's lists to their length after decoding; other kinds are few enough to clone.

use super::core::{Container, Pod, PodSpec, PodStatus, Volume};

/// Gives back the room a decoded value's lists kept to grow.
pub trait Shrink {
    fn shrink(&mut self);
}

/// Values whose lists are small enough (or rare enough) to leave as decoded.
macro_rules! as_is {
    ($($t:ty),*) => { $(impl Shrink for $t { fn shrink(&mut self) {} })* };
}
as_is!(
    String,
    super::core::EnvVar,
    super::core::EnvFromSource,
    super::core::ContainerPort,
    super::core::VolumeMount,
    super::core::Toleration,
    super::core::IpEntry,
    super::core::ContainerStatus,
    super::core::HostAlias,
    super::core::LocalObjectReference,
    super::core::VolumeProjection,
    super::meta::Condition,
    super::meta::OwnerReference
);

impl<T: Shrink> Shrink for Vec<T> {
    fn shrink(&mut self) {
        self.shrink_to_fit();
        self.iter_mut().for_each(Shrink::shrink);
    }
}

impl<T: Shrink> Shrink for Option<T> {
    fn shrink(&mut self) {
        if let Some(v) = self {
            v.shrink();
        }
    }
}

impl Shrink for Pod {
    fn shrink(&mut self) {
        self.metadata.owner_references.shrink();
        self.metadata.finalizers.shrink();
        self.spec.shrink();
        self.status.shrink();
    }
}

impl Shrink for PodSpec {
    fn shrink(&mut self) {
        self.containers.shrink();
        self.init_containers.shrink();
        self.volumes.shrink();
        self.tolerations.shrink();
        self.image_pull_secrets.shrink();
        self.host_aliases.shrink();
    }
}

impl Shrink for Container {
    fn shrink(&mut self) {
        self.command.shrink();
        self.args.shrink();
        self.env.shrink();
        self.env_from.shrink();
        self.ports.shrink();
        self.volume_mounts.shrink();
    }
}

impl Shrink for Volume {
    fn shrink(&mut self) {
        if let Some(p) = self.projected.as_mut() {
            p.sources.shrink();
        }
    }
}

impl Shrink for PodStatus {
    fn shrink(&mut self) {
        self.conditions.shrink();
        self.host_ips.shrink();
        self.pod_ips.shrink();
        self.init_container_statuses.shrink();
        self.container_statuses.shrink();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_decoded_pod_keeps_no_room_to_grow_in_its_lists() {
        let text = serde_json::json!({"metadata": {"name": "p"},
            "spec": {"containers": [{"name": "c", "image": "i", "env": [{"name": "A", "value": "1"}],
                "volumeMounts": [{"name": "v", "mountPath": "/v"}]}],
                "volumes": [{"name": "v", "projected": {"sources": [{}, {}, {}]}}],
                "tolerations": [{"key": "a"}, {"key": "b"}]},
            "status": {"conditions": [{"type": "Ready", "status": "True"}],
                "containerStatuses": [{"name": "c", "ready": true, "restartCount": 0, "image": "i", "imageID": ""}]}})
        .to_string();
        let mut pod: Pod = serde_json::from_str(&text).unwrap();
        let before = pod.clone();
        assert!(
            pod.spec.as_ref().unwrap().containers.capacity() > 1,
            "decoding leaves room"
        );
        pod.shrink();
        assert_eq!(pod, before);
        let spec = pod.spec.as_ref().unwrap();
        assert_eq!(spec.containers.capacity(), 1);
        assert_eq!(spec.containers[0].env.as_ref().unwrap().capacity(), 1);
        assert_eq!(spec.volumes.as_ref().unwrap().capacity(), 1);
        assert_eq!(spec.tolerations.as_ref().unwrap().capacity(), 2);
        let sources = spec.volumes.as_ref().unwrap()[0]
            .projected
            .as_ref()
            .unwrap()
            .sources
            .as_ref();
        assert_eq!(sources.unwrap().capacity(), 3);
        let status = pod.status.as_ref().unwrap();
        assert_eq!(status.conditions.as_ref().unwrap().capacity(), 1);
        assert_eq!(status.container_statuses.as_ref().unwrap().capacity(), 1);
    }
}
