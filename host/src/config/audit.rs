//! The audit log (ContainerSSH's `audit` keys where they exist).
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditConfig {
    /// Write an audit log per connection (and recordings of terminal sessions).
    #[serde(default)]
    pub enable: bool,
    /// `asciinema` (what is written: JSON lines per connection, asciicast v2 per terminal
    /// session). ContainerSSH's `binary` format is not supported.
    #[serde(default = "default_format")]
    pub format: String,
    /// Only `file` is supported.
    #[serde(default = "default_storage")]
    pub storage: String,
    #[serde(default)]
    pub file: AuditFileConfig,
    #[serde(default)]
    pub intercept: InterceptConfig,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            enable: false,
            format: default_format(),
            storage: default_storage(),
            file: AuditFileConfig::default(),
            intercept: InterceptConfig::default(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditFileConfig {
    /// Where audit logs and recordings go (created with mode 0700).
    #[serde(default = "default_directory")]
    pub directory: PathBuf,
}

impl Default for AuditFileConfig {
    fn default() -> Self {
        Self {
            directory: default_directory(),
        }
    }
}

/// What of a terminal session is recorded.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InterceptConfig {
    /// Keystrokes (asciicast "i" events). Off by default: what users type includes secrets.
    #[serde(default)]
    pub stdin: bool,
    /// Terminal output (asciicast "o" events).
    #[serde(default = "yes")]
    pub stdout: bool,
    /// Accepted for ContainerSSH configs; a terminal has no separate stderr.
    #[serde(default = "yes")]
    pub stderr: bool,
    /// Must stay false: passwords are never recorded.
    #[serde(default)]
    pub passwords: bool,
}

impl Default for InterceptConfig {
    fn default() -> Self {
        Self {
            stdin: false,
            stdout: true,
            stderr: true,
            passwords: false,
        }
    }
}

fn yes() -> bool {
    true
}
fn default_format() -> String {
    "asciinema".into()
}
fn default_storage() -> String {
    "file".into()
}
fn default_directory() -> PathBuf {
    PathBuf::from("/var/log/containerssh/audit")
}

impl AuditConfig {
    /// Every problem with these settings.
    pub fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.storage != "file" {
            problems.push(format!(
                "audit.storage: {:?} is not supported (file)",
                self.storage
            ));
        }
        if !matches!(self.format.as_str(), "asciinema" | "none") {
            problems.push(format!(
                "audit.format: {:?} is not supported (asciinema: JSON lines plus asciicast v2 recordings)",
                self.format
            ));
        }
        if self.intercept.passwords {
            problems.push(
                "audit.intercept.passwords: passwords are never recorded; remove this or set false"
                    .into(),
            );
        }
        problems
    }
}
