//! ContainerSSH's `auth:` and `configserver:` sections, translated into plugin settings of the
//! built-in webhook plugins, so that an existing ContainerSSH config keeps working:
//!
//! - legacy form: `auth: {url, timeout, authTimeout, cacert, cert, key, tlsVersion, curves,
//!   cipher, allowRedirects, password: true, pubkey: true}`
//! - current form: `auth: {password: {method: webhook, webhook: {url, ...}}, publicKey: {...},
//!   authz: {...}}`
//! - `configserver: {url, timeout, cacert, cert, key, tlsVersion, curves, cipher,
//!   allowRedirects, transmitSensitiveMetadata}`
//!
//! A section with a `plugin` key is already in our own form and left alone. The TLS keys go
//! to the host's egress settings (keys never enter the sandbox); the destination allow-list
//! is the URLs' host:port.
use std::time::Duration;

use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::load::deserialize_strict;
use crate::plugin::tls::TlsSettings;

/// One ContainerSSH HTTP client section (`HTTPClientConfiguration`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct WebhookClient {
    url: Option<String>,
    #[serde(default)]
    timeout: Option<GoDuration>,
    #[serde(default)]
    auth_timeout: Option<GoDuration>,
    #[serde(default)]
    allow_redirects: bool,
    #[serde(default)]
    cacert: Option<String>,
    #[serde(default)]
    cert: Option<String>,
    #[serde(default)]
    key: Option<String>,
    #[serde(default)]
    tls_version: Option<String>,
    #[serde(default)]
    curves: Option<Value>,
    #[serde(default)]
    cipher: Option<Value>,
    /// The TLS keys this webhook took from its section (for problems' paths).
    #[serde(skip)]
    inherited: Vec<&'static str>,
}

impl WebhookClient {
    /// Takes `section`'s value for every setting this webhook leaves unset (not the URL).
    fn inherit(&mut self, section: &WebhookClient) {
        self.timeout = self.timeout.or(section.timeout);
        self.auth_timeout = self.auth_timeout.or(section.auth_timeout);
        self.allow_redirects |= section.allow_redirects;
        let mut inherited = Vec::new();
        let mut inherit = |key: &'static str, own: &mut Option<String>, theirs: &Option<String>| {
            if own.is_none() && theirs.is_some() {
                own.clone_from(theirs);
                inherited.push(key);
            }
        };
        inherit("cacert", &mut self.cacert, &section.cacert);
        inherit("cert", &mut self.cert, &section.cert);
        inherit("key", &mut self.key, &section.key);
        inherit("tlsVersion", &mut self.tls_version, &section.tls_version);
        if self.curves.is_none() && section.curves.is_some() {
            self.curves.clone_from(&section.curves);
            inherited.push("curves");
        }
        if self.cipher.is_none() && section.cipher.is_some() {
            self.cipher.clone_from(&section.cipher);
            inherited.push("cipher");
        }
        self.inherited = inherited;
    }
}

/// A webhook and where the user wrote it (`auth`, `auth.password.webhook`, `configserver`).
struct Located<'a> {
    path: String,
    client: &'a WebhookClient,
}

impl Located<'_> {
    /// Where the user wrote `key` of this webhook: its own block, or the section it inherited
    /// the key from.
    fn key_path(&self, section: &str, key: &str) -> String {
        if self.client.inherited.contains(&key) {
            format!("{section}.{key}")
        } else {
            format!("{}.{key}", self.path)
        }
    }
}

/// Our own plugin keys that may stand in a ContainerSSH-form section too; they are passed on
/// as they are.
const PLUGIN_LIMIT_KEYS: &[&str] = &["maxConcurrency", "maxQueued", "queueTimeout"];

fn take_plugin_limits(section: &mut Value) -> Map<String, Value> {
    let mut limits = Map::new();
    if let Some(map) = section.as_object_mut() {
        for key in PLUGIN_LIMIT_KEYS {
            if let Some(v) = map.remove(*key) {
                limits.insert((*key).to_string(), v);
            }
        }
    }
    limits
}

