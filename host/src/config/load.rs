//! Reading a config file: YAML or JSON → normalised JSON value → typed config.
//! Unknown keys are errors reported with their path; every problem is collected.
use std::path::Path;

use serde::de::DeserializeOwned;
use serde_json::Value;

use super::Config;

/// Everything wrong with a config file, one line per problem.
#[derive(Debug)]
pub struct ConfigError {
    pub problems: Vec<String>,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "invalid configuration ({} problem(s)):",
            self.problems.len()
        )?;
        for p in &self.problems {
            writeln!(f, "  - {p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

impl ConfigError {
    fn one(problem: String) -> Self {
        Self {
            problems: vec![problem],
        }
    }
}

/// Loads, checks and validates a config file.
pub fn load_file(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::one(format!("{}: cannot read: {e}", path.display())))?;
    let is_json = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("json"));
    parse_str(&text, is_json).map_err(|mut e| {
        for p in &mut e.problems {
            *p = format!("{}: {p}", path.display());
        }
        e
    })
}

/// Parses config text (YAML, or JSON when `is_json`), then checks it.
pub fn parse_str(text: &str, is_json: bool) -> Result<Config, ConfigError> {
    let value: Value = if is_json {
        serde_json::from_str(text).map_err(|e| ConfigError::one(format!("JSON syntax: {e}")))?
    } else {
        let v: Value = serde_norway::from_str(text)
            .map_err(|e| ConfigError::one(format!("YAML syntax: {e}")))?;
        // An empty file is an empty config.
        if v.is_null() {
            Value::Object(Default::default())
        } else {
            v
        }
    };
    from_value(value)
}

/// Typed config from a JSON value (also used after merging a config plugin's answer).
pub fn from_value(value: Value) -> Result<Config, ConfigError> {
    checked(value, Config::validate)
}

/// Typed config of one connection (the file's merged with a config server's answer): only the
/// sections an answer can change are checked again, so a login reads no certificate files.
pub fn from_connection_value(value: Value) -> Result<Config, ConfigError> {
    checked(value, Config::validate_connection)
}

fn checked(mut value: Value, validate: fn(&Config) -> Vec<String>) -> Result<Config, ConfigError> {
    let mut renames = Vec::new();
    let mut problems = normalise(&mut value, &mut renames);
    let mut removed = Vec::new();
    let config: Option<Config> = deserialize_collecting(value, &mut problems, &mut removed);
    if let Some(config) = &config {
        // The semantic checks run on what could be read; a value already reported as
        // unreadable is not reported again as missing or defaulted.
        problems.extend(
            validate(config)
                .into_iter()
                .filter(|p| !removed.iter().any(|r| is_under(p, r))),
        );
    }
    for p in &mut problems {
        *p = users_path(p, &renames);
    }
    match config {
        Some(config) if problems.is_empty() => Ok(config),
        _ => Err(ConfigError { problems }),
    }
}

/// Most values of the wrong type reported from one file; then the checking stops.
const MAX_TYPE_ERRORS: usize = 100;

/// Deserializes `value`, recording unknown keys (with their paths) and values of the wrong
/// type. Any problem makes the result `None`; use [`deserialize_collecting`] to go on.
pub fn deserialize_strict<T: DeserializeOwned>(
    value: Value,
    problems: &mut Vec<String>,
) -> Option<T> {
    let before = problems.len();
    let parsed = deserialize_collecting(value, problems, &mut Vec::new());
    parsed.filter(|_| problems.len() == before)
}

/// Deserializes `value`, recording every unknown key and every value of the wrong type with
/// its path. A wrong value is left out (so its default applies) and the rest read again, so
/// that one run finds every problem; `removed` gets the paths left out. The result is what
/// could be read, or `None` if even that failed.
fn deserialize_collecting<T: DeserializeOwned>(
    mut value: Value,
    problems: &mut Vec<String>,
    removed: &mut Vec<String>,
) -> Option<T> {
    let mut unknown: Vec<String> = Vec::new();
    let mut wrong: Vec<String> = Vec::new();
    let mut parsed = None;
    for _ in 0..MAX_TYPE_ERRORS {
        let mut seen = Vec::new();
        let result: Result<T, _> = {
            let mut record =
                |path: serde_ignored::Path| seen.push(readable_path(&path.to_string()));
            let de = serde_ignored::Deserializer::new(value.clone(), &mut record);
            serde_path_to_error::deserialize(de)
        };
        for p in seen {
            if !unknown.contains(&p) {
                unknown.push(p);
            }
        }
        match result {
            Ok(v) => {
                parsed = Some(v);
                break;
            }
            Err(e) => {
                let path = e.path().clone();
                let shown = path.to_string();
                let at = if shown.is_empty() {
                    "the configuration"
                } else {
                    &shown
                };
                wrong.push(format!("{at}: {}", e.into_inner()));
                if !remove_at(&mut value, &path) {
                    break;
                }
                removed.push(shown);
            }
        }
    }
    problems.extend(unknown.into_iter().map(|p| format!("{p}: unknown key")));
    problems.extend(wrong);
    parsed
}

