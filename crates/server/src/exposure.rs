//! Where the server may listen and who may call it.
//!
//! A server on a loopback address is reachable from this machine only; one on any other address
//! (`0.0.0.0`, a LAN address) from the network, so it must know who calls: the address is
//! refused unless an API key is configured (Ollama and TEI bind everything with no key by
//! default; this server does neither). Clients send the key as `Authorization: Bearer KEY`, as
//! OpenAI's clients do. It is compared through its SHA-256 digest in constant time, so neither
//! the time taken nor the length of the key leaks, and it never appears in `Debug` output or in
//! an error.

use std::fmt;
use std::net::SocketAddr;

use sha2::{Digest, Sha256};

/// The shortest API key accepted, in bytes.
pub const MIN_KEY_BYTES: usize = 16;

/// The longest API key accepted, in bytes (and the longest `Authorization` value compared).
pub const MAX_KEY_BYTES: usize = 4096;

/// Why the server may not start as asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExposureError {
    /// A non-loopback address without an API key.
    #[error(
        "refusing to listen on {addr}: it is reachable from the network and no API key is \
         configured; set one with --api-key-env VAR (the environment variable holding the key), \
         or listen on a loopback address such as 127.0.0.1"
    )]
    PublicWithoutKey {
        /// The address asked for.
        addr: SocketAddr,
    },
    /// The API key's environment variable is not set, or not valid UTF-8.
    #[error("--api-key-env {variable}: the environment variable is not set (or not UTF-8)")]
    KeyVariableMissing {
        /// The variable's name (never its value).
        variable: String,
    },
    /// The API key is too short, too long, or holds characters a header cannot carry.
    #[error("--api-key-env {variable}: the key {reason}")]
    BadKey {
        /// The variable's name (never its value).
        variable: String,
        /// What is wrong with it.
        reason: &'static str,
    },
}

/// The key clients must present. Only its SHA-256 digest is kept.
#[derive(Clone)]
pub struct ApiKey {
    digest: [u8; 32],
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

impl ApiKey {
    /// The key held by environment variable `variable` (named in errors, never the value).
    pub fn from_env(variable: &str) -> Result<ApiKey, ExposureError> {
        let key = std::env::var(variable).map_err(|_| ExposureError::KeyVariableMissing {
            variable: variable.to_string(),
        })?;
        ApiKey::new(&key).map_err(|reason| ExposureError::BadKey {
            variable: variable.to_string(),
            reason,
        })
    }

    /// `key` checked: [`MIN_KEY_BYTES`] to [`MAX_KEY_BYTES`] bytes of visible ASCII (what an
    /// HTTP header carries unchanged). The error says what is wrong, without the key.
    pub fn new(key: &str) -> Result<ApiKey, &'static str> {
        if key.len() < MIN_KEY_BYTES {
            return Err("is shorter than 16 bytes");
        }
        if key.len() > MAX_KEY_BYTES {
            return Err("is longer than 4096 bytes");
        }
        if !key.bytes().all(|byte| byte.is_ascii_graphic()) {
            return Err("holds characters other than visible ASCII (no spaces or controls)");
        }
        Ok(ApiKey {
            digest: Sha256::digest(key.as_bytes()).into(),
        })
    }

    /// Whether an `Authorization` header value (`Bearer KEY`, the scheme in any case) carries
    /// this key. Constant time in the key; a missing or malformed header is `false`.
    pub fn authorizes(&self, authorization: Option<&[u8]>) -> bool {
        let Some(value) = authorization else {
            return false;
        };
        if value.len() > MAX_KEY_BYTES + "Bearer ".len() {
            return false;
        }
        let (scheme, presented) = value.split_at(value.len().min("Bearer ".len()));
        if !scheme.eq_ignore_ascii_case(b"Bearer ") {
            return false;
        }
        let presented: [u8; 32] = Sha256::digest(presented).into();
        let difference = self
            .digest
            .iter()
            .zip(presented.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        std::hint::black_box(difference) == 0
    }
}

/// Checks that the server may listen on `addr`: a loopback address always (IPv4-mapped
/// loopback included), any other only with an API key.
pub fn check_listen_address(addr: SocketAddr, key: Option<&ApiKey>) -> Result<(), ExposureError> {
    if addr.ip().to_canonical().is_loopback() || key.is_some() {
        Ok(())
    } else {
        Err(ExposureError::PublicWithoutKey { addr })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    const KEY: &str = "sk-test-0123456789abcdef";

    #[test]
    fn only_loopback_listens_without_a_key() {
        let key = ApiKey::new(KEY).unwrap();
        for loopback in [
            "127.0.0.1:8080",
            "127.9.9.9:1",
            "[::1]:8080",
            "[::ffff:127.0.0.1]:80",
        ] {
            let addr: SocketAddr = loopback.parse().unwrap();
            assert_eq!(check_listen_address(addr, None), Ok(()), "{loopback}");
        }
        for public in [
            "0.0.0.0:8080",
            "[::]:8080",
            "192.168.1.5:80",
            "[::ffff:10.0.0.1]:80",
        ] {
            let addr: SocketAddr = public.parse().unwrap();
            let refused = check_listen_address(addr, None).unwrap_err();
            let message = refused.to_string();
            assert!(message.contains("--api-key-env"), "{message}");
            assert!(message.contains(&addr.to_string()), "{message}");
            assert_eq!(check_listen_address(addr, Some(&key)), Ok(()), "{public}");
        }
    }

    #[test]
    fn the_key_is_checked_and_never_shown() {
        let key = ApiKey::new(KEY).unwrap();
        assert!(key.authorizes(Some(format!("Bearer {KEY}").as_bytes())));
        assert!(key.authorizes(Some(format!("bearer {KEY}").as_bytes())));
        for wrong in [
            None,
            Some(KEY.to_string()),
            Some(format!("Basic {KEY}")),
            Some(format!("Bearer {KEY}x")),
            Some(format!("Bearer  {KEY}")),
            Some("Bearer ".to_string()),
            Some(String::new()),
            Some(format!("Bearer {}", "x".repeat(MAX_KEY_BYTES + 1))),
        ] {
            assert!(
                !key.authorizes(wrong.as_deref().map(str::as_bytes)),
                "{wrong:?}"
            );
        }
        assert!(!format!("{key:?}").contains(KEY));
        assert!(ApiKey::new("short").is_err());
        assert!(ApiKey::new("with a space in it, long enough").is_err());
        assert!(ApiKey::new(&"k".repeat(MAX_KEY_BYTES + 1)).is_err());
    }

    #[test]
    fn a_missing_variable_is_named_without_a_value() {
        let error = ApiKey::from_env("SAFEFORMERS_TEST_SURELY_UNSET_KEY").unwrap_err();
        assert!(
            error
                .to_string()
                .contains("SAFEFORMERS_TEST_SURELY_UNSET_KEY")
        );
    }
}
