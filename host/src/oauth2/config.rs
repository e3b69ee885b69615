//! The `oauth2` section: ContainerSSH's `auth.keyboardInteractive.oauth2` block, key for key
//! (a ContainerSSH file's block is moved here when its method is `oauth2`).
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::observe::ServerTls;
use crate::plugin::tls::{list_or_colon_string, TlsSettings};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderName {
    /// github.com or a GitHub Enterprise server: device flow, then the authorization code flow.
    #[serde(alias = "GitHub")]
    Github,
    /// An OpenID Connect provider (found through its discovery document).
    #[serde(alias = "OIDC")]
    Oidc,
    /// A plain OAuth2 server: authorization code flow only, and no identity (the SSH user name
    /// is taken as it is; an `authz` webhook or plugin should check it).
    Generic,
}

#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OAuth2Config {
    pub provider: ProviderName,
    pub client_id: String,
    pub client_secret: String,
    /// The page the provider sends the browser back to in the authorization code flow.
    #[serde(default)]
    pub redirect: RedirectConfig,
    #[serde(default)]
    pub github: GitHubConfig,
    #[serde(default)]
    pub oidc: OidcConfig,
    #[serde(default)]
    pub generic: GenericConfig,
    /// ContainerSSH draws a QR code for these clients; not drawn here (a warning says so).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub qr_code_clients: Vec<String>,
    /// Accepted for ContainerSSH compatibility; every client gets the device flow here.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub device_flow_clients: Vec<String>,
    /// How long one login may take, from the first prompt to the identity (the user's time in
    /// the browser included). `ssh.loginGraceTime` bounds it too.
    #[serde(default = "default_auth_timeout", with = "crate::config::duration")]
    pub auth_timeout: Duration,
}

/// The client secret never appears in a log line or a `Debug` print.
impl std::fmt::Debug for OAuth2Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OAuth2Config")
            .field("provider", &self.provider)
            .field("client_id", &self.client_id)
            .field("client_secret", &"<redacted>")
            .field("redirect", &self.redirect)
            .field("auth_timeout", &self.auth_timeout)
            .finish_non_exhaustive()
    }
}

fn default_auth_timeout() -> Duration {
    Duration::from_secs(120)
}

/// ContainerSSH's redirect server settings (its HTTP server configuration plus `webroot`).
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RedirectConfig {
    #[serde(default = "default_redirect_listen")]
    pub listen: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clientcacert: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_version: Option<String>,
    #[serde(
        default,
        deserialize_with = "list_or_colon_string",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub curves: Vec<String>,
    #[serde(
        default,
        deserialize_with = "list_or_colon_string",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub cipher: Vec<String>,
    /// A directory with an `index.html` (and whatever it links to) to serve instead of the
    /// built-in page; `{{ .Code }}` in index.html becomes the code to paste.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub webroot: String,
}

impl std::fmt::Debug for RedirectConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedirectConfig")
            .field("listen", &self.listen)
            .field("tls", &self.tls())
            .field("webroot", &self.webroot)
            .finish()
    }
}

impl Default for RedirectConfig {
    fn default() -> Self {
        Self {
            listen: default_redirect_listen(),
            cert: None,
            key: None,
            clientcacert: None,
            tls_version: None,
            curves: Vec::new(),
            cipher: Vec::new(),
            webroot: String::new(),
        }
    }
}

/// A value, where ContainerSSH's configuration dumps write "" for "not set".
fn set(value: &Option<String>) -> Option<String> {
    value.clone().filter(|v| !v.trim().is_empty())
}

fn default_redirect_listen() -> String {
    "0.0.0.0:8080".into()
}

impl RedirectConfig {
    pub fn tls(&self) -> ServerTls {
        ServerTls {
            cert: set(&self.cert),
            key: set(&self.key),
            clientcacert: set(&self.clientcacert),
            tls_version: set(&self.tls_version),
            curves: self.curves.clone(),
            cipher: self.cipher.clone(),
        }
    }
}

/// The TLS and timeout settings of requests to one provider.
#[derive(Debug, Clone, PartialEq)]
pub struct ProviderHttp {
    pub tls: TlsSettings,
    pub timeout: Duration,
}