/// Removes the value at `path` from `value`; false if there is nothing to remove there.
fn remove_at(value: &mut Value, path: &serde_path_to_error::Path) -> bool {
    use serde_path_to_error::Segment;
    let segments: Vec<&Segment> = path.iter().collect();
    let Some((last, parents)) = segments.split_last() else {
        return false;
    };
    let mut node = value;
    for segment in parents {
        node = match (segment, node) {
            (Segment::Map { key }, Value::Object(map)) => match map.get_mut(key) {
                Some(v) => v,
                None => return false,
            },
            (Segment::Seq { index }, Value::Array(items)) => match items.get_mut(*index) {
                Some(v) => v,
                None => return false,
            },
            _ => return false,
        };
    }
    match (last, node) {
        (Segment::Map { key }, Value::Object(map)) => map.remove(key).is_some(),
        (Segment::Seq { index }, Value::Array(items)) if *index < items.len() => {
            // Null rather than a shift, so that later indexes still name what the user wrote.
            items[*index] = Value::Null;
            true
        }
        _ => false,
    }
}

/// Whether `problem` ("path: text") is about `path` or something inside it.
fn is_under(problem: &str, path: &str) -> bool {
    problem
        .strip_prefix(path)
        .is_some_and(|rest| rest.starts_with(':') || rest.starts_with('.') || rest.starts_with('['))
}

/// `problem` with an internal key path (of a translated ContainerSSH section) replaced by the
/// path the user wrote.
fn users_path(problem: &str, renames: &[(String, String)]) -> String {
    renames
        .iter()
        .filter(|(internal, _)| is_under(problem, internal))
        .max_by_key(|(internal, _)| internal.len())
        .map_or_else(
            || problem.to_string(),
            |(internal, theirs)| format!("{theirs}{}", &problem[internal.len()..]),
        )
}

