//! The containerssh plugin SDK: bindings for the plugin worlds of plugin API 0.2
//! (`wit/v0.2/plugin.wit`), traits with sensible defaults, and export macros. An authentication plugin is a type implementing
//! [`auth::Authenticator`] plus one `export_authenticator!` line; build it with
//! `cargo build --release --target wasm32-wasip2`.
//!
//! ```ignore
//! use containerssh_plugin_sdk::auth::*;
//!
//! struct OnlyAlice;
//!
//! impl Authenticator for OnlyAlice {
//!     fn password(conn: ConnectionInfo, password: Vec<u8>) -> AuthResult {
//!         if conn.username == "alice" && password == b"secret" {
//!             AuthResult::Success(AuthGrant::for_user(&conn.username))
//!         } else {
//!             AuthResult::Failure("wrong password".into())
//!         }
//!     }
//! }
//!
//! containerssh_plugin_sdk::export_authenticator!(OnlyAlice);
//! ```

/// Authentication plugins (`authenticator-plugin` world).
pub mod auth {
    wit_bindgen::generate!({
        path: "../wit/v0.2",
        world: "authenticator-plugin",
        pub_export_macro: true,
        export_macro_name: "export_authenticator_bindings",
        default_bindings_module: "containerssh_plugin_sdk::auth",
    });

    pub use containerssh::plugin::plugin_types::{AuthGrant, AuthResult, ConnectionInfo, LogLevel};
    pub use exports::containerssh::plugin::authenticator::Guest;

    /// What an authentication plugin implements. Every method has a default, so a plugin only
    /// writes the methods it supports.
    pub trait Authenticator {
        fn password(_connection: ConnectionInfo, _password: Vec<u8>) -> AuthResult {
            AuthResult::Unsupported
        }
        fn public_key(_connection: ConnectionInfo, _public_key: String) -> AuthResult {
            AuthResult::Unsupported
        }
        /// Runs after a successful authentication; the default keeps the grant as it is.
        fn authorize(_connection: ConnectionInfo, grant: AuthGrant) -> AuthResult {
            AuthResult::Success(grant)
        }
    }

    impl AuthGrant {
        /// A grant with no metadata, environment or files.
        pub fn for_user(username: &str) -> Self {
            AuthGrant {
                authenticated_username: username.to_string(),
                metadata: Vec::new(),
                environment: Vec::new(),
                files: Vec::new(),
                sensitive: Vec::new(),
            }
        }
    }

    /// The plugin's configuration (the `config:` block of the gateway's config), parsed.
    pub fn plugin_config<T: serde::de::DeserializeOwned>() -> Result<T, String> {
        crate::parse_config(&crate::auth::containerssh::plugin::host::plugin_config())
    }

    /// Writes a line to the gateway's log, tagged with the plugin and the connection id.
    pub fn log(level: LogLevel, message: &str) {
        crate::auth::containerssh::plugin::host::log(level, message)
    }

    /// One value of the plugin's configuration by dotted path (see [`crate::config_get`]).
    pub fn config_get(key: &str) -> Option<String> {
        crate::config_get(key)
    }

    /// Checks `password` against a bcrypt (`$2b$`), argon2id or SHA-crypt (`$5$`, `$6$`) hash,
    /// natively in the gateway (several times faster than hashing in WebAssembly, and off
    /// the plugin's CPU budget). `Err` for a hash the gateway cannot read.
    pub fn verify_password(hash: &str, password: &[u8]) -> Result<bool, String> {
        crate::auth::containerssh::plugin::password_hash::verify(hash, password)
    }
}

/// Configuration plugins (`config-plugin` world).
pub mod config {
    wit_bindgen::generate!({
        path: "../wit/v0.2",
        world: "config-plugin",
        pub_export_macro: true,
        export_macro_name: "export_config_bindings",
        default_bindings_module: "containerssh_plugin_sdk::config",
        // One set of shared types for every role, so helpers work with all of them.
        with: {
            "containerssh:plugin/plugin-types@0.2.0": crate::auth::containerssh::plugin::plugin_types,
            "containerssh:plugin/host@0.2.0": crate::auth::containerssh::plugin::host,
        },
    });

    pub use crate::auth::containerssh::plugin::plugin_types::{
        AuthGrant, ConnectionInfo, LogLevel,
    };
    pub use exports::containerssh::plugin::config_provider::{ConfigAnswer, Guest};

    /// What a configuration plugin implements: the partial config for one connection.
    pub trait ConfigProvider {
        fn get_config(connection: ConnectionInfo, grant: AuthGrant)
            -> Result<ConfigAnswer, String>;
    }

    /// The plugin's configuration, parsed.
    pub fn plugin_config<T: serde::de::DeserializeOwned>() -> Result<T, String> {
        crate::parse_config(&crate::auth::containerssh::plugin::host::plugin_config())
    }

    pub fn log(level: LogLevel, message: &str) {
        crate::auth::containerssh::plugin::host::log(level, message)
    }

    /// One value of the plugin's configuration by dotted path (see [`crate::config_get`]).
    pub fn config_get(key: &str) -> Option<String> {
        crate::config_get(key)
    }
}

