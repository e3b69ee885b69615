//! OpenID Connect: endpoints from the issuer's discovery document, device flow (RFC 8628)
//! and/or authorization code flow, the user from the userinfo endpoint, revocation (RFC 7009)
//! where the provider has it. Also the `generic` OAuth2 provider (authorization code flow to a
//! configured token endpoint, no user information).
use std::sync::Arc;

use reqwest::Method;
use serde::Deserialize;
use tokio::time::Instant;

use super::config::{GenericConfig, OAuth2Config, OidcConfig};
use super::grant::{self, printable, DeviceCode, Token, DEVICE_GRANT_TYPE};
use super::http::{without_query, Credential, ProviderClient};
use super::{Account, LoginError};

/// Userinfo claims kept as metadata, at most.
const MAX_CLAIMS: usize = 64;
/// Longest claim value kept as metadata.
const MAX_CLAIM_LEN: usize = 4096;

/// The endpoints the discovery document names.
#[derive(Debug, Deserialize)]
pub struct Discovery {
    #[serde(default)]
    authorization_endpoint: Option<String>,
    token_endpoint: String,
    #[serde(default)]
    userinfo_endpoint: Option<String>,
    #[serde(default)]
    device_authorization_endpoint: Option<String>,
    #[serde(default)]
    revocation_endpoint: Option<String>,
}

pub struct Oidc {
    config: OidcConfig,
    client_id: String,
    client_secret: String,
    client: ProviderClient,
}

impl Oidc {
    pub fn new(config: &OAuth2Config) -> anyhow::Result<Self> {
        Ok(Self {
            config: config.oidc.clone(),
            client_id: config.client_id.clone(),
            client_secret: config.client_secret.clone(),
            client: ProviderClient::new("the OIDC provider", &config.oidc.http())?,
        })
    }

    pub fn device_flow(&self) -> bool {
        self.config.device_flow
    }

    pub fn code_flow(&self) -> bool {
        self.config.authorization_code_flow
    }

    /// `openid` (the userinfo endpoint needs it) and the extra scopes.
    fn scope(&self) -> String {
        std::iter::once("openid")
            .chain(
                self.config
                    .extra_scopes
                    .iter()
                    .map(String::as_str)
                    .filter(|s| *s != "openid"),
            )
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// With `enforceScopes`, every extra scope must have been granted (a token answer without
    /// `scope` granted what was asked, RFC 6749 §5.1).
    fn check_scopes(&self, granted: &str) -> Result<(), LoginError> {
        if !self.config.enforce_scopes || granted.trim().is_empty() {
            return Ok(());
        }
        let granted: Vec<&str> = granted.split_whitespace().collect();
        match self
            .config
            .extra_scopes
            .iter()
            .find(|s| !granted.contains(&s.as_str()))
        {
            Some(missing) => Err(LoginError::Denied(format!(
                "the {missing} permission was not granted; it is required here"
            ))),
            None => Ok(()),
        }
    }

    fn credential(&self) -> Credential<'_> {
        Credential::Client {
            id: &self.client_id,
            secret: &self.client_secret,
        }
    }

    /// Reads the discovery document (per login, so a provider's changes apply at once).
    pub async fn discover(&self, deadline: Instant) -> Result<Arc<Discovery>, LoginError> {
        let url = format!(
            "{}/.well-known/openid-configuration",
            self.config.url.trim_end_matches('/')
        );
        let answer = self
            .client
            .send(Method::GET, &url, &[], None, Credential::None, deadline)
            .await?;
        if !answer.status.is_success() {
            return Err(LoginError::Unavailable(format!(
                "the OIDC discovery document {url} answered HTTP {}",
                answer.status.as_u16()
            )));
        }
        let discovery: Discovery = answer.json(self.client.name, "the discovery request")?;
        // Tokens and the client secret go to these addresses: https only (loopback aside),
        // as for the issuer itself.
        for endpoint in [
            Some(&discovery.token_endpoint),
            discovery.userinfo_endpoint.as_ref(),
            discovery.device_authorization_endpoint.as_ref(),
            discovery.revocation_endpoint.as_ref(),
        ]
        .into_iter()
        .flatten()
        {
            if !secure_endpoint(endpoint) {
                return Err(LoginError::Unavailable(format!(
                    "the OIDC discovery document names {:?}, which is not an https address",
                    printable(without_query(endpoint), 200)
                )));
            }
        }
        Ok(Arc::new(discovery))
    }

