//! Durable state in the cluster's store, with fenced writes.
//!
//! A `durable_state` child's state lives in the bucket `NAME-state`, one key
//! per child id, so whichever node runs the child next reads it. Every entry
//! carries the *token* of the claim its writer held: the revision of the
//! claim write that made the writer the owner (a claim's create, or its
//! take-over). Revisions only grow, so a newer owner always holds a larger
//! token. A write is a compare-and-set on the entry's revision that is
//! refused when the entry carries a larger token than the writer's: the
//! child moved on, and the write is stale. A node that takes a child over
//! raises the entry's token first (even when there is no state yet), so a
//! late write from the old owner is refused from then on.
//!
//! A state too large for one NATS message goes to the object store
//! `NAME-snapshots` under a name of its own; the key then holds the name,
//! and the compare-and-set on the key is still what makes the write count.

use super::{Cluster, key, locked};
use crate::types::CheckpointError;
use async_nats::jetstream::{self, kv, object_store};
use bytes::{BufMut, Bytes, BytesMut};
use tokio::io::AsyncReadExt;

/// What an entry of the state bucket holds after its kind and token.
#[derive(Debug, PartialEq)]
enum Stored {
    /// No state (a fresh child, or its checkpoint was dropped); the entry
    /// still fences older writers.
    Nothing,
    /// The state itself.
    Inline(Bytes),
    /// The name of the object that holds the state.
    Object(String),
}

const NOTHING: u8 = 0;
const INLINE: u8 = 1;
const OBJECT: u8 = 2;

/// Room left in a NATS message for the headers JetStream adds.
const HEADROOM: usize = 4096;

fn encode(token: u64, stored: &Stored) -> Bytes {
    let mut out = BytesMut::new();
    let (kind, body): (u8, &[u8]) = match stored {
        Stored::Nothing => (NOTHING, &[]),
        Stored::Inline(state) => (INLINE, state),
        Stored::Object(name) => (OBJECT, name.as_bytes()),
    };
    out.put_u8(kind);
    out.put_u64(token);
    out.put_slice(body);
    out.freeze()
}

fn decode(value: &Bytes) -> Option<(u64, Stored)> {
    let kind = *value.first()?;
    let token = u64::from_be_bytes(value.get(1..9)?.try_into().ok()?);
    let body = value.slice(9..);
    let stored = match kind {
        NOTHING => Stored::Nothing,
        INLINE => Stored::Inline(body),
        OBJECT => Stored::Object(String::from_utf8(body.to_vec()).ok()?),
        _ => return None,
    };
    Some((token, stored))
}

/// The cluster's state store: the bucket of entries and the object store
/// for large states.
pub(super) struct StateStore {
    entries: kv::Store,
    objects: object_store::ObjectStore,
}

impl StateStore {
    /// Opens (or creates) the cluster's state bucket and object store.
    pub(super) async fn open(js: &jetstream::Context, name: &str) -> anyhow::Result<StateStore> {
        use anyhow::Context;
        let entries = super::bucket(js, format!("{name}-state"), std::time::Duration::ZERO).await?;
        let bucket = format!("{name}-snapshots");
        let objects = match js.get_object_store(&bucket).await {
            Ok(store) => store,
            Err(_) => js
                .create_object_store(object_store::Config {
                    bucket: bucket.clone(),
                    ..Default::default()
                })
                .await
                .with_context(|| format!("cannot create the JetStream object store {bucket}"))?,
        };
        Ok(StateStore { entries, objects })
    }
}

fn unavailable(what: &str, e: impl std::fmt::Display) -> CheckpointError {
    CheckpointError::Unavailable(format!("{what} in the cluster's store: {e}"))
}

impl Cluster {
    /// The token of this node's claim on `id`: set when it claims, takes
    /// over or adopts the id, gone when it gives the claim up.
    pub(crate) fn token(&self, id: &str) -> Option<u64> {
        locked(&self.held).get(id).copied()
    }

    pub(super) fn hold(&self, id: &str, token: u64) {
        locked(&self.held).insert(id.to_string(), token);
    }

