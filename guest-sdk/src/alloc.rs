//! The plugin's one memory allocator, for Rust and for wasi-libc alike.
//!
//! Why not wasi-libc's dlmalloc: at its first `malloc` it claims the whole
//! initial heap (up to the end of the 1 MiB initial memory) and writes a
//! footer at the far end of it. Every instance then touches one page that it
//! never uses, and on the host each touched page is a fresh page of memory:
//! about 3 µs of kernel time and 4 KiB of RSS per instance.
//!
//! Here talc manages the heap, which starts at `__heap_base` and grows one
//! 4 KiB page at a time, into the initial memory first and then by
//! `memory.grow` (`heap.rs`, which holds the logic and its tests). The C
//! allocation functions are defined here too, so that wasi-libc's own
//! allocations (its descriptor table, environment, locale) share this heap
//! and dlmalloc is not linked at all: two allocators over one heap would
//! corrupt each other. This file is only the wasm glue.

use crate::heap::{Blocks, C_ALIGN, Errno, LinearMemory, PageSteps, WASM_PAGE};
use core::alloc::{GlobalAlloc, Layout};
use core::ptr::null_mut;
use talc::cell::TalcSyncCell;
use talc::wasm::WasmBinning;

unsafe extern "C" {
    /// Where the linker put the end of the stack and the static data.
    static __heap_base: u8;
    fn __errno_location() -> *mut i32;
}

/// Memory 0 of this module.
#[derive(Debug)]
struct Memory0;

impl LinearMemory for Memory0 {
    fn heap_base(&self) -> *mut u8 {
        (&raw const __heap_base).cast_mut()
    }

    fn end(&self) -> usize {
        // A full 4 GiB memory ends past what a wasm32 `usize` can name.
        core::arch::wasm32::memory_size::<0>().saturating_mul(WASM_PAGE)
    }

    fn grow(&self, pages: usize) -> bool {
        core::arch::wasm32::memory_grow::<0>(pages) != usize::MAX
    }
}

/// Everything allocates here: Rust through [`Heap`], C through the functions
/// below, in one block format, because C code frees what Rust allocated
/// (wasi-libc frees the strings that the canonical ABI's `cabi_realloc`,
/// Rust's allocator, gave it).
static BLOCKS: Blocks<TalcSyncCell<PageSteps<Memory0>, WasmBinning>> =
    Blocks(TalcSyncCell::new_wasm(PageSteps::new(Memory0)));

/// The Rust global allocator.
struct Heap;

#[global_allocator]
static HEAP: Heap = Heap;

/// A C result: the pointer, or null with `errno` set.
fn c_result(result: Result<*mut u8, Errno>) -> *mut u8 {
    result.unwrap_or_else(|errno| {
        // SAFETY: wasi-libc's errno is a plain global in a single-threaded
        // module.
        unsafe { *__errno_location() = errno as i32 };
        null_mut()
    })
}

// SAFETY: every block comes from talc with its layout recorded in front of
// it, and goes back to talc with that layout.
unsafe impl GlobalAlloc for Heap {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        c_result(unsafe { BLOCKS.alloc(layout.size(), layout.align(), false) })
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        c_result(unsafe { BLOCKS.alloc(layout.size(), layout.align(), true) })
    }

    unsafe fn dealloc(&self, ptr: *mut u8, _: Layout) {
        unsafe { BLOCKS.free(ptr) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, _: Layout, new_size: usize) -> *mut u8 {
        c_result(unsafe { BLOCKS.resize(ptr, new_size) })
    }
}

/// C `malloc`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn malloc(size: usize) -> *mut u8 {
    c_result(unsafe { BLOCKS.alloc(size, C_ALIGN, false) })
}

/// C `calloc`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn calloc(count: usize, size: usize) -> *mut u8 {
    c_result(unsafe { BLOCKS.calloc(count, size) })
}

/// C `free`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn free(ptr: *mut u8) {
    unsafe { BLOCKS.free(ptr) }
}

/// C `realloc`. A size of 0 frees and returns null, as dlmalloc did.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn realloc(ptr: *mut u8, size: usize) -> *mut u8 {
    c_result(unsafe { BLOCKS.realloc(ptr, size) })
}

/// C `aligned_alloc`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn aligned_alloc(align: usize, size: usize) -> *mut u8 {
    c_result(unsafe { BLOCKS.aligned_alloc(align, size) })
}

/// C `posix_memalign`: the error is returned, not put in `errno`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn posix_memalign(out: *mut *mut u8, align: usize, size: usize) -> i32 {
    match unsafe { BLOCKS.posix_memalign(align, size) } {
        Ok(ptr) => {
            // SAFETY: C's contract: `out` is writable.
            unsafe { out.write(ptr) };
            0
        }
        Err(errno) => errno as i32,
    }
}

/// C `malloc_usable_size`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn malloc_usable_size(ptr: *mut u8) -> usize {
    unsafe { Blocks::<TalcSyncCell<PageSteps<Memory0>, WasmBinning>>::usable_size(ptr) }
}

/// wasi-libc's internal name for `malloc` (its locale code calls it).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn __libc_malloc(size: usize) -> *mut u8 {
    unsafe { malloc(size) }
}

/// wasi-libc's internal name for `calloc`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn __libc_calloc(count: usize, size: usize) -> *mut u8 {
    unsafe { calloc(count, size) }
}

/// wasi-libc's internal name for `free`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn __libc_free(ptr: *mut u8) {
    unsafe { free(ptr) }
}
