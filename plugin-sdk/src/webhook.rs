//! ContainerSSH's webhook protocol (auth and config servers), so plugins can talk to existing
//! servers unchanged: request bodies, lenient response parsing (unknown fields accepted, keys
//! case-insensitive), metadata merged into a grant as ContainerSSH merges it, and POSTs retried
//! with exponential backoff until a deadline.
use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine as _;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::auth::{AuthGrant, ConnectionInfo};
use crate::http::{self, clock, HttpError};

/// One webhook endpoint, with ContainerSSH's key names.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Endpoint {
    /// Base URL; the protocol's paths (`/password`, `/pubkey`, `/authz`) are appended.
    pub url: String,
    /// Timeout of one HTTP request (ContainerSSH's default: 2s).
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// How long to keep retrying failed requests (ContainerSSH's default: 60s).
    #[serde(default = "default_retry_for", with = "humantime_serde")]
    pub auth_timeout: Duration,
    /// Follow 3xx answers (each hop still passes the gateway's allow-list).
    #[serde(default)]
    pub allow_redirects: bool,
}

fn default_timeout() -> Duration {
    Duration::from_secs(2)
}
fn default_retry_for() -> Duration {
    Duration::from_secs(60)
}

/// The connection fields every request carries.
pub fn connection_fields(conn: &ConnectionInfo) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("username".into(), json!(conn.username));
    m.insert("remoteAddress".into(), json!(conn.remote_address));
    m.insert("connectionId".into(), json!(conn.connection_id));
    m.insert("clientVersion".into(), json!(conn.client_version));
    m
}

/// Adds a grant's metadata, environment and files (files base64, as Go encodes `[]byte`).
/// Sensitive entries are included only if `with_sensitive`.
pub fn add_grant_fields(body: &mut Map<String, Value>, grant: &AuthGrant, with_sensitive: bool) {
    let sensitive = |k: &str| grant.sensitive.iter().any(|s| s == k);
    let keep = |k: &str| with_sensitive || !sensitive(k);
    let text = |entries: &[(String, String)]| -> Map<String, Value> {
        entries
            .iter()
            .filter(|(k, _)| keep(k))
            .map(|(k, v)| (k.clone(), json!({"value": v, "sensitive": sensitive(k)})))
            .collect()
    };
    body.insert(
        "authenticatedUsername".into(),
        json!(grant.authenticated_username),
    );
    body.insert("metadata".into(), Value::Object(text(&grant.metadata)));
    body.insert(
        "environment".into(),
        Value::Object(text(&grant.environment)),
    );
    let files: Map<String, Value> = grant
        .files
        .iter()
        .filter(|(k, _)| keep(k))
        .map(|(k, v)| {
            let encoded = base64::engine::general_purpose::STANDARD.encode(v);
            (
                k.clone(),
                json!({"value": encoded, "sensitive": sensitive(k)}),
            )
        })
        .collect();
    body.insert("files".into(), Value::Object(files));
}

/// A JSON object with its keys lower-cased (ContainerSSH's Go decoder matches keys
/// case-insensitively, so servers in the wild send `Success`, `success` or `SUCCESS`).
pub fn lowercase_keys(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(m) => m
            .into_iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v))
            .collect(),
        _ => Map::new(),
    }
}

/// Merges a response's `authenticatedUsername`, `metadata`, `environment` and `files` into
/// `grant`: new keys are added, existing ones replaced (ContainerSSH's merge).
pub fn merge_into_grant(
    response: &Map<String, Value>,
    grant: &mut AuthGrant,
) -> Result<(), String> {
    if let Some(Value::String(name)) = response.get("authenticatedusername") {
        if !name.is_empty() {
            grant.authenticated_username = name.clone();
        }
    }
    for (field, target) in [
        ("metadata", &mut grant.metadata),
        ("environment", &mut grant.environment),
    ] {
        for (key, value, sensitive) in entries(response.get(field), field)? {
            let value = match value {
                Value::String(s) => s,
                other => return Err(format!("{field}.{key}: value is not a string: {other}")),
            };
            upsert(target, key.clone(), value);
            mark(&mut grant.sensitive, key, sensitive);
        }
    }
    for (path, value, sensitive) in entries(response.get("files"), "files")? {
        let content = match value {
            Value::String(s) => base64::engine::general_purpose::STANDARD
                .decode(s.as_bytes())
                .map_err(|e| format!("files.{path}: value is not base64: {e}"))?,
            other => return Err(format!("files.{path}: value is not base64 text: {other}")),
        };
        upsert(&mut grant.files, path.clone(), content);
        mark(&mut grant.sensitive, path, sensitive);
    }
    Ok(())
}

