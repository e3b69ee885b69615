//! Keys ContainerSSH accepts (in a config file or a config server's answer) that have no meaning
//! here: they are removed before the configuration is read, with one warning per key for the
//! life of the process, instead of refusing the file or every login. A whole ContainerSSH 0.4
//! configuration (as its `--dump-config` writes it, every default spelled out) is accepted the
//! same way, and so is ContainerSSH 0.5/0.6's reference configuration (its `ssh.clientAlive*`,
//! `health.client.allowRedirects`); settings for features the
//! gateway lacks are errors only when they ask for them.
use std::collections::HashSet;
use std::sync::{Mutex, OnceLock};

use serde_json::{Map, Value};

/// Accepts what a ContainerSSH 0.4 dump spells out for features the gateway does not have, as
/// long as it does not ask for them: `problems` gets the settings that do.
pub fn accept_containerssh_dump(config: &mut Value, problems: &mut Vec<String>) {
    remove_nulls(config);
    let Some(root) = config.as_object_mut() else {
        return;
    };
    let zero = super::merge::is_zero;
    if let Some(Value::Object(log)) = get_mut(root, "log") {
        if let Some(format) = get_mut(log, "format") {
            if format
                .as_str()
                .is_some_and(|f| f.eq_ignore_ascii_case("ljson"))
            {
                *format = Value::String("json".into());
            }
        }
    }
    // The TLS settings of ContainerSSH's metrics and health endpoints (`cert`, `key`,
    // `clientcacert`, `tlsVersion`, `curves`, `cipher`, and `health.client`'s) are read as
    // they are. `--healthcheck` does not follow redirects.
    if let Some(Value::Object(health)) = get_mut(root, "health") {
        if let Some(Value::Object(client)) = get_mut(health, "client") {
            if take(client, "allowRedirects").is_some_and(|v| !zero(&v)) {
                warn_once(
                    "health.client.allowRedirects",
                    "--healthcheck does not follow redirects",
                );
            }
        }
    }
    // A dump spells out the SSH proxy's defaults (algorithm lists included) with an empty
    // server when no proxy is used: then the section says nothing.
    let sshproxy_server = get_mut(root, "sshproxy")
        .and_then(Value::as_object_mut)
        .and_then(|p| get_mut(p, "server").cloned());
    if sshproxy_server.as_ref().is_some_and(zero) {
        take(root, "sshproxy");
    }
    if let Some(Value::Object(audit)) = get_mut(root, "audit") {
        // ContainerSSH's switch to record passwords: never done here (a recorded password is a
        // leaked one); the setting is dropped so that a ContainerSSH file still starts.
        if let Some(Value::Object(intercept)) = get_mut(audit, "intercept") {
            if take(intercept, "passwords").is_some_and(|v| !zero(&v)) {
                warn_once(
                    "audit.intercept.passwords",
                    "passwords are never recorded in the audit log",
                );
            }
        }
        // `s3` is read as it is (`audit.storage: s3`); its zero values in a dump say nothing.
        let enabled = get_mut(audit, "enable").is_some_and(|e| e.as_bool() == Some(true));
        let storage_none = get_mut(audit, "storage")
            .is_some_and(|s| s.as_str().is_some_and(|s| s.eq_ignore_ascii_case("none")));
        if storage_none && !enabled {
            take(audit, "storage");
        }
    }
    if let Some(Value::Object(ssh)) = get_mut(root, "ssh") {
        // `[]` in a dump: no keys configured, so the default key (generated if missing).
        if get_mut(ssh, "hostkeys").is_some_and(|k| k.as_array().is_some_and(Vec::is_empty)) {
            take(ssh, "hostkeys");
        }
        // ContainerSSH writes the whole identification string ("SSH-2.0-ContainerSSH").
        if let Some(Value::String(version)) = get_mut(ssh, "serverVersion") {
            if let Some(software) = version.strip_prefix("SSH-2.0-") {
                *version = software.to_string();
            }
        }
        // ContainerSSH's keepalive interval is ours; its 0 (the default) leaves ours.
        if let Some(interval) = take(ssh, "clientAliveInterval").filter(|i| !zero(i)) {
            if get_mut(ssh, "keepaliveInterval").is_some() {
                problems.push(
                    "ssh.clientAliveInterval: also set as ssh.keepaliveInterval; set it once"
                        .into(),
                );
            } else {
                ssh.insert("keepaliveInterval".into(), interval);
            }
        }
        // Its count is ours too; its 0 (unset) leaves ours.
        if let Some(count) = take(ssh, "clientAliveCountMax").filter(|c| !zero(c)) {
            if get_mut(ssh, "keepaliveCountMax").is_some() {
                problems.push(
                    "ssh.clientAliveCountMax: also set as ssh.keepaliveCountMax; set it once"
                        .into(),
                );
            } else {
                ssh.insert("keepaliveCountMax".into(), count);
            }
        }
    }
}

/// Go's encoders write `null` for unset pointers, maps and slices: the same as absent here.
fn remove_nulls(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.retain(|_, v| !v.is_null());
            map.values_mut().for_each(remove_nulls);
        }
        Value::Array(items) => items.iter_mut().for_each(remove_nulls),
        _ => {}
    }
}