    pub async fn device_code(
        &self,
        endpoints: &Discovery,
        deadline: Instant,
    ) -> Result<DeviceCode, LoginError> {
        let Some(url) = &endpoints.device_authorization_endpoint else {
            return Err(LoginError::Unavailable(
                "oauth2.oidc.deviceFlow is on, but the provider's discovery document names no device_authorization_endpoint".into(),
            ));
        };
        let scope = self.scope();
        grant::device_code(
            &self.client,
            url,
            &[("client_id", &self.client_id), ("scope", &scope)],
            self.credential(),
            deadline,
        )
        .await
    }

    pub async fn poll_device(
        &self,
        endpoints: &Discovery,
        code: &mut DeviceCode,
        deadline: Instant,
    ) -> Result<Option<Token>, LoginError> {
        let device_code = code.device_code.clone();
        grant::poll_once(
            &self.client,
            &endpoints.token_endpoint,
            &[
                ("grant_type", DEVICE_GRANT_TYPE),
                ("device_code", &device_code),
                ("client_id", &self.client_id),
            ],
            self.credential(),
            code,
            deadline,
        )
        .await
    }

    pub fn authorization_link(
        &self,
        endpoints: &Discovery,
        state: &str,
    ) -> Result<String, LoginError> {
        let Some(endpoint) = &endpoints.authorization_endpoint else {
            return Err(LoginError::Unavailable(
                "the provider's discovery document names no authorization_endpoint".into(),
            ));
        };
        Ok(link(
            endpoint,
            &self.client_id,
            &self.scope(),
            state,
            &self.config.redirect_uri,
        ))
    }

    pub async fn code_token(
        &self,
        endpoints: &Discovery,
        code: &str,
        deadline: Instant,
    ) -> Result<Token, LoginError> {
        grant::exchange_code(
            &self.client,
            &endpoints.token_endpoint,
            &[
                ("grant_type", "authorization_code"),
                ("code", code),
                ("client_id", &self.client_id),
                ("redirect_uri", &self.config.redirect_uri),
            ],
            self.credential(),
            deadline,
        )
        .await
    }

