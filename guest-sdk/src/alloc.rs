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
//! `memory.grow`. An instance touches only the heap it has used. The C
//! allocation functions are defined here too, so that wasi-libc's own
//! allocations (its descriptor table, environment, locale) share this heap
//! and dlmalloc is not linked at all: two allocators over one heap would
//! corrupt each other.

use core::alloc::{GlobalAlloc, Layout};
use core::ptr::{NonNull, null_mut};
use talc::base::Talc;
use talc::base::binning::Binning;
use talc::cell::TalcSyncCell;
use talc::source::Source;
use talc::wasm::WasmBinning;

/// The heap grows in steps of one host page: a step touches at most the page
/// it ends in, which the next allocations use.
const STEP: usize = 4096;
const WASM_PAGE: usize = 65536;
/// Room for talc's own bookkeeping around an allocation: its free lists at
/// the first claim (64 bins of 4 bytes) and the tags of a chunk.
const OVERHEAD: usize = 512;

unsafe extern "C" {
    /// Where the linker put the end of the stack and the static data.
    static __heap_base: u8;
}

/// talc itself; everything allocates through [`Heap`].
static TALC: TalcSyncCell<PageSteps, WasmBinning> = TalcSyncCell::new_wasm(PageSteps { end: None });

/// The Rust global allocator: the same blocks as C's `malloc`, header
/// included. C code frees what Rust allocated: wasi-libc frees the strings
/// that the canonical ABI's `cabi_realloc` (Rust's allocator) gave it.
struct Heap;

#[global_allocator]
static HEAP: Heap = Heap;

// SAFETY: every block comes from talc with its layout recorded in front of
// it, and goes back to talc with that layout.
unsafe impl GlobalAlloc for Heap {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        unsafe { c_alloc(layout.size(), layout.align(), false) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        unsafe { c_alloc(layout.size(), layout.align(), true) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, _: Layout) {
        unsafe { free(ptr) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, _: Layout, new_size: usize) -> *mut u8 {
        unsafe { c_realloc(ptr, new_size) }
    }
}

/// Extends the heap by whole host pages when talc runs out.
#[derive(Debug)]
struct PageSteps {
    /// The end of the heap, once it was claimed.
    end: Option<NonNull<u8>>,
}

// SAFETY: `acquire` allocates nothing; it only claims and extends memory that
// nothing else uses: the heap above `__heap_base`, whose only other user
// (dlmalloc) is not linked.
unsafe impl Source for PageSteps {
    fn acquire<B: Binning>(talc: &mut Talc<Self, B>, layout: Layout) -> Result<(), ()> {
        let base = (&raw const __heap_base).cast_mut();
        let end = talc.source.end.map_or(base, NonNull::as_ptr);
        let need = layout
            .size()
            .checked_add(layout.align())
            .and_then(|n| n.checked_add(OVERHEAD))
            .ok_or(())?;
        let wanted = (end as usize)
            .checked_add(need)
            .and_then(|n| n.checked_next_multiple_of(STEP))
            .ok_or(())?;
        // A full 4 GiB memory ends past what a wasm32 `usize` can name.
        let memory_end = core::arch::wasm32::memory_size::<0>().saturating_mul(WASM_PAGE);
        if wanted > memory_end {
            let pages = (wanted - memory_end).div_ceil(WASM_PAGE);
            if core::arch::wasm32::memory_grow::<0>(pages) == usize::MAX {
                return Err(());
            }
        }
        let new_end = wanted as *mut u8;
        talc.source.end = match talc.source.end {
            // SAFETY: [end, new_end) is memory of this instance that no one
            // uses: above the heap's current end and below the memory's end.
            Some(end) => Some(unsafe { talc.extend(end, new_end) }),
            // SAFETY: as above, for [__heap_base, new_end).
            None => Some(unsafe { talc.claim(base, wanted - base as usize) }.ok_or(())?),
        };
        Ok(())
    }
}

/// The alignment `malloc` promises: `max_align_t` on wasm32.
const C_ALIGN: usize = 16;
/// The header in front of every block: its total size and the offset of the
/// caller's pointer from the start of the block.
const HEADER: usize = 2 * size_of::<usize>();
/// wasi-libc's `errno` values.
const ENOMEM: i32 = 48;
const EINVAL: i32 = 28;

unsafe extern "C" {
    fn __errno_location() -> *mut i32;
}

fn set_errno(value: i32) {
    // SAFETY: wasi-libc's errno is a plain global in a single-threaded module.
    unsafe { *__errno_location() = value };
}

/// Allocates a block for Rust or C. C callers free without a size, so each
/// block carries its layout in the two words in front of the pointer handed
/// out: the total size and the alignment, which is also the offset from the
/// start of the block.
unsafe fn c_alloc(size: usize, align: usize, zeroed: bool) -> *mut u8 {
    let align = align.max(HEADER);
    let Some(layout) = size
        .checked_add(align)
        .and_then(|total| Layout::from_size_align(total, align).ok())
    else {
        set_errno(ENOMEM);
        return null_mut();
    };
    // SAFETY: the layout's size is at least `align`, never zero.
    let block = unsafe {
        match zeroed {
            true => TALC.alloc_zeroed(layout),
            false => TALC.alloc(layout),
        }
    };
    if block.is_null() {
        set_errno(ENOMEM);
        return null_mut();
    }
    // SAFETY: the block is `align` (≥ HEADER) bytes longer than `size`; the
    // header fits in front of the returned pointer, aligned.
    unsafe {
        let ptr = block.add(align);
        ptr.cast::<usize>().sub(2).write(layout.size());
        ptr.cast::<usize>().sub(1).write(align);
        ptr
    }
}

/// The block and layout behind a pointer that [`c_alloc`] handed out.
///
/// # Safety
/// `ptr` came from [`c_alloc`] and was not freed.
unsafe fn c_layout(ptr: *mut u8) -> (*mut u8, Layout) {
    // SAFETY: the header `c_alloc` wrote.
    unsafe {
        let total = ptr.cast::<usize>().sub(2).read();
        let align = ptr.cast::<usize>().sub(1).read();
        (
            ptr.sub(align),
            Layout::from_size_align_unchecked(total, align),
        )
    }
}

/// C `malloc`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn malloc(size: usize) -> *mut u8 {
    unsafe { c_alloc(size, C_ALIGN, false) }
}

/// C `calloc`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn calloc(count: usize, size: usize) -> *mut u8 {
    match count.checked_mul(size) {
        Some(bytes) => unsafe { c_alloc(bytes, C_ALIGN, true) },
        None => {
            set_errno(ENOMEM);
            null_mut()
        }
    }
}

