//! The audit trail: per connection an append-only JSON-lines log of what happened (never a
//! password), and per terminal session an asciicast v2 recording playable with
//! `asciinema play` or `containerssh audit replay`. Kept in a directory (`storage: file`) or
//! uploaded to an S3 bucket when the connection ends (`storage: s3`).
mod cast;
mod log;
pub mod replay;
mod s3;

pub use cast::{Recording, RecordingSender};
pub use log::{Auditor, ConnectionAudit};
