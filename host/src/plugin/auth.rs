//! Authentication plugins: a fresh instance per call, deadline, memory cap, concurrency cap.
//! Any failure of the plugin is an `Error` outcome, which the caller treats as "deny".
use std::sync::Arc;
use std::time::Instant;

use anyhow::{anyhow, Context};
use tokio::sync::Semaphore;
use wasmtime::Store;

use crate::plugin::bindings::authenticator::AuthenticatorPluginPre;
use crate::plugin::bindings::types_api as wit;
use crate::plugin::check::check_component;
use crate::plugin::egress::EgressHooks;
use crate::plugin::engine::{PluginRuntime, EPOCH_TICK};
use crate::plugin::settings::PluginSettings;
use crate::plugin::state::CallState;

const AUTHENTICATOR_EXPORT: &str = "containerssh:plugin/authenticator@0.1.0";

/// Largest answer (strings and files of a grant, in bytes) accepted from a plugin.
const MAX_ANSWER_BYTES: usize = 1 << 20;

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
}

#[derive(Debug)]
pub enum AuthOutcome {
    Success(AuthGrant),
    /// Wrong credentials; the reason is for the log only.
    Failure(String),
    Unsupported,
    /// The plugin trapped, timed out, ran out of memory or answered nonsense.
    Error(anyhow::Error),
}

/// A loaded authentication plugin; cheap to clone.
#[derive(Clone)]
pub struct AuthenticatorPlugin {
    inner: Arc<Inner>,
}

struct Inner {
    runtime: Arc<PluginRuntime>,
    name: String,
    settings: PluginSettings,
    config_json: String,
    pre: AuthenticatorPluginPre<CallState>,
    slots: Semaphore,
}

impl PluginRuntime {
    /// Compiles (or loads from cache), checks and prepares an authentication plugin.
    pub fn load_authenticator(
        self: &Arc<Self>,
        name: &str,
        settings: &PluginSettings,
    ) -> anyhow::Result<AuthenticatorPlugin> {
        let problems = settings.validate();
        if !problems.is_empty() {
            anyhow::bail!("{}", problems.join("; "));
        }
        let started = Instant::now();
        let component = self
            .component(&settings.plugin)
            .with_context(|| format!("plugin {}", settings.plugin))?;
        check_component(&self.engine, &component, AUTHENTICATOR_EXPORT)
            .with_context(|| format!("plugin {}", settings.plugin))?;
        let pre = self
            .linker()?
            .instantiate_pre(&component)
            .map_err(anyhow::Error::from)
            .with_context(|| format!("plugin {}: cannot link", settings.plugin))?;
        let pre = AuthenticatorPluginPre::new(pre)
            .map_err(anyhow::Error::from)
            .with_context(|| format!("plugin {}: not an authenticator", settings.plugin))?;
        tracing::info!(plugin = name, source = %settings.plugin, elapsed_ms = started.elapsed().as_millis() as u64, "auth plugin loaded");
        Ok(AuthenticatorPlugin {
            inner: Arc::new(Inner {
                runtime: self.clone(),
                name: name.to_string(),
                settings: settings.clone(),
                config_json: settings.config.to_string(),
                pre,
                slots: Semaphore::new(settings.max_concurrency as usize),
            }),
        })
    }
}

enum Call<'a> {
    Password(&'a [u8]),
    PublicKey(&'a str),
    KeyboardInteractive(Vec<String>),
    Authorize(&'a AuthGrant),
}

impl AuthenticatorPlugin {
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
        let timeout = self.inner.settings.timeout;
        match tokio::time::timeout(timeout, self.call_inner(conn, call)).await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(e)) => AuthOutcome::Error(e.context(format!("auth plugin {}", self.inner.name))),
            Err(_) => AuthOutcome::Error(anyhow!(
                "auth plugin {} did not answer within {timeout:?}",
                self.inner.name
            )),
        }
    }

    async fn call_inner(
        &self,
        conn: &ConnectionInfo,
        call: Call<'_>,
    ) -> anyhow::Result<AuthOutcome> {
        let inner = &self.inner;
        let _slot = inner
            .slots
            .acquire()
            .await
            .context("plugin is shutting down")?;
        let hooks = EgressHooks::new(
            &inner.name,
            &conn.connection_id,
            &inner.settings.egress,
            inner.settings.timeout,
        );
        let state = CallState::new(
            &inner.name,
            &conn.connection_id,
            inner.config_json.clone(),
            inner.settings.memory_limit,
            hooks,
        );
        let mut store = Store::new(&inner.runtime.engine, state);
        store.limiter(|s| &mut s.limits);
        let ticks = (inner.settings.timeout.as_millis() / EPOCH_TICK.as_millis()).max(1) as u64;
        store.set_epoch_deadline(ticks);
        store.epoch_deadline_trap();
        let instance = inner
            .pre
            .instantiate_async(&mut store)
            .await
            .map_err(anyhow::Error::from)
            .context("cannot instantiate")?;
        let api = instance.containerssh_plugin_authenticator();
        let info = to_wit_info(conn);
        let result = match call {
            Call::Password(p) => api.call_password(&mut store, &info, p).await,
            Call::PublicKey(k) => api.call_public_key(&mut store, &info, k).await,
            Call::KeyboardInteractive(a) => {
                api.call_keyboard_interactive(&mut store, &info, &a).await
            }
            Call::Authorize(g) => {
                api.call_authorize(&mut store, &info, &to_wit_grant(g))
                    .await
            }
        }
        .map_err(anyhow::Error::from)
        .context("the plugin failed")?;
        from_wit_result(result)
    }
}

fn to_wit_info(c: &ConnectionInfo) -> wit::ConnectionInfo {
    wit::ConnectionInfo {
        connection_id: c.connection_id.clone(),
        remote_address: c.remote_address.clone(),
        client_version: c.client_version.clone(),
        username: c.username.clone(),
    }
}

fn to_wit_grant(g: &AuthGrant) -> wit::AuthGrant {
    wit::AuthGrant {
        authenticated_username: g.authenticated_username.clone(),
        metadata: g.metadata.clone(),
        environment: g.environment.clone(),
        files: g.files.clone(),
    }
}

fn from_wit_result(r: wit::AuthResult) -> anyhow::Result<AuthOutcome> {
    Ok(match r {
        wit::AuthResult::Success(g) => {
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
                    .sum::<usize>();
            if size > MAX_ANSWER_BYTES {
                anyhow::bail!("the plugin's answer is {size} bytes, more than {MAX_ANSWER_BYTES}");
            }
            if g.authenticated_username.is_empty() {
                anyhow::bail!("the plugin granted access without a user name");
            }
            AuthOutcome::Success(AuthGrant {
                authenticated_username: g.authenticated_username,
                metadata: g.metadata,
                environment: g.environment,
                files: g.files,
            })
        }
        wit::AuthResult::Failure(reason) => {
            let mut reason = reason;
            reason.truncate(reason.floor_char_boundary(512));
            AuthOutcome::Failure(reason)
        }
        wit::AuthResult::Unsupported => AuthOutcome::Unsupported,
    })
}
