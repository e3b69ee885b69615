//! Per-connection configuration from a ContainerSSH config server, unchanged: after
//! authentication, `POST <url>` with the connection's metadata; the answer's `config` is merged
//! by the gateway over its file configuration for this connection, and the answer's metadata,
//! environment and files are merged into the connection's grant. Failed requests are retried
//! with exponential backoff until `authTimeout`. Sensitive metadata is sent only with
//! `transmitSensitiveMetadata: true`.
//!
//! The gateway fills this config from ContainerSSH's `configserver:` section:
//! ```yaml
//! configserver:
//!   url: https://config.internal:9443/config
//!   timeout: 2s
//!   cacert: /etc/containerssh/ca.pem
//!   cert: /etc/containerssh/client.pem
//!   key: /etc/containerssh/client-key.pem
//! ```
use containerssh_plugin_sdk::config::*;
use containerssh_plugin_sdk::webhook::{self, Endpoint};
use serde::Deserialize;
use serde_json::Value;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Config {
    #[serde(flatten)]
    pub endpoint: Endpoint,
    #[serde(default)]
    pub transmit_sensitive_metadata: bool,
}

pub struct WebhookConfig;

impl ConfigProvider for WebhookConfig {
    fn get_config(conn: ConnectionInfo, grant: AuthGrant) -> Result<ConfigAnswer, String> {
        let config: Config = plugin_config().inspect_err(|e| log(LogLevel::Error, e))?;
        let mut body = webhook::connection_fields(&conn);
        webhook::add_grant_fields(&mut body, &grant, config.transmit_sensitive_metadata);
        let on_retry = |attempt: u32, why: &str, wait: std::time::Duration| {
            log(
                LogLevel::Warn,
                &format!(
                    "config server request failed (attempt {attempt}): {why}; retrying in {} ms",
                    wait.as_millis()
                ),
            )
        };
        let answer = webhook::post_with_retry(&config.endpoint, "", &Value::Object(body), on_retry)
            .map_err(|e| format!("config server request failed: {e}"))?;
        let partial = match answer.get("config") {
            None | Some(Value::Null) => Value::Object(Default::default()),
            Some(v @ Value::Object(_)) => v.clone(),
            Some(other) => {
                return Err(format!(
                    "config server answer: config is not a map: {other}"
                ))
            }
        };
        let mut grant = grant;
        webhook::merge_into_grant(&answer, &mut grant)
            .map_err(|e| format!("config server answer is malformed: {e}"))?;
        Ok(ConfigAnswer {
            config: partial.to_string(),
            grant,
        })
    }
}

containerssh_plugin_sdk::export_config_provider!(WebhookConfig);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_has_containerssh_keys() {
        let c: Config = serde_json::from_value(serde_json::json!({
            "url": "https://cfg/config", "timeout": "1s", "authTimeout": "5s",
            "allowRedirects": false, "transmitSensitiveMetadata": true
        }))
        .unwrap();
        assert_eq!(c.endpoint.url, "https://cfg/config");
        assert!(c.transmit_sensitive_metadata);
    }
}
