//! Giving freed heap memory back to the system: a model load frees a great deal of scratch
//! (a tokenizer's vocabulary parsed as JSON, tensors read before they were reordered), which
//! glibc's allocator keeps mapped and resident unless asked, adding it to the process's peak
//! RSS while the weights stay.

/// Returns the heap's free pages to the system (glibc's `malloc_trim(0)`: every arena, free
/// whole pages anywhere in them, not only at the top). A no-op where the C library is not
/// glibc. Cheap enough to call after a load; pointless in a hot loop.
pub fn release_free_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `malloc_trim` only walks glibc's own allocator state under its locks; it takes
    // no pointer and invalidates no live allocation.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    /// Freed memory can be handed back and the heap still works afterwards.
    #[test]
    fn trimming_keeps_the_heap_usable() {
        let scratch: Vec<Vec<u8>> = (0..256).map(|i| vec![i as u8; 64 << 10]).collect();
        let kept = vec![7u8; 1 << 20];
        drop(scratch);
        super::release_free_heap();
        assert!(kept.iter().all(|&byte| byte == 7));
        let again = vec![1u8; 8 << 20];
        assert_eq!(again.len(), 8 << 20);
    }
}
