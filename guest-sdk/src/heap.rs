//! The allocator's logic, apart from the wasm glue in `alloc.rs`: the block
//! format that Rust and C share, the C allocation functions' contracts, and
//! a talc `Source` that grows the heap a page at a time. It is written over
//! any [`LinearMemory`] so that the host's test run and lints cover it; only
//! the wasm build installs it as the plugin's allocator.

use core::alloc::{GlobalAlloc, Layout};
use core::ptr::{NonNull, null_mut};
use talc::base::Talc;
use talc::base::binning::Binning;
use talc::source::Source;

/// The heap grows in steps of one host page: a step touches at most the page
/// it ends in, which the next allocations use.
const STEP: usize = 4096;
/// A wasm page.
pub(crate) const WASM_PAGE: usize = 65536;
/// Room for talc's own bookkeeping around an allocation: its free lists at
/// the first claim (64 bins of 4 bytes) and the tags of a chunk.
const OVERHEAD: usize = 512;

/// The alignment `malloc` promises: `max_align_t` on wasm32.
pub(crate) const C_ALIGN: usize = 16;
/// The header in front of every block: its total size and the offset of the
/// caller's pointer from the start of the block.
const HEADER: usize = 2 * size_of::<usize>();

/// wasi-libc's `errno` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Errno {
    /// `ENOMEM`.
    NoMemory = 48,
    /// `EINVAL`.
    Invalid = 28,
}

/// The memory the heap lives in: one wasm linear memory.
pub(crate) trait LinearMemory {
    /// Where the heap starts (`__heap_base`).
    fn heap_base(&self) -> *mut u8;
    /// The address one past the memory's last byte, saturated at `usize::MAX`.
    fn end(&self) -> usize;
    /// `memory.grow` by `pages` wasm pages; false if it cannot grow.
    fn grow(&self, pages: usize) -> bool;
}

/// A talc `Source` that claims the heap above the heap base and extends it
/// by whole host pages when talc runs out, growing the memory when the
/// heap reaches its end.
#[derive(Debug)]
pub(crate) struct PageSteps<M> {
    /// The end of the heap, once it was claimed.
    end: Option<NonNull<u8>>,
    memory: M,
}

impl<M> PageSteps<M> {
    pub(crate) const fn new(memory: M) -> PageSteps<M> {
        PageSteps { end: None, memory }
    }
}

// SAFETY: `acquire` allocates nothing; it only claims and extends memory that
// nothing else uses: the heap above the heap base, whose only other user
// (dlmalloc) is not linked.
unsafe impl<M: LinearMemory + core::fmt::Debug> Source for PageSteps<M> {
    fn acquire<B: Binning>(talc: &mut Talc<Self, B>, layout: Layout) -> Result<(), ()> {
        let base = talc.source.memory.heap_base();
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
        let memory_end = talc.source.memory.end();
        if wanted > memory_end {
            let pages = (wanted - memory_end).div_ceil(WASM_PAGE);
            if !talc.source.memory.grow(pages) {
                return Err(());
            }
        }
        let new_end = wanted as *mut u8;
        talc.source.end = match talc.source.end {
            // SAFETY: [end, new_end) is memory of this instance that no one
            // uses: above the heap's current end and below the memory's end.
            Some(end) => Some(unsafe { talc.extend(end, new_end) }),
            // SAFETY: as above, for [heap base, new_end).
            None => Some(unsafe { talc.claim(base, wanted - base as usize) }.ok_or(())?),
        };
        Ok(())
    }
}

/// Blocks that carry their layout, over an allocator that needs it back:
/// C callers free without a size. Each block has two words in front of the
/// pointer handed out: the total size and the alignment, which is also the
/// offset from the start of the block.
pub(crate) struct Blocks<A>(pub(crate) A);

