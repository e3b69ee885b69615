//! The built-in request filter: ContainerSSH's `security` module as a plugin, with its bugs
//! fixed (signals follow the `signal` section, `maxSessions` counts sessions that are open now).
//!
//! The plugin's configuration is ContainerSSH's `security` section, with the same keys. Every
//! key is optional; an empty or `null` configuration allows shells, commands, environment
//! variables, terminals, subsystems and signals, and refuses X11, agent and port forwarding.
//!
//! ```yaml
//! security:
//!   defaultMode: disable          # enable | filter | disable; "" or absent = enable
//!   forceCommand: ""              # run this instead of any allowed shell, exec or subsystem
//!   env:
//!     mode: filter                # filter: allow list only, minus the deny list
//!     allow: [LANG, TERM]
//!     deny: []
//!   command:
//!     mode: filter                # exact match against the allow list
//!     allow: ["/usr/bin/uptime"]
//!   shell:
//!     mode: enable                # enable | disable ("filter" = disable)
//!   subsystem:
//!     mode: enable                # enable: everything but the deny list
//!     deny: [sftp]
//!   tty:
//!     mode: enable                # enable | disable ("filter" = disable)
//!   signal:
//!     mode: filter                # names with or without "SIG", any case
//!     allow: [INT, TERM]
//!   forwarding:                   # absent or "" = disable, whatever defaultMode says
//!     forwardingMode: disable     # ssh -L / -D (direct-tcpip)
//!     reverseForwardingMode: disable  # ssh -R (tcpip-forward)
//!     socketForwardingMode: disable   # direct-streamlocal
//!     socketListenMode: disable   # streamlocal-forward and agent forwarding
//!     x11ForwardingMode: disable  # X11
//!   maxSessions: 10               # concurrent session channels; -1 or absent = unlimited
//! ```
//!
//! A section's `mode`, when empty, falls back to `defaultMode`. Unknown keys or modes make the
//! configuration invalid: then every request is refused and the error logged.
pub mod policy;

use containerssh_plugin_sdk::filter::*;
use policy::judge;

pub struct SecurityPolicy;

impl RequestFilter for SecurityPolicy {
    fn filter(_connection: ConnectionInfo, session_id: u32, request: ChannelRequest) -> Verdict {
        let judgement = judge(plugin_config::<serde_json::Value>(), &request);
        if let Some(error) = &judgement.config_error {
            log(
                LogLevel::Error,
                &format!("the security policy configuration is invalid, every request is denied: {error}"),
            );
        }
        // The gateway logs every denial itself; this line is for debugging the policy.
        if let Verdict::Deny(reason) = &judgement.verdict {
            log(
                LogLevel::Debug,
                &format!(
                    "session {session_id}: {} request denied: {reason}",
                    kind(&request)
                ),
            );
        }
        judgement.verdict
    }
}

/// The request's type, for the log.
fn kind(request: &ChannelRequest) -> &'static str {
    match request {
        ChannelRequest::OpenSession(_) => "session",
        ChannelRequest::Env(_) => "env",
        ChannelRequest::Pty(_) => "pty",
        ChannelRequest::Shell => "shell",
        ChannelRequest::Exec(_) => "exec",
        ChannelRequest::Subsystem(_) => "subsystem",
        ChannelRequest::Signal(_) => "signal",
        ChannelRequest::WindowChange(_) => "window-change",
        ChannelRequest::X11 => "x11",
        ChannelRequest::AgentForwarding => "agent-forwarding",
        ChannelRequest::DirectTcpip(_) => "direct-tcpip",
        ChannelRequest::TcpipForward(_) => "tcpip-forward",
        ChannelRequest::DirectStreamlocal(_) => "direct-streamlocal",
        ChannelRequest::StreamlocalForward(_) => "streamlocal-forward",
    }
}

containerssh_plugin_sdk::export_request_filter!(SecurityPolicy);
