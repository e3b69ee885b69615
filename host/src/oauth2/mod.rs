//! Logging in with GitHub or an OpenID Connect provider (ContainerSSH's `oauth2`
//! keyboard-interactive method). The gateway itself talks to the provider, not a plugin: the
//! login is a conversation with the SSH client over several rounds (a link and a code to show,
//! a code to read back), minutes of waiting for the user's browser, and a web page for the
//! provider to send the browser back to, all of which are the host's.
//!
//! Device flow (GitHub; OIDC with `deviceFlow`): the client is shown a link and a code, the
//! gateway polls the provider until the user approved in a browser. Authorization code flow
//! (GitHub when the device flow is unavailable; OIDC with `authorizationCodeFlow`; generic):
//! the client is shown a link; the provider sends the browser to the redirect server, whose
//! page shows `state|code`; the user pastes that into the SSH prompt.
//!
//! The identity that results (the provider's user name and metadata such as `GITHUB_TOKEN`)
//! goes through the auth plugin's `authorize` and the config plugin like any other login. The
//! access token is revoked when the connection ends, as ContainerSSH does.
pub mod config;
mod github;
mod grant;
mod http;
mod oidc;
pub mod redirect;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::time::Instant;
use tokio_util::task::TaskTracker;

pub use config::{OAuth2Config, ProviderName};
use grant::{DeviceCode, Token};

/// How long the provider may take to start a login (device code, discovery document).
const FIRST_ANSWER_TIMEOUT: Duration = Duration::from_secs(20);

/// Why a login did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    /// The user declined, pasted a wrong code, or the account is not allowed in: counts as a
    /// failed login. The text is shown to the user.
    #[error("{0}")]
    Denied(String),
    /// The user did not finish in time.
    #[error("the login was not completed in time")]
    TimedOut,
    /// The provider could not be reached or answered something unusable (the text is for the
    /// log; the user is told the service is unavailable).
    #[error("{0}")]
    Unavailable(String),
}

/// A login in progress between two keyboard-interactive rounds.
pub struct Pending {
    step: Step,
    /// The login's end: `oauth2.authTimeout` after it began, or the device code's expiry.
    deadline: Instant,
    endpoints: Option<Arc<oidc::Discovery>>,
}

enum Step {
    Device(DeviceCode),
    Code { state: String, link: String },
}

/// What the client is shown and asked in the first round.
pub struct Prompt {
    pub instructions: String,
    /// (question, echo)
    pub questions: Vec<(String, bool)>,
}

/// Who logged in, as the provider says.
pub struct Account {
    pub username: String,
    pub metadata: Vec<(String, String)>,
    /// Metadata keys whose values are secrets or personal data (never logged, sent to the
    /// config server only with `transmitSensitiveMetadata`).
    pub sensitive: Vec<String>,
}

/// A finished login: the account and the token to revoke when the connection ends.
pub struct Identity {
    pub account: Account,
    pub token: IssuedToken,
}

/// An access token to revoke when the connection ends. One dropped before it was revoked (a
/// login cut off by its deadline or the connection's end, a refused login) is revoked on the
/// gateway's cleanup tracker, which shutdown waits for: no issued token outlives its login.
pub struct IssuedToken {
    oauth2: Arc<OAuth2>,
    /// Taken by `revoke`.
    token: std::sync::Mutex<Option<String>>,
    endpoints: Option<Arc<oidc::Discovery>>,
    cleanup: TaskTracker,
}

/// How long a revocation started by dropping a token may take.
const DROPPED_TOKEN_REVOKE_TIMEOUT: Duration = Duration::from_secs(10);

impl IssuedToken {
    /// Revokes the token at the provider (best effort, bounded by `deadline`); once.
    pub async fn revoke(&self, deadline: Duration) {
        let token = self.token.lock().ok().and_then(|mut t| t.take());
        let Some(token) = token else { return };
        // Put back if this future is dropped before the provider answered, so `Drop` still
        // revokes it.
        let mut pending = PutBack {
            slot: &self.token,
            token: Some(token),
        };
        if let Some(token) = pending.token.as_deref() {
            revoke(&self.oauth2, token, self.endpoints.as_deref(), deadline).await;
        }
        pending.token = None;
    }
}

