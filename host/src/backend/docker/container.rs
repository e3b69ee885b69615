//! Turning the execution config into a Docker container: image policy, hardening, labels.
use std::collections::HashMap;

use anyhow::{bail, Context};
use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{CreateImageOptions, ListContainersOptions};
use bollard::Docker;
use futures::StreamExt;

use super::spawner::{self, Slot};
use crate::backend::{WorkloadOwner, LABEL_CONNECTION, LABEL_INSTANCE, LABEL_MANAGED};
use crate::config::{Execution, PullPolicy, RegistryAuth, DEFAULT_PIDS_LIMIT};

pub const LABEL_USERNAME: &str = "containerssh.username";

/// Makes sure the image is there according to the pull policy.
pub async fn ensure_image(
    docker: &Docker,
    image: &str,
    policy: PullPolicy,
    auth: Option<&RegistryAuth>,
    platform: &str,
    connection_id: &str,
) -> anyhow::Result<()> {
    let present = match docker.inspect_image(image).await {
        Ok(_) => true,
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => false,
        Err(e) => return Err(e).with_context(|| format!("cannot inspect image {image}")),
    };
    match (policy, present) {
        (PullPolicy::Never, false) => {
            bail!("image {image} is not present and imagePullPolicy is Never")
        }
        (PullPolicy::Never, true) | (PullPolicy::IfNotPresent, true) => Ok(()),
        (PullPolicy::Always, _) | (PullPolicy::IfNotPresent, false) => {
            pull(docker, image, auth, platform, connection_id).await
        }
    }
}

async fn pull(
    docker: &Docker,
    image: &str,
    auth: Option<&RegistryAuth>,
    platform: &str,
    connection_id: &str,
) -> anyhow::Result<()> {
    tracing::info!(
        connection_id,
        image,
        registry_user = auth.and_then(|a| a.0.username.as_deref()),
        "pulling image"
    );
    let options = CreateImageOptions {
        from_image: Some(image.to_string()),
        platform: platform.to_string(),
        ..Default::default()
    };
    let credentials = auth.and_then(|a| {
        let sent = credentials_for(image, a);
        if sent.is_none() {
            tracing::warn!(connection_id, image, "docker.execution.auth.serveraddress names another registry: pulling without credentials");
        }
        sent
    });
    let mut progress = docker.create_image(Some(options), None, credentials);
    while let Some(step) = progress.next().await {
        let step = step.with_context(|| format!("cannot pull image {image}"))?;
        if let Some(detail) = step.error_detail.and_then(|d| d.message) {
            bail!("cannot pull image {image}: {detail}");
        }
    }
    Ok(())
}

/// The credentials to send with a pull of `image`: only to the registry `serveraddress` names
/// (when it names one), so that an image from elsewhere (a config server's answer may change
/// the image) never receives them.
fn credentials_for(image: &str, auth: &RegistryAuth) -> Option<bollard::auth::DockerCredentials> {
    let server = auth.0.serveraddress.as_deref().unwrap_or_default();
    if server.is_empty() || same_registry(&registry_of(image), server) {
        Some(auth.0.clone())
    } else {
        None
    }
}

/// The registry host of an image reference (`docker.io` when the name has none).
fn registry_of(image: &str) -> String {
    match image.split_once('/') {
        Some((first, _)) if first.contains('.') || first.contains(':') || first == "localhost" => {
            first.to_ascii_lowercase()
        }
        _ => "docker.io".into(),
    }
}

/// Whether `server` (a host, `host:port` or URL, as Docker's AuthConfig takes it) is `registry`.
fn same_registry(registry: &str, server: &str) -> bool {
    let server = server
        .trim()
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let host = server
        .split('/')
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    let docker_hub =
        |h: &str| matches!(h, "docker.io" | "index.docker.io" | "registry-1.docker.io");
    host == registry || (docker_hub(&host) && docker_hub(registry))
}

