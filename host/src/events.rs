//! The host's event stream: lifecycle events of children and plugins, and
//! every message published on a topic. `/v1/events` streams it as
//! Server-Sent Events; library users subscribe with `Host::events`.
//! Hibernation events (`child_hibernated`, `child_woken`) go out on a
//! stream of their own, `Host::hibernation_events` and `/v1/events?include=
//! hibernation`, so that a million idle children do not flood every
//! listener.

use crate::types::ExitReason;
use bytes::Bytes;
use serde::{Serialize, Serializer};
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::Mutex;
use tokio::sync::broadcast;

/// How many events a slow subscriber may fall behind before it skips some
/// (it is told how many).
const CAPACITY: usize = 4096;

/// Something that happened on the host.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// A child's first instance is serving.
    ChildStarted {
        /// The child id.
        id: String,
        /// Its plugin.
        plugin: String,
        /// The plugin version it runs.
        version: String,
    },
    /// An instance ended.
    ChildExited {
        /// The child id.
        id: String,
        /// Why.
        reason: ExitReason,
    },
    /// A new instance of an existing child is serving.
    ChildRestarted {
        /// The child id.
        id: String,
        /// Restarts so far.
        restarts: u64,
        /// The plugin version it runs.
        version: String,
    },
    /// A child exceeded its restart intensity; its next start waits.
    ChildBackoff {
        /// The child id.
        id: String,
        /// The wait, ms.
        delay_ms: u64,
        /// The exit that caused it.
        reason: ExitReason,
    },
    /// A child exceeded its restart intensity and stays down.
    ChildFailed {
        /// The child id.
        id: String,
        /// The exit that caused it.
        reason: ExitReason,
    },
    /// A supervision group exceeded its restart intensity: its members were
    /// stopped and it escalated to its parent group (`to`), or to the root
    /// (`to` is null), which restarts it after `delay_ms` or leaves it
    /// failed.
    GroupEscalated {
        /// The group id.
        id: String,
        /// The parent group, or null for the root.
        to: Option<String>,
        /// When the root restarts it, ms (null: not by itself).
        delay_ms: Option<u64>,
    },
    /// A child was removed; its id is free.
    ChildRemoved {
        /// The child id.
        id: String,
    },
    /// A plugin was loaded (its file appeared, or the host started).
    PluginLoaded {
        /// The plugin name.
        plugin: String,
        /// Its version (short content hash).
        version: String,
        /// Compile (or cache load) time, ms.
        compile_ms: f64,
        /// Whether the compiled artifact came from the cache.
        cached: bool,
    },
    /// A new version of a plugin replaced the old one in its running
    /// children.
    PluginReloaded {
        /// The plugin name.
        plugin: String,
        /// The new version.
        version: String,
        /// The children moved to it.
        instances: usize,
        /// Children that stayed on the old version, with why.
        failed: Vec<(String, String)>,
        /// From the change being noticed to the last child serving it, ms.
        ms: f64,
    },
    /// A plugin's file was removed: its children are waiting for it.
    PluginRemoved {
        /// The plugin name.
        plugin: String,
        /// The children now waiting.
        instances: usize,
    },
    /// A plugin could not be loaded or reloaded; nothing changed.
    ReloadFailed {
        /// The plugin name.
        plugin: String,
        /// Why.
        error: String,
    },
    /// A child gave its instance back, keeping its snapshot (hibernation
    /// stream only).
    ChildHibernated {
        /// The child id.
        id: String,
    },
    /// A hibernated child took a new instance for a message (hibernation
    /// stream only).
    ChildWoken {
        /// The child id.
        id: String,
    },
    /// A restart from a checkpoint trapped again within the restart
    /// intensity window: the child started from its args, and its stored
    /// state was replaced by the fresh one.
    ChildCheckpointDropped {
        /// The child id.
        id: String,
    },
    /// A message published on a topic.
    Topic {
        /// The topic.
        topic: String,
        /// The message: JSON when it is JSON, else a string.
        #[serde(serialize_with = "message_as_json")]
        msg: Bytes,
    },
}

