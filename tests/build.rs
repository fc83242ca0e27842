//! Compiles the example plugins in `plugins/` once, for every integration
//! test, and exposes their paths as constants (`TRACKER`, `CHAOS`, ...) plus
//! a `foreach_plugin!` macro that the tests use to prove each plugin has a
//! test of its own.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let root = PathBuf::from(env("CARGO_MANIFEST_DIR")).join("..");
    let plugins_dir = root.join("plugins");
    for watched in ["plugins/Cargo.toml", "plugins/.cargo", "guest-sdk", "wit"] {
        println!("cargo:rerun-if-changed={}", root.join(watched).display());
    }

    let members = workspace_members(&plugins_dir.join("Cargo.toml"));
    for m in &members {
        println!("cargo:rerun-if-changed={}", plugins_dir.join(m).join("src").display());
        println!("cargo:rerun-if-changed={}", plugins_dir.join(m).join("Cargo.toml").display());
    }

    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut build = Command::new(cargo);
    build
        .current_dir(&plugins_dir)
        .args(["build", "--release", "--target", "wasm32-wasip2", "--quiet"]);
    // The outer build's settings (clippy as a rustc wrapper, host rustflags,
    // its target dir) must not leak into the guest build.
    for var in [
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET_DIR",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_BUILD_RUSTFLAGS",
        "CARGO_MAKEFLAGS",
        "CARGO_PRIMARY_PACKAGE",
        "CARGO_LLVM_COV",
    ] {
        build.env_remove(var);
    }
    let status = build
        .status()
        .unwrap_or_else(|e| panic!("cannot run cargo to build the plugins: {e}"));
    assert!(
        status.success(),
        "building the plugins failed; is the wasm32-wasip2 target installed? \
         (rustup target add wasm32-wasip2)"
    );

    let release = plugins_dir.join("target/wasm32-wasip2/release");
    let mut consts = String::new();
    for m in &members {
        let wasm = release.join(format!("{m}.wasm"));
        assert!(wasm.exists(), "{} was not built", wasm.display());
        consts.push_str(&format!(
            "/// The compiled `{m}` plugin.\npub const {}: &str = {:?};\n",
            m.to_uppercase(),
            wasm.display().to_string()
        ));
    }
    consts.push_str(&format!(
        "/// Every example plugin, as (name, path).\npub const ALL_PLUGINS: &[(&str, &str)] = &[{}];\n",
        members
            .iter()
            .map(|m| format!("({m:?}, {})", m.to_uppercase()))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    consts.push_str(&format!(
        "/// Calls `$m!(name)` for every example plugin.\n#[macro_export]\nmacro_rules! foreach_plugin {{\n    ($m:ident) => {{\n{}    }};\n}}\n",
        members.iter().map(|m| format!("        $m!({m});\n")).collect::<String>()
    ));
    let out = PathBuf::from(env("OUT_DIR")).join("plugins.rs");
    std::fs::write(&out, consts).expect("cannot write plugins.rs");
}

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set"))
}

/// The `members = [...]` of the plugins workspace.
fn workspace_members(manifest: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(manifest).expect("cannot read plugins/Cargo.toml");
    let start = text.find("members").expect("plugins/Cargo.toml has no members");
    let list = &text[start..];
    let open = list.find('[').expect("members is not a list");
    let close = list.find(']').expect("members is not a list");
    list[open + 1..close]
        .split(',')
        .map(|s| s.trim().trim_matches('"').to_string())
        .filter(|s| !s.is_empty())
        .collect()
}
