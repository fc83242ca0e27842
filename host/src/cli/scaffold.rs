//! `wasmvisor new NAME [--lang rust|python|js] [--sdk PATH]`: a plugin that
//! builds with no edits and answers `"ping"` with `"pong"`: a Rust crate for
//! `wasm32-wasip2` on the guest SDK, or a Python (componentize-py) or
//! JavaScript (componentize-js) project with the WIT package beside it.

use anyhow::{Context, Result, bail};
use std::path::{Component, Path, PathBuf};

/// The language of a new plugin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Lang {
    /// A crate on the guest SDK (`wasmvisor-sdk`).
    Rust,
    /// A componentize-py project.
    Python,
    /// A componentize-js project.
    Js,
}

/// The toolchains the Python and JavaScript scaffolds pin: the versions the
/// example plugins are built and tested with.
const COMPONENTIZE_PY: &str = "0.25.0";
const COMPONENTIZE_JS: &str = "0.23.0";
/// componentize-js 0.23.0 imports this package when it builds but declares
/// it only for its own development, so `npm ci` from a lock file leaves it
/// out unless the project names it.
const PREVIEW2_SHIM: &str = "0.25.0";

/// Creates the plugin in `parent/NAME` and returns its folder.
pub fn create(parent: &Path, name: &str, lang: Lang, sdk: Option<&Path>) -> Result<PathBuf> {
    crate::names::validate_plugin(name).map_err(|e| anyhow::anyhow!("invalid plugin name: {e}"))?;
    if name.contains('-') || name.starts_with(|c: char| c.is_ascii_digit()) {
        bail!(
            "invalid plugin name {name:?}: use letters, digits and _ (not starting with a digit), \
             so that the crate builds {name}.wasm under that same name"
        );
    }
    let dir = parent.join(name);
    if dir.exists() {
        bail!("{} already exists; nothing was written", dir.display());
    }
    if sdk.is_some() && lang != Lang::Rust {
        bail!("--sdk is for Rust plugins; Python and JS plugins build against the WIT package");
    }
    let files = match lang {
        Lang::Rust => rust_files(&dir, parent, name, sdk)?,
        Lang::Python => python_files(name),
        Lang::Js => js_files(name),
    };
    for (file, text) in files {
        let path = dir.join(file);
        if let Some(folder) = path.parent() {
            std::fs::create_dir_all(folder)
                .with_context(|| format!("cannot create {}", folder.display()))?;
        }
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
        #[cfg(unix)]
        if file.ends_with(".sh") {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
                .with_context(|| format!("cannot make {} executable", path.display()))?;
        }
    }
    Ok(dir)
}

/// How to build the plugin `create` made, and where the `.wasm` lands.
pub fn build_hint(name: &str, lang: Lang) -> String {
    match lang {
        Lang::Rust => format!(
            "build it: (cd {name} && cargo build --release --target wasm32-wasip2), then copy \
             {name}/target/wasm32-wasip2/release/{name}.wasm into the plugins folder"
        ),
        Lang::Python => format!(
            "build it: (cd {name} && ./build.sh) (it installs componentize-py {COMPONENTIZE_PY} \
             into {name}/.venv the first time), then copy {name}/{name}.wasm into the plugins folder"
        ),
        Lang::Js => format!(
            "build it: (cd {name} && npm install && npm run build), then copy {name}/{name}.wasm \
             into the plugins folder"
        ),
    }
}

fn rust_files(
    dir: &Path,
    parent: &Path,
    name: &str,
    sdk: Option<&Path>,
) -> Result<Vec<(&'static str, String)>> {
    let sdk = match sdk {
        Some(path) => {
            let path = std::path::absolute(path)?;
            if !path.join("Cargo.toml").is_file() {
                bail!(
                    "--sdk {}: no Cargo.toml there; pass the guest-sdk folder of a wasmvisor checkout",
                    path.display()
                );
            }
            path
        }
        None => find_sdk(parent)?,
    };
    let sdk = relative_to(&std::path::absolute(dir)?, &sdk);
    Ok(vec![
        ("Cargo.toml", cargo_toml(name, &sdk)),
        ("src/lib.rs", lib_rs(name)),
        ("README.md", readme(name)),
        (".gitignore", "/target\n/.wasmvisor-dev\n".to_string()),
    ])
}

