//! The SSH side of the gateway.
mod algorithms;
mod channel;
mod connection;
mod forward;
mod handler;
mod hostkey;
mod limits;
mod listen;
mod proxy_protocol;
mod server;
mod sniff;

pub use hostkey::load_or_generate as load_or_generate_host_key;
pub use server::{run, BuiltinLogins, Gateway};