/// A duration as ContainerSSH writes it: "2s", "1m30s", or integer nanoseconds (Go's JSON).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct GoDuration(Duration);

impl<'de> Deserialize<'de> for GoDuration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Value::deserialize(d)? {
            Value::Number(n) => n
                .as_u64()
                .map(|ns| GoDuration(Duration::from_nanos(ns)))
                .ok_or_else(|| serde::de::Error::custom("a duration must not be negative")),
            Value::String(s) => humantime::parse_duration(s.trim())
                .map(GoDuration)
                .map_err(|e| serde::de::Error::custom(format!("{s:?} is not a duration: {e}"))),
            other => Err(serde::de::Error::custom(format!(
                "{other} is not a duration"
            ))),
        }
    }
}

/// `auth.password` / `auth.publicKey` / `auth.authz` / `auth.keyboardInteractive` /
/// `auth.gssapi` in the current form.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Method {
    #[serde(default)]
    method: String,
    #[serde(default)]
    webhook: Option<WebhookClient>,
    /// The settings of ContainerSSH's Kerberos and OAuth2 methods: read only when `method`
    /// asks for them, which is refused, so accepted (as ContainerSSH writes them) and unused.
    #[serde(default, rename = "kerberos")]
    _kerberos: Option<Value>,
    #[serde(default, rename = "oauth2")]
    _oauth2: Option<Value>,
}

/// ContainerSSH's `auth:` (both forms): the method blocks, and the legacy HTTP client keys.
struct ContainerSshAuth {
    legacy: WebhookClient,
    /// Legacy: a bool; current form: a method block.
    password: Option<Value>,
    pubkey: Option<bool>,
    public_key: Option<Method>,
    authz: Option<Method>,
    keyboard_interactive: Option<Method>,
    gssapi: Option<Method>,
}

impl ContainerSshAuth {
    /// Splits the method blocks off and parses the rest as the legacy client, each strictly.
    fn parse(section: Value) -> Result<Self, Vec<String>> {
        let Value::Object(mut map) = section else {
            return Err(vec!["auth: must be a map".into()]);
        };
        let mut problems = Vec::new();
        let mut method = |key: &str| -> Option<Method> {
            let v = map.remove(key)?;
            parse::<Method>(v, &format!("auth.{key}"))
                .map_err(|mut p| problems.append(&mut p))
                .ok()
        };
        let public_key = method("publicKey");
        let authz = method("authz");
        let keyboard_interactive = method("keyboardInteractive");
        let gssapi = method("gssapi");
        let password = map.remove("password");
        let pubkey = match map.remove("pubkey") {
            None | Some(Value::Null) => None,
            Some(Value::Bool(b)) => Some(b),
            Some(other) => {
                problems.push(format!("auth.pubkey: {other} is not true or false"));
                None
            }
        };
        let legacy = parse::<WebhookClient>(Value::Object(map), "auth")
            .map_err(|mut p| problems.append(&mut p))
            .ok();
        match legacy {
            Some(legacy) if problems.is_empty() => Ok(Self {
                legacy,
                password,
                pubkey,
                public_key,
                authz,
                keyboard_interactive,
                gssapi,
            }),
            _ => Err(problems),
        }
    }
}

const DEFAULT_HTTP_TIMEOUT: Duration = Duration::from_secs(2);
const DEFAULT_AUTH_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the config server is retried (ContainerSSH retries until the connection ends).
const DEFAULT_CONFIG_RETRY: Duration = Duration::from_secs(30);

