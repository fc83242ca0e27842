//! `group_manager`: keeps one `group_worker` running per active
//! conversation group.
//!
//! Args: `{"interval_ms": N, "groups": [G, ...], "worker": {...}}`, where
//! `worker` holds the `group_worker` args without `group`.
//!
//! | message (call)       | reply / effect                                        |
//! |----------------------|-------------------------------------------------------|
//! | `{"activate": G}`    | adds G to the active groups and starts its worker now; the running worker ids |
//! | `{"deactivate": G}`  | removes G and stops its worker; the running worker ids |
//! | `"workers"`          | the running worker ids, sorted                        |
//!
//! Every `interval_ms` it makes sure that `group:G` runs (a temporary
//! child, monitored) for each active group G. When a worker goes down (its
//! score fell below the floor, or it crashed), G leaves the active set. A
//! deactivated group's monitor is removed before its worker stops, so that
//! worker's `down` cannot drop the group if it is activated again.

use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};
use wasmvisor_sdk::{ChildSpec, Info, Level, MonitorRef, Plugin, Restart, StartError, json};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Args {
    interval_ms: u64,
    #[serde(default)]
    groups: Vec<String>,
    worker: serde_json::Map<String, serde_json::Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum Call {
    Activate(String),
    Deactivate(String),
    Workers,
}

#[derive(Default)]
struct GroupManager {
    interval_ms: u64,
    worker: serde_json::Map<String, serde_json::Value>,
    active: BTreeSet<String>,
    /// Running workers, with the monitor on each.
    running: BTreeMap<String, MonitorRef>,
}

const PREFIX: &str = "group:";

impl GroupManager {
    /// Starts the missing workers of active groups.
    fn ensure(&mut self) {
        let missing: Vec<String> = self
            .active
            .iter()
            .filter(|g| !self.running.contains_key(&format!("{PREFIX}{g}")))
            .cloned()
            .collect();
        for group in missing {
            let id = format!("{PREFIX}{group}");
            let mut args = self.worker.clone();
            args.insert("group".into(), group.clone().into());
            let spec = ChildSpec::new(&id, "group_worker")
                .args(&args)
                .restart(Restart::Temporary);
            match wasmvisor_sdk::start_child(&spec) {
                Ok(_) => {}
                // Still running from before (a restart of this manager).
                Err(StartError::AlreadyStarted) => {}
                Err(e) => {
                    wasmvisor_sdk::log(Level::Warn, &format!("cannot start {id}: {e}"));
                    continue;
                }
            }
            // A worker that stopped in between is reported down at once.
            let monitor = wasmvisor_sdk::monitor(&id);
            self.running.insert(id, monitor);
        }
    }

    fn workers(&self) -> serde_json::Value {
        json!(self.running.keys().collect::<Vec<_>>())
    }
}

impl Plugin for GroupManager {
    type Args = Args;
    type Call = Call;
    type Reply = serde_json::Value;
    type Cast = Call;

    fn init(&mut self, args: Args) -> Result<(), String> {
        if args.interval_ms == 0 {
            return Err("interval_ms must be at least 1".into());
        }
        self.interval_ms = args.interval_ms;
        self.worker = args.worker;
        self.active = args.groups.into_iter().collect();
        // The first round runs right after init, not inside it.
        wasmvisor_sdk::send_after(0, &"tick");
        Ok(())
    }

    fn handle_call(&mut self, msg: Call) -> serde_json::Value {
        match msg {
            Call::Activate(group) => {
                self.active.insert(group);
                self.ensure();
            }
            Call::Deactivate(group) => {
                self.active.remove(&group);
                let id = format!("{PREFIX}{group}");
                if let Some(monitor) = self.running.remove(&id) {
                    // Its `down` must not reach a worker started for the
                    // group later: drop the monitor, and a `down` that waits.
                    wasmvisor_sdk::demonitor(monitor);
                    let _ = wasmvisor_sdk::stop_child(&id);
                }
            }
            Call::Workers => {}
        }
        self.workers()
    }

    fn handle_cast(&mut self, msg: Call) {
        self.handle_call(msg);
    }

    fn handle_info(&mut self, info: Info) {
        match info {
            Info::Timer(_) => {
                self.ensure();
                wasmvisor_sdk::send_after(self.interval_ms, &"tick");
            }
            Info::Down { monitor, id, .. } => {
                // Only the worker running now counts.
                if self.running.get(&id) == Some(&monitor) {
                    self.running.remove(&id);
                    if let Some(group) = id.strip_prefix(PREFIX) {
                        self.active.remove(group);
                    }
                }
            }
            _ => {}
        }
    }
}

wasmvisor_sdk::export!(GroupManager);
