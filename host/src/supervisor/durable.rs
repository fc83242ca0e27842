//! Durable children: the spec of every dynamic child (id, plugin, init args,
//! restart policy, activation) and its supervisor state live in an embedded
//! database (redb) under the data dir, so a host that restarts, even after
//! `kill -9`, brings them back; so does the last stored state of a child
//! whose plugin has `durable_state`. A start, a stop and a stored state are
//! committed (fsync) before they are acknowledged. One writer thread commits
//! whatever is waiting in one transaction (group commit): a thousand
//! children starting or checkpointing at once share one fsync.

use crate::types::{Activate, ChildSpec, ExitReason, Restart};
use anyhow::{Context, Result, anyhow};
use bytes::Bytes;
use redb::{Database, DatabaseError, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use tokio::sync::oneshot;

/// id → record (see [`Record::encode`]).
const CHILDREN: TableDefinition<&str, &[u8]> = TableDefinition::new("children");

/// id → the child's last stored state (`durable_state` plugins).
const STATE: TableDefinition<&str, &[u8]> = TableDefinition::new("state");

/// The most changes one transaction commits.
const BATCH: usize = 16_384;

/// The file name under the data dir.
pub(crate) const FILE: &str = "state.redb";

/// What is stored about a child besides its args.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct Meta {
    /// Start order: children come back in this order.
    seq: u64,
    plugin: String,
    restart: Restart,
    shutdown_ms: u32,
    /// Set while the child is `failed`: it comes back failed, not running.
    failed: Option<ExitReason>,
    /// Lazy children come back registered only, as they started.
    #[serde(default)]
    activate: Activate,
}

/// A stored child.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Record {
    pub spec: ChildSpec,
    pub seq: u64,
    pub failed: Option<ExitReason>,
}

impl Record {
    /// `[meta length: u32 LE][meta JSON][args bytes]`: the args are stored
    /// as given, whatever they hold.
    fn encode(&self) -> Vec<u8> {
        let meta = Meta {
            seq: self.seq,
            plugin: self.spec.plugin.clone(),
            restart: self.spec.restart,
            shutdown_ms: self.spec.shutdown_ms,
            failed: self.failed.clone(),
            activate: self.spec.activate,
        };
        // Plain data always serialises.
        let meta = serde_json::to_vec(&meta).unwrap_or_default();
        let mut out = Vec::with_capacity(4 + meta.len() + self.spec.args.len());
        out.extend_from_slice(&(meta.len() as u32).to_le_bytes());
        out.extend_from_slice(&meta);
        out.extend_from_slice(&self.spec.args);
        out
    }