impl Event {
    /// The event's type, as the SSE `event:` field spells it.
    pub fn kind(&self) -> &'static str {
        match self {
            Event::ChildStarted { .. } => "child_started",
            Event::ChildExited { .. } => "child_exited",
            Event::ChildRestarted { .. } => "child_restarted",
            Event::ChildBackoff { .. } => "child_backoff",
            Event::ChildFailed { .. } => "child_failed",
            Event::ChildRemoved { .. } => "child_removed",
            Event::GroupEscalated { .. } => "group_escalated",
            Event::PluginLoaded { .. } => "plugin_loaded",
            Event::PluginReloaded { .. } => "plugin_reloaded",
            Event::PluginRemoved { .. } => "plugin_removed",
            Event::ReloadFailed { .. } => "reload_failed",
            Event::Topic { .. } => "topic",
            Event::ChildHibernated { .. } => "child_hibernated",
            Event::ChildWoken { .. } => "child_woken",
            Event::ChildCheckpointDropped { .. } => "child_checkpoint_dropped",
        }
    }

    /// Whether the event goes to the hibernation stream.
    pub fn is_hibernation(&self) -> bool {
        matches!(
            self,
            Event::ChildHibernated { .. } | Event::ChildWoken { .. }
        )
    }

    /// The topic of a topic event.
    pub fn topic(&self) -> Option<&str> {
        match self {
            Event::Topic { topic, .. } => Some(topic),
            _ => None,
        }
    }
}

fn message_as_json<S: Serializer>(msg: &Bytes, s: S) -> Result<S::Ok, S::Error> {
    match serde_json::from_slice::<serde_json::Value>(msg) {
        Ok(v) => v.serialize(s),
        Err(_) => String::from_utf8_lossy(msg).serialize(s),
    }
}

/// The broadcasts behind [`Event`]s: lifecycle and topic events, and
/// hibernation events.
pub(crate) struct EventBus {
    tx: broadcast::Sender<Arc<Event>>,
    hibernation: broadcast::Sender<Arc<Event>>,
    /// The last [`RECENT`] lifecycle events (no topic or hibernation
    /// events), for a dashboard that opens after they happened.
    recent: Mutex<VecDeque<Arc<Event>>>,
}

/// How many lifecycle events [`EventBus::recent`] keeps.
pub const RECENT: usize = 1000;

impl Default for EventBus {
    fn default() -> Self {
        EventBus {
            tx: broadcast::channel(CAPACITY).0,
            hibernation: broadcast::channel(CAPACITY).0,
            recent: Mutex::new(VecDeque::with_capacity(RECENT)),
        }
    }
}

impl EventBus {
    pub(crate) fn emit(&self, event: Event) {
        if event.is_hibernation() {
            // No subscriber is the common case; then there is nothing to do.
            if self.hibernation.receiver_count() > 0 {
                let _ = self.hibernation.send(Arc::new(event));
            }
            return;
        }
        let keep = event.topic().is_none();
        if !keep && self.tx.receiver_count() == 0 {
            return;
        }
        let event = Arc::new(event);
        if keep {
            let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
            if recent.len() == RECENT {
                recent.pop_front();
            }
            recent.push_back(event.clone());
        }
        if self.tx.receiver_count() > 0 {
            let _ = self.tx.send(event);
        }
    }

    /// The last lifecycle events, oldest first.
    pub(crate) fn recent(&self) -> Vec<Arc<Event>> {
        let recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        recent.iter().cloned().collect()
    }

    pub(crate) fn subscribe_hibernation(&self) -> broadcast::Receiver<Arc<Event>> {
        self.hibernation.subscribe()
    }

    /// Whether anyone listens; lets hot paths skip building events.
    pub(crate) fn has_listeners(&self) -> bool {
        self.tx.receiver_count() > 0
    }

    pub(crate) fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.tx.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_messages_are_embedded_as_json() {
        let e = Event::Topic {
            topic: "t".into(),
            msg: Bytes::from_static(br#"{"a":1}"#),
        };
        assert_eq!(
            serde_json::to_value(&e).unwrap(),
            serde_json::json!({"type": "topic", "topic": "t", "msg": {"a": 1}})
        );
        let e = Event::Topic {
            topic: "t".into(),
            msg: Bytes::from_static(b"not json"),
        };
        assert_eq!(serde_json::to_value(&e).unwrap()["msg"], "not json");
    }
}
