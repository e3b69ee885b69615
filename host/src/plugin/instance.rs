//! What every plugin role shares: loading (compile or cache, import/export check, linking),
//! and per call a fresh sandboxed store with a deadline, a memory cap and a concurrency slot.
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};
use tokio::sync::{Semaphore, SemaphorePermit};
use wasmtime::component::InstancePre;
use wasmtime::{Store, UpdateDeadline};

use crate::plugin::check::{check_component, ApiVersion};
use crate::plugin::egress::{Egress, EgressHooks};
use crate::plugin::engine::{PluginRuntime, EPOCH_TICK};
use crate::plugin::settings::PluginSettings;
use crate::plugin::state::CallState;

/// A loaded plugin of any role; the role's typed wrapper adds its calls.
pub(crate) struct PluginCore {
    runtime: Arc<PluginRuntime>,
    pub name: String,
    pub settings: PluginSettings,
    config_json: String,
    egress: Arc<Egress>,
    slots: Semaphore,
    /// Calls waiting for a slot now (at most `maxQueued`).
    queued: AtomicUsize,
}

/// A call refused because the plugin has no slot for it: not the caller's fault and not a
/// verdict of the plugin (an auth plugin's overload is no failed login).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{role} plugin {plugin} is overloaded: {why}")]
pub struct Overloaded {
    pub role: String,
    pub plugin: String,
    pub why: OverloadReason,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OverloadReason {
    /// `maxQueued` calls were already waiting for one of `slots` slots.
    QueueFull { queued: usize, slots: u32 },
    /// No slot came free within `queueTimeout`.
    QueueTimeout(Duration),
}

impl OverloadReason {
    /// The metric label.
    pub fn label(&self) -> &'static str {
        match self {
            OverloadReason::QueueFull { .. } => "queue_full",
            OverloadReason::QueueTimeout(_) => "queue_timeout",
        }
    }
}

impl std::fmt::Display for OverloadReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OverloadReason::QueueFull { queued, slots } => write!(
                f,
                "{queued} calls already wait for one of its {slots} slots (maxQueued)"
            ),
            OverloadReason::QueueTimeout(waited) => {
                write!(f, "no free slot within {waited:?} (queueTimeout)")
            }
        }
    }
}

/// Counts a call among the waiting ones while it lives.
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl PluginRuntime {
    /// Validates the settings, compiles (or loads from cache) the component, checks that it
    /// exports `containerssh:plugin/{interface}` of a known API version and imports nothing we
    /// do not provide, and links it.
    pub(crate) fn prepare(
        self: &Arc<Self>,
        name: &str,
        settings: &PluginSettings,
        interface: &str,
    ) -> anyhow::Result<(PluginCore, InstancePre<CallState>, ApiVersion)> {
        let problems = settings.validate();
        if !problems.is_empty() {
            anyhow::bail!("{}", problems.join("; "));
        }
        let started = Instant::now();
        let source = &settings.plugin;
        let component = self
            .component(source)
            .with_context(|| format!("plugin {source}"))?;
        let version = check_component(&self.engine, &component, interface)
            .with_context(|| format!("plugin {source}"))?;
        let pre = self
            .linker()?
            .instantiate_pre(&component)
            .map_err(anyhow::Error::from)
            .with_context(|| format!("plugin {source}: cannot link"))?;
        let egress = Egress::new(name, &settings.egress, settings.timeout, self.metrics())
            .with_context(|| format!("plugin {source}"))?;
        let core = PluginCore {
            runtime: self.clone(),
            name: name.to_string(),
            settings: settings.clone(),
            config_json: settings.config.to_string(),
            egress,
            slots: Semaphore::new(settings.concurrency() as usize),
            queued: AtomicUsize::new(0),
        };
        core.trial(&pre)
            .with_context(|| format!("plugin {source}"))?;
        tracing::info!(plugin = name, %source, api = %version, elapsed_ms = started.elapsed().as_millis() as u64, "plugin loaded");
        Ok((core, pre, version))
    }
}

/// The connection id trial instantiations run under (in logs).
const TRIAL_CONNECTION: &str = "00000000000000000000000000000000";

