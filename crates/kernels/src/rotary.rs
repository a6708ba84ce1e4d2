//! Rotary position embeddings applied in place. Two pairings of the first `rotary_dim` values of
//! each head (the rest, with partial rotary, pass through):
//! - [`RotaryPairs::Halves`], `apply_rotary_pos_emb` with `rotate_half` (GPT-NeoX, Llama):
//!   pairs `(i, i + rotary_dim / 2)`;
//! - [`RotaryPairs::Adjacent`], GPT-J's interleaved rotary (NomicBert's
//!   `rotary_emb_interleaved`): pairs `(2i, 2i + 1)`.

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
    rotate_pairs_in_place(row, head_dim, cos, sin, RotaryPairs::Halves)
}

/// Which values of a head rotary rotates together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RotaryPairs {
    /// `(i, i + rotary_dim / 2)`: `rotate_half` (GPT-NeoX, Llama, GTE, ModernBERT).
    Halves,
    /// `(2i, 2i + 1)`: GPT-J's interleaved rotary.
    Adjacent,
}

/// [`rotate_heads_in_place`] with either pairing: pair `i` (of `cos.len()`) is rotated by
/// `cos[i]`/`sin[i]`.
pub fn rotate_pairs_in_place(
    row: &mut [f32],
    head_dim: usize,
    cos: &[f32],
    sin: &[f32],
    pairs: RotaryPairs,
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
    let rotate = |x1: &mut f32, x2: &mut f32, c: f32, s: f32| {
        let (a, b) = (*x1, *x2);
        *x1 = a * c - b * s;
        *x2 = b * c + a * s;
    };
    for head in row.chunks_exact_mut(head_dim) {
        match pairs {
            RotaryPairs::Halves => {
                let (first, rest) = head.split_at_mut(half);
                for (((x1, x2), c), s) in first.iter_mut().zip(rest.iter_mut()).zip(cos).zip(sin) {
                    rotate(x1, x2, *c, *s);
                }
            }
            RotaryPairs::Adjacent => {
                for ((pair, c), s) in head.chunks_exact_mut(2).zip(cos).zip(sin) {
                    if let [x1, x2] = pair {
                        rotate(x1, x2, *c, *s);
                    }
                }
            }
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

    /// GPT-J: `(x[2i], x[2i+1])` rotated by angle `i`; the values past `rotary_dim` untouched.
    #[test]
    fn adjacent_pairs_match_gpt_j() {
        let (heads, head_dim, rotary_dim) = (2, 10, 6);
        let row = random_values(7, heads * head_dim);
        let cos = random_values(8, rotary_dim / 2);
        let sin = random_values(9, rotary_dim / 2);
        let mut got = row.clone();
        rotate_pairs_in_place(&mut got, head_dim, &cos, &sin, RotaryPairs::Adjacent).unwrap();
        let mut want = row.clone();
        for h in 0..heads {
            for i in 0..rotary_dim / 2 {
                let (a, b) = (row[h * head_dim + 2 * i], row[h * head_dim + 2 * i + 1]);
                want[h * head_dim + 2 * i] = a * cos[i] - b * sin[i];
                want[h * head_dim + 2 * i + 1] = b * cos[i] + a * sin[i];
            }
        }
        assert!(max_abs_diff(&got, &want) < 1e-6);
    }
}
