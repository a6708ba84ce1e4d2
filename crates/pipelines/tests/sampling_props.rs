//! Properties of the logits processors and the sampler over random scores and settings: at
//! least one token always survives, surviving tokens keep their (temperature-scaled) scores,
//! the kept set is what top-k, top-p and min-p promise, and sampled ids always lie in it.

use proptest::prelude::*;
use safeformers_pipelines::generation::{LogitsProcessor, TokenChooser, process_logits};

fn settings() -> impl Strategy<Value = (f32, Option<usize>, Option<f32>, Option<f32>)> {
    (
        0.1f32..3.0,
        proptest::option::of(1usize..40),
        proptest::option::of(0.0f32..1.0),
        proptest::option::of(0.0f32..1.0),
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn sampled_tokens_lie_in_the_kept_set(
        scores in proptest::collection::vec(-20.0f32..20.0, 1..64),
        (temperature, top_k, top_p, min_p) in settings(),
        seed in any::<u64>(),
    ) {
        let mut processors = vec![LogitsProcessor::Temperature(temperature)];
        processors.extend(top_k.map(LogitsProcessor::TopK));
        processors.extend(top_p.map(LogitsProcessor::TopP));
        processors.extend(min_p.map(LogitsProcessor::MinP));
        let mut processed = scores.clone();
        process_logits(&processors, &[], &[], &mut processed);

        let kept: Vec<usize> = (0..processed.len())
            .filter(|&i| processed[i] > f32::NEG_INFINITY)
            .collect();
        prop_assert!(!kept.is_empty(), "every token removed");
        for &i in &kept {
            prop_assert_eq!(processed[i], scores[i] / temperature);
        }
        // The best token always survives; top-k never keeps more than k distinct scores above
        // its k-th.
        let best = (0..scores.len())
            .max_by(|&a, &b| scores[a].total_cmp(&scores[b]))
            .unwrap();
        prop_assert!(kept.contains(&best));
        if let Some(k) = top_k {
            let mut sorted = scores.clone();
            sorted.sort_by(|a, b| b.total_cmp(a));
            let kth = sorted[k.min(sorted.len()) - 1];
            prop_assert!(kept.iter().all(|&i| scores[i] >= kth));
        }

        let mut chooser = TokenChooser::seeded(seed);
        let draws: Vec<Option<u32>> = (0..50).map(|_| chooser.choose(&processed)).collect();
        for draw in &draws {
            let token = draw.unwrap() as usize;
            prop_assert!(kept.contains(&token), "drew removed token {}", token);
        }
        let mut again = TokenChooser::seeded(seed);
        let repeat: Vec<Option<u32>> = (0..50).map(|_| again.choose(&processed)).collect();
        prop_assert_eq!(draws, repeat);
    }

    #[test]
    fn repetition_penalty_only_lowers_seen_tokens(
        scores in proptest::collection::vec(-20.0f32..20.0, 1..64),
        seen in proptest::collection::vec(0u32..80, 0..20),
        penalty in 1.0f32..4.0,
    ) {
        let mut processed = scores.clone();
        LogitsProcessor::RepetitionPenalty(penalty).apply(&seen, &mut processed);
        for (i, (&before, &after)) in scores.iter().zip(&processed).enumerate() {
            if seen.contains(&(i as u32)) {
                prop_assert!(after <= before);
            } else {
                prop_assert_eq!(after, before);
            }
        }
    }
}
