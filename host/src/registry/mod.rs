//! Layer 4, where children are found: the registry (unique ids to
//! addresses) and topics (publish/subscribe). A registry lookup answers the
//! same address before and after a restart or a reload; only a child that
//! is removed frees its id.

mod topics;

pub(crate) use topics::Topics;

use crate::child::Cell;
use dashmap::DashMap;
use dashmap::mapref::entry::Entry;
use std::collections::BTreeSet;
use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard};

/// Ids to cells for lookups, plus the ids in order for listing a page at a
/// time: with a million children, sorting them all for every page would be
/// the cost of `ps`.
#[derive(Default)]
pub(crate) struct Registry {
    cells: DashMap<Arc<str>, Arc<Cell>>,
    order: Mutex<BTreeSet<Arc<str>>>,
}

impl Registry {
    /// Registers `cell` under its id unless the id is taken.
    pub(crate) fn insert_new(&self, cell: Arc<Cell>) -> Result<(), Arc<Cell>> {
        match self.cells.entry(cell.id.clone()) {
            Entry::Occupied(existing) => Err(existing.get().clone()),
            Entry::Vacant(slot) => {
                // Under the entry's lock, so that the index never disagrees
                // with the map for long enough to matter to a page.
                self.order().insert(cell.id.clone());
                slot.insert(cell);
                Ok(())
            }
        }
    }

    pub(crate) fn get(&self, id: &str) -> Option<Arc<Cell>> {
        self.cells.get(id).map(|c| c.value().clone())
    }

    /// Removes `cell`, but only if the id still names that very cell: a new
    /// child that took the id in the meantime stays.
    pub(crate) fn remove(&self, cell: &Arc<Cell>) -> bool {
        self.cells
            .remove_if(&cell.id, |_, current| {
                let same = Arc::ptr_eq(current, cell);
                if same {
                    self.order().remove(&cell.id);
                }
                same
            })
            .is_some()
    }

    pub(crate) fn all(&self) -> Vec<Arc<Cell>> {
        self.cells.iter().map(|e| e.value().clone()).collect()
    }

    /// Calls `f` on every cell, in no order, without collecting them.
    pub(crate) fn for_each(&self, mut f: impl FnMut(&Arc<Cell>)) {
        for entry in self.cells.iter() {
            f(entry.value());
        }
    }

    /// At most `limit` cells in id order, starting after `after`.
    pub(crate) fn page(&self, after: Option<&str>, limit: usize) -> Vec<Arc<Cell>> {
        let ids: Vec<Arc<str>> = {
            let order = self.order();
            let start = match after {
                Some(a) => Bound::Excluded(a),
                None => Bound::Unbounded,
            };
            order
                .range::<str, _>((start, Bound::Unbounded))
                .take(limit)
                .cloned()
                .collect()
        };
        ids.iter().filter_map(|id| self.get(id)).collect()
    }

    fn order(&self) -> MutexGuard<'_, BTreeSet<Arc<str>>> {
        // A BTreeSet insert or remove cannot be left half-done by a panic
        // elsewhere; a poisoned lock still holds a sound set.
        self.order.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn len(&self) -> usize {
        self.cells.len()
    }
}