fn python_files(name: &str) -> Vec<(&'static str, String)> {
    vec![
        ("app.py", python_app(name)),
        ("wit/plugin.wit", crate::wasm::WIT_SOURCE.to_string()),
        (
            "requirements.txt",
            format!("componentize-py=={COMPONENTIZE_PY}\n"),
        ),
        ("build.sh", python_build(name)),
        ("README.md", python_readme(name)),
        (
            ".gitignore",
            format!("/.venv/\n/__pycache__/\n/{name}.wasm\n"),
        ),
    ]
}

fn js_files(name: &str) -> Vec<(&'static str, String)> {
    vec![
        ("app.js", js_app(name)),
        ("wit/plugin.wit", crate::wasm::WIT_SOURCE.to_string()),
        ("package.json", js_package(name)),
        ("README.md", js_readme(name)),
        (".gitignore", format!("/node_modules/\n/{name}.wasm\n")),
    ]
}

/// The checkout's `guest-sdk`: found above `from` (a crate made inside a
/// checkout), else the checkout this binary was built from, if it is still
/// there.
fn find_sdk(from: &Path) -> Result<PathBuf> {
    let from = std::path::absolute(from)?;
    let is_sdk = |p: &Path| {
        std::fs::read_to_string(p.join("Cargo.toml"))
            .is_ok_and(|t| t.contains("name = \"wasmvisor-sdk\""))
    };
    for dir in from.ancestors() {
        let candidate = dir.join("guest-sdk");
        if is_sdk(&candidate) {
            return Ok(candidate);
        }
    }
    let built_from = Path::new(env!("CARGO_MANIFEST_DIR")).join("../guest-sdk");
    if is_sdk(&built_from) {
        return Ok(std::path::absolute(built_from)?);
    }
    bail!(
        "cannot find wasmvisor-sdk: run this inside a wasmvisor checkout, or pass --sdk PATH (the checkout's guest-sdk folder)"
    )
}

/// `to` as seen from `from` (both absolute), or `to` itself when they share
/// no root.
fn relative_to(from: &Path, to: &Path) -> PathBuf {
    fn clean(p: &Path) -> Vec<Component<'_>> {
        let mut out = Vec::new();
        for c in p.components() {
            match c {
                Component::CurDir => {}
                Component::ParentDir if matches!(out.last(), Some(Component::Normal(_))) => {
                    out.pop();
                }
                c => out.push(c),
            }
        }
        out
    }
    let (from, to) = (clean(from), clean(to));
    if from.first() != to.first() {
        return to.iter().collect();
    }
    let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
    let mut out = PathBuf::new();
    for _ in common..from.len() {
        out.push("..");
    }
    for c in &to[common..] {
        out.push(c);
    }
    out
}

fn cargo_toml(name: &str, sdk: &Path) -> String {
    let sdk = sdk.display().to_string().replace('\\', "/");
    format!(
        r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2024"
publish = false

[lib]
# A wasm component: build with `cargo build --release --target wasm32-wasip2`.
crate-type = ["cdylib"]

[dependencies]
wasmvisor-sdk = {{ path = "{sdk}" }}
serde = {{ version = "1", features = ["derive"] }}
serde_json = "1"

# A crate of its own, even when created inside another workspace.
[workspace]
"#
    )
}

fn camel(name: &str) -> String {
    name.split('_')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let mut c = p.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect::<String>()
}

