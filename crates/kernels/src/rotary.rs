//! Rotary position embeddings applied in place (`apply_rotary_pos_emb` with `rotate_half`):
//! the first `rotary_dim` values of each head are rotated as pairs `(i, i + rotary_dim / 2)`,
//! the rest (partial rotary) pass through.

use crate::{Result, check_len};

/// Rotates every `head_dim`-wide head of `row` by `cos`/`sin` (`rotary_dim / 2` values each,
/// the attention scaling already multiplied in): `x₁' = x₁·cos − x₂·sin`,
/// `x₂' = x₂·cos + x₁·sin`.
pub fn rotate_heads_in_place(
    row: &mut [f32],
    head_dim: usize,
    cos: &[f32],
    sin: &[f32],
) -> Result<()> {
    let half = cos.len();
    check_len("rotate_heads_in_place", "sin", sin.len(), half)?;
    if head_dim == 0 || 2 * half > head_dim {
        return check_len(
            "rotate_heads_in_place",
            "cos",
            2 * half,
            head_dim.min(2 * half),
        );
    }
    check_len(
        "rotate_heads_in_place",
        "row",
        row.len(),
        row.len() / head_dim * head_dim,
    )?;
    for head in row.chunks_exact_mut(head_dim) {
        let (first, rest) = head.split_at_mut(half);
        for (((x1, x2), c), s) in first.iter_mut().zip(rest.iter_mut()).zip(cos).zip(sin) {
            let (a, b) = (*x1, *x2);
            *x1 = a * c - b * s;
            *x2 = b * c + a * s;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]

    use super::*;
    use crate::{max_abs_diff, random_values};

    /// `x · cat(cos, cos) + rotate_half(x) · cat(sin, sin)` over the rotated part.
    #[test]
    fn matches_rotate_half() {
        let (heads, head_dim, rotary_dim) = (3, 8, 6);
        let row = random_values(4, heads * head_dim);
        let cos = random_values(5, rotary_dim / 2);
        let sin = random_values(6, rotary_dim / 2);
        let mut got = row.clone();
        rotate_heads_in_place(&mut got, head_dim, &cos, &sin).unwrap();
        let half = rotary_dim / 2;
        let mut want = row.clone();
        for h in 0..heads {
            let x = &row[h * head_dim..(h + 1) * head_dim];
            for i in 0..rotary_dim {
                let rotated = if i < half { -x[i + half] } else { x[i - half] };
                want[h * head_dim + i] = x[i] * cos[i % half] + rotated * sin[i % half];
            }
        }
        assert!(max_abs_diff(&got, &want) < 1e-6);
        assert!(rotate_heads_in_place(&mut got, 4, &cos, &sin).is_err());
    }
}
