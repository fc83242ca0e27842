//! Topics: publish/subscribe between instances (a Registry with duplicate
//! keys, or Phoenix.PubSub). A subscription belongs to one instance
//! generation and ends with it.

use crate::child::Cell;
use crate::wasm::Info;
use bytes::Bytes;
use std::collections::HashMap;
use std::sync::{Arc, RwLock, Weak};

struct Subscriber {
    cell: Weak<Cell>,
    generation: u64,
}

#[derive(Default)]
pub(crate) struct Topics {
    topics: RwLock<HashMap<Arc<str>, Vec<Subscriber>>>,
}

impl Topics {
    /// Subscribes generation `generation` of `cell`; subscribing twice is one
    /// subscription. Returns the interned topic name.
    pub(crate) fn subscribe(&self, topic: &str, cell: &Arc<Cell>, generation: u64) -> Arc<str> {
        let mut topics = self.topics.write().unwrap_or_else(|p| p.into_inner());
        let key: Arc<str> = match topics.get_key_value(topic) {
            Some((k, _)) => k.clone(),
            None => topic.into(),
        };
        let subs = topics.entry(key.clone()).or_default();
        let already = subs
            .iter()
            .any(|s| s.generation == generation && s.cell.as_ptr() == Arc::as_ptr(cell));
        if !already {
            subs.push(Subscriber {
                cell: Arc::downgrade(cell),
                generation,
            });
        }
        key
    }

    /// Ends the subscriptions of generation `generation` of `cell` to each of
    /// `topics`.
    pub(crate) fn unsubscribe(&self, topics: &[Arc<str>], cell: *const Cell, generation: u64) {
        if topics.is_empty() {
            return;
        }
        let mut map = self.topics.write().unwrap_or_else(|p| p.into_inner());
        for topic in topics {
            if let Some(subs) = map.get_mut(topic) {
                subs.retain(|s| !(s.generation == generation && s.cell.as_ptr() == cell));
                if subs.is_empty() {
                    map.remove(topic);
                }
            }
        }
    }

    /// Delivers `msg` to every subscriber of `topic`; returns how many.
    pub(crate) fn publish(&self, topic: &str, msg: &Bytes) -> usize {
        let map = self.topics.read().unwrap_or_else(|p| p.into_inner());
        let Some((key, subs)) = map.get_key_value(topic) else {
            return 0;
        };
        let mut delivered = 0;
        for s in subs {
            if let Some(cell) = s.cell.upgrade() {
                cell.post_info(
                    s.generation,
                    Info::Event {
                        topic: key.clone(),
                        msg: msg.clone(),
                    },
                );
                delivered += 1;
            }
        }
        delivered
    }

    #[cfg(test)]
    fn subscribers(&self, topic: &str) -> usize {
        let map = self.topics.read().unwrap();
        map.get(topic).map_or(0, |s| s.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::child::Envelope;
    use crate::types::ChildSpec;

    fn cell(id: &str) -> Arc<Cell> {
        let spec = ChildSpec::new(id, "p", &serde_json::Value::Null);
        Arc::new(Cell::new(spec, 8))
    }

    #[tokio::test]
    async fn publish_reaches_each_subscriber_once_with_its_generation() {
        let topics = Topics::default();
        let a = cell("a");
        topics.subscribe("t", &a, 7);
        topics.subscribe("t", &a, 7);
        assert_eq!(topics.publish("t", &Bytes::from_static(b"1")), 1);
        match a.mailbox.try_recv() {
            Some(Envelope::Info {
                generation: 7,
                info: Info::Event { topic, msg },
            }) => {
                assert_eq!(&*topic, "t");
                assert_eq!(&msg[..], b"1");
            }
            _ => panic!("expected an event for generation 7"),
        }
        assert!(a.mailbox.try_recv().is_none());
    }

    #[tokio::test]
    async fn unsubscribe_removes_only_that_generation() {
        let topics = Topics::default();
        let a = cell("a");
        let t = topics.subscribe("t", &a, 1);
        topics.subscribe("t", &a, 2);
        topics.unsubscribe(&[t], Arc::as_ptr(&a), 1);
        assert_eq!(topics.subscribers("t"), 1);
    }
}
