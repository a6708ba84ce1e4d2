//! RFC 8785, the JSON Canonicalization Scheme (JCS): one byte sequence for every JSON value, so
//! that a hash of it names the value whatever the key order, whitespace or number spelling of
//! the file it came from.
//!
//! - Objects: members sorted by their keys' UTF-16 code units (RFC 8785 §3.2.3), no whitespace.
//! - Strings: `"` and `\` escaped, `\b \f \n \r \t` in their short forms, the other controls
//!   below U+0020 as `\u00xx` (lowercase hex), everything else as is, in UTF-8 (§3.2.2.2).
//! - Numbers: as ECMAScript's `Number.prototype.toString` writes the IEEE 754 double the JSON
//!   number denotes (§3.2.2.3): `4.50` is `4.5`, `1E30` is `1e+30`, `-0` is `0`; an integer
//!   beyond 2^53 is the double nearest to it. NaN and infinities have no JSON form and are
//!   errors.
//! - `null`, `true`, `false` as they are.
//!
//! [`definition_sha256`] is what a tool approval pins: the SHA-256 of the canonical JSON of the
//! definition a model sees.
//!
//! ```
//! use safeformers_agents::canonical_json::canonicalize;
//! let value = serde_json::json!({"b": [1.0, 2.50, 1e30], "a": "\u{20ac}\n"});
//! assert_eq!(canonicalize(&value).unwrap(), "{\"a\":\"\u{20ac}\\n\",\"b\":[1,2.5,1e+30]}");
//! ```

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// Deepest nesting canonicalized (the writer recurses; tool schemas are capped far lower).
pub const MAX_DEPTH: usize = 256;

/// Why a value has no canonical form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CanonicalJsonError {
    /// NaN or an infinity (JSON has no such numbers).
    #[error("the number {0} is not finite; JSON has no such number")]
    NotFinite(String),
    /// Nested deeper than [`MAX_DEPTH`].
    #[error("nested deeper than {MAX_DEPTH} levels")]
    TooDeep,
}

/// The RFC 8785 canonical form of `value`.
pub fn canonicalize(value: &Value) -> Result<String, CanonicalJsonError> {
    let mut out = String::new();
    write_value(value, &mut out, 0)?;
    Ok(out)
}

/// The SHA-256 of the canonical form of `value`, 64 lowercase hex digits.
pub fn canonical_sha256(value: &Value) -> Result<String, CanonicalJsonError> {
    Ok(sha256_hex(canonicalize(value)?.as_bytes()))
}

/// The definition hash of a tool: the SHA-256 of the canonical JSON of
/// `{"name", "description", "parameters", "output_schema"}`, `output_schema` left out when the
/// tool has none.
pub fn definition_sha256(
    name: &str,
    description: &str,
    parameters: &Value,
    output_schema: Option<&Value>,
) -> Result<String, CanonicalJsonError> {
    let mut definition = Map::new();
    definition.insert("name".into(), Value::String(name.into()));
    definition.insert("description".into(), Value::String(description.into()));
    definition.insert("parameters".into(), parameters.clone());
    if let Some(schema) = output_schema {
        definition.insert("output_schema".into(), schema.clone());
    }
    canonical_sha256(&Value::Object(definition))
}

/// SHA-256 of `bytes`, 64 lowercase hex digits.
pub fn sha256_hex(bytes: &[u8]) -> String {
    safeformers_hub::cache::hex(&Sha256::digest(bytes))
}

fn write_value(value: &Value, out: &mut String, depth: usize) -> Result<(), CanonicalJsonError> {
    if depth > MAX_DEPTH {
        return Err(CanonicalJsonError::TooDeep);
    }
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(true) => out.push_str("true"),
        Value::Bool(false) => out.push_str("false"),
        Value::Number(number) => {
            // Without serde_json's `arbitrary_precision`, every number has an f64 value: an
            // integer is the double nearest to it, as a JSON parser in ECMAScript reads it.
            let double = number
                .as_f64()
                .ok_or_else(|| CanonicalJsonError::NotFinite(number.to_string()))?;
            out.push_str(&format_number(double)?);
        }
        Value::String(text) => write_string(text, out),
        Value::Array(items) => {
            out.push('[');
            for (index, item) in items.iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                write_value(item, out, depth + 1)?;
            }
            out.push(']');
        }
        Value::Object(members) => {
            let mut sorted: Vec<(&String, &Value)> = members.iter().collect();
            sorted.sort_by(|(a, _), (b, _)| a.encode_utf16().cmp(b.encode_utf16()));
            out.push('{');
            for (index, (key, item)) in sorted.into_iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                write_string(key, out);
                out.push(':');
                write_value(item, out, depth + 1)?;
            }
            out.push('}');
        }
    }
    Ok(())
}