fn default_request_timeout() -> Duration {
    Duration::from_secs(10)
}

/// `cacert` ... `timeout` of a section (written out in each: `serde(flatten)` would hide
/// unknown keys from the strict loader).
macro_rules! provider_http {
    ($section:expr) => {
        ProviderHttp {
            tls: TlsSettings {
                cacert: set(&$section.cacert),
                cert: set(&$section.cert),
                key: set(&$section.key),
                tls_version: set(&$section.tls_version),
                curves: $section.curves.clone(),
                cipher: $section.cipher.clone(),
            },
            timeout: $section.timeout,
        }
    };
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GitHubConfig {
    /// github.com, or a GitHub Enterprise server's address.
    #[serde(default = "default_github_url")]
    pub url: String,
    /// The REST API (`https://HOST/api/v3` on GitHub Enterprise).
    #[serde(default = "default_github_api_url")]
    pub apiurl: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cacert: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_version: Option<String>,
    #[serde(
        default,
        deserialize_with = "list_or_colon_string",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub curves: Vec<String>,
    #[serde(
        default,
        deserialize_with = "list_or_colon_string",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub cipher: Vec<String>,
    /// One request's time limit (failed requests are retried until the login's time is up).
    #[serde(default = "default_request_timeout", with = "crate::config::duration")]
    pub timeout: Duration,
    /// The GitHub login must equal the SSH user name.
    #[serde(default = "yes")]
    pub enforce_username: bool,
    /// The user must be an active member of this organization (checked with the API; the
    /// `read:org` scope is asked for).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub require_org_membership: String,
    /// The user must have two-factor authentication on (the `read:user` scope is asked for).
    #[serde(default, rename = "require2FA", alias = "require2fa")]
    pub require_2fa: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_scopes: Vec<String>,
    /// Every extra scope must have been granted.
    #[serde(default)]
    pub enforce_scopes: bool,
}

fn yes() -> bool {
    true
}
fn default_github_url() -> String {
    "https://github.com".into()
}
fn default_github_api_url() -> String {
    "https://api.github.com".into()
}

impl Default for GitHubConfig {
    fn default() -> Self {
        Self {
            url: default_github_url(),
            apiurl: default_github_api_url(),
            cacert: None,
            cert: None,
            key: None,
            tls_version: None,
            curves: Vec::new(),
            cipher: Vec::new(),
            enforce_username: true,
            require_org_membership: String::new(),
            require_2fa: false,
            extra_scopes: Vec::new(),
            enforce_scopes: false,
            timeout: default_request_timeout(),
        }
    }
}

impl GitHubConfig {
    pub fn http(&self) -> ProviderHttp {
        provider_http!(self)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OidcConfig {
    /// The issuer: its `/.well-known/openid-configuration` names every endpoint.
    #[serde(default)]
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cacert: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_version: Option<String>,
    #[serde(
        default,
        deserialize_with = "list_or_colon_string",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub curves: Vec<String>,
    #[serde(
        default,
        deserialize_with = "list_or_colon_string",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub cipher: Vec<String>,
    /// One request's time limit (failed requests are retried until the login's time is up).
    #[serde(default = "default_request_timeout", with = "crate::config::duration")]
    pub timeout: Duration,
    /// Accepted as ContainerSSH writes it; redirects are never followed (a redirected token
    /// request would carry the client secret elsewhere).
    #[serde(default)]
    pub allow_redirects: bool,
    #[serde(default)]
    pub device_flow: bool,
    #[serde(default)]
    pub authorization_code_flow: bool,
    /// More scopes to ask for, beside `openid`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_scopes: Vec<String>,
    /// Every extra scope must have been granted.
    #[serde(default)]
    pub enforce_scopes: bool,
    /// The userinfo claim that becomes the user's name.
    #[serde(default = "default_username_field")]
    pub username_field: String,
    /// Where the provider sends the browser back to (the redirect server's address as users
    /// reach it), for the authorization code flow.
    #[serde(default, rename = "redirectURI", alias = "redirectUri")]
    pub redirect_uri: String,
}

fn default_username_field() -> String {
    "sub".into()
}

impl Default for OidcConfig {
    fn default() -> Self {
        Self {
            url: String::new(),
            cacert: None,
            cert: None,
            key: None,
            tls_version: None,
            curves: Vec::new(),
            cipher: Vec::new(),
            timeout: default_request_timeout(),
            allow_redirects: false,
            extra_scopes: Vec::new(),
            enforce_scopes: false,
            device_flow: false,
            authorization_code_flow: false,
            username_field: default_username_field(),
            redirect_uri: String::new(),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GenericConfig {
    #[serde(
        default,
        rename = "authorizeEndpointURL",
        alias = "authorizeEndpointUrl"
    )]
    pub authorize_endpoint_url: String,
    #[serde(default)]
    pub token_endpoint: GenericTokenEndpoint,
    #[serde(default, rename = "redirectURI", alias = "redirectUri")]
    pub redirect_uri: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GenericTokenEndpoint {
    #[serde(default)]
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cacert: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_version: Option<String>,
    #[serde(
        default,
        deserialize_with = "list_or_colon_string",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub curves: Vec<String>,
    #[serde(
        default,
        deserialize_with = "list_or_colon_string",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub cipher: Vec<String>,
    /// One request's time limit (failed requests are retried until the login's time is up).
    #[serde(default = "default_request_timeout", with = "crate::config::duration")]
    pub timeout: Duration,
    #[serde(default)]
    pub allow_redirects: bool,
}

impl Default for GenericTokenEndpoint {
    fn default() -> Self {
        Self {
            url: String::new(),
            cacert: None,
            cert: None,
            key: None,
            tls_version: None,
            curves: Vec::new(),
            cipher: Vec::new(),
            timeout: default_request_timeout(),
            allow_redirects: false,
        }
    }
}

impl OidcConfig {
    pub fn http(&self) -> ProviderHttp {
        provider_http!(self)
    }
}

impl GenericTokenEndpoint {
    pub fn http(&self) -> ProviderHttp {
        provider_http!(self)
    }
}

impl OAuth2Config {
    /// Every problem, each naming its key under `oauth2.` (files are read: call off the
    /// async workers).
    pub fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.client_id.trim().is_empty() {
            problems.push("clientId: required".to_string());
        }
        if self.client_secret.trim().is_empty() {
            problems.push("clientSecret: required".to_string());
        }
        if self.auth_timeout.is_zero() {
            problems.push("authTimeout: must be above zero".to_string());
        }
        let mut http = |prefix: &str, settings: &ProviderHttp| {
            problems.extend(
                settings
                    .tls
                    .validate()
                    .into_iter()
                    .map(|p| format!("{prefix}.{p}")),
            );
            if settings.timeout.is_zero() {
                problems.push(format!("{prefix}.timeout: must be above zero"));
            }
        };
        match self.provider {
            ProviderName::Github => {
                http("github", &self.github.http());
                for (key, value) in [("url", &self.github.url), ("apiurl", &self.github.apiurl)] {
                    if let Err(why) = https_url(value) {
                        problems.push(format!("github.{key}: {why}"));
                    }
                }
            }
            ProviderName::Oidc => {
                http("oidc", &self.oidc.http());
                if let Err(why) = https_url(&self.oidc.url) {
                    problems.push(format!("oidc.url: {why}"));
                }
                if !self.oidc.device_flow && !self.oidc.authorization_code_flow {
                    problems.push(
                        "oidc: neither deviceFlow nor authorizationCodeFlow is on; turn on at least one"
                            .into(),
                    );
                }
                if self.oidc.authorization_code_flow {
                    if let Err(why) = url_with_scheme(&self.oidc.redirect_uri) {
                        problems.push(format!(
                            "oidc.redirectURI: {why} (needed by authorizationCodeFlow)"
                        ));
                    }
                }
                if self.oidc.username_field.trim().is_empty() {
                    problems.push("oidc.usernameField: must name a userinfo claim".into());
                }
            }
            ProviderName::Generic => {
                http("generic.tokenEndpoint", &self.generic.token_endpoint.http());
                if let Err(why) = https_url(&self.generic.token_endpoint.url) {
                    problems.push(format!("generic.tokenEndpoint.url: {why}"));
                }
                if let Err(why) = https_url(&self.generic.authorize_endpoint_url) {
                    problems.push(format!("generic.authorizeEndpointURL: {why}"));
                }
                if let Err(why) = url_with_scheme(&self.generic.redirect_uri) {
                    problems.push(format!("generic.redirectURI: {why}"));
                }
            }
        }
        if self
            .redirect
            .listen
            .parse::<std::net::SocketAddr>()
            .is_err()
        {
            problems.push(format!(
                "redirect.listen: {:?} is not an address:port",
                self.redirect.listen
            ));
        }
        let tls = self.redirect.tls();
        if let Some(p) = tls.pairing_problem() {
            problems.push(format!("redirect.{p}"));
        } else if tls.enabled() {
            problems.extend(tls.validate().into_iter().map(|p| format!("redirect.{p}")));
        }
        if !self.redirect.webroot.is_empty() {
            let index = std::path::Path::new(&self.redirect.webroot).join("index.html");
            match std::fs::metadata(&index) {
                Ok(m) if m.is_file() => {}
                Ok(_) => problems.push(format!(
                    "redirect.webroot: {} is not a file",
                    index.display()
                )),
                Err(e) => problems.push(format!(
                    "redirect.webroot: the directory must hold an index.html ({}: {e})",
                    index.display()
                )),
            }
        }
        problems
    }

    /// Whether this provider needs the redirect server (an authorization code flow is on).
    pub fn uses_redirect_server(&self) -> bool {
        match self.provider {
            ProviderName::Github | ProviderName::Generic => true,
            ProviderName::Oidc => self.oidc.authorization_code_flow,
        }
    }
}

/// An https URL (provider endpoints carry the client secret and tokens). http is allowed for
/// loopback addresses only, for a provider on the same host.
pub(super) fn https_url(value: &str) -> Result<http::Uri, String> {
    let uri = url_with_scheme(value)?;
    let loopback = uri.host().is_some_and(|h| {
        h == "localhost"
            || h.trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    });
    match uri.scheme_str() {
        Some("https") => Ok(uri),
        Some("http") if loopback => Ok(uri),
        _ => Err(format!(
            "{value:?} must be an https:// URL (tokens and the client secret travel over it)"
        )),
    }
}

fn url_with_scheme(value: &str) -> Result<http::Uri, String> {
    if value.trim().is_empty() {
        return Err("required".into());
    }
    let uri: http::Uri = value
        .parse()
        .map_err(|e| format!("{value:?} is not a URL: {e}"))?;
    if uri.scheme().is_none() || uri.host().is_none() {
        return Err(format!("{value:?} is not an absolute URL"));
    }
    Ok(uri)
}

#[cfg(test)]
mod tests {
    use crate::config::parse_str;

    /// What ContainerSSH's Go structures write for a GitHub login (zero values included).
    const CONTAINERSSH_GITHUB: &str = r#"{
      "auth": {"url": "", "authTimeout": 60000000000,
        "password": {"method": "", "webhook": {"url": ""}},
        "publicKey": {"method": "", "webhook": {"url": ""}},
        "authz": {"method": "", "webhook": {"url": ""}},
        "gssapi": {"method": ""},
        "keyboardInteractive": {"method": "oauth2", "oauth2": {
          "redirect": {"listen": "0.0.0.0:8080", "key": "", "cert": "", "clientcacert": "",
            "tlsVersion": "1.3", "curves": ["x25519", "secp256r1", "secp384r1", "secp521r1"],
            "cipher": ["TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256",
              "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256", "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"],
            "webroot": ""},
          "clientId": "Iv1.abc", "clientSecret": "s3cret", "provider": "github",
          "github": {"cacert": "", "url": "https://github.com", "apiurl": "https://api.github.com",
            "cert": "", "key": "", "tlsVersion": "1.3",
            "curves": ["x25519", "secp256r1", "secp384r1", "secp521r1"],
            "cipher": ["TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256",
              "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256", "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"],
            "enforceUsername": true, "requireOrgMembership": "", "require2FA": false,
            "extraScopes": null, "enforceScopes": false, "timeout": 10000000000},
          "oidc": {"url": "", "allowRedirects": false, "timeout": 2000000000, "cacert": "", "cert": "",
            "key": "", "tlsVersion": "1.3", "curves": null, "cipher": null, "deviceFlow": false,
            "authorizationCodeFlow": false, "usernameField": "sub", "redirectURI": ""},
          "generic": {"authorizeEndpointURL": "", "tokenEndpoint": {"url": "", "allowRedirects": false,
            "timeout": 2000000000, "cacert": "", "cert": "", "key": "", "tlsVersion": "1.3",
            "curves": null, "cipher": null}, "redirectURI": ""},
          "qrCodeClients": null, "deviceFlowClients": null, "authTimeout": 180000000000}}
      }
    }"#;

    #[test]
    fn containerssh_github_login_reads_as_written() {
        let config = parse_str(CONTAINERSSH_GITHUB, false).unwrap_or_else(|e| panic!("{e}"));
        assert!(config.auth.is_none(), "OAuth2 alone needs no auth plugin");
        let oauth2 = config.oauth2.expect("oauth2");
        assert_eq!(oauth2.client_id, "Iv1.abc");
        assert_eq!(oauth2.auth_timeout, std::time::Duration::from_secs(180));
        assert_eq!(oauth2.github.timeout, std::time::Duration::from_secs(10));
        // "" is "not set": plain HTTP for the redirect page, the system's CAs for GitHub.
        assert!(!oauth2.redirect.tls().enabled());
        assert_eq!(oauth2.github.http().tls.cacert, None);
        assert!(format!("{:?}", oauth2).contains("<redacted>"));
        assert!(!format!("{:?}", oauth2).contains("s3cret"));
    }

    #[test]
    fn problems_name_the_key_the_user_wrote() {
        let text = CONTAINERSSH_GITHUB
            .replace(r#""clientSecret": "s3cret""#, r#""clientSecret": """#)
            .replace(
                r#""url": "https://github.com""#,
                r#""url": "http://github.example""#,
            );
        let e = parse_str(&text, false).unwrap_err().problems.join("\n");
        assert!(
            e.contains("auth.keyboardInteractive.oauth2.clientSecret: required"),
            "{e}"
        );
        assert!(
            e.contains("auth.keyboardInteractive.oauth2.github.url:") && e.contains("https://"),
            "{e}"
        );
        let e = parse_str(
            "oauth2:\n  provider: oidc\n  clientId: a\n  clientSecret: b\n  oidc:\n    url: https://id.example\n    bogus: 1\n",
            false,
        )
        .unwrap_err()
        .problems
        .join("\n");
        assert!(e.contains("oauth2.oidc.bogus: unknown key"), "{e}");
        let e = parse_str(
            "oauth2:\n  provider: oidc\n  clientId: a\n  clientSecret: b\n  oidc:\n    url: https://id.example\n    authorizationCodeFlow: true\n",
            false,
        )
        .unwrap_err()
        .problems
        .join("\n");
        assert!(e.contains("oauth2.oidc.redirectURI: required"), "{e}");
        let e = parse_str(
            "oauth2:\n  provider: gitlab\n  clientId: a\n  clientSecret: b\n",
            false,
        )
        .unwrap_err()
        .problems
        .join("\n");
        assert!(e.contains("oauth2.provider"), "{e}");
        let e = parse_str("ssh:\n  listen: 127.0.0.1:2222\n", false)
            .unwrap_err()
            .problems
            .join("\n");
        assert!(e.contains("auth.plugin") && e.contains("oauth2"), "{e}");
    }

    #[test]
    fn a_long_oauth2_login_extends_the_login_deadline() {
        let config = parse_str(CONTAINERSSH_GITHUB, false).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(config.login_deadline(), std::time::Duration::from_secs(190));
    }
}
