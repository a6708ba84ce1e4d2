//! The view of one sequence's cached keys or values that the attention kernel
//! ([`super::cached_attention`]) reads in place.

/// One sequence's cached keys or values for one layer: `[kv_heads, capacity, head_dim]`, of which
/// the first `len` positions of every head are filled.
#[derive(Debug, Clone, Copy)]
pub struct CacheSlab<'a> {
    /// The values, head-major.
    pub data: &'a [f32],
    /// Key/value heads.
    pub kv_heads: usize,
    /// Positions reserved per head.
    pub capacity: usize,
    /// Positions filled per head.
    pub len: usize,
    /// Width of one head.
    pub head_dim: usize,
}

impl<'a> CacheSlab<'a> {
    /// Positions `0..len` of head `head`, `[len, head_dim]` (`None` when the slab is shorter
    /// than its shape says).
    pub fn head(&self, head: usize) -> Option<&'a [f32]> {
        let start = head
            .checked_mul(self.capacity)?
            .checked_mul(self.head_dim)?;
        let end = start.checked_add(self.len.checked_mul(self.head_dim)?)?;
        self.data.get(start..end)
    }
}
