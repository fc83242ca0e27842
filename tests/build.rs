//! Compiles the example plugins in `plugins/` once, for every integration
//! test, and exposes their paths as constants (`TRACKER`, `CHAOS`, ...) plus
//! a `foreach_plugin!` macro that the tests use to prove each plugin has a
//! test of its own. Also builds two variants of `chaos` for the hot-reload
//! tests and the test-only guests in `tests/fixtures/`, and the Python and
//! JavaScript example plugins (with a second version of each) through their
//! own build scripts, which install their pinned toolchains on first use.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let root = PathBuf::from(env("CARGO_MANIFEST_DIR")).join("..");
    let plugins_dir = root.join("plugins");
    for watched in ["plugins/Cargo.toml", "guest-sdk", "wit"] {
        println!("cargo:rerun-if-changed={}", root.join(watched).display());
    }
    let fixtures_dir = root.join("tests/fixtures");
    println!(
        "cargo:rerun-if-changed={}",
        fixtures_dir.join("Cargo.toml").display()
    );
    let fixtures = workspace_members(&fixtures_dir.join("Cargo.toml"));
    for f in &fixtures {
        for part in ["src", "Cargo.toml"] {
            println!(
                "cargo:rerun-if-changed={}",
                fixtures_dir.join(f).join(part).display()
            );
        }
    }
    for file in LANGUAGE_SOURCES {
        println!(
            "cargo:rerun-if-changed={}",
            plugins_dir.join(file).display()
        );
    }
    let members = workspace_members(&plugins_dir.join("Cargo.toml"));
    for m in &members {
        for part in ["src", "Cargo.toml"] {
            println!(
                "cargo:rerun-if-changed={}",
                plugins_dir.join(m).join(part).display()
            );
        }
    }

    let languages = {
        let plugins_dir = plugins_dir.clone();
        let out = target_dir(&plugins_dir).join("languages");
        std::thread::spawn(move || build_languages(&plugins_dir, &out))
    };
    let target = target_dir(&plugins_dir);
    cargo_build(&plugins_dir, &target, false);
    let release = target.join("wasm32-wasip2/release");
    let variants = build_variants(
        &root,
        &PathBuf::from(env("OUT_DIR")).join("variants"),
        &target.join("variants"),
    );
    let fixtures_target = fixtures_dir.join("target");
    cargo_build(&fixtures_dir, &fixtures_target, false);
    let fixtures_release = fixtures_target.join("wasm32-wasip2/release");
    let all = members
        .iter()
        .map(|m| (m.clone(), release.join(format!("{m}.wasm"))))
        .chain(variants)
        .chain(
            fixtures
                .iter()
                .map(|f| (f.clone(), fixtures_release.join(format!("{f}.wasm")))),
        )
        .chain(
            languages
                .join()
                .expect("building the Python and JS plugins panicked"),
        );
    let mut consts = String::new();
    for (m, wasm) in all {
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

fn target_dir(plugins_dir: &Path) -> PathBuf {
    plugins_dir.join("target")
}

/// The sources of the Python and JavaScript example plugins and of their
/// toolchains' pins, under `plugins/`.
const LANGUAGE_SOURCES: &[&str] = &[
    "python/app.py",
    "python/build.sh",
    "python/requirements.txt",
    "js/app.js",
    "js/build.sh",
    "js/package.json",
    "js/package-lock.json",
];

/// Builds the Python and JavaScript example plugins into `out`, each as
/// version 1 and version 2 (for the hot-reload tests), the two languages at
/// once: (name, path of the `.wasm`).
fn build_languages(plugins_dir: &Path, out: &Path) -> Vec<(String, PathBuf)> {
    std::fs::create_dir_all(out).expect("cannot create the folder of the Python and JS plugins");
    let build = |language: &str, name: &str| {
        let script = plugins_dir.join(language).join("build.sh");
        let mut built = Vec::new();
        for (suffix, version) in [("", "1"), ("_v2", "2")] {
            let wasm = out.join(format!("{name}{suffix}.wasm"));
            let status = Command::new("bash")
                .arg(&script)
                .arg(&wasm)
                .arg(version)
                .status()
                .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
            assert!(
                status.success(),
                "{} failed; it needs python3 with venv and pip (Python) or node and npm (JS), \
                 and the network the first time, to install its pinned toolchain",
                script.display()
            );
            built.push((format!("{name}{suffix}"), wasm));
        }
        built
    };
    std::thread::scope(|s| {
        let js = s.spawn(|| build("js", "chaos_js"));
        let mut built = build("python", "chaos_py");
        built.extend(js.join().expect("building the JS plugin panicked"));
        built
    })
}

/// Variants of `chaos` for the hot-reload and backtrace tests: (file name,
/// crate version, features, built with debug info). They compile the same
/// source as `plugins/chaos`.
const VARIANTS: &[(&str, &str, &str, bool)] = &[
    ("chaos_v2", "0.2.0", "", false),
    ("chaos_bad_restore", "0.3.0", "restore-traps", false),
    ("chaos_debug", "0.4.0", "", true),
];

/// Builds each of the [`VARIANTS`] and returns (file name, path of the
/// `.wasm`). Each is the `chaos` crate itself, laid out as in `plugins/`
/// (same crate name, same relative source path, the plugins' workspace
/// manifest with `chaos` as its only member, same `Cargo.lock`), so its code
/// differs from `chaos` only where the version or features do. Each is a
/// workspace of its own under `out`, built into a target dir of its own
/// (with a shared one, cargo would keep whichever variant it linked last as
/// `chaos.wasm`).
fn build_variants(root: &Path, out: &Path, target: &Path) -> Vec<(String, PathBuf)> {
    let plugins = root.join("plugins");
    let sdk = root.join("guest-sdk");
    let workspace = variant_workspace(
        &std::fs::read_to_string(plugins.join("Cargo.toml")).expect("plugins/Cargo.toml"),
        &sdk,
    );
    let chaos =
        std::fs::read_to_string(plugins.join("chaos/Cargo.toml")).expect("chaos/Cargo.toml");
    let lock = std::fs::read_to_string(plugins.join("Cargo.lock")).unwrap_or_default();
    let mut built = Vec::new();
    for (name, version, features, debug) in VARIANTS {
        let dir = out.join(name);
        std::fs::create_dir_all(dir.join("chaos")).expect("cannot create a variant folder");
        // Older build scripts wrote linker settings there; none belong.
        let _ = std::fs::remove_dir_all(dir.join(".cargo"));
        let src = dir.join("chaos/src");
        if !src.exists() {
            std::os::unix::fs::symlink(plugins.join("chaos/src"), &src)
                .expect("cannot link the chaos source");
        }
        let mut manifest =
            chaos.replacen("version = \"0.1.0\"", &format!("version = {version:?}"), 1);
        assert_ne!(
            manifest, chaos,
            "chaos/Cargo.toml has no version = \"0.1.0\""
        );
        if !features.is_empty() {
            assert!(
                manifest.contains("[features]\n"),
                "chaos/Cargo.toml has no [features]"
            );
            manifest = manifest.replace(
                "[features]\n",
                &format!("[features]\ndefault = [{features:?}]\n"),
            );
        }
        write_if_changed(&dir.join("chaos/Cargo.toml"), &manifest);
        write_if_changed(&dir.join("Cargo.toml"), &workspace);
        write_if_changed(&dir.join("Cargo.lock"), &lock);
        let own_target = target.join(name);
        cargo_build(&dir, &own_target, *debug);
        let wasm = target.join(format!("{name}.wasm"));
        std::fs::copy(own_target.join("wasm32-wasip2/release/chaos.wasm"), &wasm)
            .expect("cannot copy a variant");
        built.push((name.to_string(), wasm));
    }
    built
}

/// The plugins' workspace manifest for a variant: `chaos` its only member,
/// and the SDK's path made absolute (the variant lives elsewhere). Everything
/// else, the shared dependencies and any profile, stays as it is, so a
/// variant builds exactly as `chaos` does.
fn variant_workspace(plugins_manifest: &str, sdk: &Path) -> String {
    let sdk_dep = "path = \"../guest-sdk\"";
    assert!(
        plugins_manifest.contains(sdk_dep),
        "plugins/Cargo.toml names the SDK as {sdk_dep}"
    );
    let mut workspace = String::new();
    let mut in_members = false;
    for line in plugins_manifest.lines() {
        if line.trim_start().starts_with("members") {
            workspace.push_str("members = [\"chaos\"]\n");
            in_members = true;
        } else if !in_members {
            workspace.push_str(&line.replace(sdk_dep, &format!("path = {sdk:?}")));
            workspace.push('\n');
        }
        // The list ends on the line that closes it.
        if in_members && line.contains(']') {
            in_members = false;
        }
    }
    workspace
}

fn write_if_changed(path: &Path, text: &str) {
    if std::fs::read_to_string(path).ok().as_deref() != Some(text) {
        std::fs::write(path, text)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    }
}

/// `cargo build --release --target wasm32-wasip2` in `dir`, into `target`;
/// with `debug`, with full debug info.
fn cargo_build(dir: &Path, target: &Path, debug: bool) {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut build = Command::new(cargo);
    build
        .current_dir(dir)
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "--quiet",
            "--target-dir",
        ])
        .arg(target);
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
    if debug {
        build
            .env("CARGO_PROFILE_RELEASE_DEBUG", "true")
            .env("CARGO_PROFILE_RELEASE_STRIP", "none");
    }
    let status = build
        .status()
        .unwrap_or_else(|e| panic!("cannot run cargo to build the plugins: {e}"));
    assert!(
        status.success(),
        "building the plugins in {} failed; is the wasm32-wasip2 target installed? \
         (rustup target add wasm32-wasip2)",
        dir.display()
    );
}

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set"))
}

/// The `members = [...]` of the plugins workspace.
fn workspace_members(manifest: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(manifest).expect("cannot read plugins/Cargo.toml");
    let start = text
        .find("members")
        .expect("plugins/Cargo.toml has no members");
    let list = &text[start..];
    let open = list.find('[').expect("members is not a list");
    let close = list.find(']').expect("members is not a list");
    list[open + 1..close]
        .split(',')
        .map(|s| s.trim().trim_matches('"').to_string())
        .filter(|s| !s.is_empty())
        .collect()
}
