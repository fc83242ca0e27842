//! `wasmvisor.toml`: every key is optional and has the default documented in
//! the README.

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
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
    /// Where compiled plugins are kept.
    pub cache: CacheConfig,
    /// Cluster mode (`--cluster`): absent, the host runs alone.
    pub cluster: Option<ClusterConfig>,
    /// Static top-level children, started in order at host start.
    pub children: Vec<StaticChild>,
    /// Supervision groups, started in order after `children`.
    pub groups: Vec<GroupConfig>,
    /// Keep nothing on disk (`--ephemeral`): no compile cache, no durable
    /// children. Not a file key.
    #[serde(skip)]
    pub ephemeral: bool,
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
            cache: CacheConfig::default(),
            cluster: None,
            children: Vec::new(),
            groups: Vec::new(),
            ephemeral: false,
        }
    }
}

/// `[cluster]`: several hosts as one system on NATS JetStream.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// The NATS server(s), comma-separated: `nats://HOST:PORT`, with a
    /// user and password or a token in the URL if the server wants them.
    pub nats: String,
    /// This node's name, unique among the live nodes (default: the
    /// hostname and the API port, `HOST-PORT`).
    pub node: Option<String>,
    /// The cluster's name: its buckets and subjects are prefixed with it,
    /// so several clusters can share one NATS.
    pub name: String,
    /// How often the node writes its heartbeat, ms.
    pub heartbeat_ms: u64,
    /// A node whose heartbeat is older than this is gone, ms.
    pub node_timeout_ms: u64,
    /// A NATS credentials file (`.creds`).
    pub credentials: Option<PathBuf>,
    /// A PEM file of the CA that signed the NATS server's certificate.
    pub tls_ca: Option<PathBuf>,
    /// The node's API address, as `run` bound it. Not a file key.
    #[serde(skip)]
    pub api: Option<String>,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            nats: String::new(),
            node: None,
            name: "wasmvisor".into(),
            heartbeat_ms: 500,
            node_timeout_ms: 3000,
            credentials: None,
            tls_ca: None,
            api: None,
        }
    }
}

/// Cluster and node names: 1 to 64 of `A-Z a-z 0-9 _ -` (they become
/// NATS bucket names, keys and subject tokens).
pub fn validate_cluster_name(what: &str, name: &str) -> Result<()> {
    anyhow::ensure!(
        !name.is_empty()
            && name.len() <= 64
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'),
        "{what} {name:?} must be 1 to 64 letters, digits, _ or -"
    );
    Ok(())
}

impl ClusterConfig {
    fn validate(&self) -> Result<()> {
        // `nats` may come from --cluster; `run` checks that one is given.
        validate_cluster_name("cluster.name", &self.name)?;
        if let Some(node) = &self.node {
            validate_cluster_name("cluster.node", node)?;
        }
        anyhow::ensure!(
            self.heartbeat_ms >= 10,
            "cluster.heartbeat_ms must be at least 10"
        );
        anyhow::ensure!(
            // The lease (half the timeout) must outlast the two heartbeats
            // a node may take to notice it is gone, before others act.
            self.node_timeout_ms > 4 * self.heartbeat_ms,
            "cluster.node_timeout_ms must be more than four times cluster.heartbeat_ms"
        );
        Ok(())
    }
}

/// `[cache]`: the compile cache.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct CacheConfig {
    /// The folder of compiled plugins (default: `cache` in the data dir).
    /// Hosts of the same wasmvisor version may share one: artifacts are
    /// named by the plugin's content hash and the engine's settings.
    pub dir: Option<PathBuf>,
    /// The most the folder holds, MiB: beyond it, artifacts of versions the
    /// host does not run (replaced, removed, or made by another wasmvisor
    /// version) are deleted, oldest first. The current versions' stay.
    pub max_mb: u32,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            dir: None,
            max_mb: 1024,
        }
    }
}

