//! A config server's answer merged over the file configuration, for one connection.
//!
//! Only the sections a connection can use are taken (`backend`, each registered backend's own
//! section such as `docker` and `kubernetes`, `security`); keys match case-insensitively (ContainerSSH's Go decoder does, and servers in
//! the wild rely on it). In `explicit` mode every value present overrides, so false, 0 and "" can switch a
//! setting off (ContainerSSH cannot); `nonzero` mode skips zero values like ContainerSSH, for
//! servers that send a whole zero-filled structure. The result is validated like the file.
use serde_json::{Map, Value};

use super::{from_connection_value, Config, ConfigError, MergeMode};
use crate::backend::registry::REGISTRY;

/// Sections of an answer that apply to a connection, besides each backend's own.
const MERGED_SECTIONS: &[&str] = &["backend", "security"];

/// The section of the answer `key` names, if a connection uses it.
fn merged_section(key: &str) -> Option<&'static str> {
    MERGED_SECTIONS
        .iter()
        .copied()
        .chain(REGISTRY.iter().map(|b| b.section))
        .find(|s| s.eq_ignore_ascii_case(key))
}

/// The merged configuration and the top-level keys of the answer that were ignored.
pub struct Merged {
    pub config: Config,
    pub ignored: Vec<String>,
}

pub fn merge_answer(base: &Config, answer: &Value, mode: MergeMode) -> Result<Merged, ConfigError> {
    let one = |p: String| ConfigError { problems: vec![p] };
    let Value::Object(answer) = answer else {
        return Err(one("the config server's answer is not a map".into()));
    };
    let mut target = serde_json::to_value(base)
        .map_err(|e| one(format!("cannot represent the file configuration: {e}")))?;
    let mut ignored = Vec::new();
    let mut patch = Map::new();
    for (key, value) in answer {
        match merged_section(key) {
            Some(section) => {
                patch.insert(section.to_string(), value.clone());
            }
            None if is_zero(value) => {} // Go servers send every section; empty ones say nothing.
            None => ignored.push(key.clone()),
        }
    }
    merge(&mut target, &Value::Object(patch), mode);
    let config = from_connection_value(target).map_err(|mut e| {
        for p in &mut e.problems {
            *p = format!("config server answer: {p}");
        }
        e
    })?;
    // One client per backend serves every connection; a different engine or cluster per user
    // is not supported yet, and silently using the file's would be wrong.
    for backend in REGISTRY {
        if let Some(why) = (backend.fixed_per_connection)(base, &config) {
            return Err(one(format!("config server answer: {why}")));
        }
    }
    Ok(Merged { config, ignored })
}

fn merge(target: &mut Value, patch: &Value, mode: MergeMode) {
    let (Value::Object(target), Value::Object(patch)) = (target, patch) else {
        return;
    };
    for (key, value) in patch {
        if value.is_null() || (mode == MergeMode::Nonzero && is_zero(value)) {
            continue;
        }
        let existing_key = target
            .keys()
            .find(|k| k.eq_ignore_ascii_case(key))
            .cloned()
            .unwrap_or_else(|| key.clone());
        match target.get_mut(&existing_key) {
            Some(slot @ Value::Object(_)) if value.is_object() => merge(slot, value, mode),
            _ => {
                target.insert(existing_key, value.clone());
            }
        }
    }
}

