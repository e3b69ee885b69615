//! The policy itself: ContainerSSH's `security` section, parsed, and the verdict on one channel
//! request. No host calls here, so everything in this module unit-tests natively.
use containerssh_plugin_sdk::filter::{ChannelRequest, Verdict};
use serde::de::{DeserializeOwned, Error as _};
use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value};

/// The deny reason for every request while the configuration cannot be read.
pub const INVALID_CONFIG_REASON: &str = "invalid security configuration";

/// How one kind of request is treated (ContainerSSH's `SecurityExecutionPolicy`).
#[derive(Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Mode {
    /// `""`: fall back to `defaultMode` (and an unconfigured `defaultMode` means `enable`).
    #[default]
    #[serde(rename = "")]
    Unconfigured,
    /// Allowed, unless the name is on the section's deny list.
    #[serde(rename = "enable")]
    Enable,
    /// Allowed only if the name is on the section's allow list (and not on its deny list).
    /// Sections without an allow list (shell, tty, forwarding) treat this as `disable`.
    #[serde(rename = "filter")]
    Filter,
    /// Always refused.
    #[serde(rename = "disable")]
    Disable,
}

/// The plugin's configuration: ContainerSSH's `security` section with its JSON key names.
/// Every key may be absent or `null`.
#[derive(Deserialize, Clone, Debug, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Policy {
    #[serde(default, deserialize_with = "nullable")]
    pub default_mode: Mode,
    #[serde(default, deserialize_with = "nullable")]
    pub force_command: String,
    #[serde(default, deserialize_with = "section")]
    pub env: ListSection,
    #[serde(default, deserialize_with = "section")]
    pub command: CommandSection,
    #[serde(default, deserialize_with = "section")]
    pub shell: ModeSection,
    #[serde(default, deserialize_with = "section")]
    pub subsystem: ListSection,
    #[serde(default, deserialize_with = "section")]
    pub tty: ModeSection,
    #[serde(default, deserialize_with = "section")]
    pub signal: ListSection,
    #[serde(default, deserialize_with = "section")]
    pub forwarding: ForwardingSection,
    /// Concurrent session channels per connection; absent, `null` or -1 = unlimited.
    #[serde(default)]
    pub max_sessions: Option<i64>,
}

/// A section with only a mode (`shell`, `tty`).
#[derive(Deserialize, Clone, Debug, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ModeSection {
    #[serde(default, deserialize_with = "nullable")]
    pub mode: Mode,
}

/// `command`: exact-match allow list, no deny list (as in ContainerSSH).
#[derive(Deserialize, Clone, Debug, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CommandSection {
    #[serde(default, deserialize_with = "nullable")]
    pub mode: Mode,
    #[serde(default, deserialize_with = "nullable")]
    pub allow: Vec<String>,
}

/// `env`, `subsystem`, `signal`: a mode with allow and deny lists.
#[derive(Deserialize, Clone, Debug, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ListSection {
    #[serde(default, deserialize_with = "nullable")]
    pub mode: Mode,
    #[serde(default, deserialize_with = "nullable")]
    pub allow: Vec<String>,
    #[serde(default, deserialize_with = "nullable")]
    pub deny: Vec<String>,
}

/// `forwarding`. Unlike every other mode these are `disable` when absent, `null` or `""`
/// (ContainerSSH's `default:"disable"` tags): zero-filled answers from ContainerSSH's Go library
/// carry `""` for every mode, and that must never turn forwarding on, whatever `defaultMode` is.
#[derive(Deserialize, Clone, Debug, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ForwardingSection {
    /// `tcpip-forward` requests (`ssh -R`: a listener in the container).
    #[serde(default)]
    pub reverse_forwarding_mode: Option<Mode>,
    /// `direct-tcpip` requests (`ssh -L` and `-D`: connections made from the container).
    #[serde(default)]
    pub forwarding_mode: Option<Mode>,
    /// `direct-streamlocal` requests (connections to a Unix socket in the container).
    #[serde(default)]
    pub socket_forwarding_mode: Option<Mode>,
    /// `streamlocal-forward` (a listening Unix socket in the container) and agent forwarding;
    /// see [`Policy::decide`] for why this key.
    #[serde(default)]
    pub socket_listen_mode: Option<Mode>,
    /// `x11` requests.
    #[serde(default)]
    pub x11_forwarding_mode: Option<Mode>,
}

/// `null` reads as the type's default, as Go's JSON decoder leaves the field untouched.
fn nullable<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// A section: a map, or `null` for the default (Go rejects a list where a struct belongs;
/// serde alone would read one field by field).
fn section<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: DeserializeOwned + Default,
{
    match Option::<Map<String, Value>>::deserialize(d)? {
        None => Ok(T::default()),
        Some(map) => T::deserialize(Value::Object(map)).map_err(D::Error::custom),
    }
}

/// The verdict together with a configuration error to log, if there was one.
pub struct Judgement {
    pub verdict: Verdict,
    pub config_error: Option<String>,
}