fn lib_rs(name: &str) -> String {
    let ty = match camel(name) {
        t if t.is_empty() => "MyPlugin".to_string(),
        t => t,
    };
    format!(
        r#"//! `{name}`: a wasmvisor plugin.
//!
//! | message (call) | reply             |
//! |----------------|-------------------|
//! | `"ping"`       | `"pong"`          |
//! | `"count"`      | pings so far      |
//!
//! Messages are JSON: a unit variant is a string (`"ping"`), a variant with
//! data an object (`{{"add": 1}}`). See the plugin guide (docs/plugin-guide.md
//! in the wasmvisor checkout) for every runtime call.

use serde::Deserialize;
use wasmvisor_sdk::{{Message, Plugin, json}};

/// The plugin's state: one value per instance, created by `Default` and
/// set up by `init`.
#[derive(Default)]
struct {ty} {{
    pings: u64,
}}

/// What callers may send.
#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum Call {{
    Ping,
    Count,
}}

impl Plugin for {ty} {{
    /// Init args: any JSON (`null` when none are given).
    type Args = serde_json::Value;
    type Call = Call;
    type Reply = serde_json::Value;
    /// Casts take the same messages as calls.
    type Cast = Call;

    fn handle_call(&mut self, msg: Call) -> serde_json::Value {{
        match msg {{
            Call::Ping => {{
                self.pings += 1;
                json!("pong")
            }}
            Call::Count => json!(self.pings),
        }}
    }}

    fn handle_cast(&mut self, msg: Call) {{
        self.handle_call(msg);
    }}

    /// Carried across a hot reload into the new version's `restore`, which
    /// runs instead of `init`: keep here everything `init` sets up too.
    fn snapshot(&self) -> Option<Message> {{
        Some(Message::encode(&self.pings))
    }}

    fn restore(&mut self, state: Message) -> Result<(), String> {{
        self.pings = state.decode().map_err(|e| e.to_string())?;
        Ok(())
    }}
}}

wasmvisor_sdk::export!({ty});
"#
    )
}

fn readme(name: &str) -> String {
    format!(
        r#"# {name}

A wasmvisor plugin.

Build it (once: `rustup target add wasm32-wasip2`):

    cargo build --release --target wasm32-wasip2

and drop `target/wasm32-wasip2/release/{name}.wasm` into the host's plugins
folder; a running host loads it, and reloads it whenever the file changes.
Then:

    wasmvisor start p1 {name}
    wasmvisor call p1 '"ping"'     # "pong"
"#
    )
}