/// Go's zero values: false, 0, "", null, and lists and maps of only zero values (an empty one,
/// or Go's fixed-size arrays such as Docker's `ConsoleSize: [0, 0]`).
pub(super) fn is_zero(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.iter().all(is_zero),
        Value::Object(m) => m.values().all(is_zero),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn base() -> Config {
        super::super::parse_str(
            "auth:\n  plugin: builtin:static-users\ndocker:\n  execution:\n    container:\n      image: base:1\n    host:\n      readonlyRootfs: true\n      memory: 1000000\n",
            false,
        )
        .unwrap()
    }

    #[test]
    fn explicit_values_override_including_false_and_zero() {
        let answer = json!({"docker": {"execution": {
            "container": {"Image": "user:2"},
            "host": {"readonlyRootfs": false, "memory": 0}
        }}});
        let m = merge_answer(&base(), &answer, MergeMode::Explicit).unwrap();
        let e = &m.config.docker.execution;
        assert_eq!(e.container.image, "user:2");
        assert_eq!(e.host.readonly_rootfs, Some(false));
        assert_eq!(e.host.memory, Some(0));
    }

    #[test]
    fn nonzero_mode_skips_zero_values_like_containerssh() {
        let answer = json!({"docker": {"execution": {
            "container": {"image": "user:2", "user": ""},
            "host": {"readonlyRootfs": false, "memory": 0}
        }}, "log": {"level": ""}, "ssh": {}});
        let m = merge_answer(&base(), &answer, MergeMode::Nonzero).unwrap();
        let e = &m.config.docker.execution;
        assert_eq!(e.container.image, "user:2");
        assert_eq!(e.host.readonly_rootfs, Some(true));
        assert_eq!(e.host.memory, Some(1000000));
        assert!(m.ignored.is_empty());
    }

    #[test]
    fn other_sections_are_ignored_and_bad_values_rejected() {
        let m = merge_answer(
            &base(),
            &json!({"ssh": {"listen": "0.0.0.0:1"}}),
            MergeMode::Explicit,
        )
        .unwrap();
        assert_eq!(m.ignored, vec!["ssh".to_string()]);
        assert_eq!(m.config.ssh.listen, base().ssh.listen);
        let e = merge_answer(
            &base(),
            &json!({"docker": {"execution": {"host": {"memroy": 1}}}}),
            MergeMode::Explicit,
        )
        .err()
        .unwrap();
        assert!(e.problems[0].contains("memroy"), "{:?}", e.problems);
        let e = merge_answer(
            &base(),
            &json!({"docker": {"connection": {"host": "tcp://elsewhere:2376"}}}),
            MergeMode::Explicit,
        )
        .err()
        .unwrap();
        assert!(
            e.problems[0].contains("docker.connection"),
            "{:?}",
            e.problems
        );
    }

    #[test]
    fn a_config_server_may_pick_kubernetes_and_change_the_pod_but_not_the_cluster() {
        let answer = json!({"backend": "kubernetes", "kubernetes": {"pod": {
            "metadata": {"namespace": "team-a"},
            "spec": {"automountServiceAccountToken": true,
                     "containers": [{"name": "shell", "image": "team-a:1"}]}
        }}});
        let m = merge_answer(&base(), &answer, MergeMode::Explicit).unwrap();
        assert_eq!(m.config.backend.as_str(), "kubernetes");
        let pod = &m.config.kubernetes.pod;
        assert_eq!(pod.metadata.namespace, "team-a");
        assert_eq!(pod.spec.automount_service_account_token, Some(true));
        assert_eq!(pod.spec.containers[0].image.as_deref(), Some("team-a:1"));
        let e = merge_answer(
            &base(),
            &json!({"kubernetes": {"connection": {"host": "elsewhere:6443"}}}),
            MergeMode::Explicit,
        )
        .err()
        .unwrap();
        assert!(
            e.problems[0].contains("kubernetes.connection"),
            "{:?}",
            e.problems
        );
    }

    /// A login re-checks only what an answer can change: the auth plugin's certificate files
    /// are not read again (they may even be gone, as after a rotation in progress).
    #[test]
    fn merging_reads_no_certificate_files() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        let cert = rcgen::generate_simple_self_signed(vec!["auth.test".to_string()]).unwrap();
        std::fs::write(&ca, cert.cert.pem()).unwrap();
        let yaml = format!(
            "auth:\n  plugin: builtin:webhook-auth\n  egress:\n    allow: [auth.test]\n    tls:\n      cacert: {}\n",
            ca.display()
        );
        let base = super::super::parse_str(&yaml, false).unwrap();
        std::fs::remove_file(&ca).unwrap();
        let answer = json!({"docker": {"execution": {"container": {"image": "user:2"}}}});
        let m = merge_answer(&base, &answer, MergeMode::Explicit).unwrap();
        assert_eq!(m.config.docker.execution.container.image, "user:2");
        // The file itself is still checked at start.
        assert!(super::super::parse_str(&yaml, false).is_err());
    }

    /// What a config server built with ContainerSSH's Go library sends: the whole AppConfig,
    /// every field at its zero value except those the server set.
    fn go_answer(set: impl FnOnce(&mut Value)) -> Value {
        let text = include_str!("../../../tests/fixtures/go-zero-appconfig.json");
        let mut answer: Value = serde_json::from_str(text).unwrap();
        set(&mut answer);
        answer
    }

    #[test]
    fn a_zero_filled_go_answer_changes_only_what_it_set() {
        let answer =
            go_answer(|a| a["docker"]["execution"]["container"]["Image"] = json!("user:2"));
        let m = merge_answer(&base(), &answer, MergeMode::default()).unwrap();
        let e = &m.config.docker.execution;
        assert_eq!(e.container.image, "user:2");
        assert_eq!(e.host.readonly_rootfs, Some(true));
        assert_eq!(e.host.memory, Some(1000000));
        assert_eq!(m.config.backend.as_str(), "docker");
        assert_eq!(e.idle_command, base().docker.execution.idle_command);

        let answer = go_answer(|a| {
            let c = &mut a["docker"]["execution"]["container"];
            c["Image"] = json!("user:3");
            c["Env"] = json!(["TEAM=blue"]);
            c["Tty"] = json!(true);
            a["docker"]["execution"]["host"]["Memory"] = json!(2000000);
            a["docker"]["execution"]["agentPath"] = json!("/usr/bin/containerssh-agent");
            a["docker"]["timeouts"]["containerStart"] = json!(90_000_000_000u64);
            let host = &mut a["docker"]["execution"]["host"];
            host["Mounts"] = json!([{"Type": "tmpfs", "Target": "/scratch", "TmpfsOptions": {"SizeBytes": 1048576}}]);
            host["BlkioWeight"] = json!(200);
            host["Ulimits"] = json!([{"Name": "nproc", "Soft": 64, "Hard": 64}]);
            a["docker"]["execution"]["auth"] =
                json!({"username": "robot", "password": "p", "serveraddress": "r.example"});
        });
        let m = merge_answer(&base(), &answer, MergeMode::default()).unwrap();
        let e = &m.config.docker.execution;
        assert_eq!(e.container.image, "user:3");
        assert_eq!(e.container.env, vec!["TEAM=blue".to_string()]);
        assert_eq!(e.host.memory, Some(2000000));
        let mounts = e.host.mounts.as_ref().unwrap();
        assert_eq!(mounts[0].target.as_deref(), Some("/scratch"));
        let tmpfs = mounts[0].tmpfs_options.as_ref().unwrap();
        assert_eq!(tmpfs.size_bytes, Some(1048576));
        assert_eq!(e.host.blkio_weight, Some(200));
        assert_eq!(e.host.ulimits.as_ref().unwrap()[0].soft, Some(64));
        let auth = e.auth.as_ref().unwrap();
        assert_eq!(auth.0.serveraddress.as_deref(), Some("r.example"));
        assert_eq!(
            m.config.docker.timeouts.container_start,
            std::time::Duration::from_secs(90)
        );
    }

    #[test]
    fn a_zero_filled_go_answer_may_pick_a_kubernetes_pod() {
        let answer = go_answer(|a| {
            a["backend"] = json!("kubernetes");
            a["kubernetes"]["pod"]["spec"]["containers"] =
                json!([{"name": "shell", "image": "team-a:1"}]);
        });
        let m = merge_answer(&base(), &answer, MergeMode::default()).unwrap();
        assert_eq!(m.config.backend.as_str(), "kubernetes");
        let pod = &m.config.kubernetes.pod;
        assert_eq!(pod.spec.containers[0].image.as_deref(), Some("team-a:1"));
        assert_eq!(
            pod.metadata.namespace,
            base().kubernetes.pod.metadata.namespace
        );
    }

    #[test]
    fn security_is_merged_per_key() {
        let mut b = base();
        b.security = json!({"defaultMode": "enable", "env": {"mode": "disable"}});
        let m = merge_answer(
            &b,
            &json!({"security": {"command": {"mode": "disable"}}}),
            MergeMode::Explicit,
        )
        .unwrap();
        assert_eq!(m.config.security["env"]["mode"], "disable");
        assert_eq!(m.config.security["command"]["mode"], "disable");
    }
}
