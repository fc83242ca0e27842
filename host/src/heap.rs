//! The process's memory allocator: mimalloc instead of the system's (the
//! default feature `mimalloc`).
//!
//! Two costs of glibc's malloc showed in the benchmark. Each tokio worker
//! allocates from its own arena, and glibc grows such an arena one page at
//! a time with an `mprotect`; a spawn keeps about 13 KiB of host state, so
//! every spawn paid three or four of those calls, each taking the
//! memory-map lock that the other core's page faults also need. And every
//! message allocates and frees a little, which mimalloc's per-thread free
//! lists do more cheaply. Measured in BENCHMARKS.md ("Allocator").
//!
//! mimalloc is built without transparent huge pages (feature `no_thp`): it
//! would otherwise ask for them on its arenas, and a 2 MiB page per touched
//! region took an idle host from 55 to 170 MiB and made spawns slower.
//!
//! Freed memory stays with the allocator for reuse until [`give_back`]
//! returns it, as the janitor does once churn settles; a compile, whose
//! memory lives on the compiler's threads, only [`purge`]s. Hosts should
//! run on [`runtime`], as in the `wasmvisor` binary, or on a runtime that
//! calls [`on_thread_park`] from its `on_thread_park` hook; otherwise each
//! worker thread keeps the free pages of its own heap.

#[cfg(feature = "mimalloc")]
mod imp {
    use std::cell::Cell;
    use std::sync::atomic::{AtomicU64, Ordering};

    #[global_allocator]
    static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

    /// Bumped by `give_back`; every thread collects its heap once per bump.
    static ASKED: AtomicU64 = AtomicU64::new(0);

    std::thread_local! {
        static COLLECTED: Cell<u64> = const { Cell::new(0) };
    }

    /// Collects this thread's heap and purges every arena now rather than
    /// after mimalloc's purge delay.
    fn collect() {
        // SAFETY: `mi_collect` takes only mimalloc's own locks and may be
        // called from any thread at any time.
        unsafe { libmimalloc_sys::mi_collect(true) };
    }

    pub(crate) fn give_back() {
        let asked = ASKED.fetch_add(1, Ordering::Relaxed) + 1;
        COLLECTED.with(|c| c.set(asked));
        collect();
    }

    pub(crate) fn purge() {
        collect();
    }

    pub(crate) fn on_thread_park() {
        let asked = ASKED.load(Ordering::Relaxed);
        if COLLECTED.with(|c| c.replace(asked)) != asked {
            collect();
        }
    }
}

#[cfg(not(feature = "mimalloc"))]
mod imp {
    pub(crate) fn purge() {
        give_back();
    }

    pub(crate) fn give_back() {
        // SAFETY: malloc_trim takes only the allocator's own locks and may
        // be called from any thread at any time.
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        unsafe {
            libc::malloc_trim(0);
        }
    }

    pub(crate) fn on_thread_park() {}
}

/// Returns the free memory the allocator holds to the system. mimalloc
/// gives freed pages back after a delay, and only while some thread
/// allocates; a page whose blocks another thread freed stays with the thread
/// that allocated it until that thread looks. So this collects the calling
/// thread's heap, purges every arena, and asks every other thread to collect
/// its own heap when it next parks.
pub(crate) fn give_back() {
    imp::give_back();
}

/// Returns what the allocator holds free outside other threads' own heaps,
/// without asking those threads to collect: after a compile, whose freed
/// pages are not the workers', and before the benchmark's density workload,
/// which reads RSS and must not see it shrink meanwhile.
pub(crate) fn purge() {
    imp::purge();
}

/// For a tokio runtime's `on_thread_park` hook: collects this thread's heap
/// if [`give_back`] asked since it last did; one atomic load otherwise.
pub fn on_thread_park() {
    imp::on_thread_park();
}

/// A multi-threaded tokio runtime, one worker per core, with
/// [`on_thread_park`] installed: the runtime the `wasmvisor` binary runs
/// hosts on.
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .on_thread_park(on_thread_park)
        .build()
}
