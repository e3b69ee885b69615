//! WebAssembly plugins (wasmtime component model): one engine per process, a fresh sandboxed
//! instance per call, compiled components cached on disk, imports/exports checked at load.
mod auth;
mod bindings;
pub mod builtin;
mod check;
mod config;
pub mod egress;
mod engine;
mod filter;
mod guest_output;
mod instance;
mod password_hash;
mod settings;
mod state;
pub mod tls;

pub use auth::{AuthGrant, AuthOutcome, AuthenticatorPlugin, ConnectionInfo, Credentials};
pub use config::{ConfigAnswer, ConfigPlugin};
pub use engine::{default_cache_dir, PluginRuntime};
pub use filter::{kind as request_kind, ChannelRequest, FilterPlugin, Verdict};
pub use instance::{OverloadReason, Overloaded};
pub use settings::{EgressSettings, PluginSettings, MAX_MEMORY_LIMIT};

/// Every plugin the gateway runs; cheap to clone.
#[derive(Clone)]
pub struct Plugins {
    /// None when OAuth2 is the only login.
    pub auth: Option<AuthenticatorPlugin>,
    /// Asked once per connection after authentication, if configured.
    pub config: Option<ConfigPlugin>,
    /// Judges every channel request (the built-in security-policy unless configured).
    pub filter: FilterPlugin,
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod sandbox_tests;
