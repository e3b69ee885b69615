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
    let mut problems = normalise(&mut value);
    let config: Option<Config> = deserialize_strict(value, &mut problems);
    match config {
        Some(config) => {
            problems.extend(validate(&config));
            if problems.is_empty() {
                Ok(config)
            } else {
                Err(ConfigError { problems })
            }
        }
        None => Err(ConfigError { problems }),
    }
}

/// Deserializes `value`, recording unknown keys (with their paths) and a type error.
pub fn deserialize_strict<T: DeserializeOwned>(
    value: Value,
    problems: &mut Vec<String>,
) -> Option<T> {
    let mut unknown = Vec::new();
    let result: Result<T, _> = {
        let mut record = |path: serde_ignored::Path| unknown.push(readable_path(&path.to_string()));
        let de = serde_ignored::Deserializer::new(value, &mut record);
        serde_path_to_error::deserialize(de)
    };
    problems.extend(unknown.into_iter().map(|p| format!("{p}: unknown key")));
    match result {
        Ok(v) => Some(v),
        Err(e) => {
            let path = e.path().to_string();
            problems.push(format!("{path}: {}", e.into_inner()));
            None
        }
    }
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

/// Rewrites accepted alternative spellings into the canonical shape before typed parsing.
fn normalise(value: &mut Value) -> Vec<String> {
    let mut problems = Vec::new();
    super::compat::translate(value, &mut problems);
    // The hardening guide nests resource limits under `docker.execution.host.resources`;
    // Docker's API (and this schema) has them directly in `host`.
    if let Some(host) = value
        .pointer_mut("/docker/execution/host")
        .and_then(Value::as_object_mut)
    {
        if let Some(resources) = host.remove("resources") {
            match resources {
                Value::Object(map) => {
                    for (k, v) in map {
                        if host.contains_key(&k) {
                            problems.push(format!(
                                "docker.execution.host.resources.{k}: also set in docker.execution.host; set it once"
                            ));
                        } else {
                            host.insert(k, v);
                        }
                    }
                }
                Value::Null => {}
                _ => problems.push("docker.execution.host.resources: must be a map".into()),
            }
        }
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
    fn semantic_problems_are_all_listed() {
        let text = "ssh:\n  listen: nowhere\ndocker:\n  connection:\n    host: ftp://x\n";
        let e = parse_str(text, false).unwrap_err();
        assert!(e.problems.len() >= 3, "{:?}", e.problems);
    }
}
