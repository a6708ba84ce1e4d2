//! `token-classification` (NER), as Transformers' `TokenClassificationPipeline`: a softmax per
//! token, then the aggregation strategy (`none`, `simple`, `first`, `max`, `average`), character
//! offsets into the input, and tokens or groups labelled `O` left out.
//!
//! Words are found as Transformers finds them: with the tokenizer model's
//! `continuing_subword_prefix` (WordPiece's `##`) a token continues a word when its text is
//! longer than the span it covers; without one (byte-level BPE, Unigram) the fallback rule
//! applies: a token starts a word when the character before it, or its own first character, is
//! a space.

use std::path::Path;

use safeformers_models::Head;
use serde::Serialize;

use crate::encoder::{Encoder, LoadOptions, softmax};
use crate::error::Result;

/// How token predictions are merged (Transformers' `aggregation_strategy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Aggregation {
    /// Every token on its own (`{"entity", "score", "index", "word", "start", "end"}`).
    None,
    /// Adjacent tokens with the same entity type (B-/I- tags) are grouped.
    Simple,
    /// Words take the label of their first token, then grouped.
    First,
    /// Words take the label of their most confident token, then grouped.
    Max,
    /// Words take the label of their tokens' mean scores, then grouped.
    Average,
}

impl Aggregation {
    /// Parses Transformers' name (`none`, `simple`, `first`, `max`, `average`).
    pub fn parse(name: &str) -> Option<Aggregation> {
        Some(match name {
            "none" => Aggregation::None,
            "simple" => Aggregation::Simple,
            "first" => Aggregation::First,
            "max" => Aggregation::Max,
            "average" => Aggregation::Average,
            _ => return None,
        })
    }
}

/// One token's prediction (aggregation `none`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TokenEntity {
    /// The label.
    pub entity: String,
    /// Its probability.
    pub score: f32,
    /// The token's position in the encoded input (special tokens counted).
    pub index: usize,
    /// The token as the vocabulary spells it (`##ing`, `Ġname`).
    pub word: String,
    /// First character (Unicode scalar values into the input).
    pub start: usize,
    /// One past the last character.
    pub end: usize,
}

/// A group of tokens or words with one entity type.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EntityGroup {
    /// The entity type (the label without its `B-`/`I-`).
    pub entity_group: String,
    /// The mean score of the group's members.
    pub score: f32,
    /// The group's text, decoded from its tokens.
    pub word: String,
    /// First character.
    pub start: usize,
    /// One past the last character.
    pub end: usize,
}

/// The entities of one input.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Entities {
    /// Aggregation `none`.
    Tokens(Vec<TokenEntity>),
    /// Any other aggregation.
    Groups(Vec<EntityGroup>),
}

/// A token of the input with its scores, before aggregation (`gather_pre_entities`).
#[derive(Debug, Clone)]
struct PreEntity {
    word: String,
    scores: Vec<f32>,
    start: usize,
    end: usize,
    index: usize,
    is_subword: bool,
}

/// An entity with its label, before grouping.
#[derive(Debug, Clone)]
struct Labelled {
    entity: String,
    score: f32,
    word: String,
    start: usize,
    end: usize,
    index: usize,
}

/// The token-classification pipeline.
#[derive(Debug)]
pub struct TokenClassification {
    encoder: Encoder,
    has_subword_prefix: bool,
    batch_size: usize,
}

impl TokenClassification {
    /// Loads a token-classification model and its tokenizer from `dir`.
    pub fn from_dir(
        dir: &Path,
        options: &LoadOptions,
        batch_size: usize,
    ) -> Result<TokenClassification> {
        let encoder = Encoder::load(dir, Head::TokenClassification, options)?;
        let has_subword_prefix = encoder.tokenizer().continuing_subword_prefix().is_some();
        Ok(TokenClassification {
            encoder,
            has_subword_prefix,
            batch_size: batch_size.max(1),
        })
    }

