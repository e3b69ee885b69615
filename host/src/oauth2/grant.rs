//! The OAuth2 steps GitHub and OpenID Connect share: asking for a device code (RFC 8628),
//! polling the token endpoint until the user has decided, and trading an authorization code
//! for a token (RFC 6749 §4.1). GitHub answers errors with HTTP 200, OIDC providers with 400;
//! both carry `error` in the body, which is what counts here.
use std::time::Duration;

use reqwest::Method;
use serde::Deserialize;
use tokio::time::Instant;

use super::http::{Credential, ProviderClient};
use super::LoginError;

pub const DEVICE_GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:device_code";

/// Shortest and longest polling interval, whatever the provider says.
const MIN_INTERVAL: Duration = Duration::from_secs(1);
const MAX_INTERVAL: Duration = Duration::from_secs(60);

/// A device authorization: what the user is shown, and what the gateway polls with.
#[derive(Debug, Clone)]
pub struct DeviceCode {
    pub device_code: String,
    pub user_code: String,
    pub verification_uri: String,
    pub expires_in: Duration,
    pub interval: Duration,
}

#[derive(Deserialize)]
struct DeviceAnswer {
    #[serde(default)]
    device_code: String,
    #[serde(default)]
    user_code: String,
    #[serde(default)]
    verification_uri: String,
    #[serde(default)]
    verification_uri_complete: Option<String>,
    #[serde(default)]
    expires_in: Option<u64>,
    #[serde(default)]
    interval: Option<u64>,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    error_description: Option<String>,
}

/// An access token and the scopes granted with it (as the provider wrote them).
#[derive(Clone)]
pub struct Token {
    pub access_token: String,
    pub scope: String,
}

#[derive(Deserialize)]
struct TokenAnswer {
    #[serde(default)]
    access_token: Option<String>,
    #[serde(default)]
    scope: Option<String>,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    error_description: Option<String>,
    #[serde(default)]
    interval: Option<u64>,
}

pub async fn device_code(
    client: &ProviderClient,
    url: &str,
    form: &[(&str, &str)],
    credential: Credential<'_>,
    deadline: Instant,
) -> Result<DeviceCode, LoginError> {
    let answer = client
        .send(Method::POST, url, form, None, credential, deadline)
        .await?;
    let parsed: DeviceAnswer = answer.json(client.name, "the device code request")?;
    if let Some(error) = parsed.error.filter(|e| !e.is_empty()) {
        return Err(LoginError::Unavailable(format!(
            "{} refused a device code (HTTP {}): {error}{}",
            client.name,
            answer.status.as_u16(),
            description(&parsed.error_description)
        )));
    }
    if !answer.status.is_success() {
        return Err(LoginError::Unavailable(format!(
            "{} answered the device code request with HTTP {}",
            client.name,
            answer.status.as_u16()
        )));
    }
    // What the user is shown must be printable and short: a hostile provider could
    // otherwise write terminal escapes or pages of text into the user's terminal.
    let verification_uri = parsed
        .verification_uri_complete
        .filter(|u| !u.is_empty())
        .unwrap_or(parsed.verification_uri);
    if parsed.device_code.is_empty()
        || !shown_safely(&parsed.user_code, 64)
        || !shown_safely(&verification_uri, 2048)
        || !verification_uri.starts_with("http")
    {
        return Err(LoginError::Unavailable(format!(
            "{} answered the device code request without a usable device code, user code and verification address",
            client.name
        )));
    }
    Ok(DeviceCode {
        device_code: parsed.device_code,
        user_code: parsed.user_code,
        verification_uri,
        // RFC 8628 makes expires_in required; 15 minutes is GitHub's.
        // Bounded: a hostile value must not overflow the deadline arithmetic.
        expires_in: Duration::from_secs(parsed.expires_in.unwrap_or(900).min(24 * 3600)),
        interval: Duration::from_secs(parsed.interval.unwrap_or(5))
            .clamp(MIN_INTERVAL, MAX_INTERVAL),
    })
}