/// The container definition for one workload.
/// With a direct-start `slot`, the helper is the main process (instead of the idle command)
/// and the slot's directory is mounted where the helper lives.
pub fn container_body(
    exec: &Execution,
    owner: &WorkloadOwner,
    instance: &str,
    slot: Option<&Slot>,
) -> ContainerCreateBody {
    let c = &exec.container;
    let mut labels: HashMap<String, String> = c
        .labels
        .iter()
        .filter(|(k, _)| !k.starts_with("containerssh."))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let metadata = |key: &str| {
        owner
            .metadata
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
    };
    for (key, label) in &exec.expose_auth_metadata_as_labels {
        if let Some(value) = metadata(key) {
            labels.insert(label.clone(), value);
        }
    }
    let mut env = c.env.clone();
    env.extend(exec.expose_auth_metadata_as_env.variables(&owner.metadata));
    labels.insert(LABEL_MANAGED.into(), "true".into());
    labels.insert(LABEL_INSTANCE.into(), instance.into());
    labels.insert(LABEL_CONNECTION.into(), owner.connection_id.clone());
    labels.insert(LABEL_USERNAME.into(), owner.username.clone());
    let non_empty = |s: &str| (!s.is_empty()).then(|| s.to_string());
    let mut host_config = host_config(exec);
    let cmd = match slot {
        Some(slot) => {
            // The slot's directory holds the helper: no helper volume.
            let mut mounts = exec.host.mounts.clone().unwrap_or_default();
            mounts.push(slot.mount());
            host_config.mounts = Some(mounts);
            spawner::main_command()
        }
        None => exec.idle_command.clone(),
    };
    ContainerCreateBody {
        image: Some(c.image.clone()),
        entrypoint: (!c.entrypoint.is_empty()).then(|| c.entrypoint.clone()),
        cmd: Some(cmd),
        env: Some(env),
        user: non_empty(&c.user),
        working_dir: non_empty(&c.working_dir),
        hostname: non_empty(&c.hostname),
        domainname: non_empty(&c.domainname),
        labels: Some(labels),
        network_disabled: exec.host.network_disabled,
        attach_stdin: Some(false),
        attach_stdout: Some(false),
        attach_stderr: Some(false),
        open_stdin: Some(false),
        tty: Some(false),
        host_config: Some(host_config),
        networking_config: exec.network.clone(),
        ..Default::default()
    }
}

/// Docker's HostConfig from the hardening options, with secure defaults where unset.
pub fn host_config(exec: &Execution) -> HostConfig {
    let h = &exec.host;
    let mut security_opt = h.security_opt.clone().unwrap_or_default();
    if !h.allow_privilege_escalation
        && !security_opt
            .iter()
            .any(|o| o.starts_with("no-new-privileges"))
    {
        security_opt.push("no-new-privileges".into());
    }
    let pids_limit = match h.pids_limit {
        None => Some(DEFAULT_PIDS_LIMIT),
        Some(n) if n <= 0 => Some(-1),
        Some(n) => Some(n),
    };
    HostConfig {
        userns_mode: h.usernsmode.clone(),
        storage_opt: h
            .storageopt
            .as_ref()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.to_string())).collect()),
        tmpfs: h.tmpfs.as_ref().map(to_hash_map),
        readonly_rootfs: h.readonly_rootfs,
        memory: h.memory,
        memory_reservation: h.memory_reservation,
        memory_swap: h.memory_swap,
        memory_swappiness: h.memory_swappiness,
        oom_kill_disable: h.oom_kill_disable,
        oom_score_adj: h.oom_score_adj,
        cpuset_cpus: h.cpuset_cpus.clone(),
        cpuset_mems: h.cpuset_mems.clone(),
        cpu_period: h.cpu_period,
        cpu_quota: h.cpu_quota,
        cpu_realtime_period: h.cpu_realtime_period,
        cpu_realtime_runtime: h.cpu_realtime_quota,
        cpu_shares: h.cpu_shares,
        pids_limit,
        network_mode: h.network_mode.clone().or_else(|| {
            h.network_disabled
                .filter(|d| *d)
                .map(|_| "none".to_string())
        }),
        cap_add: h.cap_add.clone(),
        cap_drop: Some(h.cap_drop.clone().unwrap_or_else(|| vec!["ALL".into()])),
        security_opt: Some(security_opt),
        binds: h.binds.clone(),
        shm_size: h.shm_size,
        init: h.init,
        runtime: h.runtime.clone(),
        dns: h.dns.clone(),
        extra_hosts: h.extra_hosts.clone(),
        privileged: h.privileged,
        // The gateway removes containers itself so it can log failures; auto-remove would race.
        auto_remove: Some(false),
        mounts: mounts(exec),
        ulimits: h.ulimits.clone(),
        devices: h.devices.clone(),
        device_cgroup_rules: h.device_cgroup_rules.clone(),
        device_requests: h.device_requests.clone(),
        blkio_weight: h.blkio_weight,
        blkio_weight_device: h.blkio_weight_device.clone(),
        blkio_device_read_bps: h.blkio_device_read_bps.clone(),
        blkio_device_write_bps: h.blkio_device_write_bps.clone(),
        blkio_device_read_iops: h.blkio_device_read_iops.clone(),
        blkio_device_write_iops: h.blkio_device_write_iops.clone(),
        nano_cpus: h.nano_cpus,
        cgroup_parent: h.cgroup_parent.clone(),
        cgroup: h.cgroup.clone(),
        cgroupns_mode: h.cgroupns_mode,
        cpu_count: h.cpu_count,
        cpu_percent: h.cpu_percent,
        io_maximum_iops: h.io_maximum_iops,
        io_maximum_bandwidth: h.io_maximum_bandwidth,
        log_config: h.log_config.clone(),
        port_bindings: h.port_bindings.clone(),
        publish_all_ports: h.publish_all_ports,
        volume_driver: h.volume_driver.clone(),
        volumes_from: h.volumes_from.clone(),
        links: h.links.clone(),
        annotations: h.annotations.as_ref().map(to_hash_map),
        dns_options: h.dns_options.clone(),
        dns_search: h.dns_search.clone(),
        group_add: h.group_add.clone(),
        ipc_mode: h.ipc_mode.clone(),
        pid_mode: h.pid_mode.clone(),
        uts_mode: h.uts_mode.clone(),
        sysctls: h.sysctls.as_ref().map(to_hash_map),
        isolation: h.isolation,
        masked_paths: h.masked_paths.clone(),
        readonly_paths: h.readonly_paths.clone(),
        ..Default::default()
    }
}

