//! Authentication plugins: a fresh instance per call, deadline, memory cap, concurrency cap.
//! Any failure of the plugin is an `Error` outcome, which the caller treats as "deny".
use std::sync::Arc;

use anyhow::Context;

use super::guest_output::with_output;

use crate::plugin::bindings::{v0_1, v0_2};
use crate::plugin::check::ApiVersion;
use crate::plugin::engine::PluginRuntime;
use crate::plugin::instance::{Overloaded, PluginCore};
use crate::plugin::settings::PluginSettings;
use crate::plugin::state::CallState;

const AUTHENTICATOR_INTERFACE: &str = "authenticator";

/// Largest answer (strings and files of a grant, in bytes) accepted from a plugin.
pub(crate) const MAX_ANSWER_BYTES: usize = 1 << 20;

/// Facts about the connection, as the plugin sees them.
#[derive(Debug, Clone)]
pub struct ConnectionInfo {
    pub connection_id: String,
    pub remote_address: String,
    pub client_version: String,
    pub username: String,
}

/// What a successful authentication grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthGrant {
    pub authenticated_username: String,
    pub metadata: Vec<(String, String)>,
    pub environment: Vec<(String, String)>,
    pub files: Vec<(String, Vec<u8>)>,
    /// Keys of metadata, environment and files whose values are secrets (never logged).
    pub sensitive: Vec<String>,
}

#[derive(Debug)]
pub enum AuthOutcome {
    Success(AuthGrant),
    /// Wrong credentials; the reason is for the log only.
    Failure(String),
    Unsupported,
    /// The plugin could not decide because a service it depends on is down (API 0.2): the
    /// login is denied but it is no wrong guess (never counted toward rate limits).
    Unavailable(String),
    /// The plugin had no free slot for this call: nothing was checked.
    Overloaded(Overloaded),
    /// The plugin trapped, timed out, ran out of memory or answered nonsense.
    Error(anyhow::Error),
}

/// A loaded authentication plugin; cheap to clone.
#[derive(Clone)]
pub struct AuthenticatorPlugin {
    inner: Arc<Inner>,
}

struct Inner {
    core: PluginCore,
    pre: Pre,
}

/// The linked component, by the API version it was built against.
enum Pre {
    V0_1(v0_1::authenticator::AuthenticatorPluginPre<CallState>),
    V0_2(v0_2::authenticator::AuthenticatorPluginPre<CallState>),
}

impl PluginRuntime {
    /// Compiles (or loads from cache), checks and prepares an authentication plugin.
    pub fn load_authenticator(
        self: &Arc<Self>,
        name: &str,
        settings: &PluginSettings,
    ) -> anyhow::Result<AuthenticatorPlugin> {
        let (core, pre, version) = self.prepare(name, settings, AUTHENTICATOR_INTERFACE)?;
        let pre = match version {
            ApiVersion::V0_1 => {
                v0_1::authenticator::AuthenticatorPluginPre::new(pre).map(Pre::V0_1)
            }
            ApiVersion::V0_2 => {
                v0_2::authenticator::AuthenticatorPluginPre::new(pre).map(Pre::V0_2)
            }
        }
        .map_err(anyhow::Error::from)
        .with_context(|| format!("plugin {}: not an authenticator", settings.plugin))?;
        Ok(AuthenticatorPlugin {
            inner: Arc::new(Inner { core, pre }),
        })
    }
}