/// A token being revoked, put back into its slot if the revocation is cut off.
struct PutBack<'a> {
    slot: &'a std::sync::Mutex<Option<String>>,
    token: Option<String>,
}

impl Drop for PutBack<'_> {
    fn drop(&mut self) {
        if let (Some(token), Ok(mut slot)) = (self.token.take(), self.slot.lock()) {
            *slot = Some(token);
        }
    }
}

impl Drop for IssuedToken {
    fn drop(&mut self) {
        let Some(token) = self.token.get_mut().ok().and_then(Option::take) else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::warn!("an OAuth2 access token could not be revoked (no runtime)");
            return;
        };
        let oauth2 = self.oauth2.clone();
        let endpoints = self.endpoints.clone();
        self.cleanup.spawn_on(
            async move {
                revoke(
                    &oauth2,
                    &token,
                    endpoints.as_deref(),
                    DROPPED_TOKEN_REVOKE_TIMEOUT,
                )
                .await;
            },
            &runtime,
        );
    }
}

async fn revoke(
    oauth2: &OAuth2,
    token: &str,
    endpoints: Option<&oidc::Discovery>,
    deadline: Duration,
) {
    let done = tokio::time::timeout(deadline, oauth2.provider.revoke(token, endpoints)).await;
    match done {
        Ok(Ok(())) => tracing::debug!("OAuth2 access token revoked"),
        Ok(Err(e)) => tracing::warn!(error = %e, "cannot revoke the OAuth2 access token"),
        Err(_) => tracing::warn!("revoking the OAuth2 access token timed out"),
    }
}

enum Provider {
    GitHub(github::GitHub),
    Oidc(oidc::Oidc),
    Generic(oidc::Generic),
}

/// The configured OAuth2 login; shared by every connection.
pub struct OAuth2 {
    config: OAuth2Config,
    provider: Provider,
}

impl OAuth2 {
    /// Builds the provider's HTTP clients (reads certificate files: call off the async
    /// workers).
    pub fn new(config: &OAuth2Config) -> anyhow::Result<Arc<Self>> {
        let provider = match config.provider {
            ProviderName::Github => {
                Provider::GitHub(github::GitHub::new(config).context("oauth2.github")?)
            }
            ProviderName::Oidc => Provider::Oidc(oidc::Oidc::new(config).context("oauth2.oidc")?),
            ProviderName::Generic => {
                tracing::warn!("oauth2.provider generic: a generic OAuth2 server names no user; the SSH user name is taken as it is (check it with an authz webhook or plugin)");
                Provider::Generic(oidc::Generic::new(config).context("oauth2.generic")?)
            }
        };
        if !config.qr_code_clients.is_empty() {
            tracing::warn!(
                "oauth2.qrCodeClients: QR codes are not drawn; those clients get the link as text"
            );
        }
        tracing::info!(provider = ?config.provider, "OAuth2 logins on (keyboard-interactive)");
        Ok(Arc::new(Self {
            config: config.clone(),
            provider,
        }))
    }

    pub fn config(&self) -> &OAuth2Config {
        &self.config
    }