/// Asks the token endpoint once whether the user has decided: `None` while the
/// authorization is pending (after `slow_down`, `code.interval` is longer from then on).
pub async fn poll_once(
    client: &ProviderClient,
    url: &str,
    form: &[(&str, &str)],
    credential: Credential<'_>,
    code: &mut DeviceCode,
    deadline: Instant,
) -> Result<Option<Token>, LoginError> {
    let answer = client
        .send(Method::POST, url, form, None, credential, deadline)
        .await?;
    let parsed: TokenAnswer = answer.json(client.name, "the token request")?;
    match parsed.error.as_deref().filter(|e| !e.is_empty()) {
        None => token(client, answer.status, parsed).map(Some),
        Some("authorization_pending") => Ok(None),
        Some("slow_down") => {
            // RFC 8628 §3.5: five seconds more from now on (GitHub says how long).
            code.interval = parsed
                .interval
                .map(Duration::from_secs)
                .unwrap_or(code.interval + Duration::from_secs(5))
                .clamp(MIN_INTERVAL, MAX_INTERVAL);
            Ok(None)
        }
        Some("access_denied") => Err(LoginError::Denied(
            "the authorization was declined in the browser".into(),
        )),
        Some("expired_token") => Err(LoginError::TimedOut),
        Some(other) => Err(refused(client, answer.status.as_u16(), other, &parsed)),
    }
}

/// Trades an authorization code for a token.
pub async fn exchange_code(
    client: &ProviderClient,
    url: &str,
    form: &[(&str, &str)],
    credential: Credential<'_>,
    deadline: Instant,
) -> Result<Token, LoginError> {
    let answer = client
        .send(Method::POST, url, form, None, credential, deadline)
        .await?;
    let parsed: TokenAnswer = answer.json(client.name, "the token request")?;
    match parsed.error.as_deref().filter(|e| !e.is_empty()) {
        None => token(client, answer.status, parsed),
        // A code mistyped, pasted twice or from another login.
        Some(e @ ("bad_verification_code" | "invalid_grant")) => Err(LoginError::Denied(format!(
            "the code was not accepted ({e}); log in again for a new one"
        ))),
        Some(other) => Err(refused(client, answer.status.as_u16(), other, &parsed)),
    }
}

fn token(
    client: &ProviderClient,
    status: reqwest::StatusCode,
    parsed: TokenAnswer,
) -> Result<Token, LoginError> {
    match parsed.access_token.filter(|t| !t.is_empty()) {
        Some(access_token) if status.is_success() => Ok(Token {
            access_token,
            scope: parsed.scope.unwrap_or_default(),
        }),
        _ => Err(LoginError::Unavailable(format!(
            "{} answered the token request without an access token (HTTP {})",
            client.name,
            status.as_u16()
        ))),
    }
}

/// An error code that is neither the user's doing nor a pending state: the gateway's client
/// settings (`incorrect_client_credentials`, `invalid_client`) or the provider.
fn refused(client: &ProviderClient, status: u16, error: &str, parsed: &TokenAnswer) -> LoginError {
    LoginError::Unavailable(format!(
        "{} refused the token request (HTTP {status}): {error}{}",
        client.name,
        description(&parsed.error_description)
    ))
}

fn description(text: &Option<String>) -> String {
    match text.as_deref() {
        Some(t) if !t.is_empty() => format!(" ({})", printable(t, 300)),
        _ => String::new(),
    }
}

/// Text from a provider as it may appear in a log line: control characters removed, cut.
pub fn printable(text: &str, max_chars: usize) -> String {
    text.chars()
        .filter(|c| !c.is_control())
        .take(max_chars)
        .collect()
}

/// Whether `text` may be written to the user's terminal as it is.
pub fn shown_safely(text: &str, max_len: usize) -> bool {
    !text.is_empty() && text.len() <= max_len && !text.chars().any(|c| c.is_control())
}
