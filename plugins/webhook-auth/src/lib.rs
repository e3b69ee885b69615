//! Authentication against a ContainerSSH auth webhook server, unchanged: `POST <url>/password`
//! with `passwordBase64`, `POST <url>/pubkey` with `publicKey` (authorized_keys form), and
//! optionally `POST <url>/authz` after a successful login. A 200 answer's `success` decides;
//! its metadata, environment and files are merged into the grant. Failed requests are retried
//! with exponential backoff until `authTimeout`.
//!
//! The gateway fills this plugin's config from ContainerSSH's `auth:` section; written by hand
//! it looks like:
//! ```yaml
//! auth:
//!   plugin: builtin:webhook-auth
//!   config:
//!     password: {url: "https://auth.internal:8443", timeout: 2s, authTimeout: 60s}
//!     pubkey:   {url: "https://auth.internal:8443"}
//!     authz:    {url: "https://auth.internal:8443"}   # optional
//!   egress:
//!     allow: ["auth.internal:8443"]
//!     tls: {cacert: /etc/containerssh/ca.pem, cert: /etc/containerssh/client.pem, key: /etc/containerssh/client-key.pem}
//! ```
use base64::Engine as _;
use containerssh_plugin_sdk::auth::*;
use containerssh_plugin_sdk::webhook::{self, CallError, Endpoint};
use serde::Deserialize;
use serde_json::{json, Map, Value};

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Config {
    /// Password authentication endpoint; unset: password logins are not handled.
    #[serde(default)]
    pub password: Option<Endpoint>,
    /// Public key authentication endpoint; unset: key logins are not handled.
    #[serde(default)]
    pub pubkey: Option<Endpoint>,
    /// Authorization endpoint called after a successful login; unset: not called.
    #[serde(default)]
    pub authz: Option<Endpoint>,
}

fn config() -> Result<Config, AuthResult> {
    plugin_config::<Config>().map_err(|e| {
        log(LogLevel::Error, &e);
        // A broken plugin configuration is no wrong password.
        AuthResult::Unavailable(e)
    })
}

/// Sends one auth request and turns the answer into a result.
fn ask(
    endpoint: &Endpoint,
    path: &str,
    conn: &ConnectionInfo,
    body: Map<String, Value>,
    start: AuthGrant,
) -> AuthResult {
    let on_retry = |attempt: u32, why: &str, wait: std::time::Duration| {
        log(
            LogLevel::Warn,
            &format!(
                "auth server request {path} failed (attempt {attempt}): {why}; retrying in {} ms",
                wait.as_millis()
            ),
        )
    };
    let answer = match webhook::post_with_retry(endpoint, path, &Value::Object(body), on_retry) {
        Ok(answer) => answer,
        Err(e) => {
            let kind = match e {
                CallError::Permanent(_) => "failed",
                CallError::GaveUp { .. } => "failed for good",
            };
            log(
                LogLevel::Error,
                &format!("auth server request {path} {kind}: {e}"),
            );
            // Unreachable, timing out, 5xx, TLS failures: the login is denied, but it is no
            // wrong guess, and the gateway's log says the auth service is down.
            return AuthResult::Unavailable(format!("auth server {kind}: {e}"));
        }
    };
    if answer.get("success") != Some(&json!(true)) {
        return AuthResult::Failure(format!("the auth server refused user {}", conn.username));
    }
    let mut grant = start;
    if let Err(e) = webhook::merge_into_grant(&answer, &mut grant) {
        log(
            LogLevel::Error,
            &format!("auth server answer to {path} is malformed: {e}"),
        );
        return AuthResult::Unavailable(format!("malformed auth server answer: {e}"));
    }
    AuthResult::Success(grant)
}

pub struct WebhookAuth;

impl Authenticator for WebhookAuth {
    fn password(conn: ConnectionInfo, password: Vec<u8>) -> AuthResult {
        let config = match config() {
            Ok(c) => c,
            Err(denied) => return denied,
        };
        let Some(endpoint) = config.password else {
            return AuthResult::Unsupported;
        };
        let mut body = webhook::connection_fields(&conn);
        body.insert(
            "passwordBase64".into(),
            json!(base64::engine::general_purpose::STANDARD.encode(&password)),
        );
        let grant = AuthGrant::for_user(&conn.username);
        ask(&endpoint, "/password", &conn, body, grant)
    }

    fn public_key(conn: ConnectionInfo, public_key: String) -> AuthResult {
        let config = match config() {
            Ok(c) => c,
            Err(denied) => return denied,
        };
        let Some(endpoint) = config.pubkey else {
            return AuthResult::Unsupported;
        };
        let mut body = webhook::connection_fields(&conn);
        body.insert("publicKey".into(), json!(public_key));
        let grant = AuthGrant::for_user(&conn.username);
        ask(&endpoint, "/pubkey", &conn, body, grant)
    }

    fn authorize(conn: ConnectionInfo, grant: AuthGrant) -> AuthResult {
        let config = match config() {
            Ok(c) => c,
            Err(denied) => return denied,
        };
        let Some(endpoint) = config.authz else {
            return AuthResult::Success(grant);
        };
        let mut body = webhook::connection_fields(&conn);
        // The auth server produced this metadata, so it gets all of it back.
        webhook::add_grant_fields(&mut body, &grant, true);
        ask(&endpoint, "/authz", &conn, body, grant)
    }
}

containerssh_plugin_sdk::export_authenticator!(WebhookAuth);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_takes_containerssh_durations_and_rejects_unknown_keys() {
        let c: Config = serde_json::from_value(json!({
            "password": {"url": "https://a:1", "timeout": "500ms", "authTimeout": "1m30s"}
        }))
        .unwrap();
        let p = c.password.unwrap();
        assert_eq!(p.timeout.as_millis(), 500);
        assert_eq!(p.auth_timeout.as_secs(), 90);
        assert!(!p.allow_redirects);
        assert!(c.pubkey.is_none());
        assert!(
            serde_json::from_value::<Config>(json!({"password": {"url": "x", "retries": 3}}))
                .is_err()
        );
    }
}