/// Rewrites `auth` and `configserver` in ContainerSSH's form into plugin settings; `renames`
/// gets (path in the plugin settings, path the user wrote) for the keys that moved.
pub fn translate(
    root: &mut Value,
    problems: &mut Vec<String>,
    renames: &mut Vec<(String, String)>,
) {
    let Some(root) = root.as_object_mut() else {
        return;
    };
    if let Some(auth) = root.get_mut("auth") {
        if is_containerssh_form(auth) {
            let oauth2 = take_oauth2(auth);
            let kerberos = take_kerberos(auth, problems);
            let other_login = oauth2.is_some() || kerberos.is_some();
            if let Some((kerberos, from)) = kerberos {
                if root.contains_key("kerberos") {
                    problems.push(format!("{from}: kerberos is set as well; keep one of them"));
                } else {
                    root.insert("kerberos".into(), kerberos);
                    renames.push(("kerberos".into(), from));
                }
            }
            if let Some(oauth2) = oauth2 {
                if root.contains_key("oauth2") {
                    problems.push(
                        "auth.keyboardInteractive.oauth2: oauth2 is set as well; keep one of them"
                            .into(),
                    );
                } else {
                    root.insert("oauth2".into(), oauth2);
                    renames.push(("oauth2".into(), "auth.keyboardInteractive.oauth2".into()));
                }
            }
            if let Some(auth) = root.get_mut("auth") {
                match translate_auth(auth.take(), renames, other_login) {
                    Ok(Some(settings)) => *auth = settings,
                    Ok(None) => {
                        root.remove("auth");
                    }
                    Err(mut p) => {
                        problems.append(&mut p);
                        root.remove("auth");
                    }
                }
            }
        }
    }
    if let Some(server) = root.get_mut("configserver") {
        if is_containerssh_form(server) {
            match translate_config_server(server.take(), renames) {
                Ok(Some(settings)) => *server = settings,
                Ok(None) => {
                    root.remove("configserver");
                }
                Err(mut p) => {
                    problems.append(&mut p);
                    root.remove("configserver");
                }
            }
        }
    }
}

/// ContainerSSH's `auth.keyboardInteractive` with method `oauth2`: its `oauth2` block (the
/// gateway's own `oauth2` section); the method block is removed from `auth`.
fn take_oauth2(auth: &mut Value) -> Option<Value> {
    let map = auth.as_object_mut()?;
    let method = map
        .get("keyboardInteractive")?
        .get("method")
        .and_then(Value::as_str)?;
    if method != "oauth2" {
        return None;
    }
    let mut block = map.remove("keyboardInteractive")?;
    Some(
        block
            .as_object_mut()
            .and_then(|m| m.remove("oauth2"))
            .unwrap_or(Value::Object(Map::new())),
    )
}

/// ContainerSSH's `auth.password` / `auth.gssapi` with method `kerberos`: their `kerberos`
/// blocks become the `kerberos` section (with `password: true` / `gssapi: true`), and where
/// the user wrote it; the method blocks are removed from `auth`.
fn take_kerberos(auth: &mut Value, problems: &mut Vec<String>) -> Option<(Value, String)> {
    let map = auth.as_object_mut()?;
    let mut section: Option<(Map<String, Value>, String)> = None;
    for key in ["password", "gssapi"] {
        let method = map
            .get(key)
            .and_then(|block| block.get("method"))
            .and_then(Value::as_str);
        if method != Some("kerberos") {
            continue;
        }
        let Some(mut block) = map.remove(key) else {
            continue;
        };
        let path = format!("auth.{key}.kerberos");
        let settings = match block.as_object_mut().and_then(|m| m.remove("kerberos")) {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(m)) => m,
            Some(_) => {
                problems.push(format!("{path}: must be a map"));
                Map::new()
            }
        };
        match &mut section {
            None => {
                let mut settings = settings;
                settings.insert(key.into(), Value::Bool(true));
                section = Some((settings, path));
            }
            // One Kerberos setup serves both methods: what both blocks set must agree.
            Some((existing, first)) => {
                for (k, v) in settings {
                    match existing.get(&k) {
                        Some(old) if *old != v => problems.push(format!(
                            "{path}.{k}: differs from {first}.{k}; the gateway has one Kerberos setup"
                        )),
                        Some(_) => {}
                        None => {
                            existing.insert(k, v);
                        }
                    }
                }
                existing.insert(key.into(), Value::Bool(true));
            }
        }
    }
    section.map(|(m, path)| (Value::Object(m), path))
}

