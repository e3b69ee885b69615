//! WebAssembly plugins (wasmtime component model): one engine per process, a fresh sandboxed
//! instance per call, compiled components cached on disk, imports/exports checked at load.
mod auth;
mod bindings;
pub mod builtin;
mod check;
pub mod egress;
mod engine;
mod settings;
mod state;

pub use auth::{AuthGrant, AuthOutcome, AuthenticatorPlugin, ConnectionInfo};
pub use engine::{default_cache_dir, PluginRuntime};
pub use settings::{EgressSettings, PluginSettings, MAX_MEMORY_LIMIT};

#[cfg(test)]
mod tests;

#[cfg(test)]
mod sandbox_tests;
