//! `wasmvisor.toml`: every key is optional and has the default documented in
//! the README.

use anyhow::{Context, Result};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The watched plugins folder; `NAME.wasm` is plugin `NAME`.
    pub plugins_dir: PathBuf,
    /// Where the HTTP API listens.
    pub listen: String,
    /// Where durable state and compiled artifacts live.
    pub data_dir: PathBuf,
    /// Restart intensity and what happens when it is exceeded.
    pub supervisor: SupervisorConfig,
    /// Limits per plugin, by plugin name.
    pub plugins: BTreeMap<String, PluginConfig>,
    /// The size of the instance pool.
    pub pool: PoolConfig,
    /// Engine settings that trade memory, speed and features; the defaults
    /// are the measured best (see BENCHMARKS.md).
    pub engine: EngineConfig,
    /// Static top-level children, started in order at host start.
    pub children: Vec<StaticChild>,
    /// Supervision groups, started in order after `children`.
    pub groups: Vec<GroupConfig>,
    /// Keep nothing on disk (`--ephemeral`): no compile cache, no durable
    /// children. Not a file key.
    #[serde(skip)]
    pub ephemeral: bool,
    /// Parts the benchmark swaps or turns off to measure what they cost.
    /// Not file keys: a host always runs with the defaults.
    #[serde(skip)]
    pub tuning: Tuning,
}

/// What `wasmvisor bench --ab` can change beyond `[engine]`: each switch
/// turns off a limit or swaps an implementation, to measure its price.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tuning {
    /// How mailboxes are built and bounded.
    pub mailbox: crate::mailbox::MailboxImpl,
    /// Enforce `memory_mb` with the store limiter.
    pub memory_limit: bool,
    /// Enforce `cpu_ms` with epoch interruption (and yield at each tick).
    pub cpu_deadline: bool,
    /// Decode and re-encode every message and reply as JSON in the host, as
    /// a host with a typed message boundary would (the host passes bytes
    /// through untouched otherwise).
    pub decode_messages: bool,
    /// Run a call on the caller's task when the child is idle with nothing
    /// queued (`direct.rs`), instead of handing it to the child's task.
    pub direct_calls: bool,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            mailbox: crate::mailbox::MailboxImpl::default(),
            memory_limit: true,
            cpu_deadline: true,
            decode_messages: false,
            direct_calls: true,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            plugins_dir: PathBuf::from("plugins"),
            listen: "127.0.0.1:7070".into(),
            data_dir: PathBuf::from(".wasmvisor"),
            supervisor: SupervisorConfig::default(),
            plugins: BTreeMap::new(),
            pool: PoolConfig::default(),
            engine: EngineConfig::default(),
            children: Vec::new(),
            groups: Vec::new(),
            ephemeral: false,
            tuning: Tuning::default(),
        }
    }
}

/// `[supervisor]`.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct SupervisorConfig {
    /// At most this many restarts...
    pub max_restarts: u32,
    /// ...within this many seconds (as Elixir: 3 in 5).
    pub max_seconds: u32,
    /// What a dynamic child that exceeds its intensity does.
    pub on_exhausted: OnExhausted,
}

impl Default for SupervisorConfig {
    fn default() -> Self {
        SupervisorConfig {
            max_restarts: 3,
            max_seconds: 5,
            on_exhausted: OnExhausted::Backoff,
        }
    }
}

/// What a dynamic child that exceeds its restart intensity does.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum OnExhausted {
    /// Keep restarting after an exponential delay (100 ms doubling to 30 s).
    Backoff,
    /// Stop restarting and show `failed` until an operator or a reload
    /// revives it.
    Fail,
}

/// A child declared in the config (`[[children]]`, or in a group's
/// `children`). It is not stored in the state database: the config brings it
/// back at every start.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct StaticChild {
    /// The registry id.
    pub id: String,
    /// The plugin that runs it.
    pub plugin: String,
    /// The init args (a TOML table or value, handed over as JSON).
    #[serde(default = "empty_args")]
    pub args: serde_json::Value,
    /// The restart policy (default `permanent`).
    #[serde(default)]
    pub restart: crate::types::Restart,
}

fn empty_args() -> serde_json::Value {
    serde_json::Value::Object(Default::default())
}