/// The verdict on `request` under `config` (the configuration document, as JSON). An unreadable
/// or invalid configuration denies everything.
pub fn judge(config: Result<Value, String>, request: &ChannelRequest) -> Judgement {
    match config.and_then(Policy::from_value) {
        Ok(policy) => Judgement {
            verdict: policy.decide(request),
            config_error: None,
        },
        Err(e) => Judgement {
            verdict: Verdict::Deny(format!("{INVALID_CONFIG_REASON}: {e}")),
            config_error: Some(e),
        },
    }
}

impl Policy {
    /// Parses a configuration document; empty or `null` is the default policy.
    pub fn from_json(json: &str) -> Result<Policy, String> {
        let json = match json.trim() {
            "" => "null",
            other => other,
        };
        serde_json::from_str::<Value>(json)
            .map_err(|e| format!("invalid plugin configuration: {e}"))
            .and_then(Policy::from_value)
    }

    /// Reads and validates a parsed configuration: a map, or `null` for the default policy.
    pub fn from_value(value: Value) -> Result<Policy, String> {
        match value {
            Value::Null => Ok(Policy::default()),
            Value::Object(_) => serde_json::from_value::<Policy>(value)
                .map_err(|e| format!("invalid plugin configuration: {e}"))
                .and_then(Policy::validated),
            Value::Array(_) => {
                Err("invalid plugin configuration: expected a map, not a list".into())
            }
            _ => Err("invalid plugin configuration: expected a map".into()),
        }
    }

    /// Checks what serde cannot: `maxSessions` is -1 or more.
    fn validated(self) -> Result<Policy, String> {
        match self.max_sessions {
            Some(n) if n < -1 => Err(format!(
                "invalid plugin configuration: maxSessions must be -1 (unlimited) or more, not {n}"
            )),
            _ => Ok(self),
        }
    }

    /// A section's own mode, else `defaultMode`, else `enable`.
    fn resolve(&self, own: Mode) -> Mode {
        match (own, self.default_mode) {
            (Mode::Unconfigured, Mode::Unconfigured) => Mode::Enable,
            (Mode::Unconfigured, default) => default,
            (own, _) => own,
        }
    }

    /// A forwarding mode: absent and `""` mean `disable` (never `defaultMode`).
    fn resolve_forwarding(&self, own: Option<Mode>) -> Mode {
        match own {
            None | Some(Mode::Unconfigured) => Mode::Disable,
            Some(mode) => mode,
        }
    }

    /// The verdict on one channel request.
    pub fn decide(&self, request: &ChannelRequest) -> Verdict {
        match request {
            ChannelRequest::OpenSession(open) => self.open_session(*open),
            // Names match exactly (case-sensitively) as in ContainerSSH; the reason quotes a
            // sanitised copy.
            ChannelRequest::Env((name, _)) => deny_unless(
                listed(self.resolve(self.env.mode), &self.env, name, |a, b| a == b),
                "setting environment variables is disabled by the security policy",
                format!("environment variable {} is not allowed", printable(name)),
            ),
            ChannelRequest::Pty(_) => deny_unless(
                flag(self.resolve(self.tty.mode)),
                "terminal allocation is disabled by the security policy",
                String::new(),
            ),
            // ContainerSSH checks the shell mode first and forces the command only for shells
            // the policy allows; `filter` makes no sense for shells and disables them.
            ChannelRequest::Shell => self.forced(deny_unless(
                flag(self.resolve(self.shell.mode)),
                "shell access is disabled by the security policy",
                String::new(),
            )),
            // As in ContainerSSH, the client's command is checked first (exact match for
            // `filter`), and only an allowed request is rewritten to `forceCommand`: with
            // `command.mode: disable` exec is refused even when `forceCommand` is set.
            ChannelRequest::Exec(command) => {
                let allowed = match self.resolve(self.command.mode) {
                    Mode::Disable => None,
                    Mode::Filter => Some(self.command.allow.iter().any(|c| c == command)),
                    Mode::Enable | Mode::Unconfigured => Some(true),
                };
                self.forced(deny_unless(
                    allowed,
                    "command execution is disabled by the security policy",
                    "this command is not allowed by the security policy".into(),
                ))
            }
            ChannelRequest::Subsystem(name) => {
                let mode = self.resolve(self.subsystem.mode);
                self.forced(deny_unless(
                    listed(mode, &self.subsystem, name, |a, b| a == b),
                    "subsystems are disabled by the security policy",
                    format!("subsystem {} is not allowed", printable(name)),
                ))
            }
            // The signal section, not the shell's (ContainerSSH read `shell.mode` here).
            ChannelRequest::Signal(name) => {
                let name = signal_name(name);
                let mode = self.resolve(self.signal.mode);
                deny_unless(
                    listed(mode, &self.signal, &name, |a, b| signal_name(a) == b),
                    "sending signals is disabled by the security policy",
                    format!("signal {} is not allowed", printable(&name)),
                )
            }
            // Always allowed, as in ContainerSSH: without a pty there is nothing to resize, and
            // a denial would print a line on the client's terminal at every resize.
            ChannelRequest::WindowChange(_) => Verdict::Allow,
            ChannelRequest::X11 => deny_unless(
                flag(self.resolve_forwarding(self.forwarding.x11_forwarding_mode)),
                "X11 forwarding is disabled by the security policy",
                String::new(),
            ),
            // ContainerSSH has no agent forwarding at all (always refused). Mechanically it is a
            // listening unix socket in the container whose connections are opened back to the
            // client, exactly what `socketListenMode` governs (streamlocal-forward), so that key
            // decides; it defaults to `disable`, keeping ContainerSSH's behaviour unless an
            // operator opts in. (`socketForwardingMode` is the other direction.)
            ChannelRequest::AgentForwarding => deny_unless(
                flag(self.resolve_forwarding(self.forwarding.socket_listen_mode)),
                "agent forwarding is disabled by the security policy",
                String::new(),
            ),
            // ContainerSSH does not support filtering forwarding: `filter` refuses it.
            ChannelRequest::DirectTcpip(_) => deny_unless(
                flag(self.resolve_forwarding(self.forwarding.forwarding_mode)),
                "port forwarding is disabled by the security policy",
                String::new(),
            ),
            ChannelRequest::TcpipForward(_) => deny_unless(
                flag(self.resolve_forwarding(self.forwarding.reverse_forwarding_mode)),
                "reverse port forwarding is disabled by the security policy",
                String::new(),
            ),
            ChannelRequest::DirectStreamlocal(_) => deny_unless(
                flag(self.resolve_forwarding(self.forwarding.socket_forwarding_mode)),
                "socket forwarding is disabled by the security policy",
                String::new(),
            ),
            ChannelRequest::StreamlocalForward(_) => deny_unless(
                flag(self.resolve_forwarding(self.forwarding.socket_listen_mode)),
                "listening on sockets is disabled by the security policy",
                String::new(),
            ),
        }
    }

