//! Forwarding as a backend capability: a connection made from inside a workload (its network
//! namespace and file system), handed to the SSH layer as a byte stream. Backends that cannot
//! forward keep the trait's default, which refuses with a reason.
use std::pin::Pin;

use tokio::io::{AsyncRead, AsyncWrite};

/// Where a forwarded connection goes, inside the workload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ForwardTarget {
    /// `ssh -L` / `-D` (direct-tcpip): a host (name or address, resolved inside) and port.
    Tcp { host: String, port: u32 },
    /// direct-streamlocal: a Unix socket path.
    Unix(String),
}

impl ForwardTarget {
    /// The SSH request's name, for logs, audit events and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            ForwardTarget::Tcp { .. } => "direct-tcpip",
            ForwardTarget::Unix(_) => "direct-streamlocal",
        }
    }
}

/// A connected forward. Shutting down the write side passes the client's EOF on; dropping it
/// ends the connection (and whatever the backend ran for it).
pub trait ForwardIo: AsyncRead + AsyncWrite + Send {}
impl<T: AsyncRead + AsyncWrite + Send> ForwardIo for T {}

pub type ForwardStream = Pin<Box<dyn ForwardIo>>;

/// Why a forward did not connect.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ForwardError {
    /// The workload cannot forward at all (backend, execution mode, no helper): the client is
    /// told "administratively prohibited".
    #[error("{0}")]
    Unavailable(String),
    /// The destination refused or could not be reached: the client is told "connect failed",
    /// as sshd says it.
    #[error("{0}")]
    ConnectFailed(String),
}

/// Where a listener goes, inside the workload.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ListenTarget {
    /// `ssh -R` (tcpip-forward): an address and port inside the workload.
    Tcp { host: String, port: u32 },
    /// streamlocal-forward: a Unix socket path inside the workload.
    Unix(String),
    /// The agent socket (`ssh -A`): a Unix socket in a directory of its own, made for it.
    Agent(String),
    /// An X display (`ssh -X`): TCP port 6000 + `display` on the loopback, and an X authority
    /// file at `xauthority` (in a directory of its own) holding the client's cookie.
    X11 {
        display: u16,
        xauthority: String,
        protocol: String,
        cookie: String,
    },
}

impl ListenTarget {
    /// The SSH request's name, for logs, audit events and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            ListenTarget::Tcp { .. } => "tcpip-forward",
            ListenTarget::Unix(_) => "streamlocal-forward",
            ListenTarget::Agent(_) => "auth-agent",
            ListenTarget::X11 { .. } => "x11",
        }
    }
}

/// A connection a listener accepted inside the workload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    pub id: u64,
    /// The connecting peer inside the workload (empty for Unix sockets).
    pub originator_host: String,
    pub originator_port: u32,
}

/// A listener inside a workload. Dropping it closes the listener (connections already taken
/// go on).
#[async_trait::async_trait]
pub trait ForwardListener: Send + Sync {
    /// The next accepted connection; None once the listener has ended.
    async fn accepted(&self) -> Option<Accepted>;
    /// Takes an accepted connection as a byte stream.
    async fn take(&self, id: u64) -> Result<ForwardStream, ForwardError>;
    /// Closes an accepted connection nobody will take (the client refused the channel).
    async fn refuse(&self, id: u64);
}
