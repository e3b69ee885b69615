//! An authentication plugin built against plugin API 0.1, the way plugins were compiled before
//! 0.2 existed: user `legacy` with password `legacy-pass` (or whatever `password` its config
//! names), keyboard-interactive answered `unsupported`. Used by the tests that load 0.1 plugins
//! beside 0.2 ones.
wit_bindgen::generate!({
    path: "../../../wit/v0.1",
    world: "authenticator-plugin",
});

use containerssh::plugin::host;
use containerssh::plugin::plugin_types::{AuthGrant, AuthResult, ConnectionInfo, LogLevel};

struct Legacy;

fn expected_password() -> String {
    let config = host::plugin_config();
    // A deliberately tiny reader: {"password": "..."}; no JSON crate needed for one key.
    config
        .split("\"password\"")
        .nth(1)
        .and_then(|rest| rest.split('"').nth(1))
        .map(str::to_string)
        .unwrap_or_else(|| "legacy-pass".to_string())
}

fn grant(username: &str) -> AuthGrant {
    AuthGrant {
        authenticated_username: username.to_string(),
        metadata: vec![("api".into(), "0.1".into())],
        environment: Vec::new(),
        files: Vec::new(),
        sensitive: Vec::new(),
    }
}

impl exports::containerssh::plugin::authenticator::Guest for Legacy {
    fn password(connection: ConnectionInfo, password: Vec<u8>) -> AuthResult {
        if connection.username == "legacy" && password == expected_password().as_bytes() {
            host::log(LogLevel::Info, "0.1 plugin: password accepted");
            AuthResult::Success(grant(&connection.username))
        } else {
            AuthResult::Failure("wrong user or password".into())
        }
    }

    fn public_key(_connection: ConnectionInfo, _public_key: String) -> AuthResult {
        AuthResult::Unsupported
    }

    fn keyboard_interactive(_connection: ConnectionInfo, _answers: Vec<String>) -> AuthResult {
        AuthResult::Unsupported
    }

    fn authorize(_connection: ConnectionInfo, grant: AuthGrant) -> AuthResult {
        AuthResult::Success(grant)
    }
}

#[cfg(target_arch = "wasm32")]
export!(Legacy);
