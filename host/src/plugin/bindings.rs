//! Host-side bindings of the plugin API, one module per released version (`wit/v0.1`,
//! `wit/v0.2`): a plugin built against either loads, side by side. Within a version the shared
//! interfaces (`host`, `plugin-types`) are generated once, in the authenticator world, and
//! reused by the others so that one `CallState` implements them for every role.

/// API 0.1: the first release. Kept so that plugins built against it keep loading.
pub mod v0_1 {
    pub mod authenticator {
        wasmtime::component::bindgen!({
            path: "../wit/v0.1",
            world: "authenticator-plugin",
            exports: { default: async },
        });
    }

    pub mod config {
        wasmtime::component::bindgen!({
            path: "../wit/v0.1",
            world: "config-plugin",
            exports: { default: async },
            with: {
                "containerssh:plugin/host": super::authenticator::containerssh::plugin::host,
                "containerssh:plugin/plugin-types": super::authenticator::containerssh::plugin::plugin_types,
            },
        });
    }

    pub mod filter {
        wasmtime::component::bindgen!({
            path: "../wit/v0.1",
            world: "filter-plugin",
            exports: { default: async },
            with: {
                "containerssh:plugin/host": super::authenticator::containerssh::plugin::host,
                "containerssh:plugin/plugin-types": super::authenticator::containerssh::plugin::plugin_types,
            },
        });
    }

    pub use authenticator::containerssh::plugin::host as host_api;
    pub use authenticator::containerssh::plugin::plugin_types as types_api;
}

/// API 0.2: the `unavailable` auth outcome, `config-get`, native password-hash verification,
/// forwarding requests for the filter; keyboard-interactive removed.
pub mod v0_2 {
    pub mod authenticator {
        wasmtime::component::bindgen!({
            path: "../wit/v0.2",
            world: "authenticator-plugin",
            exports: { default: async },
            // Hashing takes tens of milliseconds: it runs on the blocking pool, not in the call.
            imports: { "containerssh:plugin/password-hash.verify": async },
        });
    }

    pub mod config {
        wasmtime::component::bindgen!({
            path: "../wit/v0.2",
            world: "config-plugin",
            exports: { default: async },
            with: {
                "containerssh:plugin/host": super::authenticator::containerssh::plugin::host,
                "containerssh:plugin/plugin-types": super::authenticator::containerssh::plugin::plugin_types,
            },
        });
    }

    pub mod filter {
        wasmtime::component::bindgen!({
            path: "../wit/v0.2",
            world: "filter-plugin",
            exports: { default: async },
            with: {
                "containerssh:plugin/host": super::authenticator::containerssh::plugin::host,
                "containerssh:plugin/plugin-types": super::authenticator::containerssh::plugin::plugin_types,
            },
        });
    }

    pub use authenticator::containerssh::plugin::host as host_api;
    pub use authenticator::containerssh::plugin::password_hash as password_hash_api;
    pub use authenticator::containerssh::plugin::plugin_types as types_api;
}