impl Config {
    /// The folder of the compile cache.
    pub fn cache_dir(&self) -> PathBuf {
        self.cache
            .dir
            .clone()
            .unwrap_or_else(|| self.data_dir.join("cache"))
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
    /// The most dynamic children the host runs at once (none by default).
    pub max_children: Option<u32>,
}

impl Default for SupervisorConfig {
    fn default() -> Self {
        SupervisorConfig {
            max_restarts: 3,
            max_seconds: 5,
            on_exhausted: OnExhausted::Backoff,
            max_children: None,
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
    /// When its first instance is made (default `eager`: at host start).
    #[serde(default)]
    pub activate: crate::types::Activate,
    /// `local` (default): every node that declares it runs it.
    /// `singleton`: in a cluster, it runs once, on one of the live nodes
    /// that declare it, and moves when that node goes (top-level children
    /// only).
    #[serde(default)]
    pub placement: Placement,
}

/// Where a config child runs in a cluster.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Placement {
    /// On every node that declares it.
    #[default]
    Local,
    /// Once in the cluster.
    Singleton,
}

fn empty_args() -> serde_json::Value {
    serde_json::Value::Object(Default::default())
}

/// How a supervision group reacts when one of its members exits (OTP).
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
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
    /// In a cluster, `singleton`: the whole group runs once, on one node
    /// (top-level groups only).
    #[serde(default)]
    pub placement: Placement,
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
    /// The most of a response body an `http-send-async` request reads, KiB.
    pub http_body_kib: u32,
    /// How long an `http-send-async` request may take, ms.
    pub http_timeout_ms: u32,
    /// Environment variables the guest sees (none by default).
    pub env: BTreeMap<String, String>,
    /// Host folders the guest may open (none by default).
    pub dirs: Vec<DirGrant>,
    /// Idle time after which a child hibernates (its snapshot kept, its
    /// instance given back), ms; 0 (the default) never.
    pub hibernate_after_ms: u64,
    /// Whether a child's state is stored in the state database when it
    /// hibernates, when it calls `checkpoint`, and at a clean shutdown.
    pub durable_state: bool,
    /// The largest state stored for one child, KiB.
    pub max_state_kib: u32,
    /// What a restart after a trap restores: `init` (args only) or
    /// `checkpoint` (`init`, then the last stored state).
    pub restart_from: RestartFrom,
    /// Resolve file and line for the wasm backtrace of a trap from the
    /// plugin's DWARF (build it with debug info); costs the memory of its
    /// debug info, and time only when it traps.
    pub debug: bool,
}

/// `[plugins.NAME] restart_from`.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RestartFrom {
    /// A restart runs `init(args)` only.
    #[default]
    Init,
    /// A restart after a trap runs `init(args)`, then `restore` with the
    /// last stored state; a second trap within the restart intensity window
    /// starts from the args alone and replaces that state.
    Checkpoint,
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
            http_body_kib: 1024,
            http_timeout_ms: 30_000,
            env: BTreeMap::new(),
            dirs: Vec::new(),
            hibernate_after_ms: 0,
            durable_state: false,
            max_state_kib: 1024,
            restart_from: RestartFrom::Init,
            debug: false,
        }
    }
}

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
    /// Memory a freed slot keeps resident (zeroed) for the next instance on
    /// it, KiB; its table and native stack keep as much each. A restart, a
    /// reload or a new child of the same plugin on that slot then takes
    /// fewer page faults, but the pages stay with the slot for as long as
    /// the host runs: up to three times this for every slot that was ever
    /// in use at once. 0 gives every freed page back at once.
    pub keep_resident_kib: u32,
    /// Live instances at most of plugins too large for a pool slot (more
    /// core instances, memories or tables than a slot has: Python and
    /// JavaScript plugins). They are allocated when they start, outside the
    /// pool, and each holds its own memory.
    pub on_demand_instances: u32,
}