impl PluginCore {
    /// One instantiation when the plugin loads, under its memory limit: a limit too small for
    /// the plugin (or an instantiation that traps) shows at start, not at the first login.
    fn trial(&self, pre: &InstancePre<CallState>) -> anyhow::Result<()> {
        let mut store = self.store(TRIAL_CONNECTION, None);
        futures::executor::block_on(pre.instantiate_async(&mut store))
            .map(|_| ())
            .map_err(anyhow::Error::from)
            .with_context(|| {
                format!(
                    "cannot instantiate the plugin within memoryLimit {} bytes (a larger memoryLimit may help)",
                    self.settings.memory_limit
                )
            })
    }

    /// A fresh store for one call: nothing granted, memory capped, deadline armed. The
    /// plugin sees `config_json` if given (a per-connection config), else its own config.
    pub fn store(&self, connection_id: &str, config_json: Option<String>) -> Store<CallState> {
        let state = CallState::new(
            &self.name,
            connection_id,
            config_json.unwrap_or_else(|| self.config_json.clone()),
            self.settings.memory_limit,
            EgressHooks::new(self.egress.clone(), connection_id),
        );
        let mut store = Store::new(&self.runtime.engine, state);
        store.limiter(|s| &mut s.limits);
        // Every tick the guest yields to the runtime, so a plugin that computes (or loops)
        // never holds a worker thread for long and other connections go on; once its CPU
        // budget is spent it traps.
        let budget = (self.settings.timeout.as_millis() / EPOCH_TICK.as_millis()).max(1) as u64;
        let timeout = self.settings.timeout;
        let mut used = 0u64;
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |_| {
            used += 1;
            if used >= budget {
                Err(wasmtime::format_err!(
                    "the plugin computed past its deadline of {timeout:?}"
                ))
            } else {
                Ok(UpdateDeadline::Yield(1))
            }
        });
        store
    }

    /// Runs one call once a slot is free (waiting at most `queueTimeout`, behind at most
    /// `maxQueued` others), then within its deadline. A call that gets no slot fails with
    /// [`Overloaded`].
    pub async fn run<T>(
        &self,
        role: &str,
        call: impl Future<Output = anyhow::Result<T>>,
    ) -> anyhow::Result<T> {
        let _slot = self.slot(role).await?;
        self.within_deadline(role, call).await
    }

    /// Runs one call, in a slot the caller holds, within the deadline `timeout`. The deadline
    /// also covers time spent waiting in host calls (HTTP, sleeps), which the epoch does not see.
    pub async fn within_deadline<T>(
        &self,
        role: &str,
        call: impl Future<Output = anyhow::Result<T>>,
    ) -> anyhow::Result<T> {
        let timeout = self.settings.timeout;
        match tokio::time::timeout(timeout, call).await {
            Ok(result) => result.with_context(|| format!("{role} plugin {}", self.name)),
            Err(_) => Err(anyhow!(
                "{role} plugin {} did not answer within {timeout:?}",
                self.name
            )),
        }
    }

    /// A slot for calls of this plugin: at once if one is free, else after waiting in line
    /// (first come, first served) for at most `queueTimeout` behind at most `maxQueued` others.
    pub async fn slot(&self, role: &str) -> anyhow::Result<SemaphorePermit<'_>> {
        if let Ok(permit) = self.slots.try_acquire() {
            return Ok(permit);
        }
        let ahead = self.queued.fetch_add(1, Ordering::AcqRel);
        let _waiting = Waiting(&self.queued);
        let why = if ahead >= self.settings.max_queued as usize {
            OverloadReason::QueueFull {
                queued: ahead,
                slots: self.settings.concurrency(),
            }
        } else {
            let wait = self.settings.queue_timeout;
            match tokio::time::timeout(wait, self.slots.acquire()).await {
                Ok(permit) => return permit.context("plugin is shutting down"),
                Err(_) => OverloadReason::QueueTimeout(wait),
            }
        };
        if let Some(metrics) = self.runtime.metrics() {
            metrics.plugin_overloaded(&self.name, why.label());
        }
        Err(Overloaded {
            role: role.to_string(),
            plugin: self.name.clone(),
            why,
        }
        .into())
    }
}
