//! Zeroed `f32` buffers aligned for the kernels, on 2 MiB pages where the OS offers them.
//!
//! The packed encoder weights are streamed from memory for every short sentence; with 4 KiB
//! pages every page is a TLB miss and a point where the hardware prefetchers stop. Buffers of
//! (nearly) 2 MiB or more start on a 2 MiB boundary and ask Linux for transparent huge pages
//! over the whole 2 MiB pages they contain (`MADV_HUGEPAGE`: honoured under the default
//! `madvise` THP mode), and over a last partial page only when at most 1/4 of it would be
//! unused, so little memory is added to the process. Elsewhere, or when the OS says no, they
//! are ordinary 64-byte-aligned allocations.

use std::alloc::{Layout, alloc, dealloc};
use std::ptr::NonNull;

use crate::{KernelError, Result};

/// Bytes per huge page (x86-64, aarch64 with 4 KiB base pages).
const HUGE_PAGE: usize = 2 << 20;
/// Alignment of smaller buffers: one cache line, what aligned vector loads need.
const LINE: usize = 64;

/// An owned, zero-initialised, aligned run of `f32` (like a `Vec<f32>` that never grows).
pub(crate) struct AlignedValues {
    start: NonNull<f32>,
    len: usize,
    /// `None` for an empty buffer (nothing allocated).
    layout: Option<Layout>,
}

// SAFETY: the buffer is owned exclusively (like a Vec<f32>); shared access only reads.
unsafe impl Send for AlignedValues {}
// SAFETY: as above: `&AlignedValues` only gives out `&[f32]`.
unsafe impl Sync for AlignedValues {}

impl AlignedValues {
    /// `len` zeros.
    pub(crate) fn zeroed(len: usize) -> Result<Self> {
        let bytes = len.checked_mul(4).ok_or_else(|| too_large(len))?;
        if bytes == 0 {
            return Ok(AlignedValues {
                start: NonNull::dangling(),
                len: 0,
                layout: None,
            });
        }
        // Whole huge pages inside the buffer, plus the last partial one when it is nearly
        // full (at most 1/4 of it unused: MiniLM's 1.7 MiB query-key-value weights).
        let whole_pages = bytes / HUGE_PAGE * HUGE_PAGE;
        let advised = if bytes - whole_pages >= HUGE_PAGE - HUGE_PAGE / 4 {
            whole_pages + HUGE_PAGE
        } else {
            whole_pages
        };
        let align = if advised > 0 { HUGE_PAGE } else { LINE };
        let layout =
            Layout::from_size_align(bytes.max(advised), align).map_err(|_| too_large(len))?;
        // SAFETY: the layout has a non-zero size. The memory is zeroed below, after the
        // advice (pages touched before it would already be small ones).
        let raw = unsafe { alloc(layout) };
        let start = NonNull::new(raw.cast::<f32>()).ok_or_else(|| too_large(len))?;
        #[cfg(target_os = "linux")]
        if advised > 0 {
            // SAFETY: the range lies inside the allocation just made (its size is at least
            // `advised`); MADV_HUGEPAGE changes how pages are backed, never their contents. A
            // refusal (THP disabled, other kernels) leaves ordinary pages, so the result is
            // ignored.
            let _ = unsafe {
                rustix::mm::madvise(raw.cast(), advised, rustix::mm::Advice::LinuxHugepage)
            };
        }
        // SAFETY: `raw` is valid for `bytes` writes (the allocation is at least that big).
        unsafe { std::ptr::write_bytes(raw, 0, bytes) };
        Ok(AlignedValues {
            start,
            len,
            layout: Some(layout),
        })
    }

    pub(crate) fn as_slice(&self) -> &[f32] {
        // SAFETY: `start` points to `len` initialised (zeroed, then written) f32s owned by
        // self (or is dangling with len 0).
        unsafe { std::slice::from_raw_parts(self.start.as_ptr(), self.len) }
    }

    pub(crate) fn as_mut_slice(&mut self) -> &mut [f32] {
        // SAFETY: as for `as_slice`, and `&mut self` makes the access exclusive.
        unsafe { std::slice::from_raw_parts_mut(self.start.as_ptr(), self.len) }
    }
}

impl Clone for AlignedValues {
    fn clone(&self) -> Self {
        // Allocation failure aborts, as it does for Vec::clone.
        let mut copy = AlignedValues::zeroed(self.len)
            .unwrap_or_else(|_| std::alloc::handle_alloc_error(Layout::new::<f32>()));
        copy.as_mut_slice().copy_from_slice(self.as_slice());
        copy
    }
}

impl Drop for AlignedValues {
    fn drop(&mut self) {
        if let Some(layout) = self.layout {
            // SAFETY: allocated in `zeroed` with this very layout, freed once.
            unsafe { dealloc(self.start.as_ptr().cast(), layout) };
        }
    }
}

fn too_large(len: usize) -> KernelError {
    KernelError {
        kernel: "AlignedValues::zeroed",
        reason: format!("cannot allocate {len} values"),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn buffers_are_zeroed_aligned_and_owned() {
        for len in [0usize, 1, 17, 460 << 10, 1 << 19, (3 << 19) + 5] {
            let mut values = AlignedValues::zeroed(len).unwrap();
            assert_eq!(values.as_slice().len(), len);
            assert!(values.as_slice().iter().all(|&v| v == 0.0));
            let align = if len * 4 >= HUGE_PAGE {
                HUGE_PAGE
            } else {
                LINE
            };
            if len > 0 {
                assert_eq!(values.as_slice().as_ptr() as usize % align, 0, "{len}");
            }
            if let Some(last) = values.as_mut_slice().last_mut() {
                *last = 7.0;
            }
            let copy = values.clone();
            assert_eq!(copy.as_slice(), values.as_slice());
        }
        assert!(AlignedValues::zeroed(usize::MAX).is_err());
    }
}
