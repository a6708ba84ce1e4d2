//! HTTP plumbing of the Hub client: one agent that never follows a redirect by itself (the client
//! decides, hop by hop, where the token may go), the token only for the endpoint's own origin, and
//! URLs stripped of credentials and queries before they reach an error message.

use std::time::Duration;

use ureq::http::{HeaderMap, Response, Uri};
use ureq::{Agent, Body};

use crate::error::HubError;
use crate::names::printable;

/// Time to open a connection (TCP and TLS).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest silence while waiting for a response or for the next bytes of a body.
const READ_TIMEOUT: Duration = Duration::from_secs(60);
/// Most redirects followed for one request.
pub(crate) const MAX_REDIRECTS: usize = 5;

/// The method of a request (the client only reads).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Method {
    Head,
    Get,
}

/// Which redirects [`Http::send`] follows itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Follow {
    /// Relative ones only (a renamed repo); an absolute one (a CDN) is handed back as is.
    RelativeOnly,
    /// Every one, to http(s) only and never from https down to http.
    All,
}

/// Scheme, host and port of a URL: what must match the endpoint's for the token to be sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Origin {
    scheme: String,
    host: String,
    port: u16,
}

impl Origin {
    /// The origin of an `http` or `https` URL; `None` for anything else.
    pub(crate) fn of(url: &str) -> Option<Origin> {
        let uri: Uri = url.parse().ok()?;
        let scheme = uri.scheme_str()?.to_ascii_lowercase();
        let default_port = match scheme.as_str() {
            "http" => 80,
            "https" => 443,
            _ => return None,
        };
        let host = uri.host()?.to_ascii_lowercase();
        if host.is_empty() {
            return None;
        }
        let port = uri.port_u16().unwrap_or(default_port);
        Some(Origin { scheme, host, port })
    }
}

/// The agent, the endpoint and the token.
pub(crate) struct Http {
    agent: Agent,
    endpoint: Option<Origin>,
    token: Option<String>,
    offline: bool,
}

impl std::fmt::Debug for Http {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Http")
            .field("endpoint", &self.endpoint)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("offline", &self.offline)
            .finish()
    }
}

impl Http {
    /// An agent for `endpoint`, sending `token` to it alone. Offline, every request is refused
    /// before a socket is opened.
    pub(crate) fn new(endpoint: &str, token: Option<String>, offline: bool) -> Http {
        let agent = Agent::config_builder()
            .max_redirects(0)
            .http_status_as_error(false)
            .timeout_connect(Some(CONNECT_TIMEOUT))
            .timeout_recv_response(Some(READ_TIMEOUT))
            .timeout_recv_body(None)
            .timeout_per_read(Some(READ_TIMEOUT))
            .user_agent(format!("safeformers/{}", env!("CARGO_PKG_VERSION")))
            .accept_encoding("identity")
            .build()
            .new_agent();
        Http {
            agent,
            endpoint: Origin::of(endpoint),
            token: token.filter(|token| !token.is_empty()),
            offline,
        }
    }

    /// Whether `url` is on the endpoint's origin (scheme, host and port).
    pub(crate) fn is_endpoint(&self, url: &str) -> bool {
        self.endpoint.is_some() && Origin::of(url) == self.endpoint
    }

    /// One request, no redirect followed: `Authorization` only when `url` is on the endpoint's
    /// origin.
    fn send_once(
        &self,
        method: Method,
        url: &str,
        headers: &[(&str, String)],
    ) -> Result<Response<Body>, HubError> {
        if self.offline {
            return Err(HubError::Network {
                url: redact_url(url),
                reason: "offline mode is on: no request is made".to_string(),
            });
        }
        if Origin::of(url).is_none() {
            return Err(HubError::Network {
                url: redact_url(url),
                reason: "not an http(s) URL".to_string(),
            });
        }
        let mut request = match method {
            Method::Head => self.agent.head(url),
            Method::Get => self.agent.get(url),
        };
        if let Some(token) = &self.token
            && self.is_endpoint(url)
        {
            request = request.header("Authorization", format!("Bearer {token}"));
        }
        for (name, value) in headers {
            request = request.header(*name, value.as_str());
        }
        request.call().map_err(|error| HubError::Network {
            url: redact_url(url),
            reason: self.scrub(&error.to_string()),
        })
    }

