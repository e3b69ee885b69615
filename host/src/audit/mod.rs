//! The audit trail: per connection an append-only JSON-lines log of what happened (never a
//! password), and per terminal session an asciicast v2 recording playable with
//! `asciinema play` or `containerssh audit replay`.
mod cast;
mod log;
pub mod replay;

pub use cast::{Recording, RecordingSender};
pub use log::{Auditor, ConnectionAudit};
