//! Layer 4, where children are found: the registry (unique ids to
//! addresses) and topics (publish/subscribe). A registry lookup answers the
//! same address before and after a restart or a reload; only a child that
//! is removed frees its id.

mod topics;

pub(crate) use topics::Topics;

use crate::child::Cell;
use dashmap::DashMap;
use dashmap::mapref::entry::Entry;
use std::sync::Arc;

#[derive(Default)]
pub(crate) struct Registry {
    cells: DashMap<Arc<str>, Arc<Cell>>,
}

impl Registry {
    /// Registers `cell` under its id unless the id is taken.
    pub(crate) fn insert_new(&self, cell: Arc<Cell>) -> Result<(), Arc<Cell>> {
        match self.cells.entry(cell.id.clone()) {
            Entry::Occupied(existing) => Err(existing.get().clone()),
            Entry::Vacant(slot) => {
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
            .remove_if(&cell.id, |_, current| Arc::ptr_eq(current, cell))
            .is_some()
    }

    pub(crate) fn all(&self) -> Vec<Arc<Cell>> {
        self.cells.iter().map(|e| e.value().clone()).collect()
    }

    pub(crate) fn len(&self) -> usize {
        self.cells.len()
    }
}