    /// The tokenizer and model.
    pub fn encoder(&self) -> &Encoder {
        &self.encoder
    }

    /// Transformers' `convert_tokens_to_string`: the decoder on token strings (no cleanup).
    fn tokens_to_string(&self, tokens: Vec<String>) -> Result<String> {
        Ok(self.encoder.tokenizer().convert_tokens_to_string(tokens)?)
    }

    /// The entities of each input, in input order.
    pub fn run<S: AsRef<str>>(
        &self,
        inputs: &[S],
        aggregation: Aggregation,
    ) -> Result<Vec<Entities>> {
        let mut results: Vec<Entities> = vec![Entities::Tokens(Vec::new()); inputs.len()];
        let options = self.encoder.encode_options();
        let unk = self.encoder.tokenizer().unk_token_id();
        self.encoder
            .for_each_batch(inputs, self.batch_size, &options, |batch, rows, output| {
                let logits = self.encoder.logits(output)?.to_vec3::<f32>()?;
                for ((&index, row), row_logits) in batch.iter().zip(rows).zip(logits) {
                    let sentence: Vec<char> = inputs
                        .get(index)
                        .map(|s| s.as_ref().chars().collect())
                        .unwrap_or_default();
                    let mut pre = Vec::new();
                    for (position, token_logits) in row_logits.iter().enumerate() {
                        if row.special_tokens_mask.get(position) != Some(&0) {
                            continue;
                        }
                        let (start, end) = row.offsets.get(position).copied().unwrap_or((0, 0));
                        let slice = |a: usize, b: usize| -> String {
                            sentence
                                .get(a.min(sentence.len())..b.min(sentence.len()))
                                .map(|c| c.iter().collect())
                                .unwrap_or_default()
                        };
                        let word_ref = slice(start, end);
                        let mut word = row.tokens.get(position).cloned().unwrap_or_default();
                        let mut is_subword = if self.has_subword_prefix {
                            word.chars().count() != word_ref.chars().count()
                        } else {
                            start > 0 && !slice(start - 1, start + 1).contains(' ')
                        };
                        if unk.is_some() && row.input_ids.get(position).copied() == unk {
                            word = word_ref;
                            is_subword = false;
                        }
                        pre.push(PreEntity {
                            word,
                            scores: softmax(token_logits),
                            start,
                            end,
                            index: position,
                            is_subword,
                        });
                    }
                    let entities = self.aggregate(pre, aggregation)?;
                    if let Some(slot) = results.get_mut(index) {
                        *slot = entities;
                    }
                }
                Ok(())
            })?;
        Ok(results)
    }

    fn aggregate(&self, pre: Vec<PreEntity>, aggregation: Aggregation) -> Result<Entities> {
        let labelled: Vec<Labelled> = match aggregation {
            Aggregation::None | Aggregation::Simple => pre
                .into_iter()
                .map(|entity| {
                    let (best, score) = argmax(&entity.scores);
                    Labelled {
                        entity: self.encoder.label(best),
                        score,
                        word: entity.word,
                        start: entity.start,
                        end: entity.end,
                        index: entity.index,
                    }
                })
                .collect(),
            _ => {
                // `aggregate_words`: a word is a token and the subword tokens after it.
                let mut words: Vec<Vec<PreEntity>> = Vec::new();
                for entity in pre {
                    match words.last_mut() {
                        Some(group) if entity.is_subword => group.push(entity),
                        _ => words.push(vec![entity]),
                    }
                }
                words
                    .into_iter()
                    .map(|group| self.aggregate_word(group, aggregation))
                    .collect::<Result<_>>()?
            }
        };
        if aggregation == Aggregation::None {
            return Ok(Entities::Tokens(
                labelled
                    .into_iter()
                    .filter(|entity| entity.entity != "O")
                    .map(|entity| TokenEntity {
                        entity: entity.entity,
                        score: entity.score,
                        index: entity.index,
                        word: entity.word,
                        start: entity.start,
                        end: entity.end,
                    })
                    .collect(),
            ));
        }
        let groups = self.group_entities(labelled)?;
        Ok(Entities::Groups(
            groups
                .into_iter()
                .filter(|group| group.entity_group != "O")
                .collect(),
        ))
    }

