//! The audit trail: per connection an append-only JSON-lines log of what happened (never a
//! password), and per terminal session an asciicast v2 recording playable with
//! `asciinema play` or `containerssh audit replay` (`format: asciinema`), or instead of the
//! recordings ContainerSSH's binary audit log of the connection with its sessions' I/O
//! (`format: binary`). Kept in a directory (`storage: file`) or uploaded to an S3 bucket when
//! the connection ends (`storage: s3`).
mod binary;
mod cast;
mod log;
mod recording;
pub mod replay;
mod s3;

pub use log::{Auditor, ConnectionAudit};
pub use recording::{Recording, RecordingSender};