fn to_hash_map(map: &std::collections::BTreeMap<String, String>) -> HashMap<String, String> {
    map.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

/// The configured mounts, and the helper's volume when the root file system is read-only.
fn mounts(exec: &Execution) -> Option<Vec<bollard::models::Mount>> {
    let mut mounts = exec.host.mounts.clone();
    if helper_volume(exec) {
        mounts
            .get_or_insert_with(Vec::new)
            .push(bollard::models::Mount {
                target: Some(crate::backend::HELPER_DIR.into()),
                typ: Some(bollard::models::MountType::VOLUME),
                ..Default::default()
            });
    }
    mounts
}

/// Whether the container gets an anonymous volume for the forwarding helper: only when its root
/// file system is read-only (otherwise the helper goes onto it, when first needed). The volume
/// is removed with the container.
pub fn helper_volume(exec: &Execution) -> bool {
    exec.host.readonly_rootfs == Some(true)
}

/// Ids of containers carrying this gateway instance's labels (running or not).
pub async fn list_owned(docker: &Docker, instance: &str) -> anyhow::Result<Vec<String>> {
    let filters = HashMap::from([(
        "label".to_string(),
        vec![
            format!("{LABEL_MANAGED}=true"),
            format!("{LABEL_INSTANCE}={instance}"),
        ],
    )]);
    let list = docker
        .list_containers(Some(ListContainersOptions {
            all: true,
            filters: Some(filters),
            ..Default::default()
        }))
        .await
        .context("cannot list containers")?;
    Ok(list.into_iter().filter_map(|c| c.id).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_go_only_to_the_registry_they_name() {
        let auth = |server: &str| {
            RegistryAuth(bollard::auth::DockerCredentials {
                username: Some("robot".into()),
                password: Some("p".into()),
                serveraddress: (!server.is_empty()).then(|| server.to_string()),
                ..Default::default()
            })
        };
        let sent = |image: &str, server: &str| credentials_for(image, &auth(server)).is_some();
        assert!(sent("registry.example.com/team/img:1", ""));
        assert!(
            sent("evil.example/x", ""),
            "no serveraddress: as ContainerSSH"
        );
        assert!(sent(
            "registry.example.com/team/img:1",
            "registry.example.com"
        ));
        assert!(sent("127.0.0.1:5055/team/img", "http://127.0.0.1:5055"));
        assert!(sent("ubuntu:24.04", "https://index.docker.io/v1/"));
        assert!(sent("library/ubuntu", "docker.io"));
        assert!(!sent("evil.example/team/img", "registry.example.com"));
        assert!(!sent("ubuntu", "registry.example.com"));
        assert!(!sent("localhost/img", "127.0.0.1"));
    }

    #[test]
    fn exposed_metadata_becomes_environment_and_labels() {
        let mut exec = Execution::default();
        exec.container.env = vec!["FROM_FILE=1".into()];
        exec.expose_auth_metadata_as_env =
            crate::config::MetadataEnv::Named([("team".to_string(), "TEAM".to_string())].into());
        exec.expose_auth_metadata_as_labels
            .insert("team".into(), "example.com/team".into());
        exec.expose_auth_metadata_as_labels
            .insert("absent".into(), "example.com/absent".into());
        let owner = WorkloadOwner {
            connection_id: "c0ffee".into(),
            username: "alice".into(),
            remote_address: "192.0.2.1:5000".into(),
            session: None,
            files: Vec::new(),
            metadata: vec![("team".into(), "blue".into())],
        };
        let body = container_body(&exec, &owner, "instance", None);
        assert_eq!(
            body.env,
            Some(vec!["FROM_FILE=1".to_string(), "TEAM=blue".to_string()])
        );
        let labels = body.labels.unwrap_or_default();
        assert_eq!(
            labels.get("example.com/team").map(String::as_str),
            Some("blue")
        );
        assert!(!labels.contains_key("example.com/absent"));
        assert_eq!(
            labels.get(LABEL_CONNECTION).map(String::as_str),
            Some("c0ffee")
        );
    }
}