impl<A: GlobalAlloc> Blocks<A> {
    /// A block of `size` bytes aligned to `align` (a power of two).
    ///
    /// # Safety
    /// As [`GlobalAlloc::alloc`], apart from the layout, which is checked.
    pub(crate) unsafe fn alloc(
        &self,
        size: usize,
        align: usize,
        zeroed: bool,
    ) -> Result<*mut u8, Errno> {
        let align = align.max(HEADER);
        let layout = size
            .checked_add(align)
            .and_then(|total| Layout::from_size_align(total, align).ok())
            .ok_or(Errno::NoMemory)?;
        // SAFETY: the layout's size is at least `align`, never zero.
        let block = unsafe {
            match zeroed {
                true => self.0.alloc_zeroed(layout),
                false => self.0.alloc(layout),
            }
        };
        if block.is_null() {
            return Err(Errno::NoMemory);
        }
        // SAFETY: the block is `align` (≥ HEADER) bytes longer than `size`;
        // the header fits in front of the returned pointer, aligned.
        unsafe {
            let ptr = block.add(align);
            ptr.cast::<usize>().sub(2).write(layout.size());
            ptr.cast::<usize>().sub(1).write(align);
            Ok(ptr)
        }
    }

    /// The block and layout behind a pointer that [`Self::alloc`] handed out.
    ///
    /// # Safety
    /// `ptr` came from this allocator and was not freed.
    unsafe fn layout(ptr: *mut u8) -> (*mut u8, Layout) {
        // SAFETY: the header `alloc` wrote.
        unsafe {
            let total = ptr.cast::<usize>().sub(2).read();
            let align = ptr.cast::<usize>().sub(1).read();
            (
                ptr.sub(align),
                Layout::from_size_align_unchecked(total, align),
            )
        }
    }

    /// Frees a block; null is ignored.
    ///
    /// # Safety
    /// `ptr` is null or came from this allocator and was not freed.
    pub(crate) unsafe fn free(&self, ptr: *mut u8) {
        if ptr.is_null() {
            return;
        }
        // SAFETY: the caller's contract.
        unsafe {
            let (block, layout) = Self::layout(ptr);
            self.0.dealloc(block, layout);
        }
    }

    /// Resizes a live block to `size` bytes, keeping its alignment.
    ///
    /// # Safety
    /// `ptr` came from this allocator and was not freed. On success it is
    /// freed (the block may have moved); on failure it stays live.
    pub(crate) unsafe fn resize(&self, ptr: *mut u8, size: usize) -> Result<*mut u8, Errno> {
        // SAFETY: the caller's contract.
        let (block, layout) = unsafe { Self::layout(ptr) };
        let align = layout.align();
        let total = size
            .checked_add(align)
            .filter(|&total| Layout::from_size_align(total, align).is_ok())
            .ok_or(Errno::NoMemory)?;
        // SAFETY: `block` is live with `layout`; `total` is non-zero and
        // makes a valid layout with `align`.
        let moved = unsafe { self.0.realloc(block, layout, total) };
        if moved.is_null() {
            return Err(Errno::NoMemory);
        }
        // SAFETY: the header moved with the block; only the size changed.
        unsafe {
            let ptr = moved.add(align);
            ptr.cast::<usize>().sub(2).write(total);
            Ok(ptr)
        }
    }

    /// The bytes a live block can hold.
    ///
    /// # Safety
    /// `ptr` is null or came from this allocator and was not freed.
    pub(crate) unsafe fn usable_size(ptr: *mut u8) -> usize {
        if ptr.is_null() {
            return 0;
        }
        // SAFETY: the caller's contract.
        let (_, layout) = unsafe { Self::layout(ptr) };
        layout.size() - layout.align()
    }

    /// C `calloc`.
    ///
    /// # Safety
    /// As [`Self::alloc`].
    pub(crate) unsafe fn calloc(&self, count: usize, size: usize) -> Result<*mut u8, Errno> {
        let bytes = count.checked_mul(size).ok_or(Errno::NoMemory)?;
        // SAFETY: the caller's contract.
        unsafe { self.alloc(bytes, C_ALIGN, true) }
    }

    /// C `realloc`: null allocates; a size of 0 frees and returns null, as
    /// dlmalloc did.
    ///
    /// # Safety
    /// `ptr` is null or came from this allocator and was not freed.
    pub(crate) unsafe fn realloc(&self, ptr: *mut u8, size: usize) -> Result<*mut u8, Errno> {
        // SAFETY: the caller's contract.
        unsafe {
            if ptr.is_null() {
                return self.alloc(size, C_ALIGN, false);
            }
            if size == 0 {
                self.free(ptr);
                return Ok(null_mut());
            }
            self.resize(ptr, size)
        }
    }

