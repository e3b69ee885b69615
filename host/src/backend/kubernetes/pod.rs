//! The Pod of one workload: the operator's `kubernetes.pod` spec, the gateway's name, labels
//! and idle command, and secure defaults wherever the spec leaves a field unset.
use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Capabilities, EnvVar, Pod, PodSecurityContext, SeccompProfile, SecurityContext,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::backend::{WorkloadOwner, LABEL_CONNECTION, LABEL_INSTANCE, LABEL_MANAGED};
use crate::config::{is_label_value, KubernetesPod};

/// Annotations (label values cannot hold every user name or address).
pub const ANNOTATION_USERNAME: &str = "containerssh.username";
pub const ANNOTATION_REMOTE: &str = "containerssh.remote-address";

/// The pod name of a workload: `<generateName><connection id>[-<session>]`.
pub fn pod_name(config: &KubernetesPod, owner: &WorkloadOwner) -> String {
    let base = format!("{}{}", config.metadata.generate_name, owner.connection_id);
    match owner.session {
        Some(s) => format!("{base}-{s}"),
        None => base,
    }
}

/// The name of the container programs run in.
pub fn console_container(config: &KubernetesPod) -> String {
    config
        .spec
        .containers
        .get(config.console_container_number)
        .map(|c| c.name.clone())
        .unwrap_or_default()
}

/// A label value made of the instance id (`host_listen` may hold `:` and `/`). An id too long
/// for a label keeps its start and gets a hash of the whole, so two long ids that share a
/// prefix stay apart.
pub fn instance_label(instance: &str) -> String {
    let cleaned: String = instance
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '-'
            }
        })
        .collect();
    let cleaned = cleaned.trim_matches(|c: char| !c.is_ascii_alphanumeric());
    if cleaned.len() <= 63 {
        return cleaned.to_string();
    }
    use sha2::Digest;
    let hash = hex::encode(sha2::Sha256::digest(instance.as_bytes()));
    let start = cleaned[..50].trim_end_matches(|c: char| !c.is_ascii_alphanumeric());
    format!("{start}-{}", &hash[..12])
}

pub fn build(config: &KubernetesPod, owner: &WorkloadOwner, instance_label: &str) -> Pod {
    let metadata_value = |key: &str| {
        owner
            .metadata
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
    };
    let mut labels: BTreeMap<String, String> = config
        .metadata
        .labels
        .iter()
        .filter(|(k, _)| !k.starts_with("containerssh."))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    for (key, label) in &config.expose_auth_metadata_as_labels {
        match metadata_value(key) {
            Some(value) if is_label_value(&value) => {
                labels.insert(label.clone(), value);
            }
            Some(_) => tracing::warn!(connection_id = %owner.connection_id, metadata = %key,
                "metadata value is not a valid label value; label left out"),
            None => {}
        }
    }
    labels.insert(LABEL_MANAGED.into(), "true".into());
    labels.insert(LABEL_INSTANCE.into(), instance_label.into());
    labels.insert(LABEL_CONNECTION.into(), owner.connection_id.clone());

    let mut annotations = config.metadata.annotations.clone();
    for (key, annotation) in &config.expose_auth_metadata_as_annotations {
        if let Some(value) = metadata_value(key) {
            annotations.insert(annotation.clone(), value);
        }
    }
    annotations.insert(ANNOTATION_USERNAME.into(), owner.username.clone());
    annotations.insert(ANNOTATION_REMOTE.into(), owner.remote_address.clone());

    let mut spec = config.spec.clone();
    spec.restart_policy = Some("Never".into());
    spec.automount_service_account_token.get_or_insert(false);
    spec.enable_service_links.get_or_insert(false);
    let pod_context = spec
        .security_context
        .get_or_insert_with(PodSecurityContext::default);
    pod_context
        .seccomp_profile
        .get_or_insert_with(|| SeccompProfile {
            type_: "RuntimeDefault".into(),
            ..Default::default()
        });
    let pod_root = pod_context.run_as_user == Some(0);
    let pod_non_root_set = pod_context.run_as_non_root.is_some();

    let exposed_env: Vec<EnvVar> = config
        .expose_auth_metadata_as_env
        .iter()
        .filter_map(|(key, name)| {
            metadata_value(key).map(|value| EnvVar {
                name: name.clone(),
                value: Some(value),
                ..Default::default()
            })
        })
        .collect();
    for (i, container) in spec.containers.iter_mut().enumerate() {
        harden(container, pod_root, pod_non_root_set);
        if i == config.console_container_number {
            container.command = Some(config.idle_command.clone());
            container.args = None;
            container.stdin = Some(false);
            container.tty = Some(false);
            container
                .env
                .get_or_insert_with(Vec::new)
                .extend(exposed_env.iter().cloned());
        }
    }
    for container in spec.init_containers.iter_mut().flatten() {
        harden(container, pod_root, pod_non_root_set);
    }

    Pod {
        metadata: ObjectMeta {
            name: Some(pod_name(config, owner)),
            namespace: Some(config.metadata.namespace.clone()),
            labels: Some(labels),
            annotations: Some(annotations),
            ..Default::default()
        },
        spec: Some(spec),
        status: None,
    }
}

