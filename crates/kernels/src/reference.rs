//! Plain implementations the kernels are tested against.

/// Softmax attention of one query head over `keys`/`values` (one slice per position), in
/// f64, with PyTorch's additive-mask semantics: hidden keys get weight 0, and a query that
/// sees no key gets uniform weights over every key (adding `f32::MIN` to every score makes
/// them all equal). `bias`, when given, is added to each key's score.
pub(crate) fn attend(
    query: &[f32],
    keys: &[&[f32]],
    values: &[&[f32]],
    visible: &[bool],
    scale: f32,
    bias: Option<&[f32]>,
) -> Vec<f32> {
    let any_visible = visible.iter().any(|&seen| seen);
    let scores: Vec<f64> = keys
        .iter()
        .zip(visible)
        .enumerate()
        .map(|(index, (key, &seen))| {
            if !any_visible {
                return 0.0;
            }
            if !seen {
                return f64::NEG_INFINITY;
            }
            let dot: f64 = query
                .iter()
                .zip(key.iter())
                .map(|(q, k)| f64::from(*q) * f64::from(*k))
                .sum();
            let bias = bias
                .and_then(|bias| bias.get(index))
                .copied()
                .unwrap_or(0.0);
            dot * f64::from(scale) + f64::from(bias)
        })
        .collect();
    let max = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let weights: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
    let total: f64 = weights.iter().sum();
    let mut out = vec![0.0f64; query.len()];
    for (weight, value) in weights.iter().zip(values) {
        for (o, v) in out.iter_mut().zip(value.iter()) {
            *o += weight / total * f64::from(*v);
        }
    }
    out.into_iter().map(|v| v as f32).collect()
}
