//! A bounded look at a request body before serde parses it: the nesting depth and the number
//! of values. `serde_json` stops at 128 levels on its own, but a body of a few megabytes can
//! still hold a million tiny values, each an allocation once parsed; this pass counts them in
//! one scan over the bytes, allocating nothing. It does not validate the JSON (serde does):
//! it only refuses shapes over the limits.

/// A request body over a shape limit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JsonShapeError {
    /// Nested deeper than the limit.
    #[error("the JSON body is nested deeper than {limit} levels")]
    TooDeep {
        /// The limit.
        limit: usize,
    },
    /// More values than the limit.
    #[error("the JSON body holds more than {limit} values")]
    TooManyValues {
        /// The limit.
        limit: usize,
    },
}

/// Checks that `body` nests at most `max_depth` arrays and objects and holds at most
/// `max_values` values (counted as openings plus separators, outside strings: at least the
/// number of values and members).
pub fn check_json_shape(
    body: &[u8],
    max_depth: usize,
    max_values: usize,
) -> Result<(), JsonShapeError> {
    let (mut depth, mut values) = (0usize, 1usize);
    let (mut in_string, mut escaped) = (false, false);
    for &byte in body {
        if in_string {
            match (escaped, byte) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                values += 1;
                if depth > max_depth {
                    return Err(JsonShapeError::TooDeep { limit: max_depth });
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            b',' => values += 1,
            _ => continue,
        }
        if values > max_values {
            return Err(JsonShapeError::TooManyValues { limit: max_values });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use proptest::prelude::*;

    use super::*;

    #[test]
    fn depth_and_values_are_bounded_outside_strings() {
        let nested = |levels: usize| format!("{}{}", "[".repeat(levels), "]".repeat(levels));
        assert_eq!(check_json_shape(nested(64).as_bytes(), 64, 1000), Ok(()));
        assert_eq!(
            check_json_shape(nested(65).as_bytes(), 64, 1000),
            Err(JsonShapeError::TooDeep { limit: 64 })
        );
        // Brackets, commas and escaped quotes inside strings are text.
        let text = br#"{"messages": [{"role": "user", "content": "[[[[[, \"{{{{ ,,,,"}]}"#;
        assert_eq!(check_json_shape(text, 3, 8), Ok(()));
        let many = format!("[{}]", vec!["0"; 100].join(","));
        assert_eq!(check_json_shape(many.as_bytes(), 4, 101), Ok(()));
        assert_eq!(
            check_json_shape(many.as_bytes(), 4, 100),
            Err(JsonShapeError::TooManyValues { limit: 100 })
        );
    }

    proptest! {
        /// Any bytes: an answer, never a panic.
        #[test]
        fn never_panics_on_any_bytes(body in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = check_json_shape(&body, 8, 64);
        }

        /// The depth of valid JSON (objects in arrays) is counted exactly.
        #[test]
        fn depth_of_valid_json_is_exact(levels in 1usize..40) {
            let body = format!("{}1{}", r#"{"a":["#.repeat(levels), "]}".repeat(levels));
            prop_assert!(serde_json::from_str::<serde_json::Value>(&body).is_ok());
            prop_assert_eq!(check_json_shape(body.as_bytes(), 2 * levels, 1 << 20), Ok(()));
            prop_assert_eq!(
                check_json_shape(body.as_bytes(), 2 * levels - 1, 1 << 20),
                Err(JsonShapeError::TooDeep { limit: 2 * levels - 1 })
            );
        }
    }
}
