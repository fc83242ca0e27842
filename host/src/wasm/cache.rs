//! Compiled plugins on disk, and the in-memory incremental compilation
//! cache.
//!
//! A compiled artifact is stored in the cache folder (`[cache] dir`, by
//! default `cache` in the data dir) as
//! `<content sha256>-<engine key>.cwasm`, where the engine key covers
//! the wasmtime version and every setting that affects code generation, so a
//! host restart loads unchanged plugins in a fraction of a millisecond
//! instead of recompiling them. Only the host writes these files (the folder
//! is created private to the user), each ends with a SHA-256 of its
//! contents that is checked before the artifact is handed to wasmtime, and
//! wasmtime itself refuses an artifact made for another engine
//! configuration. Anything that fails a check is deleted and recompiled.

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};
use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use wasmtime::Engine;
use wasmtime::component::Component;

const CHECKSUM_LEN: usize = 32;

/// Compiled artifacts of one engine in the cache folder.
pub(crate) struct ArtifactCache {
    dir: PathBuf,
    engine_key: String,
}

/// Tells apart the temporary files of concurrent writers in one process.
static WRITES: AtomicU64 = AtomicU64::new(0);

impl ArtifactCache {
    pub(crate) fn open(dir: &Path, engine: &Engine) -> Result<ArtifactCache> {
        let dir = dir.to_path_buf();
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create the compile cache {}", dir.display()))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let private = std::fs::Permissions::from_mode(0o700);
            std::fs::set_permissions(&dir, private)
                .with_context(|| format!("cannot make {} private", dir.display()))?;
        }
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let engine_key = format!("{:016x}", hasher.finish());
        Ok(ArtifactCache { dir, engine_key })
    }

    fn path(&self, content_hash: &str) -> PathBuf {
        self.dir
            .join(format!("{content_hash}-{}.cwasm", self.engine_key))
    }

    /// The cached compilation of the plugin whose content hash is
    /// `content_hash`, if there is a valid one.
    pub(crate) fn load(&self, engine: &Engine, content_hash: &str) -> Option<Component> {
        let path = self.path(content_hash);
        let bytes = std::fs::read(&path).ok()?;
        let checked = bytes.len() > CHECKSUM_LEN && {
            let (body, sum) = bytes.split_at(bytes.len() - CHECKSUM_LEN);
            Sha256::digest(body).as_slice() == sum
        };
        if !checked {
            tracing::warn!(
                "discarding the corrupt compiled artifact {}",
                path.display()
            );
            let _ = std::fs::remove_file(&path);
            return None;
        }
        let body = &bytes[..bytes.len() - CHECKSUM_LEN];
        // SAFETY: the artifact was written by `store` below from
        // `Component::serialize` (the checksum proves it is intact), and
        // wasmtime checks that it was made by a compatible engine.
        match unsafe { Component::deserialize(engine, body) } {
            Ok(component) => Some(component),
            Err(e) => {
                tracing::warn!("discarding the compiled artifact {}: {e}", path.display());
                let _ = std::fs::remove_file(&path);
                None
            }
        }
    }

    /// Stores a compilation; a failure only costs a recompile next time.
    pub(crate) fn store(&self, content_hash: &str, component: &Component) {
        let result = (|| -> Result<()> {
            let mut bytes = component.serialize().map_err(anyhow::Error::from)?;
            let sum = Sha256::digest(&bytes);
            bytes.extend_from_slice(&sum);
            let path = self.path(content_hash);
            let write = WRITES.fetch_add(1, Ordering::Relaxed);
            let tmp = path.with_extension(format!("tmp{}-{write}", std::process::id()));
            std::fs::write(&tmp, &bytes)?;
            std::fs::rename(&tmp, &path)?;
            Ok(())
        })();
        if let Err(e) = result {
            tracing::warn!(
                "cannot store a compiled artifact in {}: {e:#}",
                self.dir.display()
            );
        }
    }
}

