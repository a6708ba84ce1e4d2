//! Root-mean-square norm of rows in place (`LlamaRMSNorm`): `x / √(mean(x²) + ε) · scale`,
//! split over the rayon pool for many rows. Gemma's `(1 + w)` is folded into `scale` by the
//! caller.

use rayon::prelude::*;

use crate::{Result, check_len, rows_per_task};

/// Values per parallel task.
const MIN_VALUES_PER_TASK: usize = crate::MIN_ROWS_TO_SPLIT * 384;

/// Normalizes each `scale.len()`-wide row of `values` in place.
pub fn rms_norm_in_place(values: &mut [f32], scale: &[f32], eps: f32) -> Result<()> {
    let width = scale.len();
    if width == 0 {
        return check_len("rms_norm_in_place", "values", values.len(), 0);
    }
    check_len(
        "rms_norm_in_place",
        "values",
        values.len(),
        values.len() / width * width,
    )?;
    let chunk_rows = rows_per_task(values.len() / width, width, MIN_VALUES_PER_TASK);
    values.par_chunks_mut(chunk_rows * width).for_each(|part| {
        for row in part.chunks_exact_mut(width) {
            normalize_row(row, scale, eps);
        }
    });
    Ok(())
}

fn normalize_row(row: &mut [f32], scale: &[f32], eps: f32) {
    let mut partial = [0.0f32; 8];
    let chunks = row.chunks_exact(8);
    let tail: f32 = chunks.remainder().iter().map(|v| v * v).sum();
    for chunk in chunks {
        for (slot, v) in partial.iter_mut().zip(chunk) {
            *slot += v * v;
        }
    }
    let mean_square = (partial.iter().sum::<f32>() + tail) / row.len() as f32;
    let inverse = 1.0 / (mean_square + eps).sqrt();
    for (v, s) in row.iter_mut().zip(scale) {
        *v = *v * inverse * s;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]

    use super::*;
    use crate::{max_abs_diff, random_values};

    #[test]
    fn matches_the_plain_formula() {
        for (rows, width) in [(1, 5), (3, 64), (200, 96)] {
            let values = random_values(7, rows * width);
            let scale = random_values(8, width);
            let mut got = values.clone();
            rms_norm_in_place(&mut got, &scale, 1e-6).unwrap();
            let want: Vec<f32> = values
                .chunks(width)
                .flat_map(|row| {
                    let ms = row.iter().map(|v| v * v).sum::<f32>() / width as f32;
                    let inv = 1.0 / (ms + 1e-6).sqrt();
                    row.iter()
                        .zip(&scale)
                        .map(move |(v, s)| v * inv * s)
                        .collect::<Vec<_>>()
                })
                .collect();
            assert!(max_abs_diff(&got, &want) < 1e-5, "{rows}×{width}");
        }
        assert!(rms_norm_in_place(&mut [0.0; 5], &[1.0; 2], 1e-6).is_err());
    }
}