/// `{key: {"value": v, "sensitive": b}}`; a bare `{key: v}` is accepted too.
fn entries(field: Option<&Value>, name: &str) -> Result<Vec<(String, Value, bool)>, String> {
    match field {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Object(map)) => Ok(map
            .iter()
            .map(|(k, v)| match v {
                Value::Object(inner) => {
                    let inner = lowercase_keys(Value::Object(inner.clone()));
                    let sensitive = matches!(inner.get("sensitive"), Some(Value::Bool(true)));
                    let value = inner.get("value").cloned().unwrap_or(Value::Null);
                    (k.clone(), value, sensitive)
                }
                other => (k.clone(), other.clone(), false),
            })
            .collect()),
        Some(other) => Err(format!("{name} is not an object: {other}")),
    }
}

fn upsert<V>(list: &mut Vec<(String, V)>, key: String, value: V) {
    match list.iter_mut().find(|(k, _)| *k == key) {
        Some(entry) => entry.1 = value,
        None => list.push((key, value)),
    }
}

fn mark(sensitive: &mut Vec<String>, key: String, is_sensitive: bool) {
    let present = sensitive.iter().position(|k| *k == key);
    match (is_sensitive, present) {
        (true, None) => sensitive.push(key),
        (false, Some(i)) => {
            sensitive.remove(i);
        }
        _ => {}
    }
}

/// Why a webhook call gave no usable answer.
#[derive(Debug)]
pub enum CallError {
    /// Retrying cannot help (TLS, destination denied, bad URL).
    Permanent(String),
    /// Still failing when the retry time ran out.
    GaveUp { attempts: u32, last: String },
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Permanent(m) => write!(f, "{m}"),
            CallError::GaveUp { attempts, last } => {
                write!(f, "gave up after {attempts} attempts; last error: {last}")
            }
        }
    }
}

/// First retry after this; doubled each time up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
const MAX_REDIRECTS: usize = 5;

/// The wait before retry number `attempt` (1-based).
pub fn backoff(attempt: u32) -> Duration {
    FIRST_BACKOFF
        .saturating_mul(1u32 << attempt.saturating_sub(1).min(16))
        .min(MAX_BACKOFF)
}

/// POSTs `body` to `endpoint.url + path` until a 200 answer with a JSON object arrives.
/// Non-200 answers, timeouts and transport errors are retried with exponential backoff
/// until `auth_timeout` has passed; TLS errors and denied destinations are not retried.
/// `on_retry` is told about each failed attempt (for logging).
pub fn post_with_retry(
    endpoint: &Endpoint,
    path: &str,
    body: &Value,
    mut on_retry: impl FnMut(u32, &str, Duration),
) -> Result<Map<String, Value>, CallError> {
    let payload = serde_json::to_vec(body).map_err(|e| CallError::Permanent(e.to_string()))?;
    let deadline = clock::now() + endpoint.auth_timeout;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let last = match post_following(
            endpoint,
            &format!("{}{path}", endpoint.url.trim_end_matches('/')),
            &payload,
        ) {
            Ok(resp) if resp.status == 200 => match serde_json::from_slice::<Value>(&resp.body) {
                Ok(v @ Value::Object(_)) => return Ok(lowercase_keys(v)),
                Ok(_) => "the answer is not a JSON object".to_string(),
                Err(e) => format!("the answer is not JSON: {e}"),
            },
            Ok(resp) => format!("the server answered HTTP {}", resp.status),
            Err(e) if e.is_temporary() => e.to_string(),
            Err(e) => return Err(CallError::Permanent(e.to_string())),
        };
        let wait = backoff(attempt);
        if clock::now() + wait >= deadline {
            return Err(CallError::GaveUp {
                attempts: attempt,
                last,
            });
        }
        on_retry(attempt, &last, wait);
        clock::sleep(wait);
    }
}

