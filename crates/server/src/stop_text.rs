//! OpenAI's `stop` strings on streamed text: the text is cut before the first stop string,
//! which is never sent, and text that may be the start of one is held back until the next
//! piece shows whether it is.

/// The text of one completion as its pieces arrive, cut at the first stop string.
#[derive(Debug, Clone, Default)]
pub struct StopText {
    stops: Vec<String>,
    text: String,
    /// Bytes of `text` already handed out.
    sent: usize,
    stopped: bool,
}

impl StopText {
    /// Text cut at any of `stops` (empty strings are ignored).
    pub fn new(stops: &[String]) -> StopText {
        StopText {
            stops: stops.iter().filter(|s| !s.is_empty()).cloned().collect(),
            ..StopText::default()
        }
    }

    /// Appends a piece; returns the text that is now safe to send (possibly empty). Once a
    /// stop string has appeared ([`StopText::stopped`]), further pieces are ignored.
    pub fn push(&mut self, piece: &str) -> String {
        if self.stopped {
            return String::new();
        }
        // A stop string completed by this piece starts at most its length before the piece.
        let longest = self.stops.iter().map(String::len).max().unwrap_or(0);
        let mut search_from = self.text.len().saturating_sub(longest);
        while !self.text.is_char_boundary(search_from) {
            search_from -= 1;
        }
        self.text.push_str(piece);
        let first_stop = self
            .stops
            .iter()
            .filter_map(|stop| {
                self.text
                    .get(search_from..)
                    .and_then(|tail| tail.find(stop.as_str()))
            })
            .min();
        if let Some(at) = first_stop {
            self.text.truncate(search_from + at);
            self.stopped = true;
            return self.take_to(self.text.len());
        }
        let held = self.held_back_len();
        self.take_to(self.text.len() - held)
    }

    /// Whether a stop string has appeared.
    pub fn stopped(&self) -> bool {
        self.stopped
    }

    /// Whatever is still held back (the completion ended without a stop string).
    pub fn finish(&mut self) -> String {
        self.take_to(self.text.len())
    }

    /// The whole text so far (cut at the stop string once there is one).
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The length of the longest end of the text that is the start of a stop string.
    fn held_back_len(&self) -> usize {
        let mut held = 0;
        for stop in &self.stops {
            for (end, _) in stop.char_indices().skip(1) {
                if end > held
                    && self.text.len() >= self.sent + end
                    && stop
                        .get(..end)
                        .is_some_and(|start| self.text.ends_with(start))
                {
                    held = end;
                }
            }
        }
        held
    }

    fn take_to(&mut self, end: usize) -> String {
        let end = end.max(self.sent);
        let piece = self
            .text
            .get(self.sent..end)
            .unwrap_or_default()
            .to_string();
        self.sent = end;
        piece
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]

    use proptest::prelude::*;

    use super::*;

    fn run(stops: &[&str], pieces: &[&str]) -> (Vec<String>, bool) {
        let stops: Vec<String> = stops.iter().map(|s| s.to_string()).collect();
        let mut text = StopText::new(&stops);
        let mut sent: Vec<String> = pieces.iter().map(|piece| text.push(piece)).collect();
        sent.push(text.finish());
        (sent, text.stopped())
    }

    #[test]
    fn text_is_cut_before_the_stop_string_and_prefixes_are_held() {
        let (sent, stopped) = run(&["\nUser:"], &["Hello", "\n", "Us", "er: again"]);
        assert_eq!(sent, ["Hello", "", "", "", ""]);
        assert!(stopped);
        // A held prefix that turns out not to be a stop string is sent with the next piece.
        let (sent, stopped) = run(&["\nUser:"], &["Hi", "\nU", "nder", "!"]);
        assert_eq!(sent.concat(), "Hi\nUnder!");
        assert_eq!(sent[1], "");
        assert_eq!(sent[2], "\nUnder");
        assert!(!stopped);
    }

    #[test]
    fn the_earliest_stop_wins_and_nothing_follows_it() {
        let (sent, stopped) = run(&["c", "ab"], &["xab", "c", "more"]);
        assert_eq!(sent.concat(), "x");
        assert!(stopped);
    }

    #[test]
    fn multibyte_text_is_cut_on_character_boundaries() {
        let (sent, _) = run(&["é!"], &["café", "!", "x"]);
        assert_eq!(sent.concat(), "caf");
        let (sent, _) = run(&["🙂"], &["a", "🙂"]);
        assert_eq!(sent.concat(), "a");
    }

    proptest! {
        #[test]
        fn pieces_add_up_to_the_text_cut_at_the_first_stop(
            pieces in proptest::collection::vec("[ab\\né]{0,4}", 0..12),
            stop in "[ab\\né]{1,3}",
        ) {
            let whole: String = pieces.concat();
            let expected = match whole.find(&stop) {
                Some(at) => &whole[..at],
                None => whole.as_str(),
            };
            let refs: Vec<&str> = pieces.iter().map(String::as_str).collect();
            let (sent, stopped) = run(&[stop.as_str()], &refs);
            prop_assert_eq!(sent.concat(), expected);
            prop_assert_eq!(stopped, whole.contains(&stop));
        }
    }
}
