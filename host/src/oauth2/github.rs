//! GitHub (github.com or GitHub Enterprise): device flow and authorization code flow on
//! `url`, the user, organization membership and token revocation on the REST API (`apiurl`).
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use tokio::time::Instant;

use super::config::{GitHubConfig, OAuth2Config};
use super::grant::{self, printable, DeviceCode, Token, DEVICE_GRANT_TYPE};
use super::http::{Credential, ProviderClient};
use super::{Account, LoginError};

pub struct GitHub {
    config: GitHubConfig,
    client_id: String,
    client_secret: String,
    client: ProviderClient,
}

#[derive(Deserialize)]
struct User {
    login: String,
    #[serde(default)]
    id: Option<u64>,
    #[serde(default)]
    node_id: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    avatar_url: Option<String>,
    #[serde(default)]
    html_url: Option<String>,
    #[serde(default)]
    company: Option<String>,
    #[serde(default)]
    blog: Option<String>,
    #[serde(default)]
    location: Option<String>,
    #[serde(default)]
    bio: Option<String>,
    #[serde(default)]
    twitter_username: Option<String>,
    /// Only there with the `user` or `read:user` scope.
    #[serde(default)]
    two_factor_authentication: Option<bool>,
}

#[derive(Deserialize)]
struct Membership {
    #[serde(default)]
    state: String,
}