/// `a.?.1.b` (serde_ignored's form) as `a[1].b`: no marks for optional values, indexes in brackets.
fn readable_path(path: &str) -> String {
    let mut out = String::new();
    for part in path.split('.').filter(|p| *p != "?") {
        if !out.is_empty() && part.parse::<usize>().is_ok() {
            out.push_str(&format!("[{part}]"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(part);
        }
    }
    out
}

/// Rewrites accepted alternative spellings into the canonical shape before typed parsing;
/// `renames` gets the translated keys' paths as the user wrote them.
fn normalise(value: &mut Value, renames: &mut Vec<(String, String)>) -> Vec<String> {
    let mut problems = Vec::new();
    super::unused_keys::accept_containerssh_dump(value, &mut problems);
    super::compat::translate(value, &mut problems, renames);
    super::unused_keys::strip(value);
    for backend in crate::backend::registry::REGISTRY {
        (backend.normalise)(value, &mut problems);
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_need_only_auth() {
        let c = parse_str("auth:\n  plugin: builtin:static-users\n", false).unwrap();
        assert_eq!(c.ssh.listen, "0.0.0.0:2222");
        assert_eq!(
            c.docker.execution.shell_command,
            vec!["/bin/sh".to_string()]
        );
    }

    #[test]
    fn unknown_keys_are_reported_with_their_path() {
        let text = "auth:\n  plugin: builtin:static-users\nssh:\n  lisen: 1\ndocker:\n  execution:\n    host:\n      memroy: 5\nbogus: true\n";
        let e = parse_str(text, false).unwrap_err();
        let all = e.problems.join("\n");
        assert!(all.contains("ssh.lisen: unknown key"), "{all}");
        assert!(
            all.contains("docker.execution.host.memroy: unknown key"),
            "{all}"
        );
        assert!(all.contains("bogus: unknown key"), "{all}");
    }

    #[test]
    fn type_errors_carry_the_path() {
        let text = "auth:\n  plugin: builtin:static-users\ndocker:\n  execution:\n    host:\n      memory: lots\n";
        let e = parse_str(text, false).unwrap_err();
        assert!(
            e.problems[0].starts_with("docker.execution.host.memory:"),
            "{:?}",
            e.problems
        );
    }

    #[test]
    fn resources_block_is_lifted_into_host() {
        let text = "auth:\n  plugin: builtin:static-users\ndocker:\n  execution:\n    host:\n      resources:\n        memory: 26214400\n        pidsLimit: 50\n";
        let c = parse_str(text, false).unwrap();
        assert_eq!(c.docker.execution.host.memory, Some(26214400));
        assert_eq!(c.docker.execution.host.pids_limit, Some(50));
    }

    #[test]
    fn json_is_accepted() {
        let c = parse_str(
            r#"{"auth": {"plugin": "builtin:static-users"}, "ssh": {"listen": "127.0.0.1:2022"}}"#,
            true,
        )
        .unwrap();
        assert_eq!(c.ssh.listen, "127.0.0.1:2022");
    }

    #[test]
    fn every_wrong_value_is_reported_in_one_run() {
        let text = "auth:\n  plugin: builtin:static-users\nssh:\n  bogus1: 1\n  maxConnections: lots\n  listen: nowhere\ndocker:\n  execution:\n    mode: sometimes\n";
        let e = parse_str(text, false).unwrap_err();
        let all = e.problems.join("\n");
        assert!(all.contains("ssh.bogus1: unknown key"), "{all}");
        assert!(all.contains("ssh.maxConnections: invalid type"), "{all}");
        assert!(
            all.contains("docker.execution.mode: unknown variant"),
            "{all}"
        );
        // Semantic checks still run on the rest, and a wrong value is not reported twice.
        assert!(all.contains("ssh.listen:"), "{all}");
        assert_eq!(e.problems.len(), 4, "{all}");
    }

    #[test]
    fn wrong_items_of_lists_keep_their_index() {
        let text =
            "auth:\n  plugin: builtin:static-users\nssh:\n  ciphers: [aes128-ctr, {a: 1}, rot13]\n";
        let e = parse_str(text, false).unwrap_err();
        let all = e.problems.join("\n");
        assert!(all.contains("ssh.ciphers[1]: invalid type"), "{all}");
    }

    #[test]
    fn translated_containerssh_keys_are_reported_as_the_user_wrote_them() {
        let text = "auth:\n  url: https://auth.example:8443\n  cacert: \"insert your expected CA certificate here\"\n  cert: /nonexistent/client.pem\n  key: /nonexistent/client.key\n";
        let e = parse_str(text, false).unwrap_err();
        let all = e.problems.join("\n");
        assert!(
            all.contains("auth.cacert: cannot read insert your"),
            "{all}"
        );
        assert!(all.contains("auth.cert: cannot read /nonexistent"), "{all}");
        assert!(!all.contains("egress"), "{all}");
        let text = "auth:\n  password:\n    method: webhook\n    webhook:\n      url: https://a:1\n      cacert: /nonexistent/ca.pem\nconfigserver:\n  url: https://c:2/config\n  tlsVersion: \"1.0\"\n";
        let e = parse_str(text, false).unwrap_err();
        let all = e.problems.join("\n");
        assert!(
            all.contains("auth.password.webhook.cacert: cannot read /nonexistent/ca.pem"),
            "{all}"
        );
        assert!(
            all.contains("configserver.tlsVersion: \"1.0\" is not supported"),
            "{all}"
        );
    }

    #[test]
    fn algorithm_lists_are_checked_by_name() {
        let text = "auth:\n  plugin: builtin:static-users\nssh:\n  kex: [mlkem768x25519-sha256, diffie-hellman-group1-sha1]\n  macs: [hmac-sha2-256-etm@openssh.com, umac-128-etm@openssh.com]\n  hostKeyAlgos: [ssh-rsa]\n  ciphers: []\n";
        let e = parse_str(text, false).unwrap_err();
        let all = e.problems.join("\n");
        assert!(all.contains("ssh.kex[1]: \"diffie-hellman-group1-sha1\" is not offered by this gateway: it relies on SHA-1"), "{all}");
        assert!(
            all.contains("ssh.macs[1]: unknown MAC \"umac-128-etm@openssh.com\""),
            "{all}"
        );
        assert!(
            all.contains("ssh.hostKeyAlgos[0]: \"ssh-rsa\" is not offered"),
            "{all}"
        );
        assert!(all.contains("ssh.ciphers: at least one cipher"), "{all}");
        let ok = "auth:\n  plugin: builtin:static-users\nssh:\n  kex: [mlkem768x25519-sha256]\n  macs: [hmac-sha2-256]\n  hostKeyAlgos: [ssh-ed25519]\n";
        let c = parse_str(ok, false).unwrap();
        assert_eq!(c.ssh.kex, Some(vec!["mlkem768x25519-sha256".to_string()]));
    }

    #[test]
    fn host_key_algorithms_must_fit_a_host_key() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("new_key"); // missing: will be a new ed25519 key
        let text = format!(
            "auth:\n  plugin: builtin:static-users\nssh:\n  hostkeys: [{}]\n  hostKeyAlgos: [rsa-sha2-512]\n",
            key.display()
        );
        let e = parse_str(&text, false).unwrap_err();
        assert!(
            e.problems[0].contains(
                "ssh.hostKeyAlgos: no algorithm fits a host key (ssh.hostkeys are ssh-ed25519)"
            ),
            "{:?}",
            e.problems
        );
    }

    #[test]
    fn semantic_problems_are_all_listed() {
        let text = "ssh:\n  listen: nowhere\ndocker:\n  connection:\n    host: ftp://x\n";
        let e = parse_str(text, false).unwrap_err();
        assert!(e.problems.len() >= 3, "{:?}", e.problems);
    }
}
