//! Logits processors with the semantics of Transformers' classes of the same names
//! (`generation/logits_process.py`), applied to one row of next-token scores at a time.
//!
//! Removed tokens get `-inf` (Transformers' `filter_value`), so that sampling never picks them.
//! Goldens: `tests/fixtures/generation/processors.json`, made by
//! `scripts/make_generation_fixtures.py` with Transformers' own classes.

use std::cmp::Ordering;

/// One step of turning the model's scores into the distribution a token is chosen from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LogitsProcessor {
    /// `RepetitionPenaltyLogitsProcessor`: every token already in the row (prompt, padding and
    /// generated tokens alike) has its score divided by the penalty when positive, multiplied
    /// when negative.
    RepetitionPenalty(f32),
    /// `TemperatureLogitsWarper`: scores divided by the temperature.
    Temperature(f32),
    /// `TopKLogitsWarper`: tokens scoring below the k-th best are removed (ties with it kept).
    TopK(usize),
    /// `TopPLogitsWarper`: keeps the most likely tokens whose cumulative probability reaches
    /// `top_p` (at least one).
    TopP(f32),
    /// `MinPLogitsWarper`: removes tokens whose probability is below `min_p` times the best
    /// token's (the best one always kept).
    MinP(f32),
}

/// Transformers' `min_tokens_to_keep` for sampling without beams.
const MIN_TOKENS_TO_KEEP: usize = 1;

impl LogitsProcessor {
    /// Applies this processor to `scores` (one row, `vocab_size` long), given the row's token
    /// ids so far.
    pub fn apply(&self, input_ids: &[u32], scores: &mut [f32]) {
        match *self {
            LogitsProcessor::RepetitionPenalty(penalty) => {
                repetition_penalty(input_ids, scores, penalty);
            }
            LogitsProcessor::Temperature(temperature) => {
                for score in scores.iter_mut() {
                    *score /= temperature;
                }
            }
            LogitsProcessor::TopK(top_k) => top_k_filter(scores, top_k.max(MIN_TOKENS_TO_KEEP)),
            LogitsProcessor::TopP(top_p) => top_p_filter(scores, top_p),
            LogitsProcessor::MinP(min_p) => min_p_filter(scores, min_p),
        }
    }
}

/// Applies `processors` in order, with `MinLengthLogitsProcessor` /
/// `MinNewTokensLengthLogitsProcessor` (the `suppressed` tokens, EOS ids, set to `-inf`) where
/// Transformers runs them: after the repetition penalty, before the sampling warpers.
pub fn process_logits(
    processors: &[LogitsProcessor],
    input_ids: &[u32],
    suppressed: &[u32],
    scores: &mut [f32],
) {
    let mut suppression_done = false;
    let suppress = |scores: &mut [f32]| {
        for &id in suppressed {
            if let Some(score) = usize::try_from(id).ok().and_then(|i| scores.get_mut(i)) {
                *score = f32::NEG_INFINITY;
            }
        }
    };
    for processor in processors {
        if !suppression_done && !matches!(processor, LogitsProcessor::RepetitionPenalty(_)) {
            suppress(scores);
            suppression_done = true;
        }
        processor.apply(input_ids, scores);
    }
    if !suppression_done {
        suppress(scores);
    }
}

fn repetition_penalty(input_ids: &[u32], scores: &mut [f32], penalty: f32) {
    let mut seen = vec![false; scores.len()];
    for &id in input_ids {
        if let Some(flag) = usize::try_from(id).ok().and_then(|i| seen.get_mut(i)) {
            *flag = true;
        }
    }
    for (score, seen) in scores.iter_mut().zip(seen) {
        if seen {
            *score = if *score < 0.0 {
                *score * penalty
            } else {
                *score / penalty
            };
        }
    }
}

/// A total order on scores with NaN as low as `-inf` (sorting with a comparator that is not a
/// total order may panic).
fn score_order(a: f32, b: f32) -> Ordering {
    let key = |x: f32| if x.is_nan() { f32::NEG_INFINITY } else { x };
    key(a).total_cmp(&key(b))
}

/// Scores sorted best first (NaN last), as indices.
fn descending_order(scores: &[f32]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| {
        let score = |i: usize| scores.get(i).copied().unwrap_or(f32::NEG_INFINITY);
        score_order(score(b), score(a))
    });
    order
}

fn top_k_filter(scores: &mut [f32], top_k: usize) {
    let top_k = top_k.min(scores.len());
    if top_k == 0 {
        return;
    }
    let order = descending_order(scores);
    let Some(threshold) = order.get(top_k - 1).and_then(|&i| scores.get(i)).copied() else {
        return;
    };
    for score in scores.iter_mut() {
        if *score < threshold {
            *score = f32::NEG_INFINITY;
        }
    }
}

