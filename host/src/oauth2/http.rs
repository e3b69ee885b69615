//! Requests to an OAuth2 provider: form-encoded bodies, JSON answers of bounded size, one
//! time limit per request, redirects never followed (a token request must not carry the
//! client secret to another address). Transient failures (no connection, 5xx, 429) are
//! retried with backoff and jitter until the login's deadline.
use std::time::Duration;

use anyhow::Context;
use backon::{BackoffBuilder, ExponentialBuilder};
use reqwest::header::{HeaderValue, ACCEPT, AUTHORIZATION};
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use tokio::time::Instant;

use super::config::ProviderHttp;
use super::LoginError;

/// Largest answer read from a provider.
const MAX_ANSWER_BYTES: usize = 256 * 1024;

/// How a request proves who sends it.
#[derive(Clone)]
pub enum Credential<'a> {
    None,
    /// HTTP Basic with the client id and secret (RFC 6749 §2.3.1, each form-encoded first).
    Client {
        id: &'a str,
        secret: &'a str,
    },
    /// `Authorization: Bearer` (or GitHub's lower-case form) with an access token.
    Bearer(&'a str),
}

/// One provider's HTTP client.
#[derive(Clone)]
pub struct ProviderClient {
    client: reqwest::Client,
    /// For messages: "GitHub", "the OIDC provider".
    pub name: &'static str,
}

/// An answer: the status and the body (JSON or not).
pub struct Answer {
    pub status: StatusCode,
    pub body: Vec<u8>,
}

impl Answer {
    /// The body as `T`; an answer that is not the expected JSON is the provider's fault.
    pub fn json<T: DeserializeOwned>(&self, name: &str, what: &str) -> Result<T, LoginError> {
        serde_json::from_slice(&self.body).map_err(|e| {
            LoginError::Unavailable(format!(
                "{name} answered {what} with something that is not the expected JSON (HTTP {}): {e}",
                self.status.as_u16()
            ))
        })
    }
}

impl ProviderClient {
    /// Builds the client (reads the CA, certificate and key files: call off the async
    /// workers).
    pub fn new(name: &'static str, settings: &ProviderHttp) -> anyhow::Result<Self> {
        let tls = settings.tls.client_config()?;
        let client = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout.min(Duration::from_secs(10)))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("containerssh/", env!("CARGO_PKG_VERSION")))
            .build()
            .context("cannot build the HTTP client")?;
        Ok(Self { client, name })
    }

    /// One request, retried while the failure is transient and `deadline` allows; the last
    /// answer is returned whatever its status (4xx answers carry the OAuth2 error codes).
    pub async fn send(
        &self,
        method: Method,
        url: &str,
        form: &[(&str, &str)],
        json: Option<&serde_json::Value>,
        credential: Credential<'_>,
        deadline: Instant,
    ) -> Result<Answer, LoginError> {
        let mut backoff = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(500))
            .with_max_delay(Duration::from_secs(10))
            .with_jitter()
            .without_max_times()
            .build();
        loop {
            let outcome = self.once(&method, url, form, json, &credential).await;
            let why = match outcome {
                Ok(answer) if !transient(answer.status) => return Ok(answer),
                Ok(answer) => format!("HTTP {}", answer.status.as_u16()),
                Err(e) => e,
            };
            let pause = backoff.next().unwrap_or(Duration::from_secs(10));
            if Instant::now() + pause >= deadline {
                return Err(LoginError::Unavailable(format!(
                    "{} did not answer {} {}: {why}",
                    self.name,
                    method,
                    without_query(url)
                )));
            }
            tracing::debug!(provider = self.name, url = without_query(url), %why, ?pause, "OAuth2 request failed; retrying");
            tokio::time::sleep(pause).await;
        }
    }

    /// GET `url` with an access token, the answer as `T` (`what` names the request in
    /// messages); anything but 2xx for a fresh token is the provider's fault.
    pub async fn get_with_token<T: DeserializeOwned>(
        &self,
        url: &str,
        token: &str,
        what: &str,
        deadline: Instant,
    ) -> Result<T, LoginError> {
        let answer = self
            .send(
                Method::GET,
                url,
                &[],
                None,
                Credential::Bearer(token),
                deadline,
            )
            .await?;
        if !answer.status.is_success() {
            return Err(LoginError::Unavailable(format!(
                "{} answered {what} with HTTP {} for a fresh token",
                self.name,
                answer.status.as_u16()
            )));
        }
        answer.json(self.name, what)
    }

    async fn once(
        &self,
        method: &Method,
        url: &str,
        form: &[(&str, &str)],
        json: Option<&serde_json::Value>,
        credential: &Credential<'_>,
    ) -> Result<Answer, String> {
        let mut request = self
            .client
            .request(method.clone(), url)
            .header(ACCEPT, HeaderValue::from_static("application/json"));
        if !form.is_empty() {
            request = request.form(form);
        }
        if let Some(json) = json {
            request = request
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(json.to_string());
        }
        match credential {
            Credential::None => {}
            Credential::Client { id, secret } => {
                let pair = format!("{}:{}", form_encode(id), form_encode(secret));
                let value = format!(
                    "Basic {}",
                    base64::Engine::encode(&base64::engine::general_purpose::STANDARD, pair)
                );
                request = request.header(AUTHORIZATION, value);
            }
            Credential::Bearer(token) => {
                request = request.header(AUTHORIZATION, format!("Bearer {token}"));
            }
        }
        let mut response = request.send().await.map_err(|e| describe(&e))?;
        let status = response.status();
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| describe(&e))? {
            if body.len() + chunk.len() > MAX_ANSWER_BYTES {
                return Err(format!("answer larger than {MAX_ANSWER_BYTES} bytes"));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Answer { status, body })
    }
}

fn transient(status: StatusCode) -> bool {
    status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS
}

/// reqwest's error with its causes (the TLS or connection reason is in the chain), without
/// the URL.
fn describe(e: &reqwest::Error) -> String {
    let mut text = String::from(if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else {
        "request failed"
    });
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Query strings can carry codes and tokens: logs show the path only.
pub fn without_query(url: &str) -> &str {
    url.split(['?', '#']).next().unwrap_or(url)
}

fn form_encode(value: &str) -> String {
    url::form_urlencoded::byte_serialize(value.as_bytes()).collect()
}