/// The value of `key` (matched case-insensitively), removed.
fn take(map: &mut Map<String, Value>, key: &str) -> Option<Value> {
    let found = map.keys().find(|k| k.eq_ignore_ascii_case(key))?.clone();
    map.remove(&found)
}

fn get_mut<'a>(map: &'a mut Map<String, Value>, key: &str) -> Option<&'a mut Value> {
    let found = map.keys().find(|k| k.eq_ignore_ascii_case(key))?.clone();
    map.get_mut(&found)
}

/// ContainerSSH keys without meaning here: (section path, keys, why). Keys match
/// case-insensitively, as ContainerSSH's decoder does. Each backend lists those of its section.
pub type UnusedKeys = &'static [(&'static str, &'static [&'static str], &'static str)];

/// Removes the unused keys of every backend whose values are not zero (zero values say nothing
/// and go silently), warning once per key.
pub fn strip(config: &mut Value) {
    let unused = crate::backend::registry::REGISTRY
        .iter()
        .flat_map(|backend| backend.unused_keys.iter());
    for (section, keys, why) in unused {
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
    if !first {
        return;
    }
    if tracing::dispatcher::has_been_set() {
        tracing::warn!(key = path, "ContainerSSH setting ignored: {why}");
    } else {
        // Before the log is set up (reading the file at start, `validate`): said on stderr.
        eprintln!("containerssh: warning: {path}: ContainerSSH setting ignored: {why}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_containerssh_dump_is_accepted_unless_it_asks_for_missing_features() {
        let mut v = json!({
            "ssh": {"hostkeys": [], "serverVersion": "SSH-2.0-ContainerSSH"},
            "log": {"level": "notice", "format": "ljson", "destination": "stdout",
                    "file": "/var/log/x", "syslog": {"facility": "auth"}},
            "metrics": {"key": "", "cert": "", "clientcacert": "", "tlsVersion": "1.3", "enable": false},
            "geoip": {"provider": "dummy"},
            "sshproxy": {"server": "", "port": 22},
            "audit": {"enable": false, "storage": "none", "s3": {"bucket": ""}},
            "docker": {"execution": {"host": null, "network": null}}
        });
        let mut problems = Vec::new();
        accept_containerssh_dump(&mut v, &mut problems);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(
            v,
            json!({
                "ssh": {"serverVersion": "ContainerSSH"},
                "log": {"level": "notice", "format": "json", "destination": "stdout",
                        "file": "/var/log/x", "syslog": {"facility": "auth"}},
                "metrics": {"key": "", "cert": "", "clientcacert": "", "tlsVersion": "1.3", "enable": false},
                "geoip": {"provider": "dummy"},
                "audit": {"enable": false, "s3": {"bucket": ""}},
                "docker": {"execution": {}}
            })
        );

        // Metrics and health over TLS are served (see observe::tls), GeoIP looked up (see
        // observe::geoip): the settings stay.
        let mut asks = json!({
            "metrics": {"cert": "/etc/cert.pem"},
            "geoip": {"provider": "maxmind"}
        });
        let mut problems = Vec::new();
        accept_containerssh_dump(&mut asks, &mut problems);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(
            asks,
            json!({"metrics": {"cert": "/etc/cert.pem"}, "geoip": {"provider": "maxmind"}})
        );
    }

    #[test]
    fn containerssh_0_6_keys_are_taken_where_they_mean_something() {
        let mut v = json!({
            "ssh": {"clientAliveInterval": "45s", "clientAliveCountMax": 5},
            "health": {"enable": true, "listen": "0.0.0.0:7000", "key": "", "cert": "",
                       "clientcacert": "", "tlsVersion": "1.3", "curves": ["x25519"],
                       "client": {"url": "http://127.0.0.1:7000/", "timeout": "2s",
                                  "allowRedirects": false}},
            "audit": {"intercept": {"stdin": true, "forwarding": false}}
        });
        let mut problems = Vec::new();
        accept_containerssh_dump(&mut v, &mut problems);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(
            v,
            json!({
                "ssh": {"keepaliveInterval": "45s", "keepaliveCountMax": 5},
                "health": {"enable": true, "listen": "0.0.0.0:7000", "key": "", "cert": "",
                           "clientcacert": "", "tlsVersion": "1.3", "curves": ["x25519"],
                           "client": {"url": "http://127.0.0.1:7000/", "timeout": "2s"}},
                "audit": {"intercept": {"stdin": true, "forwarding": false}}
            })
        );
        // ContainerSSH's 0 (no keepalives, its default) leaves ours.
        let mut v = json!({"ssh": {"clientAliveInterval": 0, "clientAliveCountMax": 0,
                                   "keepaliveInterval": "20s"}});
        accept_containerssh_dump(&mut v, &mut problems);
        assert_eq!(v, json!({"ssh": {"keepaliveInterval": "20s"}}));
        assert!(problems.is_empty(), "{problems:?}");

        let mut asks = json!({
            "ssh": {"clientAliveInterval": "10s", "keepaliveInterval": "20s"},
            "health": {"cert": "/etc/health.crt"},
            "audit": {"intercept": {"forwarding": true}}
        });
        accept_containerssh_dump(&mut asks, &mut problems);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].starts_with("ssh.clientAliveInterval"),
            "{problems:?}"
        );
        // Recording forwarded connections is a setting of its own now.
        assert_eq!(asks["audit"]["intercept"]["forwarding"], true);
    }

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
