//! A pass over the tokens, before parsing, that bounds how deeply the parser (which recurses) and
//! the review's walk of the tree (which recurses too) can nest, so that no file can overflow the
//! stack. The lexer is a loop, not a recursion, so it is safe on any input.

use ruff_python_ast::token::TokenKind;
use ruff_python_parser::{Mode, lexer};

use super::ReviewLimits;

/// Why a file nests too deeply to be reviewed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NestingError {
    /// More brackets open at once than allowed.
    #[error(
        "more than {limit} brackets open at once (CPython itself refuses more than 200: \"too many nested parentheses\")"
    )]
    Brackets {
        /// The limit.
        limit: usize,
    },
    /// More indentation levels than allowed.
    #[error(
        "more than {limit} indentation levels (CPython itself refuses more than 100: \"too many levels of indentation\")"
    )]
    Indentation {
        /// The limit.
        limit: usize,
    },
    /// An expression whose operators could nest more deeply than allowed.
    #[error("an expression of more than {limit} chained operators or keywords between commas")]
    Expression {
        /// The limit.
        limit: usize,
    },
    /// The lexer stopped advancing (a bug in it, reported rather than looped on).
    #[error("the tokenizer stopped advancing")]
    Stalled,
}

/// Nesting counters of one open bracket level.
#[derive(Debug, Default, Clone, Copy)]
struct Level {
    /// Operators and keywords since the last comma at this level: each may be one more level
    /// of the tree (`-x`, `a.b`, `a + b`, `lambda: ...`, `x if c else ...`).
    chain: usize,
    /// `lambda`s whose `:` has not been seen: their parameters' commas do not end the chain.
    open_lambdas: usize,
}

/// Checks, from tokens alone, that the tree of `source` nests within `limits`. Counts are
/// conservative: an operator counts as a level whether or not the parser nests on it.
pub(super) fn check_nesting(source: &str, limits: &ReviewLimits) -> Result<(), NestingError> {
    let mut tokens = lexer::lex(source, Mode::Module);
    let mut outer: Vec<Level> = Vec::new();
    let mut level = Level::default();
    // Sum of `chain` over every open level plus the brackets: a bound on expression depth.
    let mut total = 0usize;
    let mut indentation = 0usize;
    let max_tokens = source.len().saturating_mul(2).saturating_add(1024);
    for _ in 0..max_tokens {
        let kind = tokens.next_token();
        match kind {
            TokenKind::EndOfFile => return Ok(()),
            TokenKind::Lpar | TokenKind::Lsqb | TokenKind::Lbrace => {
                // The bracket itself is one level at the outer level (`f()()()` nests calls).
                level.chain += 1;
                total += 2;
                outer.push(level);
                level = Level::default();
                if outer.len() > limits.max_bracket_depth {
                    return Err(NestingError::Brackets {
                        limit: limits.max_bracket_depth,
                    });
                }
            }
            TokenKind::Rpar | TokenKind::Rsqb | TokenKind::Rbrace => {
                total = total.saturating_sub(level.chain + 1);
                level = outer.pop().unwrap_or_default();
            }
            TokenKind::Comma if level.open_lambdas == 0 => {
                total = total.saturating_sub(level.chain);
                level.chain = 0;
            }
            TokenKind::Newline | TokenKind::Semi => {
                outer.clear();
                level = Level::default();
                total = 0;
            }
            TokenKind::Indent => {
                indentation += 1;
                if indentation > limits.max_indent_depth {
                    return Err(NestingError::Indentation {
                        limit: limits.max_indent_depth,
                    });
                }
            }
            TokenKind::Dedent => indentation = indentation.saturating_sub(1),
            TokenKind::Colon if level.open_lambdas > 0 => level.open_lambdas -= 1,
            _ if kind.is_operator() || kind.is_keyword() => {
                if kind == TokenKind::Lambda {
                    level.open_lambdas += 1;
                }
                level.chain += 1;
                total += 1;
            }
            _ => {}
        }
        if total > limits.max_expression_depth {
            return Err(NestingError::Expression {
                limit: limits.max_expression_depth,
            });
        }
    }
    Err(NestingError::Stalled)
}
