//! Where a core instance keeps the `VMFuncRef`s of its escaped functions.
//!
//! `VMOffsets` lays one out in the `VMContext` for every escaped function
//! (every function placed in a table, exported or named by `ref.func`), 32
//! bytes each, and the startup function's after them. A Rust guest has a
//! hundred or more such functions, and only the few that are exported or
//! called indirectly are ever asked for. JIT code never addresses these
//! slots through the `VMContext`: every reference to one is made by
//! `Instance::get_func_ref` (and the startup function's by
//! `Instance::get_start_func_ref`). The vendored `wasmtime-environ` lays
//! them out at the end of the `VMContext`, so the instance's allocation
//! stops where they begin, and each one is boxed the first time it is asked
//! for: the instance then holds only the ones in use.

use crate::runtime::vm::SendSyncPtr;
use crate::runtime::vm::vmcontext::VMFuncRef;
use alloc::boxed::Box;
use alloc::vec::Vec;
use core::mem::MaybeUninit;
use core::ptr::NonNull;
use wasmtime_environ::{HostPtr, VMOffsets};

/// The key of the startup function's `VMFuncRef` among the boxed ones; the
/// others use their `FuncRefIndex`, which is below the number of escaped
/// functions.
pub(super) const STARTUP: u32 = u32::MAX;

/// A core instance's `VMFuncRef`s.
pub(super) enum FuncRefs {
    /// In the `VMContext`, where `VMOffsets` places them.
    InVmctx,
    /// Boxed one by one on first request, sorted by key. A box is never
    /// moved or freed before the instance is, so a pointer to it stays valid
    /// for as long as a table or another instance may hold it.
    Boxed(Vec<(u32, SendSyncPtr<VMFuncRef>)>),
}

impl FuncRefs {
    /// Whether the `VMFuncRef`s of an instance with these offsets are boxed:
    /// they are when they are the end of its `VMContext` (the startup
    /// function's after them), as the vendored `wasmtime-environ` lays them
    /// out; with upstream's layout the runtime data follows them.
    pub(super) fn boxed(offsets: &VMOffsets<HostPtr>) -> bool {
        let data_end = offsets.vmctx_runtime_data_lengths_begin() + 4 * offsets.num_runtime_data;
        offsets.vmctx_func_refs_begin() >= data_end
    }

    /// The storage for an instance with these offsets.
    pub(super) fn new(offsets: &VMOffsets<HostPtr>) -> FuncRefs {
        if Self::boxed(offsets) {
            FuncRefs::Boxed(Vec::new())
        } else {
            FuncRefs::InVmctx
        }
    }

    /// The bytes of `VMContext` to allocate for an instance with these
    /// offsets.
    pub(super) fn vmctx_size(offsets: &VMOffsets<HostPtr>) -> u32 {
        if Self::boxed(offsets) {
            offsets.vmctx_func_refs_begin()
        } else {
            offsets.size_of_vmctx()
        }
    }

    /// The boxed slot for `key`, allocated (uninitialized) if it is the
    /// first request for it; `None` if the `VMFuncRef`s are in the
    /// `VMContext`.
    pub(super) fn boxed_slot(&mut self, key: u32) -> Option<NonNull<VMFuncRef>> {
        let FuncRefs::Boxed(slots) = self else {
            return None;
        };
        match slots.binary_search_by_key(&key, |(k, _)| *k) {
            Ok(i) => Some(slots[i].1.as_non_null()),
            Err(i) => {
                let slot = Box::into_raw(Box::new(MaybeUninit::<VMFuncRef>::uninit()));
                // SAFETY: `Box::into_raw` never returns null.
                let slot = unsafe { NonNull::new_unchecked(slot.cast::<VMFuncRef>()) };
                slots.insert(i, (key, SendSyncPtr::new(slot)));
                Some(slot)
            }
        }
    }
}

impl Drop for FuncRefs {
    fn drop(&mut self) {
        if let FuncRefs::Boxed(slots) = self {
            for (_, slot) in slots.drain(..) {
                // SAFETY: every slot was made by `Box::into_raw` in
                // `boxed_slot` with this type, and the instance that handed
                // out pointers to it is being dropped.
                drop(unsafe { Box::from_raw(slot.as_ptr().cast::<MaybeUninit<VMFuncRef>>()) });
            }
        }
    }
}
