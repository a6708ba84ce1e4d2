//! [`StreamDecoder`]: generated ids to text as they come, chunk by chunk, giving in total exactly
//! what decoding the whole sequence gives.
//!
//! The method of text-generation-inference and `tokenizers`' `DecodeStream`: decode a window of
//! recent ids twice, without and with the new ones, and emit the difference. Decoding the window
//! from the same start both times keeps the decoder's context (a Metaspace decoder strips the
//! first space of a sequence, WordPiece joins `##` pieces, cleanup removes spaces before
//! punctuation) the same on both sides. A chunk is held back while the text ends in U+FFFD (a
//! byte-level BPE piece that ends inside a character) or while the last id is a byte-fallback
//! token (`<0xE4>`: the next ones may complete its character); [`StreamDecoder::finish`]
//! reconciles the tail with a decode of the whole sequence.

use crate::error::Result;
use crate::tokenizer::Tokenizer;

/// Turns ids into text incrementally (made by [`Tokenizer::stream_decoder`]).
///
/// ```
/// # use std::path::Path;
/// use safeformers_tokenize::{EncodeOptions, Tokenizer, TokenizerOptions};
/// # let dir = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/bytelevel"));
/// let tokenizer = Tokenizer::from_dir(dir, &TokenizerOptions::default())?;
/// let ids = tokenizer.encode("Hello world!", &EncodeOptions::default())?.rows[0].input_ids.clone();
/// let mut stream = tokenizer.stream_decoder(true);
/// let mut text = String::new();
/// for id in &ids {
///     text.push_str(&stream.push(*id)?.unwrap_or_default());
/// }
/// text.push_str(&stream.finish()?.unwrap_or_default());
/// assert_eq!(text, tokenizer.decode(&ids, true)?);
/// # Ok::<(), safeformers_tokenize::TokenizeError>(())
/// ```
#[derive(Debug)]
pub struct StreamDecoder<'t> {
    tokenizer: &'t Tokenizer,
    skip_special_tokens: bool,
    ids: Vec<u32>,
    /// Start of the window decoded for context.
    prefix_offset: usize,
    /// End of what has been emitted.
    read_offset: usize,
    /// Everything emitted so far.
    emitted: String,
}

/// Whether a token is a SentencePiece byte-fallback piece (`<0x0A>`).
fn is_byte_token(token: &str) -> bool {
    let Some(hex) = token
        .strip_prefix("<0x")
        .and_then(|rest| rest.strip_suffix('>'))
    else {
        return false;
    };
    hex.len() == 2 && hex.bytes().all(|b| b.is_ascii_hexdigit())
}

impl<'t> StreamDecoder<'t> {
    pub(crate) fn new(tokenizer: &'t Tokenizer, skip_special_tokens: bool) -> Self {
        Self {
            tokenizer,
            skip_special_tokens,
            ids: Vec::new(),
            prefix_offset: 0,
            read_offset: 0,
            emitted: String::new(),
        }
    }

    /// The ids pushed so far.
    pub fn ids(&self) -> &[u32] {
        &self.ids
    }

    /// Adds one id; returns the text it completes, if any (`None` while a character or a
    /// byte sequence is still incomplete, or when the id adds no text, like a skipped special
    /// token).
    pub fn push(&mut self, token_id: u32) -> Result<Option<String>> {
        self.ids.push(token_id);
        let holds_bytes = self
            .tokenizer
            .id_to_token(token_id)
            .is_some_and(|token| is_byte_token(&token));
        if holds_bytes {
            return Ok(None);
        }
        // A token that decodes to nothing (a skipped special token) is transparent: byte
        // pieces on both sides of it join into one character in the full decode, so a pending
        // byte sequence stays pending.
        if self
            .tokenizer
            .decode(&[token_id], self.skip_special_tokens)?
            .is_empty()
        {
            return Ok(None);
        }
        let (prefix_text, new_text) = self.window_texts()?;
        if new_text.len() <= prefix_text.len() || new_text.ends_with('\u{FFFD}') {
            return Ok(None);
        }
        let Some(chunk) = new_text.strip_prefix(prefix_text.as_str()) else {
            // The new id changed text already emitted (a cleanup rule reaching back): wait
            // for `finish` to reconcile.
            return Ok(None);
        };
        let chunk = chunk.to_owned();
        self.prefix_offset = self.read_offset;
        self.read_offset = self.ids.len();
        self.emitted.push_str(&chunk);
        Ok(Some(chunk))
    }

    /// The decoded text of the window's already-emitted part (`prefix_offset..read_offset`) and
    /// of the whole window (`prefix_offset..`).
    fn window_texts(&self) -> Result<(String, String)> {
        let window = self.ids.get(self.prefix_offset..).unwrap_or_default();
        let before = self
            .ids
            .get(self.prefix_offset..self.read_offset)
            .unwrap_or_default();
        Ok((
            self.tokenizer.decode(before, self.skip_special_tokens)?,
            self.tokenizer.decode(window, self.skip_special_tokens)?,
        ))
    }

    /// Ends the stream: returns the text not yet emitted (held-back bytes, decoded as the whole
    /// sequence decodes them, U+FFFD included).
    pub fn finish(&mut self) -> Result<Option<String>> {
        let full = self.tokenizer.decode(&self.ids, self.skip_special_tokens)?;
        let rest = match full.strip_prefix(self.emitted.as_str()) {
            Some(rest) => rest.to_owned(),
            None => {
                // Cannot happen with the decoders we know of; the window's own tail is the
                // best continuation of what was emitted.
                let (prefix_text, new_text) = self.window_texts()?;
                new_text
                    .strip_prefix(prefix_text.as_str())
                    .unwrap_or_default()
                    .to_owned()
            }
        };
        self.prefix_offset = self.ids.len();
        self.read_offset = self.ids.len();
        self.emitted.push_str(&rest);
        Ok(Some(rest).filter(|rest| !rest.is_empty()))
    }
}

#[cfg(test)]
mod tests {
    use super::is_byte_token;

    #[test]
    fn byte_tokens() {
        assert!(is_byte_token("<0x0A>"));
        assert!(is_byte_token("<0xe4>"));
        assert!(!is_byte_token("<0x0A"));
        assert!(!is_byte_token("<0x0AB>"));
        assert!(!is_byte_token("<s>"));
    }
}
