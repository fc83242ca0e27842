//! The plugin catalog: every plugin by name, each with its current compiled
//! version. A version is compiled once and its `InstancePre` is shared by
//! every (re)start of every instance of that version.

use super::bindings::PluginPre;
use super::engine::fits_pool;
use super::state::InstanceState;
use super::symbols::Symbols;
use super::tier::{Allocation, Tier};
use crate::config::PluginConfig;
use crate::names;
use anyhow::{Context, Result, anyhow};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::{Instant, SystemTime};
use wasmtime::Engine;
use wasmtime::component::Component;

/// One compiled version of a plugin.
pub struct Version {
    /// The plugin's name.
    pub plugin: Arc<str>,
    /// A short content hash (12 hex digits) that names this version.
    pub hash: String,
    /// The full content hash (SHA-256, hex).
    pub content_hash: String,
    /// Whether it came from the compile cache instead of the compiler.
    pub cached: bool,
    /// When it was loaded.
    pub loaded_at: SystemTime,
    /// How long compiling it took, ms.
    pub compile_ms: f64,
    /// The size of the `.wasm` file, bytes.
    pub size: usize,
    /// The plugin's limits, fixed when it was loaded.
    pub limits: Arc<PluginConfig>,
    /// The engine it was compiled for, and its instances run on.
    pub(crate) tier: Arc<Tier>,
    /// Its debug info, with `debug = true`.
    pub(crate) symbols: Option<Arc<Symbols>>,
    pub(crate) component: Component,
    pub(crate) pre: PluginPre<InstanceState>,
}

impl std::fmt::Debug for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Version")
            .field("plugin", &self.plugin)
            .field("hash", &self.hash)
            .finish_non_exhaustive()
    }
}

/// What the catalog knows about one plugin name.
#[derive(Debug, Clone, Default)]
pub struct PluginEntry {
    /// The version new instances get, if one loaded.
    pub current: Option<Arc<Version>>,
    /// Why the last load or reload failed, if it did.
    pub last_error: Option<String>,
    /// The content hash of the file that failed, so that the same bytes are
    /// not tried (and reported) again.
    pub rejected: Option<String>,
}

/// Every plugin the host knows, by name.
#[derive(Default)]
pub struct Catalog {
    plugins: RwLock<BTreeMap<String, PluginEntry>>,
}

/// The content hash of a plugin file: SHA-256, hex.
pub(crate) fn content_hash(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

impl Version {
    /// How its instances are allocated.
    pub fn allocation(&self) -> Allocation {
        self.tier.allocation
    }
}

/// Compiles a component, for the pool when it fits a slot and on demand
/// otherwise, and checks it against the `plugin` world: a file that is not
/// a component, imports something the host does not offer, or lacks an
/// export fails here, never at instantiation.
pub(crate) fn compile(
    pool: &Arc<Tier>,
    on_demand: &Arc<Tier>,
    name: &str,
    bytes: &[u8],
    limits: PluginConfig,
) -> Result<Version> {
    if bytes.is_empty() {
        return Err(anyhow!("the file is empty"));
    }
    if bytes.len() >= 8 && bytes[..4] == *b"\0asm" && bytes[4..8] == [1, 0, 0, 0] {
        return Err(anyhow!(
            "this is a core wasm module, not a component; build the plugin for \
             wasm32-wasip2 (cargo build --target wasm32-wasip2)"
        ));
    }
    let started = Instant::now();
    let content_hash = content_hash(bytes);
    // An artifact in the cache says which engine the plugin runs on; only
    // a plugin compiled for neither is read to decide.
    let cached = [pool, on_demand]
        .into_iter()
        .find_map(|tier| Some((tier, tier.cached(&content_hash)?)));
    let (tier, component, was_cached) = match cached {
        Some((tier, component)) => (tier, component, true),
        None => {
            let (tier, component) = compile_for(pool, on_demand, name, bytes)?;
            (tier, component, false)
        }
    };
    if let Some(needs) = component.resources_required() {
        let cap = u64::from(limits.memory_mb) * 1024 * 1024;
        // In wasm pages of 64 KiB (the only page size the engine accepts).
        if let Some(initial) = needs.max_initial_memory_size.map(|pages| pages << 16) {
            anyhow::ensure!(
                initial <= cap,
                "its initial memory ({} KiB) exceeds its memory cap of {} MiB: raise \
                 [plugins.{name}] memory_mb to {} or more",
                initial / 1024,
                limits.memory_mb,
                initial.div_ceil(1024 * 1024)
            );
        }
    }
    check_wit_version(&tier.engine, &component)?;
    let symbols = match limits.debug {
        false => None,
        true => match Symbols::read(bytes) {
            Ok(Some(symbols)) => Some(Arc::new(symbols)),
            Ok(None) => {
                tracing::warn!(
                    "plugin {name} has debug = true but no debug info; build it with debug \
                     info (e.g. [profile.release] debug = true) for file and line in backtraces"
                );
                None
            }
            Err(e) => {
                tracing::warn!("cannot read the debug info of plugin {name}: {e:#}");
                None
            }
        },
    };
    let pre = tier
        .linker
        .instantiate_pre(&component)
        .map_err(anyhow::Error::from)
        .context("it imports something the host does not provide (is it built against the wasmvisor:plugin world?)")?;
    let pre = PluginPre::new(pre)
        .map_err(anyhow::Error::from)
        .with_context(|| {
            format!(
                "it does not export the plugin world of {WIT_PACKAGE}@{WIT_VERSION} \
                 (if it was built against another version, rebuild it against this host's wit/)"
            )
        })?;
    Ok(Version {
        plugin: name.into(),
        hash: content_hash[..12].to_string(),
        content_hash,
        cached: was_cached,
        tier: tier.clone(),
        symbols,
        component,
        loaded_at: SystemTime::now(),
        compile_ms: started.elapsed().as_secs_f64() * 1e3,
        size: bytes.len(),
        limits: Arc::new(limits),
        pre,
    })
}

/// Compiles a plugin for the pool when its binary fits a slot, on demand
/// otherwise.
fn compile_for<'t>(
    pool: &'t Arc<Tier>,
    on_demand: &'t Arc<Tier>,
    name: &str,
    bytes: &[u8],
) -> Result<(&'t Arc<Tier>, Component)> {
    let on_demand_compile = || {
        on_demand
            .compile(bytes)
            .context("not a valid wasm component")
    };
    if !fits_pool(bytes) {
        return Ok((on_demand, on_demand_compile()?));
    }
    match pool.compile(bytes) {
        Ok(component) => Ok((pool, component)),
        // The pool refuses a component over a slot's limits, which the
        // binary did not show; the on-demand engine has none, so what it
        // refuses is invalid.
        Err(refused) => {
            let component = on_demand_compile()?;
            tracing::info!("plugin {name} runs on demand: {refused:#}");
            Ok((on_demand, component))
        }
    }
}