    fn aggregate_word(&self, group: Vec<PreEntity>, aggregation: Aggregation) -> Result<Labelled> {
        let word = self.tokens_to_string(group.iter().map(|e| e.word.clone()).collect())?;
        let scores: Vec<f32> = match aggregation {
            Aggregation::Max => group
                .iter()
                .max_by(|a, b| argmax(&a.scores).1.total_cmp(&argmax(&b.scores).1))
                .map(|e| e.scores.clone())
                .unwrap_or_default(),
            Aggregation::Average => {
                let width = group.first().map_or(0, |e| e.scores.len());
                let mut mean = vec![0f32; width];
                for entity in &group {
                    for (m, s) in mean.iter_mut().zip(&entity.scores) {
                        *m += s;
                    }
                }
                let n = group.len().max(1) as f32;
                mean.into_iter().map(|m| m / n).collect()
            }
            // First (None and Simple do not come here).
            _ => group.first().map(|e| e.scores.clone()).unwrap_or_default(),
        };
        let (best, score) = argmax(&scores);
        Ok(Labelled {
            entity: self.encoder.label(best),
            score,
            word,
            start: group.first().map_or(0, |e| e.start),
            end: group.last().map_or(0, |e| e.end),
            index: group.first().map_or(0, |e| e.index),
        })
    }

    /// `group_entities`: consecutive entities of one type, a `B-` tag starting a new group.
    fn group_entities(&self, entities: Vec<Labelled>) -> Result<Vec<EntityGroup>> {
        let mut groups = Vec::new();
        let mut current: Vec<Labelled> = Vec::new();
        for entity in entities {
            if let Some(last) = current.last() {
                let (bi, tag) = tag(&entity.entity);
                let (_, last_tag) = tag_of(last);
                if !(tag == last_tag && bi != "B") {
                    groups.push(self.group(std::mem::take(&mut current))?);
                }
            }
            current.push(entity);
        }
        if !current.is_empty() {
            groups.push(self.group(current)?);
        }
        Ok(groups)
    }

    fn group(&self, entities: Vec<Labelled>) -> Result<EntityGroup> {
        let entity_group = entities
            .first()
            .map(|e| {
                e.entity
                    .split_once('-')
                    .map_or(e.entity.clone(), |(_, rest)| rest.to_string())
            })
            .unwrap_or_default();
        let score = entities.iter().map(|e| e.score).sum::<f32>() / entities.len().max(1) as f32;
        let word = self.tokens_to_string(entities.iter().map(|e| e.word.clone()).collect())?;
        Ok(EntityGroup {
            entity_group,
            score,
            word,
            start: entities.first().map_or(0, |e| e.start),
            end: entities.last().map_or(0, |e| e.end),
        })
    }
}

fn tag_of(entity: &Labelled) -> (&str, &str) {
    tag(&entity.entity)
}

/// Transformers' `get_tag`: `B-X` → (B, X), `I-X` → (I, X), anything else → (I, itself).
fn tag(label: &str) -> (&str, &str) {
    if let Some(rest) = label.strip_prefix("B-") {
        ("B", rest)
    } else if let Some(rest) = label.strip_prefix("I-") {
        ("I", rest)
    } else {
        ("I", label)
    }
}

/// Index and value of the largest score (the first on ties, as numpy's `argmax`).
fn argmax(scores: &[f32]) -> (usize, f32) {
    let mut best = (0, f32::NEG_INFINITY);
    for (i, &score) in scores.iter().enumerate() {
        if score > best.1 {
            best = (i, score);
        }
    }
    best
}
