//! A hostile authentication plugin: its config says how to misbehave. Used only by tests to
//! show the sandbox contains each case (the login is denied, the gateway keeps going).
use containerssh_plugin_sdk::auth::*;
use serde::Deserialize;

#[derive(Deserialize)]
struct Config {
    /// `loop`, `memory`, `trap`, `huge`, `fetch:URL`, or `allow` (behaves): for every user...
    #[serde(default)]
    mode: String,
    /// ...unless the user has a mode of its own here.
    #[serde(default)]
    modes: std::collections::BTreeMap<String, String>,
}

pub struct Misbehave;

impl Authenticator for Misbehave {
    fn password(conn: ConnectionInfo, _password: Vec<u8>) -> AuthResult {
        let mode = plugin_config::<Config>()
            .map(|mut c| c.modes.remove(&conn.username).unwrap_or(c.mode))
            .unwrap_or_default();
        match mode.as_str() {
            "loop" => {
                let mut x: u64 = 0;
                loop {
                    x = std::hint::black_box(x.wrapping_add(1));
                }
            }
            "memory" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1u8; 16 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            "trap" => panic!("deliberate trap"),
            "huge" => {
                let mut grant = AuthGrant::for_user(&conn.username);
                grant.environment.push(("HUGE".into(), "x".repeat(8 << 20)));
                AuthResult::Success(grant)
            }
            // Reaches out to a URL: a login succeeds only if the request got through, so a
            // leak past the gateway's egress allow-list shows as a successful login.
            m if m.starts_with("fetch:") => {
                let url = &m["fetch:".len()..];
                match containerssh_plugin_sdk::http::send(
                    "GET",
                    url,
                    &[],
                    b"",
                    std::time::Duration::from_secs(2),
                ) {
                    Ok(_) => AuthResult::Success(AuthGrant::for_user(&conn.username)),
                    Err(e) => AuthResult::Failure(format!("fetch failed: {e}")),
                }
            }
            _ => AuthResult::Success(AuthGrant::for_user(&conn.username)),
        }
    }
}

containerssh_plugin_sdk::export_authenticator!(Misbehave);