fn python_app(name: &str) -> String {
    format!(
        r#""""{name}: a wasmvisor plugin in Python.

| message (call) | reply        |
|----------------|--------------|
| "ping"         | "pong"       |
| "count"        | pings so far |

Messages are JSON bytes. The callbacks are those of the `plugin` world in
wit/plugin.wit; componentize-py generates the `wit_world` module from it
when it builds. An exception that escapes a callback traps the instance,
and the host restarts it with its init args.
"""

import json
from typing import Optional

import wit_world
from wit_world.imports import types

# Module state: each instance (one per child) has its own module, and
# componentize-py may make a new WitWorld object for every call.
pings = 0


class WitWorld(wit_world.WitWorld):
    def init(self, args: bytes) -> types.InitOutcome:
        # Raise componentize_py_types.Err("why") to refuse to start.
        return types.InitOutcome_Ready()

    def handle_continue(self, msg: bytes) -> None:
        pass

    def handle_call(self, msg: bytes, reply_to: int) -> Optional[bytes]:
        global pings
        call = json.loads(msg)
        if call == "ping":
            pings += 1
            return json.dumps("pong").encode()
        if call == "count":
            return json.dumps(pings).encode()
        return json.dumps({{"error": "bad_message"}}).encode()

    def handle_cast(self, msg: bytes) -> None:
        self.handle_call(msg, 0)

    def handle_info(self, info: types.Info) -> None:
        pass

    def terminate(self, reason: types.ExitReason) -> None:
        pass

    # Carried across a hot reload into the new version's restore, which runs
    # instead of init: keep here everything init sets up too.
    def snapshot(self) -> Optional[bytes]:
        return json.dumps(pings).encode()

    def restore(self, state: bytes) -> None:
        global pings
        pings = json.loads(state)
"#
    )
}

fn python_build(name: &str) -> String {
    format!(
        r#"#!/usr/bin/env bash
# Builds {name}.wasm. componentize-py (pinned in requirements.txt) is
# installed into .venv here the first time.
set -euo pipefail
cd "$(dirname "$0")"
if ! .venv/bin/componentize-py --version >/dev/null 2>&1; then
  python3 -m venv .venv
  .venv/bin/pip install --quiet --disable-pip-version-check -r requirements.txt
fi
.venv/bin/componentize-py -d wit -w plugin componentize app -o {name}.wasm
"#
    )
}

fn python_readme(name: &str) -> String {
    component_readme(
        name,
        "Python. Build it (needs python3 with venv; the first\nbuild downloads componentize-py)",
        "./build.sh",
    )
}

/// The README of a Python or JavaScript plugin: how to build it, then the
/// same steps to run it.
fn component_readme(name: &str, language_and_needs: &str, build: &str) -> String {
    format!(
        r#"# {name}

A wasmvisor plugin in {language_and_needs}:

    {build}

and drop `{name}.wasm` into the host's plugins folder; a running host loads
it, and reloads it whenever the file changes. Then:

    wasmvisor start p1 {name}
    wasmvisor call p1 '"ping"'     # "pong"

`wit/plugin.wit` is the contract (`wasmvisor wit --out wit` writes the
host's current one).
"#
    )
}

fn js_app(name: &str) -> String {
    format!(
        r#"// {name}: a wasmvisor plugin in JavaScript.
//
// | message (call) | reply        |
// |----------------|--------------|
// | "ping"         | "pong"       |
// | "count"        | pings so far |
//
// Messages are JSON bytes (Uint8Array). The exports are the callbacks of
// the `plugin` world in wit/plugin.wit, in camelCase; runtime calls are
// imported from "wasmvisor:plugin/runtime@{version}". An exception that
// escapes a callback traps the instance, and the host restarts it with its
// init args.

const encode = (value) => new TextEncoder().encode(JSON.stringify(value));
const decode = (bytes) => JSON.parse(new TextDecoder().decode(bytes));

// One instance serves one child: module state is the child's state.
let pings = 0;

export function init(_args) {{
  // Throw a string to refuse to start.
  return {{ tag: "ready" }};
}}

export function handleContinue(_msg) {{}}

export function handleCall(msg, _replyTo) {{
  const call = decode(msg);
  if (call === "ping") {{
    pings += 1;
    return encode("pong");
  }}
  if (call === "count") {{
    return encode(pings);
  }}
  return encode({{ error: "bad_message" }});
}}

export function handleCast(msg) {{
  handleCall(msg, 0n);
}}

export function handleInfo(_info) {{}}

export function terminate(_reason) {{}}

// Carried across a hot reload into the new version's restore, which runs
// instead of init: keep here everything init sets up too.
export function snapshot() {{
  return encode(pings);
}}

export function restore(state) {{
  pings = decode(state);
}}
"#,
        version = crate::wasm::WIT_VERSION
    )
}

fn js_package(name: &str) -> String {
    format!(
        r#"{{
  "name": "{name}",
  "private": true,
  "type": "module",
  "scripts": {{
    "build": "componentize-js app.js --wit wit -n plugin -o {name}.wasm"
  }},
  "devDependencies": {{
    "@bytecodealliance/componentize-js": "{COMPONENTIZE_JS}",
    "@bytecodealliance/preview2-shim": "{PREVIEW2_SHIM}"
  }}
}}
"#
    )
}

fn js_readme(name: &str) -> String {
    component_readme(
        name,
        "JavaScript. Build it (needs node and npm)",
        "npm install\n    npm run build",
    )
}

/// `wasmvisor wit`: the WIT package on stdout, or written as
/// `DIR/plugin.wit`.
pub(super) fn write_wit(out: Option<&Path>) -> Result<()> {
    let Some(dir) = out else {
        print!("{}", crate::wasm::WIT_SOURCE);
        return Ok(());
    };
    std::fs::create_dir_all(dir)
        .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", dir.display()))?;
    let file = dir.join("plugin.wit");
    std::fs::write(&file, crate::wasm::WIT_SOURCE)
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", file.display()))?;
    println!(
        "wrote {} (wasmvisor:plugin@{})",
        file.display(),
        crate::wasm::WIT_VERSION
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_made_relative() {
        let rel = relative_to(Path::new("/a/b/c/new"), Path::new("/a/b/guest-sdk"));
        assert_eq!(rel, PathBuf::from("../../guest-sdk"));
        let rel = relative_to(Path::new("/a/x/../b/p"), Path::new("/a/b/guest-sdk"));
        assert_eq!(rel, PathBuf::from("../guest-sdk"));
    }

    #[test]
    fn type_names_come_from_the_plugin_name() {
        assert_eq!(camel("my_plugin"), "MyPlugin");
        assert_eq!(camel("x"), "X");
    }

    #[test]
    fn bad_names_and_existing_folders_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let sdk = Path::new(env!("CARGO_MANIFEST_DIR")).join("../guest-sdk");
        for bad in ["", "a/b", "..", "with-dash", "9lives"] {
            assert!(
                create(dir.path(), bad, Lang::Rust, Some(&sdk)).is_err(),
                "{bad}"
            );
        }
        create(dir.path(), "twice", Lang::Rust, Some(&sdk)).unwrap();
        let err = create(dir.path(), "twice", Lang::Rust, Some(&sdk)).unwrap_err();
        assert!(err.to_string().contains("already exists"), "{err}");
        let err = create(dir.path(), "nosdk", Lang::Rust, Some(dir.path())).unwrap_err();
        assert!(err.to_string().contains("no Cargo.toml"), "{err}");
    }

    #[test]
    fn the_crate_is_a_plain_one() {
        let dir = tempfile::tempdir().unwrap();
        let sdk = Path::new(env!("CARGO_MANIFEST_DIR")).join("../guest-sdk");
        let krate = create(dir.path(), "plain", Lang::Rust, Some(&sdk)).unwrap();
        let read = |file: &str| std::fs::read_to_string(krate.join(file)).unwrap();
        let manifest = read("Cargo.toml");
        for want in [
            "name = \"plain\"",
            "crate-type = [\"cdylib\"]",
            "serde_json = \"1\"\n",
            "\n[workspace]\n",
        ] {
            assert!(manifest.contains(want), "no {want} in\n{manifest}");
        }
        for unwanted in ["[profile", "opt-level", "default-features"] {
            assert!(!manifest.contains(unwanted), "{unwanted} in\n{manifest}");
        }
        // No linker settings of its own.
        assert!(!krate.join(".cargo").exists());
        assert!(read("src/lib.rs").contains("json!(\"pong\")"));
        assert!(read("README.md").contains("plain.wasm"));
        assert_eq!(read(".gitignore"), "/target\n/.wasmvisor-dev\n");
    }

    #[test]
    fn python_and_js_projects_carry_the_wit_and_pinned_toolchains() {
        let dir = tempfile::tempdir().unwrap();
        let py = create(dir.path(), "py_plugin", Lang::Python, None).unwrap();
        let read = |dir: &Path, file: &str| std::fs::read_to_string(dir.join(file)).unwrap();
        assert_eq!(read(&py, "wit/plugin.wit"), crate::wasm::WIT_SOURCE);
        assert_eq!(read(&py, "requirements.txt"), "componentize-py==0.25.0\n");
        assert!(read(&py, "build.sh").contains("-o py_plugin.wasm"));
        assert!(read(&py, "app.py").contains("class WitWorld(wit_world.WitWorld)"));
        let js = create(dir.path(), "js_plugin", Lang::Js, None).unwrap();
        assert_eq!(read(&js, "wit/plugin.wit"), crate::wasm::WIT_SOURCE);
        let package = read(&js, "package.json");
        assert!(package.contains("\"@bytecodealliance/componentize-js\": \"0.23.0\""));
        assert!(package.contains("-o js_plugin.wasm"));
        assert!(read(&js, "app.js").contains("export function handleCall"));
    }
}
