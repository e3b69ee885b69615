//! Keys ContainerSSH accepts (in a config file or a config server's answer) that have no meaning
//! here: they are removed before the configuration is read, with one warning per key for the
//! life of the process, instead of refusing the file or every login.
use std::collections::HashSet;
use std::sync::{Mutex, OnceLock};

use serde_json::{Map, Value};

/// (section path, keys, why). Keys match case-insensitively, as ContainerSSH's decoder does.
const UNUSED: &[(&str, &[&str], &str)] = &[
    (
        "docker.execution",
        &["agentPath", "disableAgent"],
        "the gateway needs no guest agent in the image",
    ),
    (
        "docker.execution",
        &["containerName", "containername"],
        "containers are named containerssh-<connection id>",
    ),
    (
        "docker.execution",
        &["exposeAuthMetadataAsAnnotations"],
        "Docker containers have no annotations (use exposeAuthMetadataAsLabels)",
    ),
    (
        "docker.execution.container",
        &[
            "AttachStdin",
            "AttachStdout",
            "AttachStderr",
            "Tty",
            "OpenStdin",
            "StdinOnce",
            "Cmd",
            "ArgsEscaped",
        ],
        "the gateway attaches programs itself and runs idleCommand as the main process",
    ),
    (
        "docker.execution.container",
        &[
            "ExposedPorts",
            "Volumes",
            "Healthcheck",
            "MacAddress",
            "OnBuild",
            "StopSignal",
            "StopTimeout",
            "Shell",
            "NetworkDisabled",
        ],
        "not used for gateway containers (network settings are in docker.execution.host)",
    ),
];

/// Removes the keys of `UNUSED` whose values are not zero (zero values say nothing and go
/// silently), warning once per key.
pub fn strip(config: &mut Value) {
    for (section, keys, why) in UNUSED {
        let Some(map) = section_mut(config, section) else {
            continue;
        };
        let present: Vec<String> = map
            .keys()
            .filter(|k| keys.iter().any(|u| u.eq_ignore_ascii_case(k)))
            .cloned()
            .collect();
        for key in present {
            if let Some(value) = map.remove(&key) {
                if !super::merge::is_zero(&value) {
                    warn_once(&format!("{section}.{key}"), why);
                }
            }
        }
    }
}

/// The object at a dotted path, matching each step case-insensitively.
fn section_mut<'a>(config: &'a mut Value, path: &str) -> Option<&'a mut Map<String, Value>> {
    let mut current = config;
    for step in path.split('.') {
        let map = current.as_object_mut()?;
        let key = map.keys().find(|k| k.eq_ignore_ascii_case(step))?.clone();
        current = map.get_mut(&key)?;
    }
    current.as_object_mut()
}

fn warn_once(path: &str, why: &str) {
    static WARNED: OnceLock<Mutex<HashSet<String>>> = OnceLock::new();
    let first = WARNED
        .get_or_init(Default::default)
        .lock()
        .map(|mut w| w.insert(path.to_string()))
        .unwrap_or(true);
    if first {
        tracing::warn!(key = path, "ContainerSSH setting ignored: {why}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn containerssh_only_keys_go_and_the_rest_stays() {
        let mut v = json!({"docker": {"execution": {
            "agentPath": "/usr/bin/containerssh-agent",
            "DisableAgent": true,
            "container": {"Image": "x", "Tty": false, "AttachStdin": true, "Cmd": ["sh"]},
            "host": {"memory": 5}
        }}});
        strip(&mut v);
        assert_eq!(
            v,
            json!({"docker": {"execution": {"container": {"Image": "x"}, "host": {"memory": 5}}}})
        );
    }
}
