//! Builds the plugins under `plugins/` for wasm32-wasip2 and embeds them in the binary
//! (`builtin:NAME`). They also land in `target/plugins/NAME.wasm` for use as files. The test
//! plugins under `tests/plugins/` are built alongside but only copied to `target/test-plugins/`.
//!
//! The nested cargo uses its own target directory so it never waits on the outer build's lock.
use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let manifest_dir =
        PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let workspace = manifest_dir
        .parent()
        .expect("host/ is inside the workspace")
        .to_path_buf();
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    for dir in ["plugins", "plugin-sdk", "wit", "tests/plugins", "helper"] {
        println!("cargo:rerun-if-changed={}", workspace.join(dir).display());
    }
    println!(
        "cargo:rerun-if-changed={}",
        workspace.join("Cargo.lock").display()
    );

    let plugins = plugin_crates(&workspace.join("plugins"));
    let test_plugins = plugin_crates(&workspace.join("tests").join("plugins"));
    let wasm_target_dir = workspace.join("target").join("wasm-plugins");
    let files_dir = workspace.join("target").join("plugins");
    std::fs::create_dir_all(&files_dir).expect("create target/plugins");
    let test_files_dir = workspace.join("target").join("test-plugins");
    std::fs::create_dir_all(&test_files_dir).expect("create target/test-plugins");

    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(&workspace)
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "--target-dir",
        ])
        .arg(&wasm_target_dir);
    for (package, _) in plugins.iter().chain(&test_plugins) {
        cmd.args(["-p", package]);
    }
    isolate(&mut cmd);
    let output = cmd.output().expect("cannot run cargo to build the plugins");
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        if stderr.contains("wasm32-wasip2")
            && (stderr.contains("may not be installed")
                || stderr.contains("can't find crate for `core`"))
        {
            panic!("the wasm32-wasip2 target is missing: run `rustup target add wasm32-wasip2`\n{stderr}");
        }
        panic!("building the plugins for wasm32-wasip2 failed:\n{stderr}");
    }

    let mut entries = String::from("/// (name, component bytes) of the plugins built into this binary.\npub static BUILTIN_PLUGINS: &[(&str, &[u8])] = &[\n");
    for (package, lib) in &plugins {
        let built = wasm_target_dir
            .join("wasm32-wasip2/release")
            .join(format!("{lib}.wasm"));
        let embedded = out_dir.join(format!("{package}.wasm"));
        std::fs::copy(&built, &embedded)
            .unwrap_or_else(|e| panic!("copy {}: {e}", built.display()));
        let _ = std::fs::copy(&built, files_dir.join(format!("{package}.wasm")));
        entries.push_str(&format!(
            "    ({package:?}, include_bytes!({:?})),\n",
            embedded.display().to_string()
        ));
    }
    entries.push_str("];\n");
    for (package, lib) in &test_plugins {
        let built = wasm_target_dir
            .join("wasm32-wasip2/release")
            .join(format!("{lib}.wasm"));
        std::fs::copy(&built, test_files_dir.join(format!("{package}.wasm")))
            .unwrap_or_else(|e| panic!("copy {}: {e}", built.display()));
    }
    std::fs::write(out_dir.join("builtin_plugins.rs"), entries).expect("write builtin_plugins.rs");
    build_helper(&workspace, &out_dir);
}

/// Keeps the outer build's settings (wrappers such as clippy-driver, flags for the host
/// target, jobserver) out of a nested cargo.
fn isolate(cmd: &mut Command) {
    for var in [
        "RUSTC_WORKSPACE_WRAPPER",
        "RUSTC_WRAPPER",
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "CARGO_MAKEFLAGS",
        "MAKEFLAGS",
        "MFLAGS",
        "CARGO_BUILD_RUSTC_WRAPPER",
        "CARGO_PRIMARY_PACKAGE",
        "CLIPPY_ARGS",
        "CLIPPY_CONF_DIR",
        "RUSTC",
        "RUSTDOC",
    ] {
        cmd.env_remove(var);
    }
    for (key, _) in std::env::vars() {
        if key.starts_with("CARGO_FEATURE_")
            || key.starts_with("CARGO_CFG_")
            || key.starts_with("DEP_")
        {
            cmd.env_remove(key);
        }
    }
}

/// The forwarding helper (`helper/`), built statically for the gateway's own target and
/// embedded: the gateway places it in containers that need it, so images need nothing.
fn build_helper(workspace: &Path, out_dir: &Path) {
    let target = std::env::var("TARGET").expect("cargo sets TARGET");
    let target_dir = workspace.join("target").join("helper");
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(workspace)
        .args([
            "build",
            "--release",
            "-p",
            "containerssh-helper",
            "--target",
            &target,
            "--target-dir",
        ])
        .arg(&target_dir);
    isolate(&mut cmd);
    cmd.env("RUSTFLAGS", "-C target-feature=+crt-static")
        .env("CARGO_PROFILE_RELEASE_OPT_LEVEL", "s")
        .env("CARGO_PROFILE_RELEASE_STRIP", "true")
        .env("CARGO_PROFILE_RELEASE_PANIC", "abort")
        .env("CARGO_PROFILE_RELEASE_LTO", "true");
    let output = cmd.output().expect("cannot run cargo to build the helper");
    if !output.status.success() {
        panic!(
            "building the forwarding helper failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let built = target_dir
        .join(&target)
        .join("release")
        .join("containerssh-helper");
    std::fs::copy(&built, out_dir.join("containerssh-helper"))
        .unwrap_or_else(|e| panic!("copy {}: {e}", built.display()));
}

/// (package name, library file stem) of every crate directly under `plugins/`.
fn plugin_crates(dir: &Path) -> Vec<(String, String)> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    for entry in entries.flatten() {
        let manifest = entry.path().join("Cargo.toml");
        let Ok(text) = std::fs::read_to_string(&manifest) else {
            continue;
        };
        let Some(name) = text
            .lines()
            .skip_while(|l| l.trim() != "[package]")
            .find_map(|l| {
                l.trim()
                    .strip_prefix("name = ")
                    .map(|v| v.trim_matches('"').to_string())
            })
        else {
            continue;
        };
        let lib = name.replace('-', "_");
        found.push((name, lib));
    }
    found.sort();
    found
}