/// Request-filter plugins (`filter-plugin` world).
pub mod filter {
    wit_bindgen::generate!({
        path: "../wit/v0.2",
        world: "filter-plugin",
        pub_export_macro: true,
        export_macro_name: "export_filter_bindings",
        default_bindings_module: "containerssh_plugin_sdk::filter",
        // One set of shared types for every role, so helpers work with all of them.
        with: {
            "containerssh:plugin/plugin-types@0.2.0": crate::auth::containerssh::plugin::plugin_types,
            "containerssh:plugin/host@0.2.0": crate::auth::containerssh::plugin::host,
        },
    });

    pub use crate::auth::containerssh::plugin::plugin_types::{ConnectionInfo, LogLevel};
    pub use exports::containerssh::plugin::request_filter::{
        ChannelRequest, Endpoint, Guest, PtyRequest, Verdict,
    };

    /// What a request-filter plugin implements: a verdict on every channel request.
    pub trait RequestFilter {
        fn filter(connection: ConnectionInfo, session_id: u32, request: ChannelRequest) -> Verdict;
    }

    pub fn plugin_config<T: serde::de::DeserializeOwned>() -> Result<T, String> {
        crate::parse_config(&crate::auth::containerssh::plugin::host::plugin_config())
    }

    pub fn log(level: LogLevel, message: &str) {
        crate::auth::containerssh::plugin::host::log(level, message)
    }

    /// One value of the plugin's configuration by dotted path (see [`crate::config_get`]).
    pub fn config_get(key: &str) -> Option<String> {
        crate::config_get(key)
    }
}

pub mod http;

/// One value of the plugin's configuration by dotted path ("users.alice.password", list
/// elements by index: "hosts.0"): a string as it is, anything else as JSON text, `None` if
/// missing or null. Answered by the gateway, so no JSON parser is needed in the plugin.
pub fn config_get(key: &str) -> Option<String> {
    crate::auth::containerssh::plugin::host::config_get(key)
}
pub mod webhook;

fn parse_config<T: serde::de::DeserializeOwned>(json: &str) -> Result<T, String> {
    let json = if json.trim().is_empty() || json.trim() == "null" {
        "{}"
    } else {
        json
    };
    serde_json::from_str(json).map_err(|e| format!("invalid plugin configuration: {e}"))
}

/// Exports a type implementing [`auth::Authenticator`] as the plugin's authenticator.
#[macro_export]
macro_rules! export_authenticator {
    ($plugin:ty) => {
        // Exported only in the WebAssembly build: natively (unit tests, clippy) the component
        // export names cannot be linked into a shared library.
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            struct ContainerSshAuthenticatorExport;

            impl $crate::auth::Guest for ContainerSshAuthenticatorExport {
                fn password(c: $crate::auth::ConnectionInfo, p: ::std::vec::Vec<u8>) -> $crate::auth::AuthResult {
                    <$plugin as $crate::auth::Authenticator>::password(c, p)
                }
                fn public_key(c: $crate::auth::ConnectionInfo, k: ::std::string::String) -> $crate::auth::AuthResult {
                    <$plugin as $crate::auth::Authenticator>::public_key(c, k)
                }
                fn authorize(c: $crate::auth::ConnectionInfo, g: $crate::auth::AuthGrant) -> $crate::auth::AuthResult {
                    <$plugin as $crate::auth::Authenticator>::authorize(c, g)
                }
            }

            $crate::auth::export_authenticator_bindings!(ContainerSshAuthenticatorExport with_types_in $crate::auth);
        };
    };
}

/// Exports a type implementing [`config::ConfigProvider`].
#[macro_export]
macro_rules! export_config_provider {
    ($plugin:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            struct ContainerSshConfigExport;

            impl $crate::config::Guest for ContainerSshConfigExport {
                fn get_config(
                    c: $crate::config::ConnectionInfo,
                    g: $crate::config::AuthGrant,
                ) -> ::std::result::Result<$crate::config::ConfigAnswer, ::std::string::String> {
                    <$plugin as $crate::config::ConfigProvider>::get_config(c, g)
                }
            }

            $crate::config::export_config_bindings!(ContainerSshConfigExport with_types_in $crate::config);
        };
    };
}

/// Exports a type implementing [`filter::RequestFilter`].
#[macro_export]
macro_rules! export_request_filter {
    ($plugin:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            struct ContainerSshFilterExport;

            impl $crate::filter::Guest for ContainerSshFilterExport {
                fn filter(
                    c: $crate::filter::ConnectionInfo,
                    s: u32,
                    r: $crate::filter::ChannelRequest,
                ) -> $crate::filter::Verdict {
                    <$plugin as $crate::filter::RequestFilter>::filter(c, s, r)
                }
            }

            $crate::filter::export_filter_bindings!(ContainerSshFilterExport with_types_in $crate::filter);
        };
    };
}

#[cfg(test)]
mod tests {
    #[derive(serde::Deserialize, Debug, PartialEq)]
    struct C {
        a: u32,
    }

    #[test]
    fn empty_config_is_an_empty_object() {
        assert!(super::parse_config::<serde_json::Value>("").is_ok());
        assert_eq!(super::parse_config::<C>(r#"{"a": 3}"#), Ok(C { a: 3 }));
        assert!(super::parse_config::<C>(r#""text""#)
            .unwrap_err()
            .contains("invalid plugin configuration"));
    }
}