/// A string as ECMAScript's `JSON.stringify` writes it (RFC 8785 §3.2.2.2).
fn write_string(text: &str, out: &mut String) {
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// A double as ECMAScript's `Number.prototype.toString` writes it (ECMA-262
/// Number::toString, radix 10): the shortest digits that read back as the same double, placed
/// by the decimal exponent: plain integers below 10^21, plain decimals down to 10^-6, else
/// `d.ddde±n`.
///
/// ```
/// use safeformers_agents::canonical_json::format_number;
/// assert_eq!(format_number(333333333.33333329).unwrap(), "333333333.3333333");
/// assert_eq!(format_number(1e21).unwrap(), "1e+21");
/// assert_eq!(format_number(0.000001).unwrap(), "0.000001");
/// assert_eq!(format_number(-0.0).unwrap(), "0");
/// assert!(format_number(f64::NAN).is_err());
/// ```
pub fn format_number(value: f64) -> Result<String, CanonicalJsonError> {
    if !value.is_finite() {
        return Err(CanonicalJsonError::NotFinite(value.to_string()));
    }
    if value == 0.0 {
        return Ok("0".to_string());
    }
    if value < 0.0 {
        return Ok(format!("-{}", format_number(-value)?));
    }
    let (digits, exponent) = shortest_digits(value)?;
    // ECMA-262's k (number of digits) and n (the decimal point's position).
    let k = i32::try_from(digits.len()).unwrap_or(i32::MAX);
    let n = exponent + 1;
    let zeros = |count: i32| "0".repeat(usize::try_from(count).unwrap_or(0));
    let split = |at: i32| digits.split_at(usize::try_from(at).unwrap_or(0).min(digits.len()));
    Ok(if k <= n && n <= 21 {
        format!("{digits}{}", zeros(n - k))
    } else if 0 < n && n <= 21 {
        let (whole, fraction) = split(n);
        format!("{whole}.{fraction}")
    } else if -6 < n && n <= 0 {
        format!("0.{}{digits}", zeros(-n))
    } else {
        let sign = if n - 1 < 0 { '-' } else { '+' };
        let (first, rest) = split(1);
        let point = if rest.is_empty() { "" } else { "." };
        format!("{first}{point}{rest}e{sign}{}", (n - 1).abs())
    })
}

/// ECMA-262's digits s and exponent of `value` (positive, finite): the fewest digits k that
/// read back as `value`; of those k-digit decimals, the closest to `value`, the even one on a
/// tie. Returns the digits and the decimal exponent of the first (`value` = 0.d1d2... × 10^(e+1)).
fn shortest_digits(value: f64) -> Result<(String, i32), CanonicalJsonError> {
    let split = |scientific: &str| -> Option<(String, i32)> {
        let (mantissa, exponent) = scientific.split_once('e')?;
        let digits = mantissa.chars().filter(char::is_ascii_digit).collect();
        Some((digits, exponent.parse().ok()?))
    };
    let not_finite = || CanonicalJsonError::NotFinite(value.to_string());
    // Rust's `{:e}` writes the fewest digits that read back as the value, but on a tie between
    // two such k-digit decimals it may not pick the even one (1424953923781206.25 is written
    // ...206.3; ECMA-262 wants ...206.2).
    let shortest = format!("{value:e}");
    let (digits, exponent) = split(&shortest).ok_or_else(not_finite)?;
    // With a precision, `{:.N$e}` rounds the exact binary value to k digits, ties to even: the
    // closest k-digit decimal. It is the answer whenever it reads back as the value (next to
    // a power of two, the closest may fall outside the narrower lower half of the interval).
    let precision = digits.len().saturating_sub(1);
    let closest = format!("{value:.precision$e}");
    if closest.parse::<f64>().ok() == Some(value)
        && let Some(found) = split(&closest)
        && found.0.len() == digits.len()
    {
        return Ok(found);
    }
    Ok((digits, exponent))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    /// RFC 8785 Appendix B: IEEE 754 doubles (as bit patterns) and their serialization.
    #[test]
    fn rfc8785_appendix_b_numbers() {
        let cases: &[(u64, &str)] = &[
            (0x0000000000000000, "0"),
            (0x8000000000000000, "0"),
            (0x0000000000000001, "5e-324"),
            (0x8000000000000001, "-5e-324"),
            (0x7fefffffffffffff, "1.7976931348623157e+308"),
            (0xffefffffffffffff, "-1.7976931348623157e+308"),
            (0x4340000000000000, "9007199254740992"),
            (0xc340000000000000, "-9007199254740992"),
            (0x4430000000000000, "295147905179352830000"),
            (0x44b52d02c7e14af5, "9.999999999999997e+22"),
            (0x44b52d02c7e14af6, "1e+23"),
            (0x44b52d02c7e14af7, "1.0000000000000001e+23"),
            (0x444b1ae4d6e2ef4e, "999999999999999700000"),
            (0x444b1ae4d6e2ef4f, "999999999999999900000"),
            (0x444b1ae4d6e2ef50, "1e+21"),
            (0x3eb0c6f7a0b5ed8c, "9.999999999999997e-7"),
            (0x3eb0c6f7a0b5ed8d, "0.000001"),
            (0x41b3de4355555553, "333333333.3333332"),
            (0x41b3de4355555554, "333333333.33333325"),
            (0x41b3de4355555555, "333333333.3333333"),
            (0x41b3de4355555556, "333333333.3333334"),
            (0x41b3de4355555557, "333333333.33333343"),
            (0xbecbf647612f3696, "-0.0000033333333333333333"),
            (0x43143ff3c1cb0959, "1424953923781206.2"),
        ];
        for &(bits, expected) in cases {
            assert_eq!(
                format_number(f64::from_bits(bits)).unwrap(),
                expected,
                "{bits:#018x}"
            );
        }
        for bits in [
            0x7fffffffffffffff_u64,
            0x7ff0000000000000,
            0xfff0000000000000,
        ] {
            assert!(format_number(f64::from_bits(bits)).is_err(), "{bits:#x}");
        }
    }

    /// RFC 8785 §3.2.2: the example input and its canonical form (whitespace, escapes, numbers
    /// and literals).
    #[test]
    fn rfc8785_section_3_2_2_example() {
        let input = r#"{
          "numbers": [333333333.33333329, 1E30, 4.50, 2e-3, 0.000000000000000000000000001],
          "string": "\u20ac$\u000F\u000aA'\u0042\u0022\u005c\\\"\/",
          "literals": [null, true, false]
        }"#;
        let value: Value = serde_json::from_str(input).unwrap();
        assert_eq!(
            canonicalize(&value).unwrap(),
            "{\"literals\":[null,true,false],\"numbers\":[333333333.3333333,1e+30,4.5,0.002,\
             1e-27],\"string\":\"\u{20ac}$\\u000f\\nA'B\\\"\\\\\\\\\\\"/\"}"
        );
    }

    /// RFC 8785 §3.2.3: keys sorted by UTF-16 code units (an astral character's surrogates
    /// sort below U+FB33, unlike its code point).
    #[test]
    fn rfc8785_section_3_2_3_sorting() {
        let input = r#"{
          "\u20ac": "Euro Sign",
          "\r": "Carriage Return",
          "\ufb33": "Hebrew Letter Dalet With Dagesh",
          "1": "One",
          "\ud83d\ude00": "Emoji: Grinning Face",
          "\u0080": "Control",
          "\u00f6": "Latin Small Letter O With Diaeresis"
        }"#;
        let value: Value = serde_json::from_str(input).unwrap();
        let canonical = canonicalize(&value).unwrap();
        let order: Vec<&str> = [
            "Carriage Return",
            "One",
            "Control",
            "Latin Small Letter O With Diaeresis",
            "Euro Sign",
            "Emoji: Grinning Face",
            "Hebrew Letter Dalet With Dagesh",
        ]
        .to_vec();
        let positions: Vec<usize> = order
            .iter()
            .map(|name| canonical.find(name).unwrap())
            .collect();
        assert!(
            positions.windows(2).all(|pair| pair[0] < pair[1]),
            "{canonical}"
        );
        assert!(canonical.starts_with("{\"\\r\":\"Carriage Return\",\"1\":\"One\",\"\u{80}\":"));
    }

    #[test]
    fn integers_are_doubles() {
        assert_eq!(
            canonicalize(&json!(9007199254740993_u64)).unwrap(),
            "9007199254740992"
        );
        assert_eq!(
            canonicalize(&json!(u64::MAX)).unwrap(),
            "18446744073709552000"
        );
        assert_eq!(
            canonicalize(&json!(i64::MIN)).unwrap(),
            "-9223372036854776000"
        );
        assert_eq!(canonicalize(&json!(-0.0)).unwrap(), "0");
        assert_eq!(canonicalize(&json!(100)).unwrap(), "100");
    }

    #[test]
    fn the_definition_hash_leaves_out_an_absent_output_schema() {
        let parameters = json!({"type": "object"});
        let without = definition_sha256("t", "d", &parameters, None).unwrap();
        let expected =
            sha256_hex(br#"{"description":"d","name":"t","parameters":{"type":"object"}}"#);
        assert_eq!(without, expected);
        let with = definition_sha256("t", "d", &parameters, Some(&json!({}))).unwrap();
        assert_ne!(with, without);
        let reordered = json!({"type": "object"});
        assert_eq!(
            definition_sha256("t", "d", &reordered, None).unwrap(),
            without
        );
    }

    #[test]
    fn deep_values_are_refused_not_overflowed() {
        let mut value = json!(1);
        for _ in 0..MAX_DEPTH + 2 {
            value = json!([value]);
        }
        assert_eq!(canonicalize(&value), Err(CanonicalJsonError::TooDeep));
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            // Decimals as schemas write them (`0.5`, `-12.25`): their shortest digits are
            // short enough that any JSON parser reads them back exactly.
            (-1_000_000_i64..1_000_000, 0_i32..4)
                .prop_map(|(mantissa, places)| json!(mantissa as f64 / 10_f64.powi(places))),
            "\\PC*".prop_map(Value::String),
            any::<String>().prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 64, 8, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
                prop::collection::btree_map(any::<String>(), inner, 0..8)
                    .prop_map(|map| Value::Object(map.into_iter().collect())),
            ]
        })
    }

    proptest! {
        /// Every finite double is written so that it reads back as itself, and in ECMAScript's
        /// shape: no exponent from 1e-6 to below 1e21, none of `+0`, `.0` or `E`.
        #[test]
        fn numbers_round_trip(value in any::<f64>().prop_filter("finite", |f| f.is_finite())) {
            let text = format_number(value).unwrap();
            let back: f64 = text.parse().unwrap();
            prop_assert_eq!(
                if value == 0.0 { 1 } else { text.trim_start_matches('-').split('e').next().unwrap().replace('.', "")
                    .trim_start_matches('0').trim_end_matches('0').len() },
                format!("{:e}", value.abs()).split('e').next().unwrap().replace('.', "").len(),
                "shortest digits: {}", text
            );
            prop_assert_eq!(back, if value == 0.0 { 0.0 } else { value });
            let magnitude = value.abs();
            let plain = magnitude == 0.0 || (1e-6..1e21).contains(&magnitude);
            prop_assert_eq!(!text.contains('e'), plain, "{}", text);
            prop_assert!(!text.contains('E') && !text.ends_with(".0") && !text.contains("e+0"));
        }

        /// Integers that are exact doubles are written as their decimal digits.
        #[test]
        fn safe_integers_are_plain(value in -(1_i64 << 53)..=(1_i64 << 53)) {
            prop_assert_eq!(canonicalize(&json!(value)).unwrap(), value.to_string());
        }

        /// The canonical form is JSON that means the same value, and canonicalizing it again
        /// changes nothing; key order and whitespace of the input do not matter.
        #[test]
        fn canonical_form_is_stable(value in json_value()) {
            let canonical = canonicalize(&value).unwrap();
            let reread: Value = serde_json::from_str(&canonical).unwrap();
            prop_assert_eq!(canonicalize(&reread).unwrap(), canonical.clone());
            let pretty = serde_json::to_string_pretty(&value).unwrap();
            let from_pretty: Value = serde_json::from_str(&pretty).unwrap();
            prop_assert_eq!(canonicalize(&from_pretty).unwrap(), canonical);
        }

        /// Strings hold no raw control character and read back unchanged.
        #[test]
        fn strings_are_escaped(text in any::<String>()) {
            let canonical = canonicalize(&Value::String(text.clone())).unwrap();
            prop_assert!(!canonical.chars().any(|c| u32::from(c) < 0x20));
            let back: String = serde_json::from_str(&canonical).unwrap();
            prop_assert_eq!(back, text);
        }
    }
}