/// Softmax in f32, as torch computes it for f32 scores.
pub(crate) fn softmax_f32(scores: &[f32]) -> Vec<f32> {
    let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if max == f32::NEG_INFINITY {
        return vec![0.0; scores.len()];
    }
    let exps: Vec<f32> = scores.iter().map(|s| (s - max).exp()).collect();
    let sum: f32 = exps.iter().sum();
    exps.into_iter().map(|e| e / sum).collect()
}

fn top_p_filter(scores: &mut [f32], top_p: f32) {
    // Ascending order, as Transformers sorts: the tokens removed are a prefix of this order.
    let mut ascending = descending_order(scores);
    ascending.reverse();
    let sorted: Vec<f32> = ascending
        .iter()
        .filter_map(|&i| scores.get(i).copied())
        .collect();
    let probs = softmax_f32(&sorted);
    let keep_from = sorted.len().saturating_sub(MIN_TOKENS_TO_KEEP);
    let mut cumulative = 0.0f32;
    let mut remove = Vec::new();
    for (rank, (&index, prob)) in ascending.iter().zip(probs).enumerate() {
        cumulative += prob;
        if rank < keep_from && cumulative <= 1.0 - top_p {
            remove.push(index);
        }
    }
    for index in remove {
        if let Some(score) = scores.get_mut(index) {
            *score = f32::NEG_INFINITY;
        }
    }
}

fn min_p_filter(scores: &mut [f32], min_p: f32) {
    let probs = softmax_f32(scores);
    let top = probs.iter().copied().fold(0.0f32, f32::max);
    let threshold = min_p * top;
    let keep: Vec<usize> = descending_order(&probs)
        .into_iter()
        .take(MIN_TOKENS_TO_KEEP)
        .collect();
    for (index, (score, prob)) in scores.iter_mut().zip(&probs).enumerate() {
        if *prob < threshold && !keep.contains(&index) {
            *score = f32::NEG_INFINITY;
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::indexing_slicing)]

    use super::*;

    #[test]
    fn top_k_keeps_ties_with_the_kth_score() {
        let mut scores = vec![1.0, 3.0, 2.0, 2.0, 0.5];
        LogitsProcessor::TopK(3).apply(&[], &mut scores);
        assert_eq!(
            scores,
            vec![f32::NEG_INFINITY, 3.0, 2.0, 2.0, f32::NEG_INFINITY]
        );
    }

    #[test]
    fn top_p_keeps_at_least_the_best_token() {
        let mut scores = vec![0.0, 10.0, 0.0];
        LogitsProcessor::TopP(0.0).apply(&[], &mut scores);
        assert_eq!(scores, vec![f32::NEG_INFINITY, 10.0, f32::NEG_INFINITY]);
    }

    #[test]
    fn repetition_penalty_divides_positive_and_multiplies_negative_scores() {
        let mut scores = vec![2.0, -2.0, 2.0];
        LogitsProcessor::RepetitionPenalty(2.0).apply(&[0, 1, 1, 99], &mut scores);
        assert_eq!(scores, vec![1.0, -4.0, 2.0]);
    }

    #[test]
    fn nan_and_infinite_scores_never_panic() {
        let processors = [
            LogitsProcessor::RepetitionPenalty(1.3),
            LogitsProcessor::Temperature(0.5),
            LogitsProcessor::TopK(2),
            LogitsProcessor::TopP(0.5),
            LogitsProcessor::MinP(0.1),
        ];
        for scores in [
            vec![f32::NAN, 1.0, f32::INFINITY, f32::NEG_INFINITY, 0.0],
            vec![f32::NAN; 5],
            vec![f32::NEG_INFINITY; 5],
            vec![],
        ] {
            let mut scores = scores;
            process_logits(&processors, &[0, 1, 7], &[4, 99], &mut scores);
        }
    }

    #[test]
    fn eos_is_suppressed_after_the_penalty_and_before_the_warpers() {
        // With top-k 1 applied before suppression, nothing would survive.
        let mut scores = vec![1.0, 5.0, 2.0];
        process_logits(
            &[
                LogitsProcessor::RepetitionPenalty(1.5),
                LogitsProcessor::TopK(1),
            ],
            &[2],
            &[1],
            &mut scores,
        );
        assert_eq!(
            scores,
            vec![f32::NEG_INFINITY, f32::NEG_INFINITY, 2.0 / 1.5]
        );
    }
}
