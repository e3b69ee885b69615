//! Plugins compiled into the binary by build.rs (`builtin:NAME`).
include!(concat!(env!("OUT_DIR"), "/builtin_plugins.rs"));

pub fn get(name: &str) -> Option<&'static [u8]> {
    BUILTIN_PLUGINS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, b)| *b)
}

pub fn names() -> Vec<&'static str> {
    BUILTIN_PLUGINS.iter().map(|(n, _)| *n).collect()
}