/// C `free`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn free(ptr: *mut u8) {
    if ptr.is_null() {
        return;
    }
    // SAFETY: C's contract: `ptr` came from these functions.
    unsafe {
        let (block, layout) = c_layout(ptr);
        TALC.dealloc(block, layout);
    }
}

/// C `realloc`. A size of 0 frees and returns null, as dlmalloc did.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn realloc(ptr: *mut u8, size: usize) -> *mut u8 {
    if ptr.is_null() {
        return unsafe { malloc(size) };
    }
    if size == 0 {
        unsafe { free(ptr) };
        return null_mut();
    }
    unsafe { c_realloc(ptr, size) }
}

/// Resizes a live block, keeping its alignment.
///
/// # Safety
/// `ptr` came from [`c_alloc`] and was not freed.
unsafe fn c_realloc(ptr: *mut u8, size: usize) -> *mut u8 {
    // SAFETY: the caller's contract.
    let (block, layout) = unsafe { c_layout(ptr) };
    let align = layout.align();
    let Some(total) = size
        .checked_add(align)
        .filter(|&total| Layout::from_size_align(total, align).is_ok())
    else {
        set_errno(ENOMEM);
        return null_mut();
    };
    // SAFETY: `block` is live with `layout`; `total` is non-zero and makes
    // a valid layout with `align`.
    let moved = unsafe { TALC.realloc(block, layout, total) };
    if moved.is_null() {
        set_errno(ENOMEM);
        return null_mut();
    }
    // SAFETY: the header moved with the block; only the size changed.
    unsafe {
        let ptr = moved.add(align);
        ptr.cast::<usize>().sub(2).write(total);
        ptr
    }
}

/// C `aligned_alloc`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn aligned_alloc(align: usize, size: usize) -> *mut u8 {
    if !align.is_power_of_two() {
        set_errno(EINVAL);
        return null_mut();
    }
    unsafe { c_alloc(size, align, false) }
}

/// C `posix_memalign`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn posix_memalign(out: *mut *mut u8, align: usize, size: usize) -> i32 {
    if !align.is_power_of_two() || !align.is_multiple_of(size_of::<usize>()) {
        return EINVAL;
    }
    let ptr = unsafe { c_alloc(size, align, false) };
    if ptr.is_null() {
        return ENOMEM;
    }
    // SAFETY: C's contract: `out` is writable.
    unsafe { out.write(ptr) };
    0
}

/// C `malloc_usable_size`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn malloc_usable_size(ptr: *mut u8) -> usize {
    if ptr.is_null() {
        return 0;
    }
    // SAFETY: C's contract: `ptr` came from these functions.
    let (_, layout) = unsafe { c_layout(ptr) };
    layout.size() - layout.align()
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