/// How a supervision group reacts when one of its members exits (OTP).
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// Only the member that exited is restarted.
    #[default]
    OneForOne,
    /// Every member is stopped (in reverse order) and all are restarted (in
    /// order).
    OneForAll,
    /// The members after the one that exited are stopped (in reverse order),
    /// then it and they are restarted (in order).
    RestForOne,
}

/// `[[groups]]` (nested as `[[groups.groups]]`): a supervision group.
/// Members are its `children` in order, then its nested `groups` in order.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct GroupConfig {
    /// The group's name, unique among groups and children.
    pub id: String,
    /// What an exit of a member does to its siblings.
    #[serde(default)]
    pub strategy: Strategy,
    /// Restarts allowed within `max_seconds` (default: `[supervisor]`'s).
    pub max_restarts: Option<u32>,
    /// The intensity window, seconds (default: `[supervisor]`'s).
    pub max_seconds: Option<u32>,
    /// Children, started in order and stopped in reverse order.
    #[serde(default)]
    pub children: Vec<StaticChild>,
    /// Nested groups, started after the children.
    #[serde(default)]
    pub groups: Vec<GroupConfig>,
}

/// `[plugins.NAME]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct PluginConfig {
    /// Linear memory cap per instance, MiB.
    pub memory_mb: u32,
    /// CPU time one message may take, ms.
    pub cpu_ms: u32,
    /// Mailbox bound (calls and casts waiting).
    pub mailbox: u32,
    /// Hosts (`host` or `host:port`) the plugin may reach over HTTP.
    pub allowed_hosts: Vec<String>,
    /// Environment variables the guest sees (none by default).
    pub env: BTreeMap<String, String>,
    /// Host folders the guest may open (none by default).
    pub dirs: Vec<DirGrant>,
}

/// A host folder granted to a plugin.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DirGrant {
    /// The folder on the host.
    pub host: PathBuf,
    /// Where the guest sees it, e.g. `/data`.
    pub guest: String,
    /// Whether the guest may create and change files in it.
    #[serde(default)]
    pub writable: bool,
}

impl Default for PluginConfig {
    fn default() -> Self {
        PluginConfig {
            memory_mb: 64,
            cpu_ms: 1_000,
            mailbox: 10_000,
            allowed_hosts: Vec::new(),
            env: BTreeMap::new(),
            dirs: Vec::new(),
        }
    }
}

/// The largest `[pool] decommit_batch`: a batch is flushed inside the
/// `drop` of the instance that completes it, so its size is that drop's
/// worst-case latency.
pub const MAX_DECOMMIT_BATCH: u32 = 1024;

/// `[pool]`: how many instances the host can hold at once. The pooling
/// allocator reserves address space and memory mappings for all of them at
/// start.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct PoolConfig {
    /// Live instances at most (a reload briefly needs one extra per batch).
    pub max_instances: u32,
    /// The native stack each instance's calls run on, KiB.
    pub stack_kib: u32,
    /// Memory a freed slot keeps resident (zeroed) for the next instance,
    /// KiB (its table and stack keep up to 16 KiB each): a restart or a new
    /// instance of the same plugin on that slot takes no page faults. The
    /// `wasmvisor` binary's janitor gives it all back 1–2 s after the last
    /// instance stopped, and every 10 s while they never stop stopping; an
    /// embedder of the library calls `Host::release_unused_pool_memory`, or
    /// the pages stay with the slots.
    pub keep_resident_kib: u32,
    /// Linear memory made accessible in every slot when the pool is created,
    /// KiB, so that the first instance on a slot needs no `mprotect` (one
    /// that would take the memory-map lock every page fault on the other
    /// cores also waits for). The default is the initial memory of plugins
    /// built as `wasmvisor new` sets them up (1 MiB). Costs one `mprotect`
    /// per slot at start (about 2 µs each) and no resident memory; a slot
    /// then has the two memory mappings from the start that a used slot
    /// keeps anyway, so a process that runs several hosts needs the
    /// mappings of all their slots at once. 0 opens each slot on first use.
    pub preopen_kib: u32,
    /// Funcref tables whose declared maximum is at most this many elements
    /// live on the host heap (8 bytes an element) instead of in a pool slot,
    /// whose first write costs a whole page and its page fault. A Rust
    /// component's canonical-ABI shim table (one entry per import that needs
    /// it) and, in small plugins, its function table (a few dozen entries)
    /// are such tables. 0 puts every table in the pool.
    pub heap_table_elements: u32,
    /// Freed slots whose memory is given back to the kernel in one
    /// `process_madvise` call, counted in regions (a stopped instance frees
    /// about three: memory, table, stack). One call and one TLB flush for a
    /// batch instead of one per region; a batch waiting to be flushed holds
    /// its few pages, and a start that finds the pool full flushes it first.
    /// 1 gives each region back at once.
    pub decommit_batch: u32,
    /// With `[engine] stack_per_callback`: the native stacks (`stack_kib`
    /// each) the pool keeps mapped for instances with work. An instance
    /// needs one while it has messages; an idle one keeps its stack only
    /// until another instance needs it. So this, not `max_instances`, sizes
    /// the pool's stacks and their memory mappings. A callback that finds
    /// every stack taken asks an idle instance for its stack and waits for
    /// it; if none is idle (all of them run, or wait inside a `call`,
    /// `start-child` or HTTP request, which keeps the stack), it runs on a
    /// stack mapped for it alone (two more memory mappings, until its
    /// instance goes idle). So this is not a cap on guests waiting in
    /// calls; `wasmvisor_stack_overflows_total` counts the callbacks past it.
    pub max_running: u32,
}