    /// `maxSessions` limits concurrently open session channels; `open` is how many are open.
    fn open_session(&self, open: u32) -> Verdict {
        match self.max_sessions {
            Some(limit) if limit >= 0 && i64::from(open) >= limit => {
                Verdict::Deny(format!("too many sessions (limit {limit})"))
            }
            _ => Verdict::Allow,
        }
    }

    /// An allowed shell, exec or subsystem request runs `forceCommand` instead, if one is set.
    fn forced(&self, verdict: Verdict) -> Verdict {
        match verdict {
            Verdict::Allow if !self.force_command.is_empty() => {
                Verdict::RewriteCommand(self.force_command.clone())
            }
            other => other,
        }
    }
}

/// For sections without lists: `None` = disabled (`filter` counts as disabled).
fn flag(mode: Mode) -> Option<bool> {
    match mode {
        Mode::Enable | Mode::Unconfigured => Some(true),
        Mode::Filter | Mode::Disable => None,
    }
}

/// For sections with allow and deny lists: `None` = the section is disabled, `Some(ok)` =
/// whether `name` passes. `enable` refuses names on the deny list; `filter` requires the allow
/// list and also honours the deny list (ContainerSSH documents the deny list as applying in
/// every mode but `disable`, though its code ignored it under `filter`: the stricter reading).
fn listed(
    mode: Mode,
    section: &ListSection,
    name: &str,
    eq: fn(&str, &str) -> bool,
) -> Option<bool> {
    let on = |list: &[String]| list.iter().any(|item| eq(item, name));
    match mode {
        Mode::Disable => None,
        Mode::Filter => Some(on(&section.allow) && !on(&section.deny)),
        Mode::Enable | Mode::Unconfigured => Some(!on(&section.deny)),
    }
}

/// Turns a list check into a verdict with the matching one-line reason.
fn deny_unless(allowed: Option<bool>, disabled: &str, not_allowed: String) -> Verdict {
    match allowed {
        Some(true) => Verdict::Allow,
        None => Verdict::Deny(disabled.into()),
        Some(false) if not_allowed.is_empty() => Verdict::Deny(disabled.into()),
        Some(false) => Verdict::Deny(not_allowed),
    }
}

/// A signal name compared without a `SIG` prefix, case-insensitively: "sigkill" → "KILL".
pub fn signal_name(name: &str) -> String {
    let upper = name.to_ascii_uppercase();
    match upper.strip_prefix("SIG") {
        Some(rest) if !rest.is_empty() => rest.to_string(),
        _ => upper,
    }
}

/// A client-supplied name made safe for a one-line reason: no control characters, bounded.
fn printable(name: &str) -> String {
    const MAX: usize = 64;
    let mut out: String = name
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .take(MAX)
        .collect();
    if name.chars().count() > MAX {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests;
