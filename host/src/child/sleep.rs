//! Hibernation: what a child without an instance keeps, how its next message
//! brings its task back, and which idle child gives its instance up when the
//! pool is full (OTP's `hibernate`, Orleans' deactivation, Akka's
//! passivation).

use super::address::Cell;
use super::control::Control;
use super::mailbox::Sleeper;
use super::{Child, Env, Parent};
use crate::types::ChildError;
use crate::wasm::{Incarnation, Version};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Instant;
use tokio::sync::oneshot;

/// What a child without an instance resumes from.
pub(crate) enum Asleep {
    /// It hibernated: its wake *continues* it (`restore(state)`, no
    /// `init`), on its plugin's current version (or `version`, the one it
    /// hibernated on, if the current one refuses the state). Its
    /// incarnation is kept, or `None` when it held nothing (a fresh one of
    /// the same number is made at the wake).
    Hibernated {
        version: Arc<Version>,
        state: Vec<u8>,
        incarnation: Option<Box<Incarnation>>,
    },
    /// It has no state in memory: its wake *starts* it (`init(args)`), then
    /// restores its stored state if the state database has one. A lazily
    /// started child, or one brought back from the state database.
    Unstarted,
}

/// A hibernated child's task, put away in its mailbox: everything the task
/// needs to run again, and what to resume from.
pub(super) struct Dormant {
    pub(super) env: Arc<Env>,
    /// Weak: the mailbox that holds this belongs to the cell.
    pub(super) cell: Weak<Cell>,
    pub(super) parent: Box<dyn Parent>,
    pub(super) config: bool,
    pub(super) asleep: Asleep,
}

impl Sleeper for Dormant {
    /// Brings the task back, on the host's runtime (the waker may be any
    /// thread).
    fn wake(self: Box<Self>) {
        let Dormant {
            env,
            cell,
            parent,
            config,
            asleep,
        } = *self;
        let Some(cell) = cell.upgrade() else {
            return;
        };
        let child = Child::new(&env, cell, parent, config);
        env.runtime.spawn(child.woken(asleep));
    }
}

/// The children serving now whose plugin lets them hibernate, for a full
/// pool to pick the least recently used idle one from.
#[derive(Default)]
pub(crate) struct Awake {
    cells: Mutex<HashMap<usize, Weak<Cell>>>,
}

impl Awake {
    fn cells(&self) -> std::sync::MutexGuard<'_, HashMap<usize, Weak<Cell>>> {
        self.cells.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn insert(&self, cell: &Arc<Cell>) {
        self.cells()
            .insert(Arc::as_ptr(cell) as usize, Arc::downgrade(cell));
    }

    pub(super) fn remove(&self, cell: &Cell) {
        self.cells().remove(&(cell as *const Cell as usize));
    }

    /// Asks the least recently active idle children other than `except`,
    /// one at a time and at most [`EVICT_TRIES`] of them, to hibernate;
    /// resolves to whether one did. `false` at once when none is idle.
    ///
    /// A child that looks idle may be inside a callback (waiting, say, on a
    /// call to `except`), so each is given [`EVICT_WAIT`] to answer: two
    /// children evicting each other cannot wait for ever.
    pub(super) async fn evict_one(&self, except: &Cell) -> bool {
        let mut idle: Vec<(u64, Arc<Cell>)> = self
            .cells()
            .values()
            .filter_map(Weak::upgrade)
            .filter(|c| !std::ptr::eq(&**c, except) && c.mailbox.is_empty())
            .map(|c| (c.last_active.load(std::sync::atomic::Ordering::Relaxed), c))
            .collect();
        let tries = idle.len().min(EVICT_TRIES);
        if tries == 0 {
            return false;
        }
        idle.select_nth_unstable_by_key(tries - 1, |(at, _)| *at);
        idle.truncate(tries);
        idle.sort_by_key(|(at, _)| *at);
        for (_, victim) in idle {
            let (done, hibernated) = oneshot::channel();
            victim.signal(Control::Hibernate { done });
            if let Ok(Ok(Ok(()))) = tokio::time::timeout(EVICT_WAIT, hibernated).await {
                return true;
            }
        }
        false
    }
}

/// How many idle children a wake that finds the pool full asks to
/// hibernate before its calls hear `unavailable`.
const EVICT_TRIES: usize = 3;
/// How long it waits for each.
const EVICT_WAIT: std::time::Duration = std::time::Duration::from_millis(100);

/// The host's millisecond clock, for `last_active`.
pub(crate) struct Clock(Instant);

impl Default for Clock {
    fn default() -> Self {
        Clock(Instant::now())
    }
}

impl Clock {
    pub(crate) fn now_ms(&self) -> u64 {
        self.0.elapsed().as_millis() as u64
    }
}

/// Why a child could not hibernate, as an operator hears it.
pub(super) fn refused(why: impl Into<String>) -> Result<(), ChildError> {
    Err(ChildError::CannotHibernate(why.into()))
}
