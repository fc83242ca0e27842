//! What the host shows about itself: children (`ps`, `GET /v1/children`),
//! plugins (`GET /v1/plugins`) and `/metrics`.

use super::Host;
use crate::child::Cell;
use crate::metrics::{STATUSES, Sample};
use crate::supervisor::Tree;
use crate::types::{ExitReason, Restart, Status};
use serde::Serialize;
use std::time::{SystemTime, UNIX_EPOCH};

/// What `ps` and `GET /v1/children/{id}` show about a child.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ChildInfo {
    /// The registry id.
    pub id: String,
    /// The plugin.
    pub plugin: String,
    /// `starting`, `running`, `hibernated`, `restarting`, `backoff`,
    /// `failed`, `waiting` or `ignored`.
    pub status: Status,
    /// Whether its `init` ran: `false` for a lazy child (or one restored
    /// from the state database) until its first message.
    pub activated: bool,
    /// The version (short content hash) of the current or last instance.
    pub version: Option<String>,
    /// How many times a new instance replaced an exited one.
    pub restarts: u64,
    /// Why the last instance exited, if one did.
    pub last_exit: Option<ExitReason>,
    /// The restart policy.
    pub restart: Restart,
    /// The init args.
    pub args: serde_json::Value,
    /// Messages waiting in its mailbox (calls, casts and notifications).
    pub queued: usize,
    /// Bytes of linear memory of its instance, as of its last callback (0
    /// without an instance).
    pub memory_bytes: u64,
    /// Whether it was brought back from the state database at host start.
    pub restored: bool,
    /// The supervision group it belongs to (config children only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// When the current instance started (Unix ms).
    pub started_at_ms: u64,
    /// In backoff: when the next restart happens (Unix ms).
    pub backoff_until_ms: Option<u64>,
}

/// What `GET /v1/plugins` shows about a plugin.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PluginInfo {
    /// The plugin name.
    pub name: String,
    /// The current version (short content hash), if one is loaded.
    pub version: Option<String>,
    /// When it was loaded (Unix ms).
    pub loaded_at_ms: Option<u64>,
    /// How long compiling it took, ms.
    pub compile_ms: Option<f64>,
    /// The `.wasm` size, bytes.
    pub size: Option<usize>,
    /// Whether the current version came from the compile cache.
    pub cached: Option<bool>,
    /// How the current version's instances are allocated: `pool`, or
    /// `on_demand` for a plugin too large for a pool slot.
    pub allocation: Option<&'static str>,
    /// How many children run this plugin.
    pub instances: usize,
    /// Why the last load failed, if it did.
    pub last_error: Option<String>,
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn child_info(cell: &Cell) -> ChildInfo {
    let state = cell.state();
    ChildInfo {
        id: cell.id.to_string(),
        plugin: cell.spec.plugin.clone(),
        status: state.status,
        activated: state.activated,
        version: state.version.as_ref().map(|v| v.hash.clone()),
        restarts: state.restarts,
        last_exit: state.last_exit.clone(),
        restart: cell.spec.restart,
        args: serde_json::from_slice(&cell.spec.args).unwrap_or_else(|_| {
            serde_json::Value::String(String::from_utf8_lossy(&cell.spec.args).into_owned())
        }),
        queued: cell.mailbox.queued(),
        memory_bytes: cell.memory.load(std::sync::atomic::Ordering::Relaxed),
        restored: state.restored,
        group: state.group.as_deref().map(str::to_string),
        started_at_ms: unix_ms(state.started_at),
        backoff_until_ms: state.backoff_until.map(unix_ms),
    }
}

impl Host {
    /// Every child, sorted by id.
    pub fn children(&self) -> Vec<ChildInfo> {
        self.children_page(None, usize::MAX)
    }

    /// At most `limit` children in id order, starting after id `after`.
    pub fn children_page(&self, after: Option<&str>, limit: usize) -> Vec<ChildInfo> {
        self.sup
            .registry
            .page(after, limit)
            .iter()
            .map(|c| child_info(c))
            .collect()
    }

    /// One child.
    pub fn child(&self, id: &str) -> Option<ChildInfo> {
        self.sup.registry.get(id).map(|c| child_info(&c))
    }

    /// The supervision tree: the config's groups (nested, with their
    /// strategy and restart intensity, members in start order), its
    /// top-level children, and the dynamic children.
    pub async fn tree(&self) -> Tree {
        self.sup.tree().await
    }

    /// Every plugin the host knows.
    pub fn plugins(&self) -> Vec<PluginInfo> {
        let mut children = std::collections::HashMap::<String, usize>::new();
        self.sup.registry.for_each(|c| {
            if let Some(n) = children.get_mut(&c.spec.plugin) {
                *n += 1;
            } else {
                children.insert(c.spec.plugin.clone(), 1);
            }
        });
        self.sup
            .env
            .wasm
            .catalog
            .list()
            .into_iter()
            .map(|(name, entry)| {
                let v = entry.current.as_ref();
                PluginInfo {
                    instances: children.get(&name).copied().unwrap_or(0),
                    name,
                    version: v.map(|v| v.hash.clone()),
                    loaded_at_ms: v.map(|v| unix_ms(v.loaded_at)),
                    compile_ms: v.map(|v| v.compile_ms),
                    size: v.map(|v| v.size),
                    cached: v.map(|v| v.cached),
                    allocation: v.map(|v| v.allocation().as_str()),
                    last_error: entry.last_error,
                }
            })
            .collect()
    }

    /// `/metrics` in the OpenMetrics text format
    /// ([`crate::metrics::CONTENT_TYPE`]).
    pub fn metrics_text(&self) -> String {
        let mut children = [0u64; 8];
        self.sup.registry.for_each(|cell| {
            let status = cell.state().status;
            if let Some(i) = STATUSES.iter().position(|s| *s == status) {
                children[i] += 1;
            }
        });
        let plugins = self
            .sup
            .env
            .wasm
            .catalog
            .list()
            .iter()
            .filter(|(_, e)| e.current.is_some())
            .count();
        let pool = self.sup.env.wasm.pool_usage();
        self.sup.env.metrics.render(&Sample {
            children,
            plugins: plugins as u64,
            instances: pool.instances,
            on_demand_instances: pool.on_demand,
            pool_unused: pool.kept,
        })
    }
}