impl PoolConfig {
    /// Checks the ranges (the config file's and the bench's `--ab`).
    pub(crate) fn validate(&self) -> Result<()> {
        anyhow::ensure!(
            self.max_instances > 0,
            "pool.max_instances must be at least 1"
        );
        anyhow::ensure!(
            (64..=8192).contains(&self.stack_kib),
            "pool.stack_kib must be between 64 and 8192"
        );
        anyhow::ensure!(
            (1..=MAX_DECOMMIT_BATCH).contains(&self.decommit_batch),
            "pool.decommit_batch must be between 1 and {MAX_DECOMMIT_BATCH}"
        );
        anyhow::ensure!(self.max_running > 0, "pool.max_running must be at least 1");
        Ok(())
    }
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            max_instances: 10_000,
            stack_kib: 256,
            keep_resident_kib: 64,
            preopen_kib: 1024,
            heap_table_elements: 128,
            decommit_batch: 32,
            max_running: 1_000,
        }
    }
}

/// `[engine]`: the wasmtime settings the benchmark compares.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct EngineConfig {
    /// The pooling instance allocator (else one mmap per instance).
    pub pooling: bool,
    /// Component-model concurrency support (WASIp3 async); costs on every
    /// call.
    pub concurrency_support: bool,
    /// Map plugins' initial memory copy-on-write instead of copying it.
    pub memory_cow: bool,
    /// Instances share `[pool] max_running` native stacks instead of keeping
    /// one each for life: an idle instance lends its stack until a callback
    /// of another instance needs it (or hands it back at once when few are
    /// free), and a callback that finds every stack held by a busy instance
    /// runs on one mapped for it. Half the memory mappings per idle instance
    /// (about 30,700 instead of 15,800 at the default `vm.max_map_count`),
    /// 4 KiB less RSS each and faster spawns, for 3–6% of the call rates in
    /// a 5-round A/B (BENCHMARKS.md). On by default; off, every instance
    /// keeps a stack, its two mappings and a resident page for life.
    pub stack_per_callback: bool,
    /// Guest traps and out-of-bounds accesses arrive as hardware faults
    /// (signals). Off, the compiled code checks for them and calls into the
    /// host instead: a trap costs no signal delivery, but division and
    /// similar checks are explicit, and wasmtime then requires the Spectre
    /// mitigations of heap and table accesses off, so only for trusted
    /// plugins. On by default.
    pub signals_based_traps: bool,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            pooling: true,
            concurrency_support: false,
            memory_cow: false,
            stack_per_callback: true,
            signals_based_traps: true,
        }
    }
}

impl EngineConfig {
    /// The defaults with `KEY=true|false` overrides applied (the bench's
    /// `--engine` flag).
    pub fn parse_overrides(pairs: &[String]) -> Result<EngineConfig> {
        let mut text = String::new();
        for pair in pairs {
            let (key, value) = pair
                .split_once('=')
                .with_context(|| format!("--engine takes KEY=VALUE, got {pair:?}"))?;
            text.push_str(&format!("{} = {}\n", key.trim(), value.trim()));
        }
        toml::from_str(&text).with_context(|| format!("invalid --engine settings {pairs:?}"))
    }
}

