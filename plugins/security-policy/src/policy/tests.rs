//! The policy, request by request. Section-specific tests are in `sections.rs`.
use super::*;
use containerssh_plugin_sdk::filter::{Endpoint, PtyRequest};

mod sections;

fn policy(json: &str) -> Policy {
    match Policy::from_json(json) {
        Ok(p) => p,
        Err(e) => panic!("config {json} should parse: {e}"),
    }
}

/// The document as the SDK hands it over (empty = `null`).
fn document(json: &str) -> Result<Value, String> {
    match json.trim() {
        "" => Ok(Value::Null),
        json => serde_json::from_str(json).map_err(|e| e.to_string()),
    }
}

fn verdict(json: &str, request: ChannelRequest) -> Verdict {
    judge(document(json), &request).verdict
}

fn allowed(json: &str, request: ChannelRequest) -> bool {
    matches!(verdict(json, request), Verdict::Allow)
}

fn denial(json: &str, request: ChannelRequest) -> String {
    match verdict(json, request) {
        Verdict::Deny(reason) => {
            assert!(!reason.contains('\n') && !reason.is_empty(), "{reason:?}");
            reason
        }
        other => panic!("expected a denial, got {other:?}"),
    }
}

fn rewritten(json: &str, request: ChannelRequest) -> String {
    match verdict(json, request) {
        Verdict::RewriteCommand(cmd) => cmd,
        other => panic!("expected a rewrite, got {other:?}"),
    }
}

fn env(name: &str) -> ChannelRequest {
    ChannelRequest::Env((name.into(), "value".into()))
}

fn pty() -> ChannelRequest {
    ChannelRequest::Pty(PtyRequest {
        term: "xterm".into(),
        columns: 80,
        rows: 24,
    })
}

fn exec(cmd: &str) -> ChannelRequest {
    ChannelRequest::Exec(cmd.into())
}

fn subsystem(name: &str) -> ChannelRequest {
    ChannelRequest::Subsystem(name.into())
}

fn signal(name: &str) -> ChannelRequest {
    ChannelRequest::Signal(name.into())
}

fn tcpip() -> ChannelRequest {
    ChannelRequest::DirectTcpip(Endpoint {
        host: "example.com".into(),
        port: 80,
    })
}

#[test]
fn empty_and_null_configs_are_the_default_policy() {
    for json in ["", "null", "{}", " { } "] {
        assert!(allowed(json, ChannelRequest::Shell), "{json}");
        assert!(allowed(json, exec("ls -l")), "{json}");
        assert!(allowed(json, env("FOO")), "{json}");
        assert!(allowed(json, pty()), "{json}");
        assert!(allowed(json, subsystem("sftp")), "{json}");
        assert!(allowed(json, signal("TERM")), "{json}");
        assert!(allowed(json, ChannelRequest::OpenSession(1000)), "{json}");
        assert!(
            allowed(json, ChannelRequest::WindowChange((80, 24))),
            "{json}"
        );
        // Forwarding modes default to disable, as in ContainerSSH.
        assert!(!allowed(json, ChannelRequest::X11), "{json}");
        assert!(!allowed(json, ChannelRequest::AgentForwarding), "{json}");
        assert!(!allowed(json, tcpip()), "{json}");
    }
}

#[test]
fn nulls_inside_the_config_read_as_absent() {
    let json = r#"{"defaultMode": null, "forceCommand": null, "env": null,
        "command": {"mode": null, "allow": null}, "signal": {"allow": null, "deny": null},
        "forwarding": {"x11ForwardingMode": null}, "maxSessions": null}"#;
    assert!(allowed(json, ChannelRequest::Shell));
    assert!(allowed(json, env("A")));
    assert!(allowed(json, exec("x")));
    assert!(allowed(json, signal("INT")));
    assert!(allowed(json, ChannelRequest::OpenSession(99)));
    assert!(!allowed(json, ChannelRequest::X11));
}