impl GitHub {
    pub fn new(config: &OAuth2Config) -> anyhow::Result<Self> {
        Ok(Self {
            config: config.github.clone(),
            client_id: config.client_id.clone(),
            client_secret: config.client_secret.clone(),
            client: ProviderClient::new("GitHub", &config.github.http())?,
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.config.url.trim_end_matches('/'))
    }

    fn api(&self, path: &str) -> String {
        format!("{}{path}", self.config.apiurl.trim_end_matches('/'))
    }

    /// The scopes asked for: the extra ones, plus what the checks need to read.
    fn scope(&self) -> String {
        let mut scopes = self.config.extra_scopes.clone();
        let has =
            |scopes: &[String], any: &[&str]| scopes.iter().any(|s| any.contains(&s.as_str()));
        if !self.config.require_org_membership.is_empty()
            && !has(&scopes, &["org", "read:org", "admin:org"])
        {
            scopes.push("read:org".into());
        }
        if self.config.require_2fa && !has(&scopes, &["user", "read:user"]) {
            scopes.push("read:user".into());
        }
        scopes.join(",")
    }

    pub async fn device_code(&self, deadline: Instant) -> Result<DeviceCode, LoginError> {
        let scope = self.scope();
        grant::device_code(
            &self.client,
            &self.url("/login/device/code"),
            &[("client_id", &self.client_id), ("scope", &scope)],
            Credential::None,
            deadline,
        )
        .await
    }

    pub async fn poll_device(
        &self,
        code: &mut DeviceCode,
        deadline: Instant,
    ) -> Result<Option<Token>, LoginError> {
        let device_code = code.device_code.clone();
        grant::poll_once(
            &self.client,
            &self.url("/login/oauth/access_token"),
            &[
                ("client_id", &self.client_id),
                ("device_code", &device_code),
                ("grant_type", DEVICE_GRANT_TYPE),
            ],
            Credential::None,
            code,
            deadline,
        )
        .await
    }

    pub fn authorization_link(&self, user: &str, state: &str) -> String {
        let query = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("client_id", &self.client_id)
            .append_pair("login", user)
            .append_pair("scope", &self.scope())
            .append_pair("state", state)
            .finish();
        format!("{}?{query}", self.url("/login/oauth/authorize"))
    }

    pub async fn code_token(&self, code: &str, deadline: Instant) -> Result<Token, LoginError> {
        grant::exchange_code(
            &self.client,
            &self.url("/login/oauth/access_token"),
            &[
                ("client_id", &self.client_id),
                ("client_secret", &self.client_secret),
                ("code", code),
            ],
            Credential::None,
            deadline,
        )
        .await
    }

    /// The GitHub user behind `token`, checked against the settings.
    pub async fn identity(
        &self,
        ssh_user: &str,
        token: &Token,
        method: &str,
        deadline: Instant,
    ) -> Result<Account, LoginError> {
        self.check_scopes(&token.scope)?;
        let user: User = self
            .client
            .get_with_token(&self.api("/user"), &token.access_token, "/user", deadline)
            .await?;
        if user.login.is_empty()
            || user.login.len() > 100
            || user.login.chars().any(char::is_control)
        {
            return Err(LoginError::Unavailable(
                "GitHub's /user named no usable login".into(),
            ));
        }
        if self.config.enforce_username && !user.login.eq_ignore_ascii_case(ssh_user) {
            return Err(LoginError::Denied(format!(
                "your GitHub login is {}, not {ssh_user}; connect as {} (ssh {}@...)",
                user.login, user.login, user.login
            )));
        }
        if self.config.require_2fa && user.two_factor_authentication != Some(true) {
            return Err(LoginError::Denied(match user.two_factor_authentication {
                Some(false) => "please turn on two-factor authentication on GitHub to log in here".into(),
                _ => "GitHub did not say whether two-factor authentication is on (grant the read:user permission)".into(),
            }));
        }
        let org = &self.config.require_org_membership;
        if !org.is_empty() {
            self.check_membership(org, token, deadline).await?;
        }
        Ok(account(user, &token.access_token, method))
    }

    /// With `enforceScopes`, every extra scope must have been granted (a granted `repo`
    /// covers an asked `repo:status`); organization membership needs an org scope.
    fn check_scopes(&self, granted: &str) -> Result<(), LoginError> {
        let granted: Vec<&str> = granted
            .split([',', ' '])
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect();
        if self.config.enforce_scopes {
            for wanted in &self.config.extra_scopes {
                let parent = wanted.split(':').next().unwrap_or(wanted);
                if !granted.iter().any(|g| g == wanted || *g == parent) {
                    return Err(LoginError::Denied(format!(
                        "the {wanted} permission was not granted; it is required here"
                    )));
                }
            }
        }
        if !self.config.require_org_membership.is_empty()
            && !granted
                .iter()
                .any(|g| ["org", "read:org", "admin:org"].contains(g))
        {
            return Err(LoginError::Denied(
                "the read:org permission was not granted; it is needed to check your organization membership".into(),
            ));
        }
        Ok(())
    }

    async fn check_membership(
        &self,
        org: &str,
        token: &Token,
        deadline: Instant,
    ) -> Result<(), LoginError> {
        let path = format!(
            "/user/memberships/orgs/{}",
            url::form_urlencoded::byte_serialize(org.as_bytes()).collect::<String>()
        );
        let answer = self
            .client
            .send(
                Method::GET,
                &self.api(&path),
                &[],
                None,
                Credential::Bearer(&token.access_token),
                deadline,
            )
            .await?;
        match answer.status {
            s if s.is_success() => {
                let membership: Membership = answer.json("GitHub", "the membership request")?;
                if membership.state == "active" {
                    Ok(())
                } else {
                    Err(LoginError::Denied(format!(
                        "your membership of the GitHub organization {org} is not active ({}); accept the invitation first",
                        printable(&membership.state, 40)
                    )))
                }
            }
            StatusCode::NOT_FOUND | StatusCode::FORBIDDEN => Err(LoginError::Denied(format!(
                "you are not a member of the GitHub organization {org} (or the organization does not let this application see it)"
            ))),
            s => Err(LoginError::Unavailable(format!(
                "GitHub answered the membership request with HTTP {}",
                s.as_u16()
            ))),
        }
    }

    /// `DELETE /applications/{client_id}/token` with the application's credentials.
    pub async fn revoke(&self, token: &str) -> anyhow::Result<()> {
        let path = format!(
            "/applications/{}/token",
            url::form_urlencoded::byte_serialize(self.client_id.as_bytes()).collect::<String>()
        );
        let deadline = Instant::now() + std::time::Duration::from_secs(10);
        let answer = self
            .client
            .send(
                Method::DELETE,
                &self.api(&path),
                &[],
                Some(&serde_json::json!({ "access_token": token })),
                Credential::Client {
                    id: &self.client_id,
                    secret: &self.client_secret,
                },
                deadline,
            )
            .await?;
        match answer.status {
            // 404: already gone.
            s if s.is_success() || s == StatusCode::NOT_FOUND => Ok(()),
            s => anyhow::bail!("GitHub answered the revocation with HTTP {}", s.as_u16()),
        }
    }
}

/// ContainerSSH's metadata names. Everything personal is sensitive: it is not logged and
/// reaches a config server only with `transmitSensitiveMetadata`.
fn account(user: User, token: &str, method: &str) -> Account {
    let mut metadata = vec![("GITHUB_METHOD".to_string(), method.to_string())];
    let mut sensitive = Vec::new();
    let mut personal = |key: &str, value: Option<String>| {
        if let Some(value) = value {
            metadata.push((key.to_string(), value));
            sensitive.push(key.to_string());
        }
    };
    personal("GITHUB_TOKEN", Some(token.to_string()));
    personal("GITHUB_LOGIN", Some(user.login.clone()));
    personal("GITHUB_ID", user.id.map(|id| id.to_string()));
    personal("GITHUB_NODE_ID", user.node_id);
    personal("GITHUB_NAME", user.name);
    personal("GITHUB_EMAIL", user.email);
    personal("GITHUB_AVATAR_URL", user.avatar_url);
    personal("GITHUB_PROFILE_URL", user.html_url);
    personal("GITHUB_COMPANY", user.company);
    personal("GITHUB_BLOG_URL", user.blog);
    personal("GITHUB_LOCATION", user.location);
    personal("GITHUB_BIO", user.bio);
    personal("GITHUB_TWITTER_USERNAME", user.twitter_username);
    if let Some(on) = user.two_factor_authentication {
        metadata.push(("GITHUB_2FA".into(), on.to_string()));
    }
    Account {
        username: user.login,
        metadata,
        sensitive,
    }
}