impl PoolConfig {
    fn validate(&self) -> Result<()> {
        anyhow::ensure!(
            self.max_instances > 0,
            "pool.max_instances must be at least 1"
        );
        anyhow::ensure!(
            (64..=8192).contains(&self.stack_kib),
            "pool.stack_kib must be between 64 and 8192"
        );
        anyhow::ensure!(
            self.keep_resident_kib <= 1024,
            "pool.keep_resident_kib must be at most 1024"
        );
        Ok(())
    }
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            max_instances: 10_000,
            stack_kib: 256,
            keep_resident_kib: 16,
            on_demand_instances: 1000,
        }
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
            anyhow::ensure!(
                (1..=65_536).contains(&p.http_body_kib),
                "plugins.{name}.http_body_kib must be 1 to 65536 (64 MiB)"
            );
            anyhow::ensure!(
                (1..=600_000).contains(&p.http_timeout_ms),
                "plugins.{name}.http_timeout_ms must be 1 to 600000 (10 minutes)"
            );
            anyhow::ensure!(
                (1..=65_536).contains(&p.max_state_kib),
                "plugins.{name}.max_state_kib must be 1 to 65536 (64 MiB)"
            );
            anyhow::ensure!(
                p.restart_from == RestartFrom::Init || p.durable_state,
                "plugins.{name}.restart_from = \"checkpoint\" needs durable_state = true \
                 (the checkpoint lives in the state database)"
            );
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
        let mut in_groups = Vec::new();
        fn members<'a>(g: &'a GroupConfig, out: &mut Vec<&'a StaticChild>) {
            out.extend(g.children.iter());
            for sub in &g.groups {
                members(sub, out);
            }
        }
        for g in &self.groups {
            members(g, &mut in_groups);
        }
        if let Some(c) = in_groups
            .iter()
            .find(|c| c.placement == Placement::Singleton)
        {
            anyhow::bail!(
                "groups: {:?} has placement = \"singleton\", which only top-level [[children]] take",
                c.id
            );
        }
        for group in &self.groups {
            validate_group(group, "groups", &mut names)?;
        }
        if let Some(cluster) = &self.cluster {
            cluster.validate()?;
        }
        self.pool.validate()
    }

    /// The mailbox bound of a plugin's children.
    pub fn mailbox_bound(&self, plugin: &str) -> u32 {
        let bound = self.plugins.get(plugin).map(|p| p.mailbox);
        bound.unwrap_or(PluginConfig::default().mailbox)
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
        anyhow::ensure!(
            child.activate == crate::types::Activate::Eager,
            "{at}.{}: activate = \"lazy\" is for top-level [[children]]; a group's members start in order with their group",
            child.id
        );
    }
    for nested in &group.groups {
        anyhow::ensure!(
            nested.placement == Placement::Local,
            "{at}.{}: placement = \"singleton\" is for top-level [[groups]]; a nested group runs with its parent",
            nested.id
        );
        validate_group(nested, &at, names)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_top_level_groups_are_singletons() {
        let top = "[[groups]]\nid = \"g\"\nplacement = \"singleton\"\nchildren = [{ id = \"a\", plugin = \"chaos\" }]\n";
        let c = Config::parse(top).unwrap();
        assert_eq!(c.groups[0].placement, Placement::Singleton);
        let nested = format!("{top}[[groups.groups]]\nid = \"n\"\nplacement = \"singleton\"\n");
        let e = Config::parse(&nested).unwrap_err().to_string();
        assert!(
            e.contains("groups.g.n") && e.contains("top-level [[groups]]"),
            "{e}"
        );
    }

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
    fn nonsense_limits_are_errors() {
        assert!(Config::parse("[plugins.x]\nmemory_mb = 0\n").is_err());
        assert!(Config::parse("[pool]\nstack_kib = 1\n").is_err());
        assert!(Config::parse("[pool]\nkeep_resident_kib = 100000\n").is_err());
        let c = Config::parse("[pool]\nkeep_resident_kib = 64\n").unwrap();
        assert_eq!(c.pool.keep_resident_kib, 64);
        for bad in [
            "http_body_kib = 0",
            "http_body_kib = 65537",
            "http_timeout_ms = 0",
            "http_timeout_ms = 600001",
        ] {
            let err = Config::parse(&format!("[plugins.x]\n{bad}\n")).unwrap_err();
            let key = bad.split(' ').next().unwrap();
            assert!(format!("{err:#}").contains(key), "{err:#}");
        }
        assert!(Config::parse("[supervisor]\nmax_children = 0\n").is_ok());
        let c = Config::parse("[supervisor]\nmax_children = 5\n[plugins.x]\nhttp_body_kib = 8\n");
        let c = c.unwrap();
        assert_eq!(c.supervisor.max_children, Some(5));
        assert_eq!(c.plugin("x").http_body_kib, 8);
    }
}