impl Config {
    /// Reads a config file. Unknown keys are errors, so a typo never silently
    /// falls back to a default.
    pub fn load(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        Config::parse(&text).with_context(|| format!("invalid config file {}", path.display()))
    }

    /// Parses config text.
    pub fn parse(text: &str) -> Result<Config> {
        let config: Config = toml::from_str(text)?;
        config.validate()?;
        Ok(config)
    }

    /// The limits of a plugin: its `[plugins.NAME]` section or the defaults.
    pub fn plugin(&self, name: &str) -> PluginConfig {
        self.plugins.get(name).cloned().unwrap_or_default()
    }

    fn validate(&self) -> Result<()> {
        let s = &self.supervisor;
        anyhow::ensure!(
            s.max_seconds > 0,
            "supervisor.max_seconds must be at least 1"
        );
        for (name, p) in &self.plugins {
            anyhow::ensure!(
                p.memory_mb > 0,
                "plugins.{name}.memory_mb must be at least 1"
            );
            anyhow::ensure!(
                p.memory_mb <= 4096,
                "plugins.{name}.memory_mb must be at most 4096 (wasm32 memories are 4 GiB)"
            );
            anyhow::ensure!(p.cpu_ms > 0, "plugins.{name}.cpu_ms must be at least 1");
            anyhow::ensure!(p.mailbox > 0, "plugins.{name}.mailbox must be at least 1");
            for d in &p.dirs {
                anyhow::ensure!(
                    d.guest.starts_with('/'),
                    "plugins.{name}.dirs: guest path {:?} must be absolute",
                    d.guest
                );
            }
        }
        let mut names = std::collections::BTreeSet::new();
        for child in &self.children {
            validate_static(child, "children", &mut names)?;
        }
        for group in &self.groups {
            validate_group(group, "groups", &mut names)?;
        }
        self.pool.validate()
    }

    /// The largest memory cap of any plugin: the size of a pool memory slot.
    pub fn max_memory_mb(&self) -> u32 {
        self.plugins
            .values()
            .map(|p| p.memory_mb)
            .chain([PluginConfig::default().memory_mb])
            .max()
            .unwrap_or(64)
    }
}

fn validate_static(
    child: &StaticChild,
    at: &str,
    names: &mut std::collections::BTreeSet<String>,
) -> Result<()> {
    crate::names::validate_id(&child.id).map_err(|e| anyhow::anyhow!("{at}: {e}"))?;
    crate::names::validate_plugin(&child.plugin)
        .map_err(|e| anyhow::anyhow!("{at}.{}: {e}", child.id))?;
    anyhow::ensure!(
        names.insert(child.id.clone()),
        "{at}: the id {:?} is used twice",
        child.id
    );
    Ok(())
}