    /// Sends a request and follows redirects as `follow` says, at most [`MAX_REDIRECTS`];
    /// returns the URL that answered and its response (a 3xx when an absolute redirect was not
    /// followed).
    pub(crate) fn send(
        &self,
        method: Method,
        url: &str,
        headers: &[(&str, String)],
        follow: Follow,
    ) -> Result<(String, Response<Body>), HubError> {
        let mut current = url.to_string();
        for _ in 0..=MAX_REDIRECTS {
            let response = self.send_once(method, &current, headers)?;
            if !response.status().is_redirection() {
                return Ok((current, response));
            }
            let Some(location) = header(response.headers(), "location") else {
                return Ok((current, response));
            };
            let Some((next, absolute)) = resolve_location(&current, &location) else {
                return Err(HubError::InvalidServerValue {
                    what: "redirect location",
                    value: printable(&redact_url(&location)),
                    expected: "an http(s) URL",
                });
            };
            if absolute && follow == Follow::RelativeOnly {
                return Ok((current, response));
            }
            if current.to_ascii_lowercase().starts_with("https:")
                && !next.to_ascii_lowercase().starts_with("https:")
            {
                return Err(HubError::Network {
                    url: redact_url(&current),
                    reason: format!(
                        "refusing a redirect from https down to {}",
                        redact_url(&next)
                    ),
                });
            }
            current = next;
        }
        Err(HubError::Network {
            url: redact_url(url),
            reason: format!("more than {MAX_REDIRECTS} redirects"),
        })
    }

    /// `text` with the token (should a library ever echo it) replaced.
    pub(crate) fn scrub(&self, text: &str) -> String {
        match &self.token {
            Some(token) => text.replace(token.as_str(), "<redacted>"),
            None => text.to_string(),
        }
    }
}

/// A header's value as text, if present and visible ASCII.
pub(crate) fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|value| value.to_str().ok())
        .map(|value| value.trim().to_string())
}

/// Where a `Location` points, resolved against the URL that answered, and whether it was
/// absolute (named its own scheme and host). `None` for a non-http(s) target.
pub(crate) fn resolve_location(base: &str, location: &str) -> Option<(String, bool)> {
    let lower = location.to_ascii_lowercase();
    if lower.starts_with("http://") || lower.starts_with("https://") {
        return Origin::of(location).map(|_| (location.to_string(), true));
    }
    if location.contains("://") {
        return None;
    }
    let base_uri: Uri = base.parse().ok()?;
    let scheme = base_uri.scheme_str()?;
    if let Some(rest) = location.strip_prefix("//") {
        let next = format!("{scheme}://{rest}");
        return Origin::of(&next).map(|_| (next, true));
    }
    let authority = base_uri.authority()?.as_str();
    let next = if location.starts_with('/') {
        format!("{scheme}://{authority}{location}")
    } else {
        let path = base_uri.path();
        let dir = path
            .rfind('/')
            .and_then(|end| path.get(..=end))
            .unwrap_or("/");
        format!("{scheme}://{authority}{dir}{location}")
    };
    Some((next, false))
}

/// A URL for an error message: no user, password, query or fragment.
pub(crate) fn redact_url(url: &str) -> String {
    let without_query = url.split(['?', '#']).next().unwrap_or_default();
    let (scheme, rest) = match without_query.split_once("://") {
        Some((scheme, rest)) => (Some(scheme), rest),
        None => (None, without_query),
    };
    let (authority, path) = match rest.find('/') {
        Some(slash) => (
            rest.get(..slash).unwrap_or_default(),
            rest.get(slash..).unwrap_or_default(),
        ),
        None => (rest, ""),
    };
    let host = authority.rsplit('@').next().unwrap_or_default();
    match scheme {
        Some(scheme) => format!("{scheme}://{host}{path}"),
        None => format!("{host}{path}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_compare_scheme_host_and_port() {
        let endpoint = Origin::of("https://huggingface.co").unwrap();
        assert_eq!(
            Origin::of("https://HuggingFace.co:443/api/x?y=1"),
            Some(endpoint.clone())
        );
        assert_ne!(Origin::of("http://huggingface.co"), Some(endpoint.clone()));
        assert_ne!(
            Origin::of("https://huggingface.co:8443"),
            Some(endpoint.clone())
        );
        assert_ne!(Origin::of("https://cdn-lfs.huggingface.co"), Some(endpoint));
        assert_eq!(Origin::of("file:///etc/passwd"), None);
        assert_eq!(Origin::of("not a url"), None);
    }

    #[test]
    fn locations_resolve_against_the_answering_url() {
        let base = "http://127.0.0.1:8080/org/m/resolve/main/config.json";
        assert_eq!(
            resolve_location(base, "/org/new/resolve/main/config.json"),
            Some((
                "http://127.0.0.1:8080/org/new/resolve/main/config.json".to_string(),
                false
            ))
        );
        assert_eq!(
            resolve_location(base, "other.json"),
            Some((
                "http://127.0.0.1:8080/org/m/resolve/main/other.json".to_string(),
                false
            ))
        );
        assert_eq!(
            resolve_location(base, "https://cdn.example/x?sig=1"),
            Some(("https://cdn.example/x?sig=1".to_string(), true))
        );
        assert_eq!(
            resolve_location(base, "//cdn.example/x"),
            Some(("http://cdn.example/x".to_string(), true))
        );
        assert_eq!(resolve_location(base, "file:///etc/passwd"), None);
    }

    #[test]
    fn redacted_urls_keep_no_credentials() {
        assert_eq!(
            redact_url("https://user:secret@host:1/a/b?token=x#f"),
            "https://host:1/a/b"
        );
        assert_eq!(redact_url("https://host"), "https://host");
    }
}