fn is_containerssh_form(section: &Value) -> bool {
    section
        .as_object()
        .is_some_and(|m| !m.contains_key("plugin"))
}

/// Parses a section strictly, with `prefix` on every problem's path.
fn parse<T: serde::de::DeserializeOwned>(value: Value, prefix: &str) -> Result<T, Vec<String>> {
    let mut problems = Vec::new();
    let parsed = deserialize_strict::<T>(value, &mut problems);
    match parsed {
        Some(v) if problems.is_empty() => Ok(v),
        _ => Err(problems
            .into_iter()
            .map(|p| format!("{prefix}.{p}"))
            .collect()),
    }
}

/// The webhook-auth plugin's settings for `auth`; `None` when no webhook is configured and
/// another login (OAuth2, Kerberos) is (`other_login`).
fn translate_auth(
    mut section: Value,
    renames: &mut Vec<(String, String)>,
    other_login: bool,
) -> Result<Option<Value>, Vec<String>> {
    let limits = take_plugin_limits(&mut section);
    let auth = ContainerSshAuth::parse(section)?;
    let mut problems = Vec::new();
    // (name in the plugin's config, where the user wrote it, the webhook)
    let mut endpoints: Vec<(&str, String, WebhookClient)> = Vec::new();
    // ContainerSSH 0.5/0.6 write the section's own (legacy) `url: ""` next to the method blocks.
    if auth.legacy.url.as_deref().is_some_and(|u| !u.is_empty()) {
        // Legacy form: one server for everything, `password`/`pubkey` switch methods.
        let password = match &auth.password {
            None => true,
            Some(Value::Bool(b)) => *b,
            Some(_) => {
                problems.push(
                    "auth.password: with auth.url set, password must be true or false".into(),
                );
                true
            }
        };
        if password {
            endpoints.push(("password", "auth".into(), auth.legacy.clone()));
        }
        if auth.pubkey.unwrap_or(true) {
            endpoints.push(("pubkey", "auth".into(), auth.legacy.clone()));
        }
    } else {
        let password = match auth.password {
            None => None,
            Some(v) => match parse::<Method>(v, "auth.password") {
                Ok(m) => Some(m),
                Err(mut p) => {
                    problems.append(&mut p);
                    None
                }
            },
        };
        let methods = [
            ("password", "password", password),
            ("pubkey", "publicKey", auth.public_key),
            ("authz", "authz", auth.authz),
            (
                "keyboardInteractive",
                "keyboardInteractive",
                auth.keyboard_interactive,
            ),
            ("gssapi", "gssapi", auth.gssapi),
        ];
        for (name, path, m) in methods {
            match m {
                None => {}
                Some(m) if m.method.is_empty() => {}
                Some(m) if m.method == "webhook" => match m.webhook {
                    Some(mut w) if w.url.is_some() => {
                        // Section-level settings (authTimeout, timeout, TLS) apply where the
                        // webhook sets none, rather than being ignored.
                        w.inherit(&auth.legacy);
                        endpoints.push((name, format!("auth.{path}.webhook"), w));
                    }
                    _ => problems.push(format!(
                        "auth.{path}.webhook.url: required for method webhook"
                    )),
                },
                Some(m) => problems.push(format!(
                    "auth.{path}.method: {:?} is not supported (webhook, or a plugin via auth.plugin)",
                    m.method
                )),
            }
        }
        endpoints.retain(|(name, _, _)| {
            let supported = matches!(*name, "password" | "pubkey" | "authz");
            if !supported {
                problems.push(format!(
                    "auth.{name}: only webhook password, publicKey and authz are supported"
                ));
            }
            supported
        });
        if endpoints.is_empty() && problems.is_empty() && other_login {
            return Ok(None);
        }
        if endpoints.is_empty() && problems.is_empty() {
            problems.push("auth: no method configured (set auth.password.webhook.url, auth.publicKey.webhook.url, or auth.url)".into());
        }
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    let mut config = Map::new();
    let mut deadline = Duration::ZERO;
    for (name, _, w) in &endpoints {
        let timeout = w.timeout.map_or(DEFAULT_HTTP_TIMEOUT, |d| d.0);
        let retry_for = w.auth_timeout.map_or(DEFAULT_AUTH_TIMEOUT, |d| d.0);
        deadline = deadline.max(retry_for + timeout);
        config.insert((*name).to_string(), endpoint_json(w, timeout, retry_for));
    }
    // The authz call follows the login call, so both may take their full time.
    if endpoints.iter().any(|(n, _, _)| *n == "authz") {
        deadline = deadline.saturating_mul(2);
    }
    let clients: Vec<Located> = endpoints
        .iter()
        .map(|(_, path, client)| Located {
            path: path.clone(),
            client,
        })
        .collect();
    plugin_settings(
        "builtin:webhook-auth",
        Value::Object(config),
        &clients,
        deadline,
        "auth",
        limits,
        renames,
    )
    .map(Some)
}

fn translate_config_server(
    section: Value,
    renames: &mut Vec<(String, String)>,
) -> Result<Option<Value>, Vec<String>> {
    let mut section = section;
    let limits = take_plugin_limits(&mut section);
    let transmit = section
        .as_object_mut()
        .and_then(|m| m.remove("transmitSensitiveMetadata"));
    let client: WebhookClient = parse(section, "configserver")?;
    let Some(url) = client.url.as_deref() else {
        return Ok(None); // ContainerSSH: no URL means no config server.
    };
    if url.is_empty() {
        return Ok(None);
    }
    let timeout = client.timeout.map_or(DEFAULT_HTTP_TIMEOUT, |d| d.0);
    let retry_for = client.auth_timeout.map_or(DEFAULT_CONFIG_RETRY, |d| d.0);
    let mut config = endpoint_json(&client, timeout, retry_for);
    if let (Some(map), Some(t)) = (config.as_object_mut(), transmit) {
        map.insert("transmitSensitiveMetadata".into(), t);
    }
    plugin_settings(
        "builtin:webhook-config",
        config,
        &[Located {
            path: "configserver".into(),
            client: &client,
        }],
        retry_for + timeout,
        "configserver",
        limits,
        renames,
    )
    .map(Some)
}

fn endpoint_json(w: &WebhookClient, timeout: Duration, retry_for: Duration) -> Value {
    json!({
        "url": w.url,
        "timeout": format!("{}ms", timeout.as_millis()),
        "authTimeout": format!("{}ms", retry_for.as_millis()),
        "allowRedirects": w.allow_redirects,
    })
}

/// Plugin settings for a built-in webhook plugin: its config, an allow-list of the URLs'
/// destinations, the TLS settings (which must be the same for every URL of one plugin), a
/// call deadline long enough for all retries, and `limits` (our own keys) as given.
fn plugin_settings(
    plugin: &str,
    config: Value,
    clients: &[Located],
    deadline: Duration,
    section: &str,
    limits: Map<String, Value>,
    renames: &mut Vec<(String, String)>,
) -> Result<Value, Vec<String>> {
    let mut problems = Vec::new();
    let mut allow = Vec::new();
    for located in clients {
        match located.client.url.as_deref().map(destination) {
            Some(Ok(d)) if allow.contains(&d) => {}
            Some(Ok(d)) => allow.push(d),
            Some(Err(e)) => problems.push(format!("{}.url: {e}", located.path)),
            None => {}
        }
    }
    let tls = |c: &WebhookClient| -> Result<TlsSettings, (&'static str, String)> {
        let list = |v: &Option<Value>| -> Result<Vec<String>, String> {
            match v {
                None | Some(Value::Null) => Ok(Vec::new()),
                Some(Value::String(s)) => Ok(s
                    .split(':')
                    .map(str::to_string)
                    .filter(|s| !s.is_empty())
                    .collect()),
                Some(Value::Array(a)) => a
                    .iter()
                    .map(|x| {
                        x.as_str()
                            .map(str::to_string)
                            .ok_or_else(|| format!("{x} is not a name"))
                    })
                    .collect(),
                Some(other) => Err(format!("{other} is not a list")),
            }
        };
        Ok(TlsSettings {
            cacert: c.cacert.clone().filter(|s| !s.trim().is_empty()),
            cert: c.cert.clone().filter(|s| !s.trim().is_empty()),
            key: c.key.clone().filter(|s| !s.trim().is_empty()),
            tls_version: c.tls_version.clone().filter(|s| !s.is_empty()),
            curves: list(&c.curves).map_err(|e| ("curves", e))?,
            cipher: list(&c.cipher).map_err(|e| ("cipher", e))?,
        })
    };
    let mut settings: Option<TlsSettings> = None;
    for located in clients {
        match tls(located.client) {
            Ok(t) => match &settings {
                Some(first) if *first != t => problems.push(format!(
                    "{section}: every webhook of one section must use the same cacert, cert, key, tlsVersion, curves and cipher"
                )),
                Some(_) => {}
                None => settings = Some(t),
            },
            Err((key, e)) => problems.push(format!("{}: {e}", located.key_path(section, key))),
        }
    }
    // Problems found later in the plugin settings name the keys the user wrote.
    if let Some(first) = clients.first() {
        for key in ["cacert", "cert", "key", "tlsVersion", "curves", "cipher"] {
            renames.push((
                format!("{section}.egress.tls.{key}"),
                first.key_path(section, key),
            ));
        }
        renames.push((
            format!("{section}.egress.allow"),
            format!("{}.url", first.path),
        ));
        renames.push((format!("{section}.egress.tls"), section.to_string()));
    }
    for located in clients {
        let c = located.client;
        if c.url.as_deref().is_some_and(|u| u.starts_with("http://")) {
            tracing::warn!(
                section,
                "webhook over plain HTTP: credentials and metadata cross the network unencrypted; use https"
            );
        }
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    let deadline = deadline + Duration::from_secs(1);
    let mut settings = json!({
        "plugin": plugin,
        "config": config,
        "timeout": format!("{}ms", deadline.as_millis()),
        "egress": {
            "allow": allow,
            "tls": settings.unwrap_or_default(),
        },
    });
    if let Some(map) = settings.as_object_mut() {
        map.extend(limits);
    }
    Ok(settings)
}

/// "host:port" of an http(s) URL, the form egress.allow takes.
fn destination(url: &str) -> Result<String, String> {
    let uri: http::Uri = url.parse().map_err(|e| format!("{url:?}: {e}"))?;
    let port = match (uri.scheme_str(), uri.port_u16()) {
        (_, Some(p)) => p,
        (Some("https"), None) => 443,
        (Some("http"), None) => 80,
        _ => return Err(format!("{url:?} is not an http:// or https:// URL")),
    };
    let host = uri.host().ok_or_else(|| format!("{url:?} has no host"))?;
    Ok(format!("{host}:{port}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn translated(v: Value) -> Result<Value, Vec<String>> {
        let mut root = v;
        let mut problems = Vec::new();
        translate(&mut root, &mut problems, &mut Vec::new());
        if problems.is_empty() {
            Ok(root)
        } else {
            Err(problems)
        }
    }

    #[test]
    fn legacy_auth_becomes_the_webhook_plugin() {
        let v = translated(json!({"auth": {
            "url": "https://auth.example:8443", "timeout": "3s", "authTimeout": "10s",
            "cacert": "/ca.pem", "cert": "/c.pem", "key": "/k.pem", "pubkey": false
        }}))
        .unwrap();
        let auth = &v["auth"];
        assert_eq!(auth["plugin"], "builtin:webhook-auth");
        assert_eq!(
            auth["config"]["password"]["url"],
            "https://auth.example:8443"
        );
        assert_eq!(auth["config"]["password"]["timeout"], "3000ms");
        assert!(auth["config"].get("pubkey").is_none());
        assert_eq!(auth["egress"]["allow"], json!(["auth.example:8443"]));
        assert_eq!(auth["egress"]["tls"]["cert"], "/c.pem");
        assert_eq!(auth["timeout"], "14000ms");
    }

    #[test]
    fn current_auth_form_with_authz() {
        let hook = json!({"url": "https://a:1", "timeout": 2_000_000_000u64});
        let v = translated(json!({"auth": {
            "password": {"method": "webhook", "webhook": hook},
            "publicKey": {"method": "webhook", "webhook": hook},
            "authz": {"method": "webhook", "webhook": hook},
        }}))
        .unwrap();
        let config = &v["auth"]["config"];
        assert_eq!(config["pubkey"]["timeout"], "2000ms");
        assert_eq!(config["authz"]["url"], "https://a:1");
        assert_eq!(v["auth"]["egress"]["allow"], json!(["a:1"]));
    }

    #[test]
    fn section_level_settings_reach_webhooks_that_set_none() {
        let v = translated(json!({"auth": {
            "timeout": "3s",
            "tlsVersion": "1.2",
            "password": {"method": "webhook", "webhook": {"url": "https://a:1"}},
            "publicKey": {"method": "webhook", "webhook": {"url": "https://a:1", "timeout": "1s"}},
        }}))
        .unwrap();
        let config = &v["auth"]["config"];
        assert_eq!(config["password"]["timeout"], "3000ms");
        assert_eq!(config["pubkey"]["timeout"], "1000ms");
        assert_eq!(v["auth"]["egress"]["tls"]["tlsVersion"], "1.2");
    }

    #[test]
    fn the_0_6_form_with_every_method_block_spelled_out() {
        let hook = json!({"url": "https://a:1", "authTimeout": "60s"});
        let kerberos = json!({"keytab": "/etc/krb5.keytab", "acceptor": "any", "clockSkew": "5m"});
        let v = translated(json!({"auth": {
            "url": "", "timeout": "2s", "authTimeout": "60s", "pubkey": true,
            "password": {"method": "webhook", "webhook": hook, "kerberos": kerberos},
            "publicKey": {"method": "webhook", "webhook": hook},
            "keyboardInteractive": {"method": "", "oauth2": {"clientId": "", "provider": ""}},
            "gssapi": {"method": "", "kerberos": kerberos},
            "authz": {"method": "", "webhook": {"url": ""}},
        }}))
        .unwrap();
        let config = &v["auth"]["config"];
        assert_eq!(config["password"]["url"], "https://a:1");
        assert_eq!(config["pubkey"]["url"], "https://a:1");
        assert!(config.get("authz").is_none(), "{config}");
    }

    #[test]
    fn kerberos_methods_become_the_kerberos_section() {
        let kerberos = json!({"keytab": "/k", "acceptor": "any", "configPath": "/c"});
        let v = translated(json!({"auth": {
            "password": {"method": "kerberos", "kerberos": kerberos, "webhook": {"url": ""}},
            "gssapi": {"method": "kerberos", "kerberos": kerberos},
        }}))
        .unwrap();
        assert!(v.get("auth").is_none(), "{v}");
        assert_eq!(v["kerberos"]["password"], true);
        assert_eq!(v["kerberos"]["gssapi"], true);
        assert_eq!(v["kerberos"]["keytab"], "/k");
        // Beside a public key webhook: both.
        let v = translated(json!({"auth": {
            "password": {"method": "kerberos", "kerberos": kerberos},
            "publicKey": {"method": "webhook", "webhook": {"url": "https://a:1"}},
        }}))
        .unwrap();
        assert_eq!(v["auth"]["config"]["pubkey"]["url"], "https://a:1");
        assert_eq!(v["kerberos"]["password"], true);
        assert!(v["kerberos"].get("gssapi").is_none());
        // Two blocks that disagree: one setup, so an error naming both.
        let e = translated(json!({"auth": {
            "password": {"method": "kerberos", "kerberos": {"keytab": "/a"}},
            "gssapi": {"method": "kerberos", "kerberos": {"keytab": "/b"}},
        }}))
        .unwrap_err();
        assert!(
            e[0].contains("auth.gssapi.kerberos.keytab")
                && e[0].contains("auth.password.kerberos.keytab"),
            "{e:?}"
        );
    }

    #[test]
    fn the_oauth2_method_becomes_the_oauth2_section() {
        // OAuth2 alone: no auth plugin.
        let v = translated(json!({"auth": {
            "url": "",
            "keyboardInteractive": {"method": "oauth2", "oauth2": {"clientId": "x", "provider": "github"}},
            "password": {"method": ""},
        }}))
        .unwrap();
        assert!(v.get("auth").is_none(), "{v}");
        assert_eq!(v["oauth2"]["clientId"], "x");
        // With an authz webhook beside it: the plugin for authz, oauth2 for the login.
        let v = translated(json!({"auth": {
            "keyboardInteractive": {"method": "oauth2", "oauth2": {"clientId": "x"}},
            "authz": {"method": "webhook", "webhook": {"url": "https://a:1"}},
        }}))
        .unwrap();
        assert_eq!(v["auth"]["config"]["authz"]["url"], "https://a:1");
        assert_eq!(v["oauth2"]["clientId"], "x");
        // Other keyboard-interactive methods are refused naming the key.
        let e = translated(json!({"auth": {
            "keyboardInteractive": {"method": "webhook", "webhook": {"url": "https://a:1"}},
        }}))
        .unwrap_err();
        assert!(e[0].starts_with("auth.keyboardInteractive"), "{e:?}");
    }

    #[test]
    fn problems_are_reported_with_paths() {
        let e = translated(json!({"auth": {"password": {"method": "ldap"}}})).unwrap_err();
        assert!(e[0].contains("auth.password.method"), "{e:?}");
        let e = translated(json!({"auth": {"url": "https://a", "tiemout": "1s"}})).unwrap_err();
        assert!(e.iter().any(|p| p.contains("tiemout")), "{e:?}");
        let e = translated(json!({"auth": {
            "password": {"method": "webhook", "webhook": {"url": "https://a", "cacert": "/x"}},
            "publicKey": {"method": "webhook", "webhook": {"url": "https://a", "cacert": "/y"}},
        }}))
        .unwrap_err();
        assert!(e[0].contains("same cacert"), "{e:?}");
        let e = translated(json!({"auth": {"url": "ftp://a"}})).unwrap_err();
        assert!(e[0].contains("not an http"), "{e:?}");
    }

    #[test]
    fn config_server_becomes_the_config_plugin() {
        let v = translated(json!({"configserver": {
            "url": "https://cfg:9443/config", "transmitSensitiveMetadata": true
        }}))
        .unwrap();
        assert_eq!(v["configserver"]["plugin"], "builtin:webhook-config");
        assert_eq!(
            v["configserver"]["config"]["url"],
            "https://cfg:9443/config"
        );
        assert_eq!(
            v["configserver"]["config"]["transmitSensitiveMetadata"],
            true
        );
        let v = translated(json!({"configserver": {"url": ""}})).unwrap();
        assert!(v.get("configserver").is_none());
    }

    #[test]
    fn our_plugin_limits_pass_through_a_containerssh_section() {
        let v = translated(json!({
            "auth": {"url": "https://a:1", "queueTimeout": "90s", "maxConcurrency": 8},
            "configserver": {"url": "https://c:2/config", "maxQueued": 5},
        }))
        .unwrap();
        assert_eq!(v["auth"]["queueTimeout"], "90s");
        assert_eq!(v["auth"]["maxConcurrency"], 8);
        assert_eq!(v["configserver"]["maxQueued"], 5);
    }

    #[test]
    fn our_own_form_is_left_alone() {
        let original = json!({"auth": {"plugin": "builtin:static-users", "config": {}}});
        assert_eq!(translated(original.clone()).unwrap(), original);
    }
}