    /// Child `id`'s stored state, if this node's claim wrote it or took it
    /// over. An entry with an older token is left from an earlier child of
    /// the same id (a fresh start does not restore it); one with a newer
    /// token belongs to the node the child moved to.
    pub(crate) async fn state(&self, id: &str) -> Result<Option<Vec<u8>>, CheckpointError> {
        let token = self.token(id).ok_or(CheckpointError::Moved)?;
        // A take-over whose fence failed: an older entry is the previous
        // owner's state, not a stale one, until it is fenced.
        if locked(&self.unfenced).contains(id) {
            self.fence_state(id, token).await?;
            locked(&self.unfenced).remove(id);
        }
        let entry = self
            .store
            .entries
            .entry(key(id))
            .await
            .map_err(|e| unavailable("cannot read the state", e))?;
        let Some((theirs, stored)) = entry
            .filter(|e| e.operation == kv::Operation::Put)
            .and_then(|e| decode(&e.value))
        else {
            return Ok(None);
        };
        if theirs > token {
            return Err(CheckpointError::Moved);
        }
        if theirs < token {
            return Ok(None);
        }
        match stored {
            Stored::Nothing => Ok(None),
            Stored::Inline(state) => Ok(Some(state.to_vec())),
            Stored::Object(name) => {
                let mut object = self
                    .store
                    .objects
                    .get(&name)
                    .await
                    .map_err(|e| unavailable("cannot read the snapshot", e))?;
                let mut state = Vec::new();
                object
                    .read_to_end(&mut state)
                    .await
                    .map_err(|e| unavailable("cannot read the snapshot", e))?;
                Ok(Some(state))
            }
        }
    }

    /// Stores `state` as child `id`'s, unless the child moved on to another
    /// owner ([`CheckpointError::Moved`]): the write is fenced by this
    /// node's token.
    pub(crate) async fn put_state(&self, id: &str, state: Vec<u8>) -> Result<(), CheckpointError> {
        let token = self.token(id).ok_or(CheckpointError::Moved)?;
        let limit = (self.client.server_info().max_payload).saturating_sub(HEADROOM);
        let stored = match state.len() <= limit {
            true => Stored::Inline(state.into()),
            false => {
                // A new name each time: the object a reader may be reading
                // stays until the entry no longer names it.
                let name = format!("{}.{token}.{}", key(id), super::now_ms());
                self.store
                    .objects
                    .put(name.as_str(), &mut state.as_slice())
                    .await
                    .map_err(|e| unavailable("cannot write the snapshot", e))?;
                Stored::Object(name)
            }
        };
        let written = self.write(id, token, Some(&stored)).await;
        if written.is_err()
            && let Stored::Object(name) = &stored
        {
            let _ = self.store.objects.delete(name).await;
        }
        written
    }

    /// Drops child `id`'s stored state (a checkpoint given up), keeping the
    /// fence.
    pub(crate) async fn clear_state(&self, id: &str) -> Result<(), CheckpointError> {
        let token = self.token(id).ok_or(CheckpointError::Moved)?;
        self.write(id, token, Some(&Stored::Nothing)).await
    }

    /// Raises child `id`'s entry to `token` (a claim this node just took
    /// over), keeping the state: from now on the old owner's writes are
    /// refused.
    pub(super) async fn fence_state(&self, id: &str, token: u64) -> Result<(), CheckpointError> {
        self.write(id, token, None).await
    }

    /// The compare-and-set loop: writes `stored` (or, for `None`, what the
    /// entry holds) under `token`, unless the entry carries a larger token.
    async fn write(
        &self,
        id: &str,
        token: u64,
        stored: Option<&Stored>,
    ) -> Result<(), CheckpointError> {
        let k = key(id);
        loop {
            let entry = self
                .store
                .entries
                .entry(k.clone())
                .await
                .map_err(|e| unavailable("cannot read the state", e))?;
            let current = entry.as_ref().and_then(|e| match e.operation {
                kv::Operation::Put => decode(&e.value),
                _ => None,
            });
            let replaced = match &current {
                Some((theirs, _)) if *theirs > token => return Err(CheckpointError::Moved),
                Some((_, Stored::Object(name))) => Some(name.clone()),
                _ => None,
            };
            let value = match (stored, current) {
                (Some(stored), _) => encode(token, stored),
                (None, Some((_, kept))) => encode(token, &kept),
                (None, None) => encode(token, &Stored::Nothing),
            };
            let done = match &entry {
                Some(e) => self
                    .store
                    .entries
                    .update(&k, value, e.revision)
                    .await
                    .map(drop)
                    .map_err(|e| {
                        (
                            e.kind() == kv::UpdateErrorKind::WrongLastRevision,
                            e.to_string(),
                        )
                    }),
                None => self
                    .store
                    .entries
                    .create(&k, value)
                    .await
                    .map(drop)
                    .map_err(|e| {
                        (
                            e.kind() == kv::CreateErrorKind::AlreadyExists,
                            e.to_string(),
                        )
                    }),
            };
            match done {
                Ok(()) => {
                    if let (Some(_), Some(old)) = (stored, replaced)
                        && let Err(e) = self.store.objects.delete(&old).await
                    {
                        tracing::warn!(child = id, "cannot remove a replaced snapshot: {e}");
                    }
                    return Ok(());
                }
                // Written meanwhile: read it again (its token decides).
                Err((true, _)) => continue,
                Err((false, e)) => return Err(unavailable("cannot write the state", e)),
            }
        }
    }

