//! Durable children: the spec of every dynamic child (id, plugin, init args,
//! restart policy) and its supervisor state live in an embedded database
//! (redb) under the data dir, so a host that restarts, even after `kill -9`,
//! brings them back. A start or a stop is committed (fsync) before it is
//! acknowledged.

use crate::types::{ChildSpec, ExitReason, Restart};
use anyhow::{Context, Result, anyhow};
use bytes::Bytes;
use redb::{Database, DatabaseError, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// id → record (see [`Record::encode`]).
const CHILDREN: TableDefinition<&str, &[u8]> = TableDefinition::new("children");

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
            },
            seq: meta.seq,
            failed: meta.failed,
        })
    }
}

/// The database of durable children.
pub(crate) struct Durable {
    db: Database,
    path: PathBuf,
    next_seq: AtomicU64,
}

impl Durable {
    /// Opens (or creates) `<data_dir>/state.redb`. A database that another
    /// host holds, or that is damaged, is an error that says so: the host
    /// never starts silently empty.
    pub(crate) fn open(data_dir: &Path) -> Result<(Durable, Vec<Record>)> {
        std::fs::create_dir_all(data_dir)
            .with_context(|| format!("cannot create the data dir {}", data_dir.display()))?;
        let path = data_dir.join(FILE);
        let db = Database::create(&path).map_err(|e| match e {
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
        let durable = Durable {
            db,
            path,
            next_seq: AtomicU64::new(0),
        };
        let records = durable.load()?;
        let next = records.iter().map(|r| r.seq + 1).max().unwrap_or(0);
        durable.next_seq.store(next, Ordering::Relaxed);
        Ok((durable, records))
    }

    fn load(&self) -> Result<Vec<Record>> {
        let context = || format!("cannot read the state database {}", self.path.display());
        // Creating the table on first use keeps reads simple.
        let txn = self.db.begin_write().with_context(context)?;
        txn.open_table(CHILDREN).with_context(context)?;
        txn.commit().with_context(context)?;
        let txn = self.db.begin_read().with_context(context)?;
        let table = txn.open_table(CHILDREN).with_context(context)?;
        let mut records = Vec::new();
        for entry in table.iter().with_context(context)? {
            let (id, value) = entry.with_context(context)?;
            records.push(Record::decode(id.value(), value.value())?);
        }
        records.sort_by_key(|r| r.seq);
        Ok(records)
    }

    /// The start order of a new child.
    pub(crate) fn next_seq(&self) -> u64 {
        self.next_seq.fetch_add(1, Ordering::Relaxed)
    }

    fn write(
        &self,
        durability: Durability,
        f: impl FnOnce(&mut redb::Table<&str, &[u8]>) -> Result<()>,
    ) -> Result<()> {
        let context = || format!("cannot write the state database {}", self.path.display());
        let mut txn = self.db.begin_write().with_context(context)?;
        txn.set_durability(durability)
            .map_err(|e| anyhow!("{e}"))
            .with_context(context)?;
        {
            let mut table = txn.open_table(CHILDREN).with_context(context)?;
            f(&mut table)?;
        }
        txn.commit().with_context(context)
    }

    /// Stores a child, on disk before it returns.
    pub(crate) fn put(&self, record: &Record) -> Result<()> {
        let bytes = record.encode();
        self.write(Durability::Immediate, |t| {
            t.insert(record.spec.id.as_str(), bytes.as_slice())?;
            Ok(())
        })
    }

    /// Forgets a child, on disk before it returns.
    pub(crate) fn remove(&self, id: &str) -> Result<()> {
        self.write(Durability::Immediate, |t| {
            t.remove(id)?;
            Ok(())
        })
    }

    /// Records whether a child is `failed`. Not synced: it reaches the disk
    /// with the next start or stop (losing it only means the child is tried
    /// once more after a crash).
    pub(crate) fn set_failed(&self, id: &str, failed: Option<ExitReason>) -> Result<()> {
        self.write(Durability::None, |t| {
            let current = t.get(id)?.map(|v| Record::decode(id, v.value()));
            if let Some(mut record) = current.transpose()? {
                record.failed = failed;
                let bytes = record.encode();
                t.insert(id, bytes.as_slice())?;
            }
            Ok(())
        })
    }
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

    #[test]
    fn records_round_trip_and_come_back_in_start_order() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (db, loaded) = Durable::open(dir.path()).unwrap();
            assert!(loaded.is_empty());
            for (id, seq) in [("b", 1), ("a", 2), ("c", 0)] {
                db.put(&record(id, seq)).unwrap();
            }
            db.remove("a").unwrap();
            db.set_failed("b", Some(ExitReason::Trap("x".into())))
                .unwrap();
            db.put(&record("d", 3)).unwrap();
        }
        let (db, loaded) = Durable::open(dir.path()).unwrap();
        let ids: Vec<_> = loaded.iter().map(|r| r.spec.id.as_str()).collect();
        assert_eq!(ids, ["c", "b", "d"]);
        assert_eq!(loaded[1].failed, Some(ExitReason::Trap("x".into())));
        assert_eq!(loaded[0], record("c", 0));
        assert_eq!(db.next_seq(), 4);
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
