//! containerssh: an SSH gateway that gives every connection its own fresh container.
pub mod plugin;