/// One POST, following redirects only if the endpoint allows them.
fn post_following(
    endpoint: &Endpoint,
    url: &str,
    payload: &[u8],
) -> Result<http::Response, HttpError> {
    let mut url = url.to_string();
    for _ in 0..=MAX_REDIRECTS {
        let resp = http::post_json(&url, payload, endpoint.timeout)?;
        let redirect = matches!(resp.status, 301 | 302 | 303 | 307 | 308);
        match resp.header("location") {
            Some(location) if redirect && endpoint.allow_redirects => {
                url = resolve(&url, location);
            }
            _ => return Ok(resp),
        }
    }
    Err(HttpError::Transport(format!(
        "more than {MAX_REDIRECTS} redirects"
    )))
}

/// A Location header against the URL it came from (absolute, or absolute path).
fn resolve(base: &str, location: &str) -> String {
    if location.contains("://") {
        return location.to_string();
    }
    let origin_end = base
        .find("://")
        .and_then(|i| base[i + 3..].find('/').map(|j| i + 3 + j))
        .unwrap_or(base.len());
    format!(
        "{}/{}",
        &base[..origin_end],
        location.trim_start_matches('/')
    )
}

/// Metadata maps as sorted maps, for tests and logs.
pub fn as_map(entries: &[(String, String)]) -> BTreeMap<String, String> {
    entries.iter().cloned().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant() -> AuthGrant {
        AuthGrant::for_user("alice")
    }

    #[test]
    fn responses_merge_like_containerssh() {
        let mut g = grant();
        g.metadata.push(("team".into(), "red".into()));
        let response = lowercase_keys(json!({
            "Success": true,
            "authenticatedUsername": "alice2",
            "metadata": {"team": {"value": "blue"}, "token": {"value": "t", "sensitive": true}},
            "environment": {"GREETING": "hi"},
            "files": {"/etc/motd": {"value": "aGVsbG8=", "sensitive": false}},
            "somethingNew": 1
        }));
        merge_into_grant(&response, &mut g).unwrap();
        assert_eq!(g.authenticated_username, "alice2");
        assert_eq!(as_map(&g.metadata)["team"], "blue");
        assert_eq!(as_map(&g.environment)["GREETING"], "hi");
        assert_eq!(g.files, vec![("/etc/motd".to_string(), b"hello".to_vec())]);
        assert_eq!(g.sensitive, vec!["token".to_string()]);
        assert_eq!(response.get("success"), Some(&json!(true)));
    }

    #[test]
    fn sensitive_entries_are_left_out_unless_asked() {
        let mut g = grant();
        g.metadata.push(("token".into(), "secret".into()));
        g.metadata.push(("team".into(), "blue".into()));
        g.sensitive.push("token".into());
        let mut body = Map::new();
        add_grant_fields(&mut body, &g, false);
        assert!(body["metadata"].get("token").is_none());
        assert_eq!(body["metadata"]["team"]["value"], "blue");
        add_grant_fields(&mut body, &g, true);
        assert_eq!(body["metadata"]["token"]["sensitive"], true);
    }

    #[test]
    fn malformed_fields_are_errors_not_panics() {
        let mut g = grant();
        assert!(merge_into_grant(&lowercase_keys(json!({"metadata": 3})), &mut g).is_err());
        assert!(merge_into_grant(
            &lowercase_keys(json!({"files": {"/x": {"value": "%%"}}})),
            &mut g
        )
        .is_err());
        assert!(merge_into_grant(
            &lowercase_keys(json!({"environment": {"A": {"value": 1}}})),
            &mut g
        )
        .is_err());
    }

    #[test]
    fn backoff_doubles_up_to_a_cap() {
        assert_eq!(backoff(1), Duration::from_millis(100));
        assert_eq!(backoff(2), Duration::from_millis(200));
        assert_eq!(backoff(4), Duration::from_millis(800));
        assert_eq!(backoff(40), MAX_BACKOFF);
    }

    #[test]
    fn redirect_locations_resolve() {
        assert_eq!(resolve("https://a:1/x/password", "/y"), "https://a:1/y");
        assert_eq!(resolve("https://a:1/x", "https://b/z"), "https://b/z");
    }
}
