//! One section at a time: env, command, shell, tty, subsystem, signal, forceCommand.
use super::*;

#[test]
fn env_section() {
    assert!(allowed(r#"{"env": {"mode": "enable"}}"#, env("FOO")));
    let deny = r#"{"env": {"mode": "enable", "deny": ["LD_PRELOAD"]}}"#;
    assert!(allowed(deny, env("FOO")));
    assert_eq!(
        denial(deny, env("LD_PRELOAD")),
        "environment variable LD_PRELOAD is not allowed"
    );
    // Exact, case-sensitive names.
    assert!(allowed(deny, env("ld_preload")));
    let filter = r#"{"env": {"mode": "filter", "allow": ["LANG", "LC_ALL"], "deny": ["LC_ALL"]}}"#;
    assert!(allowed(filter, env("LANG")));
    assert_eq!(
        denial(filter, env("FOO")),
        "environment variable FOO is not allowed"
    );
    // On both lists: the deny list wins.
    assert!(!allowed(filter, env("LC_ALL")));
    assert!(!allowed(r#"{"env": {"mode": "filter"}}"#, env("LANG")));
    assert_eq!(
        denial(
            r#"{"env": {"mode": "disable", "allow": ["FOO"]}}"#,
            env("FOO")
        ),
        "setting environment variables is disabled by the security policy"
    );
}

#[test]
fn command_section() {
    assert!(allowed(
        r#"{"command": {"mode": "enable"}}"#,
        exec("rm -rf /tmp/x")
    ));
    let filter = r#"{"command": {"mode": "filter", "allow": ["/usr/bin/uptime"]}}"#;
    assert!(allowed(filter, exec("/usr/bin/uptime")));
    // Exact match only: no prefixes, no shell tricks.
    assert!(!allowed(filter, exec("/usr/bin/uptime; id")));
    assert!(!allowed(filter, exec("/usr/bin/uptime ")));
    assert_eq!(
        denial(filter, exec("id")),
        "this command is not allowed by the security policy"
    );
    assert_eq!(
        denial(r#"{"command": {"mode": "disable"}}"#, exec("ls")),
        "command execution is disabled by the security policy"
    );
    // The command section does not govern shells.
    assert!(allowed(
        r#"{"command": {"mode": "disable"}}"#,
        ChannelRequest::Shell
    ));
}

#[test]
fn shell_section_filter_means_disable() {
    assert!(allowed(
        r#"{"shell": {"mode": "enable"}}"#,
        ChannelRequest::Shell
    ));
    for mode in ["filter", "disable"] {
        let json = format!(r#"{{"shell": {{"mode": "{mode}"}}}}"#);
        assert_eq!(
            denial(&json, ChannelRequest::Shell),
            "shell access is disabled by the security policy"
        );
        assert!(allowed(&json, exec("ls")));
    }
}

#[test]
fn tty_section_filter_means_disable() {
    assert!(allowed(r#"{"tty": {"mode": "enable"}}"#, pty()));
    for mode in ["filter", "disable"] {
        let json = format!(r#"{{"tty": {{"mode": "{mode}"}}}}"#);
        assert_eq!(
            denial(&json, pty()),
            "terminal allocation is disabled by the security policy"
        );
        // Window changes stay allowed: nothing to resize, and no noise on the client.
        assert!(allowed(&json, ChannelRequest::WindowChange((100, 40))));
    }
}

#[test]
fn subsystem_section() {
    let deny = r#"{"subsystem": {"mode": "enable", "deny": ["sftp"]}}"#;
    assert_eq!(
        denial(deny, subsystem("sftp")),
        "subsystem sftp is not allowed"
    );
    assert!(allowed(deny, subsystem("other")));
    let filter = r#"{"subsystem": {"mode": "filter", "allow": ["sftp"]}}"#;
    assert!(allowed(filter, subsystem("sftp")));
    assert_eq!(
        denial(filter, subsystem("scp")),
        "subsystem scp is not allowed"
    );
    assert_eq!(
        denial(r#"{"subsystem": {"mode": "disable"}}"#, subsystem("sftp")),
        "subsystems are disabled by the security policy"
    );
}

#[test]
fn signal_section_is_independent_of_shell() {
    // ContainerSSH used shell.mode for signals; here the shell section has no say.
    let shell_off = r#"{"shell": {"mode": "disable"}, "signal": {"mode": "enable"}}"#;
    assert!(allowed(shell_off, signal("TERM")));
    let sig_off = r#"{"shell": {"mode": "enable"}, "signal": {"mode": "disable"}}"#;
    assert_eq!(
        denial(sig_off, signal("TERM")),
        "sending signals is disabled by the security policy"
    );
    assert!(allowed(sig_off, ChannelRequest::Shell));
    let filter =
        r#"{"shell": {"mode": "disable"}, "signal": {"mode": "filter", "allow": ["INT"]}}"#;
    assert!(allowed(filter, signal("INT")));
    assert_eq!(denial(filter, signal("KILL")), "signal KILL is not allowed");
}

#[test]
fn signal_names_compare_without_sig_prefix_and_case() {
    let deny = r#"{"signal": {"mode": "enable", "deny": ["SIGKILL", "hup"]}}"#;
    for name in ["KILL", "SIGKILL", "kill", "SigKill"] {
        assert_eq!(
            denial(deny, signal(name)),
            "signal KILL is not allowed",
            "{name}"
        );
    }
    assert!(!allowed(deny, signal("SIGHUP")));
    assert!(allowed(deny, signal("TERM")));
    let filter = r#"{"signal": {"mode": "filter", "allow": ["int", "SIGTERM"]}}"#;
    for name in ["INT", "SIGINT", "TERM", "sigterm"] {
        assert!(allowed(filter, signal(name)), "{name}");
    }
    assert!(!allowed(filter, signal("USR1")));
    assert_eq!(signal_name("SIG"), "SIG");
    assert_eq!(signal_name("sigusr2"), "USR2");
}

#[test]
fn force_command_rewrites_allowed_shell_exec_and_subsystem() {
    let json = r#"{"forceCommand": "/bin/menu"}"#;
    assert_eq!(rewritten(json, ChannelRequest::Shell), "/bin/menu");
    assert_eq!(rewritten(json, exec("ls")), "/bin/menu");
    assert_eq!(rewritten(json, subsystem("sftp")), "/bin/menu");
    // Other requests are unaffected.
    assert!(allowed(json, env("A")));
    assert!(allowed(json, pty()));
    assert!(allowed(json, signal("INT")));
}

#[test]
fn force_command_never_overrides_a_denial() {
    // As in ContainerSSH: the request is checked first, the command forced only if allowed.
    let json = r#"{"forceCommand": "/bin/menu", "command": {"mode": "disable"},
        "shell": {"mode": "disable"}, "subsystem": {"mode": "enable", "deny": ["sftp"]}}"#;
    assert_eq!(
        denial(json, exec("ls")),
        "command execution is disabled by the security policy"
    );
    assert!(!allowed(json, ChannelRequest::Shell));
    assert!(!allowed(json, subsystem("sftp")));
    assert_eq!(rewritten(json, subsystem("other")), "/bin/menu");
    let filter =
        r#"{"forceCommand": "/bin/menu", "command": {"mode": "filter", "allow": ["backup"]}}"#;
    assert_eq!(rewritten(filter, exec("backup")), "/bin/menu");
    assert!(!allowed(filter, exec("ls")));
}

#[test]
fn reasons_quote_client_names_safely() {
    let json = r#"{"env": {"mode": "disable"}, "subsystem": {"mode": "filter"}}"#;
    let reason = denial(json, subsystem("evil\nname\r\x1b[31m"));
    assert_eq!(reason, "subsystem evil?name??[31m is not allowed");
    let long = "x".repeat(500);
    let reason = denial(json, subsystem(&long));
    assert!(reason.chars().count() < 100, "{reason}");
    // Matching uses the raw name, never the sanitised one.
    let allow = r#"{"subsystem": {"mode": "filter", "allow": ["a?b"]}}"#;
    assert!(!allowed(allow, subsystem("a\nb")));
}