    /// Starts a login for `user`: a device code if the provider offers the device flow (the
    /// authorization code flow if that fails or is not offered).
    pub async fn begin(&self, user: &str) -> Result<Pending, LoginError> {
        let started = Instant::now();
        let deadline = started + self.config.auth_timeout;
        // The first round blocks the connection: a provider that does not answer gets a
        // share of the login's time, not all of it.
        let first_answer = deadline.min(started + FIRST_ANSWER_TIMEOUT);
        let mut device_failure = None;
        if self.provider.offers_device_flow() {
            match self.provider.device_code(first_answer).await {
                Ok((code, endpoints)) => {
                    let deadline = deadline.min(Instant::now() + code.expires_in);
                    return Ok(Pending {
                        step: Step::Device(code),
                        deadline,
                        endpoints,
                    });
                }
                Err(e) if self.provider.offers_code_flow() => {
                    tracing::warn!(error = %e, "OAuth2 device flow unavailable; offering the authorization code flow");
                    device_failure = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        let state = random_state();
        match self
            .provider
            .authorization_link(user, &state, deadline)
            .await
        {
            Ok((link, endpoints)) => Ok(Pending {
                step: Step::Code { state, link },
                deadline,
                endpoints,
            }),
            Err(e) => Err(device_failure.unwrap_or(e)),
        }
    }

    /// One round of a login, with the client's answers to the last prompt. The device flow
    /// asks the provider once per round (after the polling interval) and, while the user has
    /// not decided, gives the login back as `Waiting`: the client is sent an empty round, so
    /// the connection keeps being read and a client that went away is noticed. `cleanup` is
    /// where a token the login drops unrevoked (cut off, refused) is revoked.
    pub async fn step(
        self: &Arc<Self>,
        mut pending: Pending,
        answers: Vec<String>,
        user: &str,
        cleanup: &TaskTracker,
    ) -> Progress {
        let deadline = pending.deadline;
        let endpoints = pending.endpoints.clone();
        let token = match &mut pending.step {
            Step::Device(code) => {
                let pause = code
                    .interval
                    .min(deadline.saturating_duration_since(Instant::now()));
                tokio::time::sleep(pause).await;
                if Instant::now() >= deadline {
                    return Progress::Done(Err(LoginError::TimedOut));
                }
                match self
                    .provider
                    .poll_device(code, endpoints.as_deref(), deadline)
                    .await
                {
                    Ok(None) => return Progress::Waiting(pending),
                    Ok(Some(token)) => Ok((token, "device")),
                    Err(e) => Err(e),
                }
            }
            Step::Code { state, .. } => self
                .trade_code(state, &answers, endpoints.as_deref(), deadline)
                .await
                .map(|token| (token, "authorization-code")),
        };
        let identity = async {
            let (token, method) = token?;
            let issued = IssuedToken {
                oauth2: self.clone(),
                token: std::sync::Mutex::new(Some(token.access_token.clone())),
                endpoints: endpoints.clone(),
                cleanup: cleanup.clone(),
            };
            match self
                .provider
                .identity(user, &token, method, endpoints.as_deref(), deadline)
                .await
            {
                Ok(account) => Ok(Identity {
                    account,
                    token: issued,
                }),
                Err(e) => {
                    // A token the login cannot use is given back at once (dropping it).
                    drop(issued);
                    Err(e)
                }
            }
        };
        Progress::Done(match tokio::time::timeout_at(deadline, identity).await {
            Ok(result) => result,
            Err(_) => Err(LoginError::TimedOut),
        })
    }

    /// The pasted `state|code` checked against this login's state, then traded for a token.
    async fn trade_code(
        &self,
        state: &str,
        answers: &[String],
        endpoints: Option<&oidc::Discovery>,
        deadline: Instant,
    ) -> Result<Token, LoginError> {
        let pasted = answers.first().map(|a| a.trim()).unwrap_or_default();
        let code = match pasted.split_once('|') {
            Some((s, code)) if s == state && !code.is_empty() => code,
            Some(_) => return Err(LoginError::Denied(
                "the code is from another login; log in again and paste the code shown after it"
                    .into(),
            )),
            None => {
                return Err(LoginError::Denied(
                    "that is not a code from the login page (it looks like state|code)".into(),
                ))
            }
        };
        match tokio::time::timeout_at(
            deadline,
            self.provider.code_token(code, endpoints, deadline),
        )
        .await
        {
            Ok(result) => result,
            Err(_) => Err(LoginError::TimedOut),
        }
    }
}

/// Where a login stands after a round.
pub enum Progress {
    /// The user has not decided yet: send the client an empty round and ask again.
    Waiting(Pending),
    Done(Result<Identity, LoginError>),
}

impl Pending {
    /// The first round's text: where to go and, for the code flow, the question.
    pub fn prompt(&self) -> Prompt {
        match &self.step {
            Step::Device(code) => Prompt {
                instructions: format!(
                    "Please click the following link: {}\n\nEnter the following code: {}\n",
                    code.verification_uri, code.user_code
                ),
                questions: Vec::new(),
            },
            Step::Code { link, .. } => Prompt {
                instructions: format!("Please click the following link to log in: {link}\n\n"),
                questions: vec![("Please paste the received code: ".into(), false)],
            },
        }
    }
}

impl Provider {
    fn offers_device_flow(&self) -> bool {
        match self {
            Provider::GitHub(_) => true,
            Provider::Oidc(p) => p.device_flow(),
            Provider::Generic(_) => false,
        }
    }

    fn offers_code_flow(&self) -> bool {
        match self {
            Provider::GitHub(_) | Provider::Generic(_) => true,
            Provider::Oidc(p) => p.code_flow(),
        }
    }

    async fn device_code(
        &self,
        deadline: Instant,
    ) -> Result<(DeviceCode, Option<Arc<oidc::Discovery>>), LoginError> {
        match self {
            Provider::GitHub(p) => Ok((p.device_code(deadline).await?, None)),
            Provider::Oidc(p) => {
                let endpoints = p.discover(deadline).await?;
                let code = p.device_code(&endpoints, deadline).await?;
                Ok((code, Some(endpoints)))
            }
            Provider::Generic(_) => Err(LoginError::Unavailable(
                "a generic OAuth2 server has no device flow".into(),
            )),
        }
    }

    async fn authorization_link(
        &self,
        user: &str,
        state: &str,
        deadline: Instant,
    ) -> Result<(String, Option<Arc<oidc::Discovery>>), LoginError> {
        match self {
            Provider::GitHub(p) => Ok((p.authorization_link(user, state), None)),
            Provider::Oidc(p) => {
                let endpoints = p.discover(deadline).await?;
                let link = p.authorization_link(&endpoints, state)?;
                Ok((link, Some(endpoints)))
            }
            Provider::Generic(p) => Ok((p.authorization_link(state)?, None)),
        }
    }

    async fn poll_device(
        &self,
        code: &mut DeviceCode,
        endpoints: Option<&oidc::Discovery>,
        deadline: Instant,
    ) -> Result<Option<Token>, LoginError> {
        match (self, endpoints) {
            (Provider::GitHub(p), _) => p.poll_device(code, deadline).await,
            (Provider::Oidc(p), Some(endpoints)) => p.poll_device(endpoints, code, deadline).await,
            _ => Err(LoginError::Unavailable("no device flow in progress".into())),
        }
    }

    async fn code_token(
        &self,
        code: &str,
        endpoints: Option<&oidc::Discovery>,
        deadline: Instant,
    ) -> Result<Token, LoginError> {
        match (self, endpoints) {
            (Provider::GitHub(p), _) => p.code_token(code, deadline).await,
            (Provider::Oidc(p), Some(endpoints)) => p.code_token(endpoints, code, deadline).await,
            (Provider::Generic(p), _) => p.code_token(code, deadline).await,
            (Provider::Oidc(_), None) => Err(LoginError::Unavailable(
                "no OIDC endpoints for this login".into(),
            )),
        }
    }

    async fn identity(
        &self,
        user: &str,
        token: &Token,
        method: &str,
        endpoints: Option<&oidc::Discovery>,
        deadline: Instant,
    ) -> Result<Account, LoginError> {
        match (self, endpoints) {
            (Provider::GitHub(p), _) => p.identity(user, token, method, deadline).await,
            (Provider::Oidc(p), Some(endpoints)) => p.identity(endpoints, token, deadline).await,
            (Provider::Generic(_), _) => Ok(oidc::Generic::identity(user, token)),
            (Provider::Oidc(_), None) => Err(LoginError::Unavailable(
                "no OIDC endpoints for this login".into(),
            )),
        }
    }

    async fn revoke(&self, token: &str, endpoints: Option<&oidc::Discovery>) -> anyhow::Result<()> {
        match (self, endpoints) {
            (Provider::GitHub(p), _) => p.revoke(token).await,
            (Provider::Oidc(p), Some(endpoints)) => p.revoke(endpoints, token).await,
            // OAuth2 itself has no revocation.
            _ => Ok(()),
        }
    }
}

/// The `state` of an authorization code flow: unguessable, one per login, so a code from
/// another login (or planted by someone else) is refused.
fn random_state() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}
