//! Checks a component's imports and exports when the config loads, not at the first login.
use anyhow::bail;
use wasmtime::component::Component;
use wasmtime::Engine;

/// Interfaces a plugin may import: our host API and WASI (which grants nothing by default;
/// outbound HTTP goes through the egress allow-list).
const ALLOWED_IMPORT_PREFIXES: &[&str] = &[
    "containerssh:plugin/host@0.1.",
    "containerssh:plugin/plugin-types@0.1.",
    "wasi:cli/",
    "wasi:io/",
    "wasi:clocks/",
    "wasi:random/",
    "wasi:filesystem/",
    "wasi:sockets/",
    "wasi:http/",
];

pub fn check_component(
    engine: &Engine,
    component: &Component,
    required_export: &str,
) -> anyhow::Result<()> {
    let ty = component.component_type();
    for (name, _) in ty.imports(engine) {
        if !ALLOWED_IMPORT_PREFIXES.iter().any(|p| name.starts_with(p)) {
            bail!("the plugin imports {name}, which containerssh does not provide");
        }
    }
    let exports: Vec<String> = ty
        .exports(engine)
        .map(|(name, _)| name.to_string())
        .collect();
    if !exports.iter().any(|e| e == required_export) {
        bail!(
            "the plugin does not export {required_export} (it exports: {})",
            if exports.is_empty() {
                "nothing".to_string()
            } else {
                exports.join(", ")
            }
        );
    }
    Ok(())
}