    /// The user from the userinfo endpoint: `usernameField` is the user name, string claims
    /// become `OIDC_USERINFO_<CLAIM>` metadata, the token `OIDC_TOKEN` (ContainerSSH's names).
    pub async fn identity(
        &self,
        endpoints: &Discovery,
        token: &Token,
        deadline: Instant,
    ) -> Result<Account, LoginError> {
        self.check_scopes(&token.scope)?;
        let Some(url) = &endpoints.userinfo_endpoint else {
            return Err(LoginError::Unavailable(
                "the provider's discovery document names no userinfo_endpoint".into(),
            ));
        };
        let claims: serde_json::Map<String, serde_json::Value> = self
            .client
            .get_with_token(url, &token.access_token, "the userinfo request", deadline)
            .await?;
        let field = &self.config.username_field;
        let username = match claims.get(field) {
            Some(serde_json::Value::String(name))
                if !name.is_empty() && name.len() <= 256 && !name.chars().any(char::is_control) =>
            {
                name.clone()
            }
            Some(_) => {
                return Err(LoginError::Unavailable(format!(
                "the userinfo claim {field} (oauth2.oidc.usernameField) is not a usable user name"
            )))
            }
            None => {
                return Err(LoginError::Unavailable(format!(
                    "the userinfo answer has no {field} claim (oauth2.oidc.usernameField)"
                )))
            }
        };
        let mut metadata = vec![("OIDC_TOKEN".to_string(), token.access_token.clone())];
        let sensitive = vec!["OIDC_TOKEN".to_string()];
        for (claim, value) in claims.iter().take(MAX_CLAIMS) {
            let serde_json::Value::String(value) = value else {
                continue;
            };
            let key: String = claim
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() {
                        c.to_ascii_uppercase()
                    } else {
                        '_'
                    }
                })
                .collect();
            if key.is_empty() || value.len() > MAX_CLAIM_LEN {
                continue;
            }
            metadata.push((format!("OIDC_USERINFO_{key}"), value.clone()));
        }
        Ok(Account {
            username,
            metadata,
            sensitive,
        })
    }

    pub async fn revoke(&self, endpoints: &Discovery, token: &str) -> anyhow::Result<()> {
        let Some(url) = &endpoints.revocation_endpoint else {
            return Ok(());
        };
        let deadline = Instant::now() + std::time::Duration::from_secs(10);
        let answer = self
            .client
            .send(
                Method::POST,
                url,
                &[("token", token), ("token_type_hint", "access_token")],
                None,
                self.credential(),
                deadline,
            )
            .await?;
        if answer.status.is_success() {
            Ok(())
        } else {
            anyhow::bail!(
                "the OIDC revocation endpoint answered HTTP {}",
                answer.status.as_u16()
            )
        }
    }
}

/// A generic OAuth2 server: the authorization code flow, nothing else.
pub struct Generic {
    config: GenericConfig,
    client_id: String,
    client_secret: String,
    client: ProviderClient,
}

impl Generic {
    pub fn new(config: &OAuth2Config) -> anyhow::Result<Self> {
        Ok(Self {
            config: config.generic.clone(),
            client_id: config.client_id.clone(),
            client_secret: config.client_secret.clone(),
            client: ProviderClient::new(
                "the OAuth2 server",
                &config.generic.token_endpoint.http(),
            )?,
        })
    }

    pub fn authorization_link(&self, state: &str) -> Result<String, LoginError> {
        Ok(link(
            &self.config.authorize_endpoint_url,
            &self.client_id,
            "",
            state,
            &self.config.redirect_uri,
        ))
    }

    pub async fn code_token(&self, code: &str, deadline: Instant) -> Result<Token, LoginError> {
        grant::exchange_code(
            &self.client,
            &self.config.token_endpoint.url,
            &[
                ("grant_type", "authorization_code"),
                ("code", code),
                ("client_id", &self.client_id),
                ("redirect_uri", &self.config.redirect_uri),
            ],
            Credential::Client {
                id: &self.client_id,
                secret: &self.client_secret,
            },
            deadline,
        )
        .await
    }

    /// No user information: the SSH user name stands; the token is `OAUTH2_TOKEN`.
    pub fn identity(ssh_user: &str, token: &Token) -> Account {
        Account {
            username: ssh_user.to_string(),
            metadata: vec![("OAUTH2_TOKEN".into(), token.access_token.clone())],
            sensitive: vec!["OAUTH2_TOKEN".into()],
        }
    }
}

/// An authorization request (RFC 6749 §4.1.1) on `endpoint`, keeping its own query.
fn link(endpoint: &str, client_id: &str, scope: &str, state: &str, redirect_uri: &str) -> String {
    let query = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("response_type", "code")
        .append_pair("client_id", client_id)
        .append_pair("scope", scope)
        .append_pair("state", state)
        .append_pair("redirect_uri", redirect_uri)
        .finish();
    let separator = if endpoint.contains('?') { '&' } else { '?' };
    format!("{endpoint}{separator}{query}")
}

fn secure_endpoint(url: &str) -> bool {
    super::config::https_url(url).is_ok()
}
