//! Settings every backend's workloads share.
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One workload per connection (its sessions run as processes in it) or one per session.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExecutionMode {
    #[default]
    Connection,
    Session,
}

/// sftp, with OpenSSH's server at Debian's path.
pub fn default_subsystems() -> BTreeMap<String, String> {
    BTreeMap::from([("sftp".into(), "/usr/lib/openssh/sftp-server".into())])
}

/// A portable environment variable name (`[A-Za-z_][A-Za-z0-9_]*`).
pub fn is_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}
