//! When a row stops: an EOS token, the length limit, or a stop string.
//!
//! Stop strings follow Transformers' `StopStringCriteria`: a row stops as soon as its text
//! (prompt included) contains a stop string that overlaps the token just generated. A string
//! that sits wholly in the earlier text does not count, and the string (with whatever the last
//! token adds after it) stays in the output.

use serde::Serialize;

/// Why a row stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// It produced one of the EOS tokens (kept as its last token).
    Eos,
    /// It reached `max_new_tokens` / `max_length`.
    Length,
    /// Its text came to contain a stop string.
    StopString,
}

/// Whether `text` contains one of `stop_strings` ending after byte `boundary`, the end of
/// the text before the last token.
pub fn ends_in_stop_string(text: &str, boundary: usize, stop_strings: &[String]) -> bool {
    stop_strings.iter().any(|stop| {
        if stop.is_empty() {
            return false;
        }
        // A match ending after `boundary` starts after `boundary - len + 1` at the earliest.
        let mut start = boundary.saturating_sub(stop.len().saturating_sub(1));
        while start > 0 && !text.is_char_boundary(start) {
            start -= 1;
        }
        text.get(start..).is_some_and(|tail| {
            tail.match_indices(stop.as_str())
                .any(|(offset, _)| start + offset + stop.len() > boundary)
        })
    })
}

/// The length in bytes of the longest common prefix of `a` and `b`, on a char boundary: where
/// the text before the last token and the text with it stop agreeing (byte-level tokens can
/// change the last characters of the text before them).
pub fn common_prefix_len(a: &str, b: &str) -> usize {
    a.char_indices()
        .zip(b.chars())
        .find(|((_, ca), cb)| ca != cb)
        .map_or_else(|| a.len().min(b.len()), |((index, _), _)| index)
}

/// Incremental stop-string checking for one sequence: only a window of the last tokens is
/// decoded per new token, never the whole sequence.
///
/// The window keeps at least [`StopStringState::window_tokens`] tokens before the newest one
/// (enough for the longest stop string, each token being at least one byte of text once
/// complete, plus a margin so that the window's first tokens, which may decode differently
/// without their left context, stay far from any match); it is moved forward when it grows to
/// twice that, so decoding costs a bounded amount per token.
#[derive(Debug, Clone)]
pub struct StopStringState {
    stop_strings: Vec<String>,
    /// Index (in prompt + tokens) of the window's first token.
    start: usize,
    /// The window's text before the newest token.
    text: String,
    window: usize,
}

impl StopStringState {
    /// The state after `prompt`.
    pub fn new(
        prompt: &[u32],
        stop_strings: &[String],
        decode: super::DecodeFn<'_>,
    ) -> crate::error::Result<StopStringState> {
        let window = Self::window_tokens(stop_strings);
        let start = prompt.len().saturating_sub(window);
        Ok(StopStringState {
            stop_strings: stop_strings.to_vec(),
            start,
            text: decode(prompt.get(start..).unwrap_or_default())?,
            window,
        })
    }

    /// Tokens kept before the newest one: four per byte of the longest stop string plus 16.
    pub fn window_tokens(stop_strings: &[String]) -> usize {
        let longest = stop_strings.iter().map(String::len).max().unwrap_or(0);
        longest.saturating_mul(4).saturating_add(16)
    }

    /// Takes the newest token (the last of `tokens`) and tells whether the text now has a stop
    /// string overlapping it (see [`ends_in_stop_string`]).
    pub fn push(
        &mut self,
        prompt: &[u32],
        tokens: &[u32],
        decode: super::DecodeFn<'_>,
    ) -> crate::error::Result<bool> {
        let window_ids = |start: usize| -> Vec<u32> {
            prompt.iter().chain(tokens).skip(start).copied().collect()
        };
        let text = decode(&window_ids(self.start))?;
        let boundary = common_prefix_len(&self.text, &text);
        let stopped = ends_in_stop_string(&text, boundary, &self.stop_strings);
        self.text = text;
        let total = prompt.len() + tokens.len();
        if total - self.start > 2 * self.window + 1 {
            self.start = total - self.window;
            self.text = decode(&window_ids(self.start))?;
        }
        Ok(stopped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stops(text: &str, boundary: usize, stop: &str) -> bool {
        ends_in_stop_string(text, boundary, &[stop.to_string()])
    }

    #[test]
    fn a_stop_string_must_overlap_the_last_token() {
        // Transformers' own examples for "stop": ["st", "op"], ["sto", "pper"], ["las", "topper"].
        assert!(stops("stop", 2, "stop"));
        assert!(stops("stopper", 3, "stop"));
        assert!(stops("lastopper", 3, "stop"));
        assert!(stops("stop", 0, "stop"));
        // ["stop", "at"] and ["st", "op", "at"]: the string ended before the last token.
        assert!(!stops("stopat", 4, "stop"));
        assert!(!stops("st op", 5, "stop"));
        assert!(!stops("anything", 3, ""));
    }

    #[test]
    fn boundaries_are_safe_inside_multibyte_text() {
        assert!(stops("héllo wörld", 9, "wö"));
        assert!(!stops("héllo wörld", 11, "wö"));
        assert_eq!(common_prefix_len("ab\u{FFFD}", "abé"), 2);
        assert_eq!(common_prefix_len("ab", "abc"), 2);
    }

    /// The windowed check finds exactly what decoding the whole sequence finds, also after the
    /// window has moved many times.
    #[test]
    fn the_window_agrees_with_decoding_everything() {
        // Token t decodes to one letter, 26 to "", 27 to "xy" (tokens of several lengths).
        let decode = |ids: &[u32]| -> crate::error::Result<String> {
            Ok(ids
                .iter()
                .map(|&t| match t {
                    26 => String::new(),
                    27 => "xy".to_string(),
                    t => char::from(b'a' + (t % 26) as u8).to_string(),
                })
                .collect())
        };
        let stops = vec!["xyz".to_string(), "qq".to_string()];
        let prompt: Vec<u32> = (0..40).map(|i| (i * 7) % 26).collect();
        let generated: Vec<u32> = (0..300u32)
            .map(|i| match i % 37 {
                5 => 27,
                6 => 25,
                11 => 26,
                20 | 21 => 16,
                _ => (i * 5 + 1) % 23,
            })
            .collect();
        let mut state = StopStringState::new(&prompt, &stops, &decode).unwrap();
        let mut previous = decode(&prompt).unwrap();
        let mut hits = 0;
        for end in 1..=generated.len() {
            let tokens = &generated[..end];
            let mut all = prompt.clone();
            all.extend_from_slice(tokens);
            let text = decode(&all).unwrap();
            let want = ends_in_stop_string(&text, common_prefix_len(&previous, &text), &stops);
            previous = text;
            assert_eq!(
                state.push(&prompt, tokens, &decode).unwrap(),
                want,
                "token {end}"
            );
            hits += usize::from(want);
        }
        assert!(hits > 10, "the fixture must hit the stop strings: {hits}");
    }
}
