//! Operator commands that ContainerSSH users script around: `--dump-config` (the effective
//! configuration, secrets redacted) and `--healthcheck` (for Docker HEALTHCHECK and Kubernetes
//! exec probes: exit 0 when the health endpoint answers 200; over HTTPS as `health.client`
//! says, see `observe::probe`).
use std::path::Path;
use std::process::ExitCode;

use serde_json::Value;

use crate::config;

/// Key names whose values are secrets (compared case-insensitively, `_`/`-` ignored).
const SECRET_KEYS: &[&str] = &[
    "password",
    "key",
    "privatekey",
    "clientkey",
    "token",
    "bearertoken",
    "secret",
    "secretkey",
    "clientsecret",
    "accesskey",
    "passphrase",
    // Docker registry credentials (`docker.execution.auth`): `auth` is base64 "user:password".
    "auth",
    "identitytoken",
    "registrytoken",
];

pub const REDACTED: &str = "<redacted>";

/// Prints the effective configuration (defaults filled in) as YAML, secrets redacted.
pub fn dump_config(path: &Path) -> ExitCode {
    let config = match config::load_file(path) {
        Ok(c) => c,
        Err(e) => {
            eprint!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let mut value = match serde_json::to_value(&config) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("containerssh: cannot represent the configuration: {e}");
            return ExitCode::FAILURE;
        }
    };
    redact(&mut value);
    match serde_norway::to_string(&value) {
        Ok(yaml) => {
            print!("{yaml}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("containerssh: cannot write the configuration as YAML: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Replaces secrets: values under secret key names, and any PEM private key wherever it is.
pub fn redact(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (key, v) in map.iter_mut() {
                let name: String = key
                    .chars()
                    .filter(|c| *c != '_' && *c != '-')
                    .collect::<String>()
                    .to_ascii_lowercase();
                let secret = SECRET_KEYS.contains(&name.as_str());
                if secret && (v.is_string() || v.is_number()) {
                    *v = Value::String(REDACTED.into());
                } else {
                    redact(v);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(redact),
        Value::String(s) if s.contains("PRIVATE KEY-----") => *s = REDACTED.into(),
        _ => {}
    }
}

/// Asks the health endpoint of the configuration at `path`; 0 if it answers 200.
pub fn healthcheck(path: &Path) -> ExitCode {
    let config = match config::load_file(path) {
        Ok(c) => c,
        Err(e) => {
            eprint!("{e}");
            return ExitCode::FAILURE;
        }
    };
    if !config.health.enable {
        eprintln!("containerssh: health.enable is false: there is no health endpoint to ask");
        return ExitCode::FAILURE;
    }
    match crate::observe::probe::check(&config.health) {
        Ok(200) => {
            println!("healthy");
            ExitCode::SUCCESS
        }
        Ok(status) => {
            eprintln!("unhealthy: the health endpoint answered {status}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("unhealthy: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn secrets_are_redacted_wherever_they_are() {
        let mut v = json!({
            "auth": {"config": {"users": {"alice": {"password": "$2b$10$abc", "authorizedKeys": ["ssh-ed25519 AAAA"]}}}},
            "kubernetes": {"connection": {"bearerToken": "t0k3n", "cert": "-----BEGIN CERTIFICATE-----", "key": "k"}},
            "docker": {"connection": {"key": "-----BEGIN EC PRIVATE KEY-----\nMHc\n-----END EC PRIVATE KEY-----"},
                       "execution": {"auth": {"username": "u", "password": "p", "auth": "dTpw", "identitytoken": "i"}}},
            "audit": {"s3": {"secret_key": "s", "accessKey": "a"}},
            "ssh": {"hostkeys": ["/etc/containerssh/host_ed25519"]},
            "other": ["-----BEGIN OPENSSH PRIVATE KEY-----\n..."]
        });
        redact(&mut v);
        assert_eq!(v["auth"]["config"]["users"]["alice"]["password"], REDACTED);
        assert_eq!(
            v["auth"]["config"]["users"]["alice"]["authorizedKeys"][0],
            "ssh-ed25519 AAAA"
        );
        assert_eq!(v["kubernetes"]["connection"]["bearerToken"], REDACTED);
        assert_eq!(v["kubernetes"]["connection"]["key"], REDACTED);
        assert_eq!(
            v["kubernetes"]["connection"]["cert"],
            "-----BEGIN CERTIFICATE-----"
        );
        assert_eq!(v["docker"]["connection"]["key"], REDACTED);
        let registry = &v["docker"]["execution"]["auth"];
        assert_eq!(registry["username"], "u");
        for key in ["password", "auth", "identitytoken"] {
            assert_eq!(registry[key], REDACTED, "{key}");
        }
        assert_eq!(v["audit"]["s3"]["secret_key"], REDACTED);
        assert_eq!(v["audit"]["s3"]["accessKey"], REDACTED);
        assert_eq!(v["ssh"]["hostkeys"][0], "/etc/containerssh/host_ed25519");
        assert_eq!(v["other"][0], REDACTED);
    }
}