    fn decode(id: &str, bytes: &[u8]) -> Result<Record> {
        let len = bytes
            .get(..4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
            .ok_or_else(|| anyhow!("record of {id} is truncated"))?;
        let meta = bytes
            .get(4..4 + len)
            .ok_or_else(|| anyhow!("record of {id} is truncated"))?;
        let meta: Meta = serde_json::from_slice(meta)
            .with_context(|| format!("record of {id} is unreadable"))?;
        Ok(Record {
            spec: ChildSpec {
                id: id.to_string(),
                plugin: meta.plugin,
                args: Bytes::copy_from_slice(&bytes[4 + len..]),
                restart: meta.restart,
                shutdown_ms: meta.shutdown_ms,
                activate: meta.activate,
            },
            seq: meta.seq,
            failed: meta.failed,
        })
    }
}

/// One change for the writer.
enum Change {
    /// Store a child's record.
    Put(String, Vec<u8>),
    /// Forget a child: its record and its state.
    Remove(String),
    /// Store a child's state (only if its record is stored).
    PutState(String, Vec<u8>),
    /// Forget a child's state, keeping its record.
    RemoveState(String),
    /// Mark a child failed or not (not synced on its own).
    SetFailed(String, Option<ExitReason>),
}

/// A change, and who waits for it to be on disk (nobody for `SetFailed`).
struct Job {
    change: Change,
    done: Option<oneshot::Sender<Result<(), String>>>,
}

/// The database of durable children.
pub(crate) struct Durable {
    db: Arc<Database>,
    path: PathBuf,
    next_seq: AtomicU64,
    /// To the writer thread; `None` once it is told to stop.
    writer: Option<mpsc::Sender<Job>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// The state database's page cache.
const CACHE_BYTES: usize = 32 << 20;

impl Durable {
    /// Opens (or creates) `<data_dir>/state.redb`. A database that another
    /// host holds, or that is damaged, is an error that says so: the host
    /// never starts silently empty. Returns the stored children in start
    /// order, each with whether a state is stored for it.
    pub(crate) fn open(data_dir: &Path) -> Result<(Durable, Vec<Record>)> {
        std::fs::create_dir_all(data_dir)
            .with_context(|| format!("cannot create the data dir {}", data_dir.display()))?;
        let path = data_dir.join(FILE);
        // redb caches up to 1 GiB by default; the host reads its records
        // once, at start, and otherwise only writes, so a small cache keeps
        // a million stored children from costing their pages twice in RSS.
        let db = Database::builder()
            .set_cache_size(CACHE_BYTES)
            .create(&path)
            .map_err(|e| match e {
                DatabaseError::DatabaseAlreadyOpen => anyhow!(
                    "{} is in use by another wasmvisor host (it holds the lock); stop it, or give \
                 this host another --data dir",
                    path.display()
                ),
                other => anyhow!(
                    "cannot open the state database {}: {other}. If it is damaged, move it aside \
                 (the host then starts with no stored children) or restore it from a backup",
                    path.display()
                ),
            })?;
        let db = Arc::new(db);
        let records = load(&db, &path)?;
        let next = records.iter().map(|r| r.seq + 1).max().unwrap_or(0);
        let (writer, jobs) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("wasmvisor-state-db".into())
            .spawn({
                let (db, path) = (db.clone(), path.clone());
                move || write_loop(&db, &path, jobs)
            })
            .context("cannot start the state database's writer thread")?;
        let durable = Durable {
            db,
            path,
            next_seq: AtomicU64::new(next),
            writer: Some(writer),
            thread: Some(thread),
        };
        Ok((durable, records))
    }

    /// The start order of a new child.
    pub(crate) fn next_seq(&self) -> u64 {
        self.next_seq.fetch_add(1, Ordering::Relaxed)
    }

    /// Hands `change` to the writer; resolves once it is on disk.
    fn commit(&self, change: Change) -> impl Future<Output = Result<()>> + use<> {
        let (done, committed) = oneshot::channel();
        let sent = self.writer.as_ref().map(|w| {
            w.send(Job {
                change,
                done: Some(done),
            })
        });
        let path = self.path.clone();
        async move {
            if !matches!(sent, Some(Ok(()))) {
                return Err(anyhow!("the state database {} is closed", path.display()));
            }
            match committed.await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(why)) => Err(anyhow!(why)),
                Err(_) => Err(anyhow!("the state database {} is closed", path.display())),
            }
        }
    }

    /// Stores a child; resolves once it is on disk.
    pub(crate) fn put(&self, record: &Record) -> impl Future<Output = Result<()>> + use<> {
        self.commit(Change::Put(record.spec.id.clone(), record.encode()))
    }

    /// Forgets a child and its state; resolves once that is on disk.
    pub(crate) fn remove(&self, id: &str) -> impl Future<Output = Result<()>> + use<> {
        self.commit(Change::Remove(id.to_string()))
    }

    /// Stores a child's state; resolves once it is on disk.
    pub(crate) fn put_state(
        &self,
        id: &str,
        state: Vec<u8>,
    ) -> impl Future<Output = Result<()>> + use<> {
        self.commit(Change::PutState(id.to_string(), state))
    }

    /// Forgets a child's state (not its record); resolves once that is on
    /// disk.
    pub(crate) fn remove_state(&self, id: &str) -> impl Future<Output = Result<()>> + use<> {
        self.commit(Change::RemoveState(id.to_string()))
    }