fn validate_group(
    group: &GroupConfig,
    at: &str,
    names: &mut std::collections::BTreeSet<String>,
) -> Result<()> {
    crate::names::validate_id(&group.id).map_err(|e| anyhow::anyhow!("{at}: {e}"))?;
    anyhow::ensure!(
        names.insert(group.id.clone()),
        "{at}: the id {:?} is used twice",
        group.id
    );
    anyhow::ensure!(
        group.max_seconds != Some(0),
        "{at}.{}: max_seconds must be at least 1",
        group.id
    );
    let at = format!("{at}.{}", group.id);
    for child in &group.children {
        validate_static(child, &at, names)?;
    }
    for nested in &group.groups {
        validate_group(nested, &at, names)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_nest_and_keep_their_order() {
        let c = Config::parse(
            r#"
[[children]]
id = "solo"
plugin = "tracker"
args = { tx = 1 }

[[groups]]
id = "bank"
strategy = "rest_for_one"
max_restarts = 1
children = [
  { id = "ledger", plugin = "ledger" },
  { id = "balances", plugin = "balances", restart = "transient" },
]
[[groups.groups]]
id = "inner"
children = [{ id = "x", plugin = "chaos" }]
"#,
        )
        .unwrap();
        assert_eq!(c.children[0].args, serde_json::json!({"tx": 1}));
        let bank = &c.groups[0];
        assert_eq!(bank.strategy, Strategy::RestForOne);
        assert_eq!((bank.max_restarts, bank.max_seconds), (Some(1), None));
        let ids: Vec<_> = bank.children.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(ids, ["ledger", "balances"]);
        assert_eq!(bank.children[0].args, serde_json::json!({}));
        assert_eq!(bank.children[1].restart, crate::types::Restart::Transient);
        assert_eq!(bank.groups[0].strategy, Strategy::OneForOne);
        assert_eq!(bank.groups[0].children[0].id, "x");
    }

    #[test]
    fn group_mistakes_are_refused() {
        for (text, expect) in [
            (
                "[[children]]\nid = \"a\"\nplugin = \"p\"\n[[groups]]\nid = \"a\"\n",
                "used twice",
            ),
            (
                "[[groups]]\nid = \"g\"\nchildren = [{ id = \"../x\", plugin = \"p\" }]\n",
                "groups.g",
            ),
            (
                "[[groups]]\nid = \"g\"\nstrategy = \"all_for_none\"\n",
                "strategy",
            ),
            ("[[groups]]\nid = \"g\"\nmax_seconds = 0\n", "max_seconds"),
            ("[[children]]\nid = \"c\"\n", "plugin"),
        ] {
            let err = format!("{:#}", Config::parse(text).unwrap_err());
            assert!(err.contains(expect), "{text}: {err}");
        }
    }

    #[test]
    fn empty_file_is_all_defaults() {
        let c = Config::parse("").unwrap();
        assert_eq!(c, Config::default());
        assert_eq!(c.listen, "127.0.0.1:7070");
        assert_eq!(c.supervisor.max_restarts, 3);
        assert_eq!(c.supervisor.max_seconds, 5);
        assert_eq!(c.plugin("any").memory_mb, 64);
    }

    #[test]
    fn plugin_sections_override_defaults() {
        let c = Config::parse(
            "[supervisor]\non_exhausted = \"fail\"\n[plugins.chaos]\nmemory_mb = 16\ncpu_ms = 50\n",
        )
        .unwrap();
        assert_eq!(c.supervisor.on_exhausted, OnExhausted::Fail);
        assert_eq!(c.plugin("chaos").memory_mb, 16);
        assert_eq!(c.plugin("chaos").mailbox, 10_000);
        assert_eq!(c.max_memory_mb(), 64);
    }

    #[test]
    fn grants_are_explicit() {
        let c = Config::parse(
            "[plugins.p]\nenv = { MODE = \"test\" }\ndirs = [{ host = \"/srv/p\", guest = \"/data\", writable = true }]\n",
        )
        .unwrap();
        let p = c.plugin("p");
        assert_eq!(p.env["MODE"], "test");
        assert_eq!(p.dirs[0].guest, "/data");
        assert!(p.dirs[0].writable);
        assert!(c.plugin("other").env.is_empty() && c.plugin("other").dirs.is_empty());
        assert!(
            Config::parse("[plugins.p]\ndirs = [{ host = \"/x\", guest = \"rel\" }]\n").is_err()
        );
    }

    #[test]
    fn typos_are_errors() {
        let err = Config::parse("[supervisor]\nmax_restart = 3\n").unwrap_err();
        assert!(format!("{err:#}").contains("max_restart"), "{err:#}");
    }

    #[test]
    fn engine_overrides() {
        let e =
            EngineConfig::parse_overrides(&["memory_cow=true".into(), "pooling = false".into()])
                .unwrap();
        assert!(e.memory_cow && !e.pooling && !e.concurrency_support);
        assert!(e.signals_based_traps, "signals stay on unless asked");
        let e = EngineConfig::parse_overrides(&["signals_based_traps=false".into()]).unwrap();
        assert!(!e.signals_based_traps);
        assert_eq!(Config::default().pool.keep_resident_kib, 64);
        assert!(EngineConfig::parse_overrides(&["fast=true".into()]).is_err());
        assert!(EngineConfig::parse_overrides(&["pooling".into()]).is_err());
    }

    #[test]
    fn nonsense_limits_are_errors() {
        assert!(Config::parse("[plugins.x]\nmemory_mb = 0\n").is_err());
        assert!(Config::parse("[pool]\nstack_kib = 1\n").is_err());
        assert!(Config::parse("[pool]\ndecommit_batch = 0\n").is_err());
        assert!(Config::parse("[pool]\ndecommit_batch = 100000\n").is_err());
        let c = Config::parse("[pool]\ndecommit_batch = 1\n").unwrap();
        assert_eq!(c.pool.decommit_batch, 1);
    }
}
