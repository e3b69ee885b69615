//! The Kubernetes backend's warm pool: pods created from the file's `kubernetes.pod` and running
//! before any login. A login whose effective pod settings are the file's takes one: its labels
//! and annotations are patched to name the connection (and carry the metadata the settings
//! expose), the login's files are placed, and from then on it is that connection's pod.
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use anyhow::Context;
use kube::api::{Patch, PatchParams};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::exec::Target;
use super::{files, pod, KubernetesBackend, PodWorkload};
use crate::backend::pool::{slot_id, uses_any, BoxFuture, MissReason, PoolBackend};
use crate::backend::{WorkloadOwner, LABEL_CONNECTION};
use crate::config::{is_label_value, KubernetesPod};

/// A running pod nobody holds yet.
pub struct PooledPod {
    namespace: String,
    name: String,
}

/// Starts members from the file's pod settings.
pub struct PodPoolMembers {
    /// A backend without a pool of its own (members are started cold).
    backend: KubernetesBackend,
    config: KubernetesPod,
}

impl PodPoolMembers {
    pub fn new(backend: KubernetesBackend, config: KubernetesPod) -> Self {
        Self { backend, config }
    }
}

impl PoolBackend for PodPoolMembers {
    type Member = PooledPod;

    fn kind(&self) -> &'static str {
        "kubernetes"
    }

    fn start(&self, cancel: CancellationToken) -> BoxFuture<anyhow::Result<PooledPod>> {
        let backend = self.backend.clone();
        let config = self.config.clone();
        Box::pin(async move {
            let owner = WorkloadOwner {
                connection_id: slot_id(),
                username: String::new(),
                remote_address: String::new(),
                session: None,
                files: Vec::new(),
                metadata: Vec::new(),
            };
            backend.create_workload(&config, &owner, &cancel).await?;
            Ok(PooledPod {
                namespace: config.metadata.namespace.clone(),
                name: pod::pod_name(&config, &owner),
            })
        })
    }

    fn discard(&self, member: PooledPod) -> BoxFuture<()> {
        let backend = self.backend.clone();
        Box::pin(async move {
            backend.delete(&member.namespace, &member.name, "").await;
        })
    }
}

/// Whether a pod started before the login can serve these settings: a container's environment
/// is fixed when the pod is created.
pub fn poolable(key: &serde_json::Value) -> Result<(), MissReason> {
    if uses_any(key, &["exposeAuthMetadataAsEnv"]) {
        Err(MissReason::NotPoolable)
    } else {
        Ok(())
    }
}

/// The labels and annotations that make a pooled pod the connection's, as a merge patch.
fn ownership_patch(config: &KubernetesPod, owner: &WorkloadOwner) -> serde_json::Value {
    let metadata = |key: &str| {
        owner
            .metadata
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
    };
    let mut labels = serde_json::Map::new();
    labels.insert(LABEL_CONNECTION.into(), owner.connection_id.clone().into());
    for (key, label) in &config.expose_auth_metadata_as_labels {
        match metadata(key) {
            Some(value) if is_label_value(&value) => {
                labels.insert(label.clone(), value.into());
            }
            Some(_) => tracing::warn!(connection_id = %owner.connection_id, metadata = %key,
                "metadata value is not a valid label value; label left out"),
            None => {}
        }
    }
    let mut annotations = serde_json::Map::new();
    annotations.insert(
        pod::ANNOTATION_USERNAME.into(),
        owner.username.clone().into(),
    );
    annotations.insert(
        pod::ANNOTATION_REMOTE.into(),
        owner.remote_address.clone().into(),
    );
    for (key, annotation) in &config.expose_auth_metadata_as_annotations {
        if let Some(value) = metadata(key) {
            annotations.insert(annotation.clone(), value.into());
        }
    }
    json!({"metadata": {"labels": labels, "annotations": annotations}})
}

impl KubernetesBackend {
    /// Makes `member` the pod of `owner`. On failure the pod is deleted.
    pub(super) async fn adopt(
        &self,
        member: PooledPod,
        config: &KubernetesPod,
        owner: &WorkloadOwner,
    ) -> anyhow::Result<Arc<dyn crate::backend::Workload>> {
        let started = std::time::Instant::now();
        let workload = Arc::new(PodWorkload {
            backend: self.clone(),
            target: Target {
                client: self.client.clone(),
                protocol: self.exec_protocol.clone(),
                connection_id: owner.connection_id.clone(),
                namespace: member.namespace.clone(),
                pod: member.name.clone(),
                container: pod::console_container(config),
            },
            id: format!("{}/{}", member.namespace, member.name),
            commands: config.commands(),
            helper: Default::default(),
            gone: AtomicBool::new(false),
        });
        let prepare = async {
            self.throttle.acquire().await;
            self.api(&member.namespace)
                .patch(
                    &member.name,
                    &PatchParams::default(),
                    &Patch::Merge(ownership_patch(config, owner)),
                )
                .await
                .context("cannot label the pooled pod")?;
            files::place(&workload.target, &owner.files).await
        };
        let prepared = tokio::time::timeout(self.timeouts.pod_start, prepare)
            .await
            .unwrap_or_else(|_| Err(anyhow::anyhow!("preparing the pooled pod timed out")));
        if let Err(e) = prepared {
            crate::backend::Workload::remove(workload.as_ref()).await;
            return Err(e);
        }
        tracing::info!(
            connection_id = %owner.connection_id,
            pod = %member.name,
            namespace = %member.namespace,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "pod taken from the warm pool"
        );
        Ok(workload)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_patch_names_the_connection_and_exposes_metadata() {
        let mut config = KubernetesPod::default();
        config
            .expose_auth_metadata_as_labels
            .insert("team".into(), "example.com/team".into());
        config
            .expose_auth_metadata_as_annotations
            .insert("email".into(), "example.com/email".into());
        let owner = WorkloadOwner {
            connection_id: "0123456789abcdef0123456789abcdef".into(),
            username: "alice".into(),
            remote_address: "192.0.2.1:50000".into(),
            session: None,
            files: Vec::new(),
            metadata: vec![
                ("team".into(), "blue".into()),
                ("email".into(), "alice@example.com".into()),
            ],
        };
        let patch = ownership_patch(&config, &owner);
        let labels = &patch["metadata"]["labels"];
        assert_eq!(labels[LABEL_CONNECTION], owner.connection_id.as_str());
        assert_eq!(labels["example.com/team"], "blue");
        let annotations = &patch["metadata"]["annotations"];
        assert_eq!(annotations[pod::ANNOTATION_USERNAME], "alice");
        assert_eq!(annotations["example.com/email"], "alice@example.com");
    }

    #[test]
    fn exposed_environment_needs_a_fresh_pod() {
        let mut config = KubernetesPod::default();
        let key = crate::backend::pool::settings_key(&config);
        assert_eq!(poolable(&key), Ok(()));
        config
            .expose_auth_metadata_as_env
            .insert("team".into(), "TEAM".into());
        let key = crate::backend::pool::settings_key(&config);
        assert_eq!(poolable(&key), Err(MissReason::NotPoolable));
    }
}
