//! Checks a component's imports and exports when the config loads, not at the first login, and
//! finds which version of the plugin API it was built against.
use anyhow::bail;
use wasmtime::component::Component;
use wasmtime::Engine;

/// A released version of the plugin API (`wit/v0.1`, `wit/v0.2`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiVersion {
    V0_1,
    V0_2,
}

impl ApiVersion {
    /// Newest first: a component exporting both is taken at its newest.
    pub const ALL: [ApiVersion; 2] = [ApiVersion::V0_2, ApiVersion::V0_1];

    /// The package version as it appears in interface names ("0.2.0").
    pub fn package(self) -> &'static str {
        match self {
            ApiVersion::V0_1 => "0.1.0",
            ApiVersion::V0_2 => "0.2.0",
        }
    }
}

impl std::fmt::Display for ApiVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ApiVersion::V0_1 => "0.1",
            ApiVersion::V0_2 => "0.2",
        })
    }
}

/// WASI interfaces a plugin may import (they grant nothing by default; outbound HTTP goes
/// through the egress allow-list).
const WASI_IMPORT_PREFIXES: &[&str] = &[
    "wasi:cli/",
    "wasi:io/",
    "wasi:clocks/",
    "wasi:random/",
    "wasi:filesystem/",
    "wasi:sockets/",
    "wasi:http/",
];

/// Interfaces of our own a plugin of `version` may import.
fn own_imports(version: ApiVersion) -> Vec<String> {
    let mut names = vec!["host", "plugin-types"];
    if version == ApiVersion::V0_2 {
        names.push("password-hash");
    }
    names
        .into_iter()
        .map(|n| format!("containerssh:plugin/{n}@{}", version.package()))
        .collect()
}

/// The API version of a component exporting `containerssh:plugin/{interface}`, after checking
/// that it imports nothing the gateway does not provide for that version.
pub fn check_component(
    engine: &Engine,
    component: &Component,
    interface: &str,
) -> anyhow::Result<ApiVersion> {
    let ty = component.component_type();
    let imports: Vec<String> = ty
        .imports(engine)
        .map(|(name, _)| name.to_string())
        .collect();
    let wasi = |name: &str| WASI_IMPORT_PREFIXES.iter().any(|p| name.starts_with(p));
    if let Some(foreign) = imports
        .iter()
        .find(|n| !wasi(n) && !n.starts_with("containerssh:plugin/"))
    {
        bail!("the plugin imports {foreign}, which containerssh does not provide");
    }
    let exports: Vec<String> = ty
        .exports(engine)
        .map(|(name, _)| name.to_string())
        .collect();
    let Some(version) = ApiVersion::ALL.into_iter().find(|v| {
        let wanted = format!("containerssh:plugin/{interface}@{}", v.package());
        exports.contains(&wanted)
    }) else {
        bail!(
            "the plugin does not export containerssh:plugin/{interface}@0.2.0 or @0.1.0 (it exports: {})",
            if exports.is_empty() {
                "nothing".to_string()
            } else {
                exports.join(", ")
            }
        );
    };
    let own = own_imports(version);
    if let Some(other) = imports.iter().find(|n| !wasi(n) && !own.contains(n)) {
        bail!(
            "the plugin imports {other}, which containerssh does not provide to a plugin of API {version} (one plugin speaks one API version)"
        );
    }
    Ok(version)
}