#[test]
fn full_containerssh_04_section_parses() {
    let p = policy(
        r#"{"defaultMode": "", "forceCommand": "", "env": {"mode": "", "allow": [], "deny": []},
        "command": {"mode": "", "allow": []}, "shell": {"mode": ""},
        "subsystem": {"mode": "", "allow": [], "deny": []}, "tty": {"mode": ""},
        "signal": {"mode": "", "allow": [], "deny": []},
        "forwarding": {"reverseForwardingMode": "disable", "forwardingMode": "enable",
            "socketForwardingMode": "filter", "socketListenMode": "", "x11ForwardingMode": "disable"},
        "maxSessions": -1}"#,
    );
    assert_eq!(p.max_sessions, Some(-1));
    assert_eq!(p.forwarding.forwarding_mode, Some(Mode::Enable));
    assert!(matches!(p.decide(&ChannelRequest::Shell), Verdict::Allow));
}

#[test]
fn invalid_configs_deny_everything() {
    for json in [
        r#"{"bogus": 1}"#,
        r#"{"env": {"mode": "enable", "alow": ["A"]}}"#,
        r#"{"defaultMode": "allow"}"#,
        r#"{"shell": {"mode": "ENABLE"}}"#,
        r#"{"forwarding": {"x11": "enable"}}"#,
        r#"{"maxSessions": -2}"#,
        r#"{"maxSessions": "ten"}"#,
        r#"[]"#,
        r#""enable""#,
        r#"{"env": []}"#,
        r#"{"signal": ["disable"]}"#,
        r#"{"forwarding": ["enable"]}"#,
        r#"{"command": {"allow": "ls"}}"#,
        r#"{"env": "#,
    ] {
        assert!(Policy::from_json(json).is_err(), "{json}");
        let j = judge(document(json), &ChannelRequest::Shell);
        assert!(
            matches!(&j.verdict, Verdict::Deny(r) if r.starts_with(INVALID_CONFIG_REASON)),
            "{json}"
        );
        assert!(j.config_error.is_some(), "{json}");
        assert!(
            denial(json, ChannelRequest::WindowChange((1, 1))).starts_with(INVALID_CONFIG_REASON)
        );
        assert!(denial(json, ChannelRequest::OpenSession(0)).starts_with(INVALID_CONFIG_REASON));
    }
}

#[test]
fn a_valid_config_logs_no_error() {
    let j = judge(document("{}"), &exec("ls"));
    assert!(j.config_error.is_none());
    // An SDK-side parse error (passed in as Err) denies too.
    let j = judge(Err("invalid plugin configuration: x".into()), &exec("ls"));
    assert!(matches!(j.verdict, Verdict::Deny(_)));
    assert_eq!(
        j.config_error.as_deref(),
        Some("invalid plugin configuration: x")
    );
}

