//! Where the cache is, which endpoint to talk to, with which token, and whether to talk at all:
//! the environment variables of `huggingface_hub`, with the same meanings.

use std::fmt;
use std::path::{Path, PathBuf};

/// The public Hub, used when `HF_ENDPOINT` is not set.
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// Settings of a Hub client. Build with [`HubSettings::from_env`]; the CLI then overrides fields
/// from its flags (`--endpoint`, `--offline`).
#[derive(Clone, PartialEq, Eq)]
pub struct HubSettings {
    /// Base URL of the Hub (`HF_ENDPOINT`), without a trailing `/`.
    pub endpoint: String,
    /// The access token (`HF_TOKEN`, else the file `$HF_HOME/token`). Sent only to the
    /// endpoint's own host; never printed (`Debug` redacts it).
    pub token: Option<String>,
    /// Never open a socket (`HF_HUB_OFFLINE` or `TRANSFORMERS_OFFLINE`).
    pub offline: bool,
    /// The hub cache folder (`HF_HUB_CACHE`, else `$HF_HOME/hub`).
    pub cache_dir: PathBuf,
    /// Show progress bars (only ever on a terminal).
    pub progress: bool,
}

impl fmt::Debug for HubSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HubSettings")
            .field("endpoint", &self.endpoint)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("offline", &self.offline)
            .field("cache_dir", &self.cache_dir)
            .field("progress", &self.progress)
            .finish()
    }
}

impl HubSettings {
    /// Settings from the process environment.
    pub fn from_env() -> HubSettings {
        HubSettings::from_lookup(|key| std::env::var(key).ok())
    }

    /// Settings from any variable lookup (for tests, or an embedding application).
    ///
    /// - `HF_HOME`: default `$XDG_CACHE_HOME/huggingface`, else `~/.cache/huggingface`.
    /// - `HF_HUB_CACHE` (or the legacy `HUGGINGFACE_HUB_CACHE`): default `$HF_HOME/hub`.
    /// - `HF_ENDPOINT`: default `https://huggingface.co`.
    /// - `HF_TOKEN`: else the contents of `$HF_TOKEN_PATH` or `$HF_HOME/token`, trimmed.
    /// - `HF_HUB_OFFLINE` / `TRANSFORMERS_OFFLINE`: `1`, `true`, `yes` or `on` (any case).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> HubSettings {
        let non_empty = |key: &str| lookup(key).filter(|value| !value.trim().is_empty());
        let hf_home = non_empty("HF_HOME").map(PathBuf::from).unwrap_or_else(|| {
            let base = non_empty("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .or_else(|| non_empty("HOME").map(|home| Path::new(&home).join(".cache")))
                .unwrap_or_else(|| PathBuf::from(".cache"));
            base.join("huggingface")
        });
        let cache_dir = non_empty("HF_HUB_CACHE")
            .or_else(|| non_empty("HUGGINGFACE_HUB_CACHE"))
            .map(PathBuf::from)
            .unwrap_or_else(|| hf_home.join("hub"));
        let endpoint = non_empty("HF_ENDPOINT")
            .map(|endpoint| endpoint.trim().trim_end_matches('/').to_string())
            .unwrap_or_else(|| DEFAULT_ENDPOINT.to_string());
        let token = non_empty("HF_TOKEN")
            .map(|token| token.trim().to_string())
            .or_else(|| {
                let path = non_empty("HF_TOKEN_PATH")
                    .map(PathBuf::from)
                    .unwrap_or_else(|| hf_home.join("token"));
                // A token file that is not a small regular file is no token (never a hang).
                safeformers_files::read_capped_string(&path, safeformers_files::caps::TOKEN_FILE)
                    .ok()
                    .map(|token| token.trim().to_string())
                    .filter(|token| !token.is_empty())
            });
        let offline = ["HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"]
            .iter()
            .any(|key| lookup(key).is_some_and(|value| is_truthy(&value)));
        HubSettings {
            endpoint,
            token,
            offline,
            cache_dir,
            progress: true,
        }
    }
}

/// `huggingface_hub`'s notion of a true environment value (`1`, `true`, `yes`, `on`, any case).
pub fn is_truthy(value: &str) -> bool {
    matches!(
        value.trim().to_ascii_lowercase().as_str(),
        "1" | "true" | "yes" | "on"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn settings(vars: &[(&str, &str)]) -> HubSettings {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(key, value)| (key.to_string(), value.to_string()))
            .collect();
        HubSettings::from_lookup(|key| vars.get(key).cloned())
    }

    #[test]
    fn defaults_follow_huggingface_hub() {
        let defaults = settings(&[("HOME", "/home/u")]);
        assert_eq!(defaults.endpoint, DEFAULT_ENDPOINT);
        assert_eq!(
            defaults.cache_dir,
            PathBuf::from("/home/u/.cache/huggingface/hub")
        );
        assert!(!defaults.offline);
        let xdg = settings(&[("HOME", "/home/u"), ("XDG_CACHE_HOME", "/xdg")]);
        assert_eq!(xdg.cache_dir, PathBuf::from("/xdg/huggingface/hub"));
        let home = settings(&[("HF_HOME", "/hf")]);
        assert_eq!(home.cache_dir, PathBuf::from("/hf/hub"));
        let cache = settings(&[("HF_HOME", "/hf"), ("HF_HUB_CACHE", "/cache")]);
        assert_eq!(cache.cache_dir, PathBuf::from("/cache"));
    }

    #[test]
    fn endpoint_offline_and_token() {
        let s = settings(&[
            ("HF_ENDPOINT", "http://127.0.0.1:8080/"),
            ("HF_HUB_OFFLINE", "1"),
            ("HF_TOKEN", " hf_secret \n"),
        ]);
        assert_eq!(s.endpoint, "http://127.0.0.1:8080");
        assert!(s.offline);
        assert_eq!(s.token.as_deref(), Some("hf_secret"));
        assert!(
            !format!("{s:?}").contains("hf_secret"),
            "Debug must redact the token"
        );
        assert!(settings(&[("TRANSFORMERS_OFFLINE", "TRUE")]).offline);
        assert!(!settings(&[("HF_HUB_OFFLINE", "0")]).offline);
    }

    #[test]
    fn token_file_under_hf_home() {
        let dir = std::env::temp_dir().join(format!("safeformers-settings-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("token"), "hf_from_file\n").unwrap();
        let s = settings(&[("HF_HOME", dir.to_str().unwrap())]);
        assert_eq!(s.token.as_deref(), Some("hf_from_file"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