    /// C `aligned_alloc`.
    ///
    /// # Safety
    /// As [`Self::alloc`].
    pub(crate) unsafe fn aligned_alloc(&self, align: usize, size: usize) -> Result<*mut u8, Errno> {
        if !align.is_power_of_two() {
            return Err(Errno::Invalid);
        }
        // SAFETY: the caller's contract.
        unsafe { self.alloc(size, align, false) }
    }

    /// C `posix_memalign`, which also refuses alignments below a word.
    ///
    /// # Safety
    /// As [`Self::alloc`].
    pub(crate) unsafe fn posix_memalign(
        &self,
        align: usize,
        size: usize,
    ) -> Result<*mut u8, Errno> {
        if !align.is_power_of_two() || !align.is_multiple_of(size_of::<usize>()) {
            return Err(Errno::Invalid);
        }
        // SAFETY: the caller's contract.
        unsafe { self.alloc(size, align, false) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use talc::cell::TalcCell;
    use talc::wasm::WasmBinning;

    /// A linear memory of `size` bytes that may grow to `max`, in a host
    /// buffer aligned like wasm pages, with the heap base at an odd offset
    /// as `__heap_base` is.
    #[derive(Debug)]
    struct FakeMemory {
        start: *mut u8,
        size: Cell<usize>,
        max: usize,
        grows: Cell<usize>,
    }

    const HEAP_BASE_OFFSET: usize = 1_234;

    impl FakeMemory {
        fn new(pages: usize, max_pages: usize) -> FakeMemory {
            let layout = Layout::from_size_align(max_pages * WASM_PAGE, WASM_PAGE).unwrap();
            // SAFETY: a non-zero layout; freed in `drop`.
            let start = unsafe { std::alloc::alloc(layout) };
            assert!(!start.is_null());
            FakeMemory {
                start,
                size: Cell::new(pages * WASM_PAGE),
                max: max_pages * WASM_PAGE,
                grows: Cell::new(0),
            }
        }
    }

    impl Drop for FakeMemory {
        fn drop(&mut self) {
            let layout = Layout::from_size_align(self.max, WASM_PAGE).unwrap();
            // SAFETY: allocated in `new` with this layout.
            unsafe { std::alloc::dealloc(self.start, layout) };
        }
    }

    impl LinearMemory for &FakeMemory {
        fn heap_base(&self) -> *mut u8 {
            self.start.wrapping_add(HEAP_BASE_OFFSET)
        }
        fn end(&self) -> usize {
            self.start as usize + self.size.get()
        }
        fn grow(&self, pages: usize) -> bool {
            let grown = self.size.get() + pages * WASM_PAGE;
            if grown > self.max {
                return false;
            }
            self.size.set(grown);
            self.grows.set(self.grows.get() + 1);
            true
        }
    }

    type TestHeap<'m> = Blocks<TalcCell<PageSteps<&'m FakeMemory>, WasmBinning>>;

    fn heap(memory: &FakeMemory) -> TestHeap<'_> {
        Blocks(TalcCell::new(PageSteps::new(memory)))
    }

    /// How far into the memory the heap has been claimed.
    fn claimed(heap: &mut TestHeap<'_>, memory: &FakeMemory) -> usize {
        let end = heap.0.get_mut().source.end;
        end.map_or(0, |e| e.as_ptr() as usize - (&memory).heap_base() as usize)
    }

    #[test]
    fn the_heap_grows_a_page_at_a_time_then_grows_the_memory() {
        let memory = FakeMemory::new(1, 8);
        let mut heap = heap(&memory);
        unsafe {
            let p = heap.alloc(16, C_ALIGN, false).unwrap();
            assert!(
                claimed(&mut heap, &memory) <= STEP,
                "a small block claims one page"
            );
            heap.free(p);
            // Past the initial page of memory: the memory grows.
            let big = heap.alloc(3 * WASM_PAGE, C_ALIGN, false).unwrap();
            assert!(memory.grows.get() >= 1);
            big.write_bytes(0xAB, 3 * WASM_PAGE);
            assert_eq!(*big.add(3 * WASM_PAGE - 1), 0xAB);
            // Past the most the memory can grow to: refused, nothing lost.
            assert_eq!(
                heap.alloc(16 * WASM_PAGE, C_ALIGN, false),
                Err(Errno::NoMemory)
            );
            assert_eq!(*big, 0xAB);
            heap.free(big);
        }
    }

    #[test]
    fn c_contracts_alignment_zeroing_overflow_and_bad_alignments() {
        let memory = FakeMemory::new(2, 16);
        let heap = heap(&memory);
        unsafe {
            for align in [1, 8, 16, 64, 4096] {
                let p = heap.aligned_alloc(align, 100).unwrap();
                assert!(
                    (p as usize).is_multiple_of(align.max(HEADER)),
                    "align {align}"
                );
                assert!(TestHeap::usable_size(p) >= 100);
                heap.free(p);
            }
            let p = heap.alloc(10, C_ALIGN, false).unwrap();
            assert!((p as usize).is_multiple_of(C_ALIGN));
            p.write_bytes(0xFF, 10);
            heap.free(p);
            let z = heap.calloc(10, 100).unwrap();
            assert!((0..1000).all(|i| *z.add(i) == 0), "calloc zeroes");
            heap.free(z);
            assert_eq!(heap.calloc(usize::MAX, 2), Err(Errno::NoMemory));
            assert_eq!(
                heap.alloc(usize::MAX - 8, C_ALIGN, false),
                Err(Errno::NoMemory)
            );
            assert_eq!(heap.aligned_alloc(3, 8), Err(Errno::Invalid));
            assert_eq!(heap.posix_memalign(3, 8), Err(Errno::Invalid));
            assert_eq!(
                heap.posix_memalign(2, 8),
                Err(Errno::Invalid),
                "below a word"
            );
            assert!(
                heap.posix_memalign(32, 8)
                    .is_ok_and(|p| (p as usize).is_multiple_of(32))
            );
            heap.free(null_mut());
            assert_eq!(TestHeap::usable_size(null_mut()), 0);
        }
    }

    #[test]
    fn realloc_keeps_contents_and_alignment_and_zero_frees() {
        let memory = FakeMemory::new(2, 32);
        let heap = heap(&memory);
        unsafe {
            let p = heap.aligned_alloc(256, 64).unwrap();
            for i in 0..64 {
                *p.add(i) = i as u8;
            }
            let q = heap.realloc(p, 200_000).unwrap();
            assert!(
                (q as usize).is_multiple_of(256),
                "realloc keeps the alignment"
            );
            assert!(
                (0..64).all(|i| *q.add(i) == i as u8),
                "realloc keeps the contents"
            );
            assert!(TestHeap::usable_size(q) >= 200_000);
            let r = heap.realloc(q, 10).unwrap();
            assert!((0..10).all(|i| *r.add(i) == i as u8));
            assert_eq!(heap.realloc(r, 0), Ok(null_mut()));
            let fresh = heap.realloc(null_mut(), 32).unwrap();
            assert!(!fresh.is_null());
            assert_eq!(heap.realloc(fresh, usize::MAX), Err(Errno::NoMemory));
            heap.free(fresh);
        }
    }

    #[test]
    fn churn_keeps_every_block_intact() {
        let memory = FakeMemory::new(1, 64);
        let heap = heap(&memory);
        let mut live: Vec<(*mut u8, usize, u8)> = Vec::new();
        let mut seed = 0x2545_F491_4F6C_DD1Du64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        unsafe {
            for round in 0..20_000u32 {
                let r = next();
                if live.len() > 200 || (r % 3 == 0 && !live.is_empty()) {
                    let (p, len, tag) = live.swap_remove((r as usize / 3) % live.len());
                    assert!((0..len).all(|i| *p.add(i) == tag), "round {round}");
                    heap.free(p);
                } else {
                    let len = (r as usize >> 8) % 3000 + 1;
                    let tag = (round % 251) as u8;
                    let p = heap.alloc(len, C_ALIGN, false).unwrap();
                    p.write_bytes(tag, len);
                    live.push((p, len, tag));
                }
            }
            for (p, len, tag) in live {
                assert!((0..len).all(|i| *p.add(i) == tag));
                heap.free(p);
            }
        }
    }
}