/// The WIT package plugins are built against, and the version this host
/// implements.
pub(crate) const WIT_PACKAGE: &str = "wasmvisor:plugin";
/// The version of the `wasmvisor:plugin` WIT package this host implements
/// (`wit/plugin.wit`); components built against another are refused.
pub const WIT_VERSION: &str = "0.4.0";

/// The WIT package itself (`wit/plugin.wit`), as `wasmvisor wit` writes it
/// for authors who generate bindings in another language.
pub const WIT_SOURCE: &str = include_str!("../../../wit/plugin.wit");

/// Refuses a component built against another version of the
/// `wasmvisor:plugin` package, naming both versions: its imports of the
/// package's interfaces carry the version it was built against.
fn check_wit_version(engine: &Engine, component: &Component) -> Result<()> {
    let prefix = format!("{WIT_PACKAGE}/");
    for (name, _) in component.component_type().imports(engine) {
        let Some(interface) = name.strip_prefix(&prefix) else {
            continue;
        };
        let built = interface.split_once('@').map(|(_, version)| version);
        if built != Some(WIT_VERSION) {
            let built = match built {
                Some(version) => format!("{WIT_PACKAGE}@{version}"),
                None => format!("an unversioned {WIT_PACKAGE}"),
            };
            anyhow::bail!(
                "it was built against {built}, and this host runs {WIT_PACKAGE}@{WIT_VERSION}: \
                 rebuild it against this host's wit/ (with the guest-sdk of this version)"
            );
        }
    }
    Ok(())
}

impl Catalog {
    /// The version new instances of `name` get.
    pub fn current(&self, name: &str) -> Option<Arc<Version>> {
        self.read().get(name).and_then(|e| e.current.clone())
    }

    /// Every plugin with its state.
    pub fn list(&self) -> Vec<(String, PluginEntry)> {
        self.read()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// Makes `version` the current one of its plugin.
    pub(crate) fn install(&self, version: Arc<Version>) {
        let mut plugins = self.write();
        let entry = plugins.entry(version.plugin.to_string()).or_default();
        entry.current = Some(version);
        entry.last_error = None;
        entry.rejected = None;
    }

    /// Forgets the current version of `name` (its file is gone); the entry
    /// stays, so the plugin is listed with its waiting children.
    pub(crate) fn remove(&self, name: &str) -> Option<Arc<Version>> {
        self.write().get_mut(name).and_then(|e| e.current.take())
    }

    /// Records why loading content `hash` as `name` failed; a good current
    /// version stays.
    pub(crate) fn record_error(&self, name: &str, hash: Option<String>, error: String) {
        let mut plugins = self.write();
        let entry = plugins.entry(name.to_string()).or_default();
        entry.last_error = Some(error);
        if hash.is_some() {
            entry.rejected = hash;
        }
    }

    /// Whether content `hash` is what `name` runs, or what it last rejected.
    pub(crate) fn seen(&self, name: &str, hash: &str) -> bool {
        self.read().get(name).is_some_and(|e| {
            e.current.as_ref().is_some_and(|v| v.content_hash == hash)
                || e.rejected.as_deref() == Some(hash)
        })
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, PluginEntry>> {
        // A panic while holding this lock leaves the map intact (every write
        // is a single insert), so a poisoned lock is still usable.
        self.plugins.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, PluginEntry>> {
        self.plugins.write().unwrap_or_else(|p| p.into_inner())
    }
}

/// The plugin name of a path in the plugins folder: `NAME.wasm` with a valid
/// name, or `None` for anything else.
pub(crate) fn plugin_name(path: &Path) -> Option<String> {
    if path.extension()? != "wasm" {
        return None;
    }
    let stem = path.file_stem()?.to_str()?;
    names::validate_plugin(stem).ok()?;
    Some(stem.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plugin_names_come_from_wasm_files_only() {
        assert_eq!(
            plugin_name(Path::new("dir/chaos.wasm")).as_deref(),
            Some("chaos")
        );
        assert_eq!(plugin_name(Path::new("dir/chaos.wasm.tmp")), None);
        assert_eq!(plugin_name(Path::new("dir/.chaos.wasm.swp")), None);
        assert_eq!(plugin_name(Path::new("dir/bad name.wasm")), None);
        assert_eq!(plugin_name(Path::new("dir/README.md")), None);
    }

    #[test]
    fn hashes_are_hex_sha256() {
        assert_eq!(
            content_hash(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