    /// Removes child `id`'s state for good, before its claim (at most
    /// `token`) is given up: an entry of a newer owner is left alone.
    pub(super) async fn remove_state(&self, id: &str, token: u64) {
        let k = key(id);
        let entry = match self.store.entries.entry(k.clone()).await {
            Ok(Some(entry)) if entry.operation == kv::Operation::Put => entry,
            Ok(_) => return,
            Err(e) => {
                tracing::warn!(
                    child = id,
                    "cannot remove its state from the cluster's store: {e}"
                );
                return;
            }
        };
        let Some((theirs, stored)) = decode(&entry.value) else {
            return;
        };
        if theirs > token {
            return;
        }
        let purged = self
            .store
            .entries
            .purge_expect_revision(&k, Some(entry.revision))
            .await;
        match purged {
            Ok(()) => {
                if let Stored::Object(name) = stored {
                    let _ = self.store.objects.delete(&name).await;
                }
            }
            Err(e) => {
                tracing::warn!(
                    child = id,
                    "cannot remove its state from the cluster's store: {e}"
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::{Orphan, tests::Nats};
    use crate::config::ClusterConfig;
    use crate::types::{ChildSpec, Restart};

    async fn node(nats: &Nats, name: &str) -> Cluster {
        let config = ClusterConfig {
            nats: nats.url.clone(),
            node: Some(name.into()),
            ..Default::default()
        };
        Cluster::join(&config, Vec::new()).await.expect("joins")
    }

    /// The store's fencing, without timing: node b takes a's child over
    /// (as it does once a's heartbeat is gone), and a's late writes are
    /// refused while b reads what a wrote before.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_write_from_the_old_owner_is_refused_after_a_take_over() {
        let Some(nats) = Nats::start().await else {
            return;
        };
        let (a, b) = (node(&nats, "a").await, node(&nats, "b").await);
        let spec =
            ChildSpec::new("acct.1", "tracker", &serde_json::json!({})).restart(Restart::Permanent);
        a.claim(&spec).await.expect("a claims");
        assert_eq!(a.state("acct.1").await, Ok(None));
        a.put_state("acct.1", b"one".to_vec())
            .await
            .expect("a writes");
        assert_eq!(a.state("acct.1").await, Ok(Some(b"one".to_vec())));
        // b is no owner: it neither reads nor writes.
        assert_eq!(b.state("acct.1").await, Err(CheckpointError::Moved));
        assert_eq!(
            b.put_state("acct.1", b"b".to_vec()).await,
            Err(CheckpointError::Moved)
        );

        let (claim, revision) = b.claim_of("acct.1").await.unwrap().expect("claimed");
        let orphan = Orphan {
            spec: spec.clone(),
            claim,
            revision,
        };
        assert!(b.take_over(&orphan).await.expect("takes over"));
        assert_eq!(
            a.put_state("acct.1", b"stale".to_vec()).await,
            Err(CheckpointError::Moved)
        );
        assert_eq!(a.clear_state("acct.1").await, Err(CheckpointError::Moved));
        assert_eq!(a.state("acct.1").await, Err(CheckpointError::Moved));
        assert_eq!(b.state("acct.1").await, Ok(Some(b"one".to_vec())));

        // Larger than a NATS message: through the object store.
        let big: Vec<u8> = (0..3 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
        b.put_state("acct.1", big.clone()).await.expect("b writes");
        assert_eq!(b.state("acct.1").await, Ok(Some(big)));
        b.put_state("acct.1", b"two".to_vec())
            .await
            .expect("b writes");
        assert_eq!(b.state("acct.1").await, Ok(Some(b"two".to_vec())));
        b.clear_state("acct.1").await.expect("b clears");
        assert_eq!(b.state("acct.1").await, Ok(None));

        // A released id starts afresh: a new claim finds no state.
        b.put_state("acct.1", b"three".to_vec())
            .await
            .expect("b writes");
        b.release("acct.1").await;
        a.claim(&spec).await.expect("a claims again");
        assert_eq!(a.state("acct.1").await, Ok(None));
        for n in [&a, &b] {
            n.leave().await;
        }
    }

    #[test]
    fn entries_round_trip() {
        for stored in [
            Stored::Nothing,
            Stored::Inline(Bytes::from_static(b"{\"n\":1}")),
            Stored::Object("k.7.123".into()),
        ] {
            let value = encode(7, &stored);
            assert_eq!(decode(&value), Some((7, stored)));
        }
        assert_eq!(decode(&Bytes::from_static(b"\x09")), None);
        assert_eq!(decode(&Bytes::from_static(b"\x05\0\0\0\0\0\0\0\x01")), None);
    }
}