/// Deletes the artifacts in `dir` (made by any engine) of plugin versions
/// not in `keep` (content hashes), oldest first, until the folder holds at
/// most `max_bytes` of them. The current versions' artifacts stay whatever
/// their size. Returns what it deleted.
pub(crate) fn evict(dir: &Path, keep: &HashSet<String>, max_bytes: u64) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut total = 0;
    let mut candidates = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let Some((hash, _engine)) = name.strip_suffix(".cwasm").and_then(|n| n.split_once('-'))
        else {
            continue;
        };
        let Ok(meta) = entry.metadata() else { continue };
        total += meta.len();
        if !keep.contains(hash) {
            let modified = meta.modified().unwrap_or(std::time::UNIX_EPOCH);
            candidates.push((modified, meta.len(), path));
        }
    }
    candidates.sort();
    let mut deleted = Vec::new();
    for (_, size, path) in candidates {
        if total <= max_bytes {
            break;
        }
        if std::fs::remove_file(&path).is_ok() {
            total -= size;
            deleted.push(path);
        }
    }
    deleted
}

/// Cranelift's incremental compilation cache, in memory: a new version of a
/// plugin usually changes a few functions, and the unchanged ones are not
/// compiled again. Bounded; once full, new entries are not kept.
#[derive(Debug, Default)]
pub(crate) struct IncrementalCache {
    entries: Mutex<Entries>,
}

#[derive(Debug, Default)]
struct Entries {
    map: HashMap<Vec<u8>, Vec<u8>>,
    bytes: usize,
}

/// The most compiled code the incremental cache holds.
const INCREMENTAL_CACHE_BYTES: usize = 64 * 1024 * 1024;

impl wasmtime::CacheStore for IncrementalCache {
    fn get(&self, key: &[u8]) -> Option<Cow<'_, [u8]>> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.map.get(key).map(|v| Cow::Owned(v.clone()))
    }

    fn insert(&self, key: &[u8], value: Vec<u8>) -> bool {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let size = key.len() + value.len();
        if entries.bytes + size > INCREMENTAL_CACHE_BYTES {
            return false;
        }
        entries.bytes += size;
        entries.map.insert(key.to_vec(), value);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmtime::CacheStore;

    #[test]
    fn eviction_keeps_current_versions_and_deletes_the_oldest_others() {
        let dir = tempfile::tempdir().unwrap();
        let file = |name: &str, size: usize, age_s: u64| {
            let path = dir.path().join(name);
            std::fs::write(&path, vec![0u8; size]).unwrap();
            let when = std::time::SystemTime::now() - std::time::Duration::from_secs(age_s);
            std::fs::File::options()
                .write(true)
                .open(&path)
                .unwrap()
                .set_modified(when)
                .unwrap();
        };
        file("aaa-k1.cwasm", 100, 30); // current, oldest
        file("bbb-k1.cwasm", 100, 20); // gone, older
        file("ccc-k2.cwasm", 100, 10); // gone, newer (another engine)
        file("notes.txt", 1000, 40); // not an artifact
        let keep: HashSet<String> = ["aaa".to_string()].into();
        let deleted = evict(dir.path(), &keep, 250);
        assert_eq!(deleted, vec![dir.path().join("bbb-k1.cwasm")]);
        let deleted = evict(dir.path(), &keep, 0);
        assert_eq!(deleted, vec![dir.path().join("ccc-k2.cwasm")]);
        assert!(dir.path().join("aaa-k1.cwasm").exists());
        assert!(dir.path().join("notes.txt").exists());
    }

    #[test]
    fn the_incremental_cache_is_bounded() {
        let cache = IncrementalCache::default();
        assert!(cache.insert(b"a", vec![0; 16]));
        assert_eq!(cache.get(b"a").as_deref(), Some(&[0u8; 16][..]));
        assert!(!cache.insert(b"b", vec![0; INCREMENTAL_CACHE_BYTES]));
        assert!(cache.get(b"b").is_none());
    }
}