    /// Records whether a child is `failed`. Not waited for, and not synced
    /// on its own: it reaches the disk with the next commit (losing it only
    /// means the child is tried once more after a crash).
    pub(crate) fn set_failed(&self, id: &str, failed: Option<ExitReason>) {
        if let Some(w) = &self.writer {
            let change = Change::SetFailed(id.to_string(), failed);
            let _ = w.send(Job { change, done: None });
        }
    }

    /// A child's last stored state, if any (a blocking read).
    pub(crate) fn state(&self, id: &str) -> Result<Option<Vec<u8>>> {
        let context = || format!("cannot read the state database {}", self.path.display());
        let txn = self.db.begin_read().with_context(context)?;
        let table = txn.open_table(STATE).with_context(context)?;
        Ok(table
            .get(id)
            .with_context(context)?
            .map(|v| v.value().to_vec()))
    }
}

impl Drop for Durable {
    /// Lets the writer finish what was handed to it, and releases the
    /// database (its lock) before the host is gone.
    fn drop(&mut self) {
        drop(self.writer.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn load(db: &Database, path: &Path) -> Result<Vec<Record>> {
    let context = || format!("cannot read the state database {}", path.display());
    // Creating the tables on first use keeps reads simple.
    let txn = db.begin_write().with_context(context)?;
    txn.open_table(CHILDREN).with_context(context)?;
    txn.open_table(STATE).with_context(context)?;
    txn.commit().with_context(context)?;
    let txn = db.begin_read().with_context(context)?;
    let table = txn.open_table(CHILDREN).with_context(context)?;
    let mut records = Vec::new();
    for entry in table.iter().with_context(context)? {
        let (id, value) = entry.with_context(context)?;
        records.push(Record::decode(id.value(), value.value())?);
    }
    records.sort_by_key(|r| r.seq);
    Ok(records)
}

/// The writer thread: takes what is waiting (at most [`BATCH`] changes),
/// commits it in one transaction, answers every waiter, and goes on until
/// the `Durable` is dropped.
fn write_loop(db: &Database, path: &Path, jobs: mpsc::Receiver<Job>) {
    while let Ok(first) = jobs.recv() {
        let mut batch = vec![first];
        while batch.len() < BATCH {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let result = apply(db, &batch).map_err(|e| {
            let why = format!("cannot write the state database {}: {e:#}", path.display());
            tracing::error!("{why}");
            why
        });
        for (i, job) in batch.into_iter().enumerate() {
            if let Some(done) = job.done {
                let outcome = match &result {
                    Err(why) => Err(why.clone()),
                    Ok(skipped) if skipped.contains(&i) => Err(
                        "the child is not stored: its start is not acknowledged yet, or it was removed"
                            .to_string(),
                    ),
                    Ok(_) => Ok(()),
                };
                let _ = done.send(outcome);
            }
        }
    }
}

/// Commits `batch` in one transaction; the positions of the changes that
/// did not apply (a state for a child with no record).
fn apply(db: &Database, batch: &[Job]) -> Result<Vec<usize>> {
    let mut skipped = Vec::new();
    let mut txn = db.begin_write()?;
    // Only `set_failed` alone may skip the fsync.
    let durability = if batch.iter().all(|j| j.done.is_none()) {
        Durability::None
    } else {
        Durability::Immediate
    };
    txn.set_durability(durability).map_err(|e| anyhow!("{e}"))?;
    {
        let mut children = txn.open_table(CHILDREN)?;
        let mut state = txn.open_table(STATE)?;
        for (i, job) in batch.iter().enumerate() {
            match &job.change {
                Change::Put(id, bytes) => {
                    // A new child of an id starts with no state.
                    children.insert(id.as_str(), bytes.as_slice())?;
                    state.remove(id.as_str())?;
                }
                Change::Remove(id) => {
                    children.remove(id.as_str())?;
                    state.remove(id.as_str())?;
                }
                Change::PutState(id, bytes) => {
                    // A child not stored yet, or removed meanwhile, keeps
                    // no state; its waiter hears so.
                    if children.get(id.as_str())?.is_some() {
                        state.insert(id.as_str(), bytes.as_slice())?;
                    } else {
                        skipped.push(i);
                    }
                }
                Change::RemoveState(id) => {
                    state.remove(id.as_str())?;
                }
                Change::SetFailed(id, failed) => {
                    let current = children
                        .get(id.as_str())?
                        .map(|v| Record::decode(id, v.value()));
                    if let Some(mut record) = current.transpose()? {
                        record.failed = failed.clone();
                        let bytes = record.encode();
                        children.insert(id.as_str(), bytes.as_slice())?;
                    }
                }
            }
        }
    }
    txn.commit()?;
    Ok(skipped)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str, seq: u64) -> Record {
        Record {
            spec: ChildSpec::new(id, "chaos", &serde_json::json!({"n": seq}))
                .restart(Restart::Transient),
            seq,
            failed: None,
        }
    }

    #[tokio::test]
    async fn records_round_trip_and_come_back_in_start_order() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (db, loaded) = Durable::open(dir.path()).unwrap();
            assert!(loaded.is_empty());
            let puts: Vec<_> = [("b", 1), ("a", 2), ("c", 0)]
                .into_iter()
                .map(|(id, seq)| db.put(&record(id, seq)))
                .collect();
            for put in puts {
                put.await.unwrap();
            }
            db.put_state("a", b"state of a".to_vec()).await.unwrap();
            db.put_state("c", b"state of c".to_vec()).await.unwrap();
            assert_eq!(db.state("a").unwrap().as_deref(), Some(&b"state of a"[..]));
            db.remove("a").await.unwrap();
            assert_eq!(db.state("a").unwrap(), None, "a stop forgets the state");
            db.set_failed("b", Some(ExitReason::Trap("x".into())));
            let mut lazy = record("d", 3);
            lazy.spec.activate = Activate::Lazy;
            db.put(&lazy).await.unwrap();
            // No state for a child that is not stored, and the writer says so.
            assert!(db.put_state("gone", b"x".to_vec()).await.is_err());
            assert_eq!(db.state("gone").unwrap(), None);
            db.put_state("d", b"state of d".to_vec()).await.unwrap();
            db.remove_state("d").await.unwrap();
            assert_eq!(
                db.state("d").unwrap(),
                None,
                "the record stays, the state goes"
            );
        }
        let (db, loaded) = Durable::open(dir.path()).unwrap();
        let ids: Vec<_> = loaded.iter().map(|r| r.spec.id.as_str()).collect();
        assert_eq!(ids, ["c", "b", "d"]);
        assert_eq!(loaded[1].failed, Some(ExitReason::Trap("x".into())));
        assert_eq!(loaded[0], record("c", 0));
        assert_eq!(loaded[2].spec.activate, Activate::Lazy);
        assert_eq!(db.state("c").unwrap().as_deref(), Some(&b"state of c"[..]));
        assert_eq!(db.next_seq(), 4);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn five_thousand_starts_at_once_are_all_stored() {
        let dir = tempfile::tempdir().unwrap();
        let (db, _) = Durable::open(dir.path()).unwrap();
        let puts: Vec<_> = (0..5_000)
            .map(|i| db.put(&record(&format!("c{i}"), i)))
            .collect();
        for put in puts {
            put.await.unwrap();
        }
        drop(db);
        let (_, loaded) = Durable::open(dir.path()).unwrap();
        assert_eq!(loaded.len(), 5_000);
    }

    #[test]
    fn a_second_host_on_the_same_data_dir_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let _first = Durable::open(dir.path()).unwrap();
        let err = Durable::open(dir.path()).err().unwrap().to_string();
        assert!(err.contains("in use by another wasmvisor host"), "{err}");
    }

    #[test]
    fn a_damaged_database_is_an_error_not_an_empty_start() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE), vec![0x5a; 64 * 1024]).unwrap();
        let err = Durable::open(dir.path()).err().unwrap().to_string();
        assert!(err.contains("move it aside"), "{err}");
    }
}
