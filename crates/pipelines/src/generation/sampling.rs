//! Choosing the next token from processed scores: greedy (`argmax`) or sampling from the
//! softmax with a seeded generator.
//!
//! Sampling cannot reproduce torch's generator; what it promises instead is that one seed gives
//! the same tokens on every run and platform (ChaCha8, seeded from the `u64`), and that a token
//! whose score is `-inf` (removed by a processor) is never chosen.

use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::{RngCore, SeedableRng};

use super::logits::softmax_f32;

/// How the next token is chosen.
#[derive(Debug, Clone)]
pub enum TokenChooser {
    /// The highest score (the first of equal ones, as `torch.argmax`).
    Greedy,
    /// A draw from the softmax of the scores.
    Sample(Box<ChaCha8Rng>),
}

impl TokenChooser {
    /// Sampling seeded with `seed`: the same seed gives the same draws.
    pub fn seeded(seed: u64) -> TokenChooser {
        TokenChooser::seeded_stream(seed, 0)
    }

    /// Sampling from stream `stream` of the generator seeded with `seed`: each input of a call
    /// draws from its own stream (its index), so what it gets does not depend on which other
    /// inputs share its batch.
    pub fn seeded_stream(seed: u64, stream: u64) -> TokenChooser {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(stream);
        TokenChooser::Sample(Box::new(rng))
    }

    /// The chosen token id for one row of processed scores; `None` when no token is possible
    /// (every score `-inf` or NaN).
    pub fn choose(&mut self, scores: &[f32]) -> Option<u32> {
        let index = match self {
            TokenChooser::Greedy => argmax(scores),
            TokenChooser::Sample(rng) => sample(scores, rng),
        }?;
        u32::try_from(index).ok()
    }
}

/// The index of the highest score, the first one on ties; NaN scores are skipped.
pub fn argmax(scores: &[f32]) -> Option<usize> {
    let mut best: Option<(usize, f32)> = None;
    for (index, &score) in scores.iter().enumerate() {
        if score.is_nan() {
            continue;
        }
        if best.is_none_or(|(_, best_score)| score > best_score) {
            best = Some((index, score));
        }
    }
    best.filter(|(_, score)| *score > f32::NEG_INFINITY)
        .map(|(index, _)| index)
}

/// A uniform draw in `[0, 1)` with 53 random bits.
fn uniform(rng: &mut ChaCha8Rng) -> f64 {
    (rng.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

fn sample(scores: &[f32], rng: &mut ChaCha8Rng) -> Option<usize> {
    let probs = softmax_f32(scores);
    let total: f64 = probs
        .iter()
        .filter(|p| p.is_finite())
        .map(|&p| f64::from(p))
        .sum();
    if total <= 0.0 || !total.is_finite() {
        return None;
    }
    let target = uniform(rng) * total;
    let mut cumulative = 0.0f64;
    let mut last_possible = None;
    for (index, &prob) in probs.iter().enumerate() {
        if !(prob > 0.0 && prob.is_finite()) {
            continue;
        }
        cumulative += f64::from(prob);
        last_possible = Some(index);
        if target < cumulative {
            return Some(index);
        }
    }
    // Rounding left the draw past the last step: the last possible token.
    last_possible
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argmax_takes_the_first_of_equal_scores_and_skips_nan() {
        assert_eq!(argmax(&[1.0, 3.0, 3.0]), Some(1));
        assert_eq!(argmax(&[f32::NAN, 0.5]), Some(1));
        assert_eq!(argmax(&[f32::NEG_INFINITY; 3]), None);
        assert_eq!(argmax(&[]), None);
    }

    #[test]
    fn sampling_never_picks_a_removed_token_and_repeats_per_seed() {
        let scores = [
            f32::NEG_INFINITY,
            0.0,
            f32::NEG_INFINITY,
            1.0,
            f32::NEG_INFINITY,
        ];
        let draws = |seed| {
            let mut chooser = TokenChooser::seeded(seed);
            (0..200)
                .map(|_| chooser.choose(&scores))
                .collect::<Vec<_>>()
        };
        let first = draws(7);
        assert_eq!(first, draws(7));
        assert_ne!(first, draws(8));
        assert!(first.iter().all(|t| matches!(t, Some(1) | Some(3))));
        assert!(first.contains(&Some(1)) && first.contains(&Some(3)));
    }
}