/// What a client offers to log in with.
#[derive(Debug, Clone, Copy)]
pub enum Credentials<'a> {
    Password(&'a [u8]),
    /// In authorized_keys form.
    PublicKey(&'a str),
}

enum Call<'a> {
    Password(&'a [u8]),
    PublicKey(&'a str),
    KeyboardInteractive(Vec<String>),
    Authorize(&'a AuthGrant),
}

impl AuthenticatorPlugin {
    /// A whole login: the credentials checked and, if right, authorization asked, both calls
    /// in one slot. A login waits in line once: were authorization queued again, behind every
    /// check that arrived meanwhile, no login would finish before all checks had run.
    pub async fn login(&self, conn: &ConnectionInfo, credentials: Credentials<'_>) -> AuthOutcome {
        let core = &self.inner.core;
        let _slot = match core.slot("auth").await {
            Ok(slot) => slot,
            Err(e) => return failed(e),
        };
        let call = match credentials {
            Credentials::Password(p) => Call::Password(p),
            Credentials::PublicKey(k) => Call::PublicKey(k),
        };
        let outcome = self.in_slot(conn, call).await;
        match outcome {
            AuthOutcome::Success(grant) => self.in_slot(conn, Call::Authorize(&grant)).await,
            other => other,
        }
    }

    async fn in_slot(&self, conn: &ConnectionInfo, call: Call<'_>) -> AuthOutcome {
        let core = &self.inner.core;
        match core
            .within_deadline("auth", self.call_inner(conn, call))
            .await
        {
            Ok(outcome) => outcome,
            Err(e) => failed(e),
        }
    }

    pub async fn password(&self, conn: &ConnectionInfo, password: &[u8]) -> AuthOutcome {
        self.call(conn, Call::Password(password)).await
    }

    pub async fn public_key(&self, conn: &ConnectionInfo, public_key: &str) -> AuthOutcome {
        self.call(conn, Call::PublicKey(public_key)).await
    }

    pub async fn keyboard_interactive(
        &self,
        conn: &ConnectionInfo,
        answers: Vec<String>,
    ) -> AuthOutcome {
        self.call(conn, Call::KeyboardInteractive(answers)).await
    }

    pub async fn authorize(&self, conn: &ConnectionInfo, grant: &AuthGrant) -> AuthOutcome {
        self.call(conn, Call::Authorize(grant)).await
    }

    async fn call(&self, conn: &ConnectionInfo, call: Call<'_>) -> AuthOutcome {
        match self
            .inner
            .core
            .run("auth", self.call_inner(conn, call))
            .await
        {
            Ok(outcome) => outcome,
            Err(e) => failed(e),
        }
    }

    async fn call_inner(
        &self,
        conn: &ConnectionInfo,
        call: Call<'_>,
    ) -> anyhow::Result<AuthOutcome> {
        let inner = &self.inner;
        let mut store = inner.core.store(&conn.connection_id, None);
        let called = match &inner.pre {
            Pre::V0_1(pre) => call_v0_1(pre, &mut store, conn, call).await,
            Pre::V0_2(pre) => call_v0_2(pre, &mut store, conn, call).await,
        };
        let last = store
            .data()
            .output
            .emit(&inner.core.name, &conn.connection_id);
        called.map_err(|e| with_output(e.context("the plugin failed"), &last))?
    }
}

/// One call of a plugin built against API 0.1; the answer is checked but not yet trusted.
async fn call_v0_1(
    pre: &v0_1::authenticator::AuthenticatorPluginPre<CallState>,
    store: &mut wasmtime::Store<CallState>,
    conn: &ConnectionInfo,
    call: Call<'_>,
) -> anyhow::Result<anyhow::Result<AuthOutcome>> {
    use v0_1::types_api as wit;
    let instance = pre
        .instantiate_async(&mut *store)
        .await
        .map_err(anyhow::Error::from)
        .context("cannot instantiate")?;
    let api = instance.containerssh_plugin_authenticator();
    let info = wire_v0_1::info(conn);
    let result = match call {
        Call::Password(p) => api.call_password(&mut *store, &info, p).await,
        Call::PublicKey(k) => api.call_public_key(&mut *store, &info, k).await,
        Call::KeyboardInteractive(a) => api.call_keyboard_interactive(&mut *store, &info, &a).await,
        Call::Authorize(g) => {
            api.call_authorize(&mut *store, &info, &wire_v0_1::grant(g))
                .await
        }
    }?;
    Ok(match result {
        wit::AuthResult::Success(g) => wire_v0_1::from_grant(g).map(AuthOutcome::Success),
        wit::AuthResult::Failure(reason) => Ok(AuthOutcome::Failure(bounded_reason(reason))),
        wit::AuthResult::Unsupported => Ok(AuthOutcome::Unsupported),
    })
}

/// One call of a plugin built against API 0.2 (no keyboard-interactive: unsupported).
async fn call_v0_2(
    pre: &v0_2::authenticator::AuthenticatorPluginPre<CallState>,
    store: &mut wasmtime::Store<CallState>,
    conn: &ConnectionInfo,
    call: Call<'_>,
) -> anyhow::Result<anyhow::Result<AuthOutcome>> {
    use v0_2::types_api as wit;
    let instance = pre
        .instantiate_async(&mut *store)
        .await
        .map_err(anyhow::Error::from)
        .context("cannot instantiate")?;
    let api = instance.containerssh_plugin_authenticator();
    let info = wire_v0_2::info(conn);
    let result = match call {
        Call::Password(p) => api.call_password(&mut *store, &info, p).await,
        Call::PublicKey(k) => api.call_public_key(&mut *store, &info, k).await,
        Call::KeyboardInteractive(_) => return Ok(Ok(AuthOutcome::Unsupported)),
        Call::Authorize(g) => {
            api.call_authorize(&mut *store, &info, &wire_v0_2::grant(g))
                .await
        }
    }?;
    Ok(match result {
        wit::AuthResult::Success(g) => wire_v0_2::from_grant(g).map(AuthOutcome::Success),
        wit::AuthResult::Failure(reason) => Ok(AuthOutcome::Failure(bounded_reason(reason))),
        wit::AuthResult::Unsupported => Ok(AuthOutcome::Unsupported),
        wit::AuthResult::Unavailable(reason) => {
            Ok(AuthOutcome::Unavailable(bounded_reason(reason)))
        }
    })
}

fn bounded_reason(mut reason: String) -> String {
    reason.truncate(reason.floor_char_boundary(512));
    reason
}

/// The outcome of a call that failed: overloaded (no slot) or an error of the plugin.
fn failed(e: anyhow::Error) -> AuthOutcome {
    match e.downcast::<Overloaded>() {
        Ok(overloaded) => AuthOutcome::Overloaded(overloaded),
        Err(e) => AuthOutcome::Error(e),
    }
}

/// The wire types of each API version: the same records, generated once per version.
macro_rules! wire_conversions {
    ($module:ident, $types:path) => {
        pub(crate) mod $module {
            use super::{checked_grant, AuthGrant, ConnectionInfo};
            use $types as wit;

            pub fn info(c: &ConnectionInfo) -> wit::ConnectionInfo {
                wit::ConnectionInfo {
                    connection_id: c.connection_id.clone(),
                    remote_address: c.remote_address.clone(),
                    client_version: c.client_version.clone(),
                    username: c.username.clone(),
                }
            }

            pub fn grant(g: &AuthGrant) -> wit::AuthGrant {
                wit::AuthGrant {
                    authenticated_username: g.authenticated_username.clone(),
                    metadata: g.metadata.clone(),
                    environment: g.environment.clone(),
                    files: g.files.clone(),
                    sensitive: g.sensitive.clone(),
                }
            }

            pub fn from_grant(g: wit::AuthGrant) -> anyhow::Result<AuthGrant> {
                checked_grant(AuthGrant {
                    authenticated_username: g.authenticated_username,
                    metadata: g.metadata,
                    environment: g.environment,
                    files: g.files,
                    sensitive: g.sensitive,
                })
            }
        }
    };
}

wire_conversions!(wire_v0_1, crate::plugin::bindings::v0_1::types_api);
wire_conversions!(wire_v0_2, crate::plugin::bindings::v0_2::types_api);

/// A grant from a plugin, checked: bounded in size, with a user name.
pub(crate) fn checked_grant(g: AuthGrant) -> anyhow::Result<AuthGrant> {
    let size = g.authenticated_username.len()
        + g.metadata
            .iter()
            .map(|(k, v)| k.len() + v.len())
            .sum::<usize>()
        + g.environment
            .iter()
            .map(|(k, v)| k.len() + v.len())
            .sum::<usize>()
        + g.files
            .iter()
            .map(|(p, c)| p.len() + c.len())
            .sum::<usize>()
        + g.sensitive.iter().map(String::len).sum::<usize>();
    if size > MAX_ANSWER_BYTES {
        anyhow::bail!("the plugin's answer is {size} bytes, more than {MAX_ANSWER_BYTES}");
    }
    if g.authenticated_username.is_empty() {
        anyhow::bail!("the plugin granted access without a user name");
    }
    Ok(g)
}