#[test]
fn default_mode_applies_to_unset_sections() {
    let off = r#"{"defaultMode": "disable"}"#;
    assert!(!allowed(off, ChannelRequest::Shell));
    assert!(!allowed(off, exec("ls")));
    assert!(!allowed(off, env("A")));
    assert!(!allowed(off, pty()));
    assert!(!allowed(off, subsystem("sftp")));
    assert!(!allowed(off, signal("INT")));
    // A section's own mode wins over defaultMode.
    assert!(allowed(
        r#"{"defaultMode": "disable", "shell": {"mode": "enable"}}"#,
        ChannelRequest::Shell
    ));
    assert!(!allowed(
        r#"{"defaultMode": "enable", "shell": {"mode": "disable"}}"#,
        ChannelRequest::Shell
    ));
    // defaultMode: filter makes every list section an allow list.
    let filter = r#"{"defaultMode": "filter", "env": {"allow": ["LANG"]}}"#;
    assert!(allowed(filter, env("LANG")));
    assert!(!allowed(filter, env("PATH")));
    assert!(!allowed(filter, exec("ls")));
    assert!(!allowed(filter, ChannelRequest::Shell));
    assert!(allowed(r#"{"defaultMode": "enable"}"#, exec("ls")));
}

#[test]
fn forwarding_modes_absent_or_empty_are_disable() {
    // Absent: disable, even with defaultMode enable.
    assert!(!allowed(r#"{"defaultMode": "enable"}"#, tcpip()));
    // "" (every mode of a zero-filled answer from ContainerSSH's Go library): disable too,
    // whatever defaultMode says.
    let json = r#"{"defaultMode": "enable", "forwarding": {"forwardingMode": "", "reverseForwardingMode": "", "socketForwardingMode": "", "x11ForwardingMode": "", "socketListenMode": ""}}"#;
    assert!(!allowed(json, tcpip()));
    assert!(!allowed(json, ChannelRequest::X11));
    assert!(!allowed(json, ChannelRequest::AgentForwarding));
    assert!(!allowed(
        json,
        ChannelRequest::StreamlocalForward("/tmp/s".into())
    ));
    assert!(!allowed(
        json,
        ChannelRequest::DirectStreamlocal("/tmp/s".into())
    ));
    assert!(!allowed(
        json,
        ChannelRequest::TcpipForward(Endpoint {
            host: "localhost".into(),
            port: 8080
        })
    ));
    assert!(!allowed(
        r#"{"forwarding": {"forwardingMode": ""}}"#,
        tcpip()
    ));
}

#[test]
fn max_sessions_is_a_concurrent_limit() {
    let two = r#"{"maxSessions": 2}"#;
    assert!(allowed(two, ChannelRequest::OpenSession(0)));
    assert!(allowed(two, ChannelRequest::OpenSession(1)));
    assert_eq!(
        denial(two, ChannelRequest::OpenSession(2)),
        "too many sessions (limit 2)"
    );
    assert!(!allowed(two, ChannelRequest::OpenSession(3)));
    // Zero allows no sessions at all.
    assert!(!allowed(
        r#"{"maxSessions": 0}"#,
        ChannelRequest::OpenSession(0)
    ));
    // -1 and absent are unlimited.
    assert!(allowed(
        r#"{"maxSessions": -1}"#,
        ChannelRequest::OpenSession(u32::MAX)
    ));
    assert!(allowed("{}", ChannelRequest::OpenSession(u32::MAX)));
    // A limit larger than any count never bites.
    assert!(allowed(
        r#"{"maxSessions": 9999999999}"#,
        ChannelRequest::OpenSession(u32::MAX)
    ));
    // maxSessions does not affect other requests.
    assert!(allowed(r#"{"maxSessions": 0}"#, ChannelRequest::Shell));
}

#[test]
fn forwarding_sections() {
    let on = r#"{"forwarding": {"forwardingMode": "enable", "x11ForwardingMode": "enable", "socketListenMode": "enable"}}"#;
    assert!(allowed(on, tcpip()));
    assert!(allowed(on, ChannelRequest::X11));
    assert!(allowed(on, ChannelRequest::AgentForwarding));
    // Filtering forwarding is not supported: filter refuses, as in ContainerSSH.
    let filter = r#"{"forwarding": {"forwardingMode": "filter", "x11ForwardingMode": "filter", "socketListenMode": "filter"}}"#;
    assert_eq!(
        denial(filter, tcpip()),
        "port forwarding is disabled by the security policy"
    );
    assert_eq!(
        denial(filter, ChannelRequest::X11),
        "X11 forwarding is disabled by the security policy"
    );
    assert_eq!(
        denial(filter, ChannelRequest::AgentForwarding),
        "agent forwarding is disabled by the security policy"
    );
    // Each request reads its own key only.
    let x11_only = r#"{"forwarding": {"x11ForwardingMode": "enable", "socketForwardingMode": "enable", "reverseForwardingMode": "enable"}}"#;
    assert!(allowed(x11_only, ChannelRequest::X11));
    assert!(!allowed(x11_only, tcpip()));
    assert!(!allowed(x11_only, ChannelRequest::AgentForwarding));
    assert!(allowed(
        x11_only,
        ChannelRequest::DirectStreamlocal("/run/s".into())
    ));
    assert!(!allowed(
        x11_only,
        ChannelRequest::StreamlocalForward("/run/s".into())
    ));
    let reverse = ChannelRequest::TcpipForward(Endpoint {
        host: "localhost".into(),
        port: 9000,
    });
    assert!(allowed(x11_only, reverse.clone()));
    assert_eq!(
        denial(on, reverse),
        "reverse port forwarding is disabled by the security policy"
    );
}

#[test]
fn config_errors_name_the_problem() {
    let err = |json: &str| match Policy::from_json(json) {
        Err(e) => e,
        Ok(_) => panic!("{json} should be rejected"),
    };
    assert!(err(r#"{"bogus": 1}"#).contains("bogus"));
    assert!(err(r#"{"env": {"alow": []}}"#).contains("alow"));
    assert!(err(r#"{"tty": {"mode": "on"}}"#).contains("on"));
    assert!(err(r#"{"maxSessions": -5}"#).contains("-5"));
}
