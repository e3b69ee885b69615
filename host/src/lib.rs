//! containerssh: an SSH gateway that gives every connection its own fresh container.
pub mod audit;
pub mod backend;
pub mod cli;
pub mod config;
pub mod kerberos;
pub mod logging;
pub mod oauth2;
pub mod observe;
mod operator;
pub mod plugin;
mod plugin_cli;
pub mod ssh;