/// Secure defaults for one container: no privilege escalation, no capabilities, not root
/// (unless the spec asks for uid 0 or says anything about runAsNonRoot itself).
fn harden(
    container: &mut k8s_openapi::api::core::v1::Container,
    pod_root: bool,
    pod_non_root_set: bool,
) {
    let context = container
        .security_context
        .get_or_insert_with(SecurityContext::default);
    context.allow_privilege_escalation.get_or_insert(false);
    context.capabilities.get_or_insert_with(|| Capabilities {
        drop: Some(vec!["ALL".into()]),
        ..Default::default()
    });
    let root = context.run_as_user.map_or(pod_root, |u| u == 0);
    if context.run_as_non_root.is_none() && !pod_non_root_set && !root {
        context.run_as_non_root = Some(true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Container;

    fn owner(session: Option<u32>) -> WorkloadOwner {
        WorkloadOwner {
            connection_id: "0123456789abcdef0123456789abcdef".into(),
            username: "alice@example".into(),
            remote_address: "192.0.2.1:5555".into(),
            session,
            files: Vec::new(),
            metadata: vec![
                ("team".into(), "blue".into()),
                ("motto".into(), "not a label!".into()),
            ],
        }
    }

    #[test]
    fn pod_gets_names_labels_and_secure_defaults() {
        let mut config = KubernetesPod::default();
        config
            .metadata
            .labels
            .insert("containerssh.managed".into(), "false".into());
        config.metadata.labels.insert("app".into(), "ssh".into());
        config
            .expose_auth_metadata_as_labels
            .insert("team".into(), "team".into());
        config
            .expose_auth_metadata_as_labels
            .insert("motto".into(), "motto".into());
        config
            .expose_auth_metadata_as_env
            .insert("team".into(), "TEAM".into());
        let pod = build(&config, &owner(Some(3)), "gw-0.0.0.0-2222");
        let meta = &pod.metadata;
        assert_eq!(
            meta.name.as_deref(),
            Some("containerssh-0123456789abcdef0123456789abcdef-3")
        );
        assert_eq!(meta.namespace.as_deref(), Some("default"));
        let labels = meta.labels.as_ref().unwrap();
        assert_eq!(labels["containerssh.managed"], "true");
        assert_eq!(labels["containerssh.instance"], "gw-0.0.0.0-2222");
        assert_eq!(labels["app"], "ssh");
        assert_eq!(labels["team"], "blue");
        assert!(!labels.contains_key("motto"));
        assert_eq!(
            meta.annotations.as_ref().unwrap()["containerssh.username"],
            "alice@example"
        );
        let spec = pod.spec.unwrap();
        assert_eq!(spec.restart_policy.as_deref(), Some("Never"));
        assert_eq!(spec.automount_service_account_token, Some(false));
        assert_eq!(spec.enable_service_links, Some(false));
        assert_eq!(
            spec.security_context
                .unwrap()
                .seccomp_profile
                .unwrap()
                .type_,
            "RuntimeDefault"
        );
        let shell = &spec.containers[0];
        assert_eq!(shell.command.as_ref(), Some(&config.idle_command));
        let ctx = shell.security_context.as_ref().unwrap();
        assert_eq!(ctx.allow_privilege_escalation, Some(false));
        assert_eq!(ctx.run_as_non_root, Some(true));
        assert_eq!(
            ctx.capabilities.as_ref().unwrap().drop.as_deref(),
            Some(&["ALL".to_string()][..])
        );
        let env = shell.env.as_ref().unwrap();
        assert_eq!(env[0].name, "TEAM");
        assert_eq!(env[0].value.as_deref(), Some("blue"));
    }

    #[test]
    fn explicit_settings_are_kept() {
        let mut config = KubernetesPod::default();
        config.spec.automount_service_account_token = Some(true);
        config.spec.containers.push(Container {
            name: "sidecar".into(),
            image: Some("side:1".into()),
            command: Some(vec!["serve".into()]),
            security_context: Some(SecurityContext {
                run_as_user: Some(0),
                capabilities: Some(Capabilities {
                    add: Some(vec!["NET_ADMIN".into()]),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        });
        let spec = build(&config, &owner(None), "i").spec.unwrap();
        assert_eq!(spec.automount_service_account_token, Some(true));
        let sidecar = &spec.containers[1];
        // Only the console container's command is the gateway's.
        assert_eq!(sidecar.command.as_deref(), Some(&["serve".to_string()][..]));
        let ctx = sidecar.security_context.as_ref().unwrap();
        assert_eq!(ctx.run_as_non_root, None, "uid 0 was asked for");
        assert!(ctx.capabilities.as_ref().unwrap().drop.is_none());
        assert_eq!(ctx.allow_privilege_escalation, Some(false));
    }

    #[test]
    fn instance_ids_become_label_values() {
        assert_eq!(instance_label("gw_0.0.0.0:2222"), "gw_0.0.0.0-2222");
        assert_eq!(instance_label("[::]:22"), "22");
        let long_a = format!("{}_0.0.0.0:2222", "gateway-".repeat(10));
        let long_b = format!("{}_0.0.0.0:2223", "gateway-".repeat(10));
        assert!(is_label_value(&instance_label(&long_a)));
        assert_ne!(instance_label(&long_a), instance_label(&long_b));
        assert!(is_label_value(&instance_label(&"x:".repeat(80))));
    }
}
