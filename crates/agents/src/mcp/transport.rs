//! How we reach a server: a local program over stdio (started only with consent, in a scrubbed
//! environment) or a streamable-HTTP endpoint; and a transport wrapper that notices
//! `notifications/tools/list_changed` the moment it is read.

use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rmcp::RoleClient;
use rmcp::model::{JsonRpcMessage, ServerNotification};
use rmcp::service::{RxJsonRpcMessage, TxJsonRpcMessage};
use rmcp::transport::Transport;
use rmcp::transport::async_rw::AsyncRwTransport;
use rmcp::transport::common::client_side_sse::ExponentialBackoff;
use rmcp::transport::streamable_http_client::{
    StreamableHttpClientTransport, StreamableHttpClientTransportConfig,
};

use super::definition::visible;
use super::{McpError, McpLimits};

/// An MCP server to connect to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum McpServerSpec {
    /// A local program speaking MCP on its stdin and stdout. It runs outside the sandbox, with
    /// the user's rights, so it is started only with consent; its environment holds `PATH`
    /// and the variables listed here, nothing else (no `HF_TOKEN`, no API keys unless
    /// granted). Its stderr is discarded.
    Stdio {
        /// The program and its arguments, exactly as run (the program is looked up in `PATH`).
        command: Vec<String>,
        /// The environment variables granted to it, by name and value.
        env: Vec<(String, String)>,
    },
    /// A streamable-HTTP endpoint: `https://`, or `http://` to a loopback address only. No
    /// credentials are sent and redirects are not followed.
    Http {
        /// The endpoint's URL.
        url: String,
    },
}

impl McpServerSpec {
    /// The identity approvals are pinned to: `stdio:` and the command line quoted as a POSIX
    /// shell would need it, or `http:` and the URL.
    pub fn identity(&self) -> String {
        match self {
            McpServerSpec::Stdio { command, .. } => format!("stdio:{}", shell_line(command)),
            McpServerSpec::Http { url } => format!("http:{url}"),
        }
    }

    /// What the user is asked to consent to: the exact command line and the names of the
    /// environment variables it gets (values are not shown: they may be secrets), or the URL;
    /// invisible characters made visible.
    pub fn display(&self) -> String {
        match self {
            McpServerSpec::Stdio { command, env } => {
                let mut names = vec!["PATH".to_owned()];
                names.extend(env.iter().map(|(name, _)| name.clone()));
                format!(
                    "run this program on this machine, outside the sandbox, as an MCP server:\n  \
                     {}\nwith the environment variables: {}",
                    visible(&shell_line(command)),
                    visible(&names.join(", "))
                )
            }
            McpServerSpec::Http { url } => {
                format!("connect to the MCP server at {}", visible(url))
            }
        }
    }
}

/// The user's yes or no to starting (or connecting to) a server.
pub trait Consent {
    /// Whether the server described by `spec_display` ([`McpServerSpec::display`]) may be
    /// started. Without a yes, nothing is spawned.
    fn allow_start(&self, spec_display: &str) -> bool;
}

/// The command line quoted for a POSIX shell: unambiguous, so `["a b"]` and `["a", "b"]`
/// read differently.
fn shell_line(command: &[String]) -> String {
    command
        .iter()
        .map(|arg| shell_quote(arg))
        .collect::<Vec<_>>()
        .join(" ")
}

fn shell_quote(arg: &str) -> String {
    let plain = !arg.is_empty()
        && arg
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_@%+=:,./-".contains(c));
    if plain {
        arg.to_owned()
    } else {
        format!("'{}'", arg.replace('\'', "'\\''"))
    }
}

/// Checks what can be checked before asking for consent: a program to run, environment
/// names a process can hold, a URL we would talk to.
pub(super) fn check_spec(spec: &McpServerSpec) -> Result<(), McpError> {
    match spec {
        McpServerSpec::Stdio { command, env } => {
            if command.first().is_none_or(|program| program.is_empty()) {
                return Err(McpError::EmptyCommand);
            }
            if command.iter().any(|arg| arg.contains('\0')) {
                return Err(McpError::BadEnvironment {
                    name: "<command line>".into(),
                });
            }
            for (name, value) in env {
                if name.is_empty() || name.contains(['=', '\0']) || value.contains('\0') {
                    return Err(McpError::BadEnvironment {
                        name: visible(name),
                    });
                }
            }
            Ok(())
        }
        McpServerSpec::Http { url } => check_url(url),
    }
}

fn check_url(url: &str) -> Result<(), McpError> {
    let refuse = |reason: &str| McpError::BadUrl {
        url: visible(url),
        reason: reason.into(),
    };
    let parsed = reqwest::Url::parse(url).map_err(|error| refuse(&error.to_string()))?;
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(refuse("credentials in the URL are not sent"));
    }
    let Some(host) = parsed.host_str() else {
        return Err(refuse("no host"));
    };
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let loopback = match bare.parse::<std::net::IpAddr>() {
        Ok(ip) => ip.is_loopback(),
        Err(_) => host.eq_ignore_ascii_case("localhost"),
    };
    match parsed.scheme() {
        "https" => Ok(()),
        "http" if loopback => Ok(()),
        "http" => Err(refuse("plain http only to a loopback address; use https")),
        _ => Err(refuse("only http and https")),
    }
}

/// Starts the server program. Must run inside the client's runtime (the pipes register with
/// its reactor). The child is killed if it is dropped before [`Watched::close`] waits for it.
pub(super) fn spawn_stdio(
    command: &[String],
    env: &[(String, String)],
    limits: &McpLimits,
) -> std::io::Result<
    Watched<AsyncRwTransport<RoleClient, tokio::process::ChildStdout, tokio::process::ChildStdin>>,
> {
    let (program, args) = command
        .split_first()
        .ok_or_else(|| std::io::Error::other("empty command line"))?;
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args).env_clear();
    if let Some(path) = std::env::var_os("PATH") {
        cmd.env("PATH", path);
    }
    cmd.envs(env.iter().map(|(name, value)| (name, value)))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        // Free-form logs of an untrusted program: not copied to the user's terminal, where
        // escape sequences could rewrite what the user reads.
        .stderr(Stdio::null())
        .kill_on_drop(true);
    let mut child = cmd.spawn()?;
    let (Some(stdout), Some(stdin)) = (child.stdout.take(), child.stdin.take()) else {
        return Err(std::io::Error::other("the child's pipes were not opened"));
    };
    let transport =
        AsyncRwTransport::new_client(stdout, stdin).with_max_line_length(limits.max_message_bytes);
    Ok(Watched::new(transport, Some(child)))
}

/// The streamable-HTTP transport: rustls with ring and the webpki roots, no redirects, the
/// message caps of `limits`, a bounded number of reconnections.
pub(super) fn http_transport(
    url: &str,
    limits: &McpLimits,
) -> Result<Watched<StreamableHttpClientTransport<reqwest::Client>>, McpError> {
    let failed = |reason: String| McpError::HttpClient {
        url: visible(url),
        reason,
    };
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|error| failed(error.to_string()))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let client = reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(limits.connect_timeout)
        .build()
        .map_err(|error| failed(error.to_string()))?;
    let mut retry = ExponentialBackoff::default();
    retry.max_times = Some(3);
    retry.max_delay = Some(Duration::from_secs(5));
    let mut config = StreamableHttpClientTransportConfig::with_uri(url)
        .max_sse_event_size(limits.max_message_bytes)
        .max_json_response_size(limits.max_message_bytes)
        .max_error_response_size(64 * 1024)
        .reinit_on_expired_session(false);
    config.retry_config = Arc::new(retry);
    Ok(Watched::new(
        StreamableHttpClientTransport::with_client(client, config),
        None,
    ))
}

/// A transport that raises a flag when it reads `notifications/tools/list_changed`.
///
/// The flag is set as the message is read, before any later message (such as the response to
/// a call in flight) is: so the next call sees it without depending on when rmcp runs its
/// notification handlers.
pub(super) struct Watched<T> {
    inner: T,
    list_changed: Arc<AtomicBool>,
    child: Option<tokio::process::Child>,
}

impl<T> Watched<T> {
    fn new(inner: T, child: Option<tokio::process::Child>) -> Self {
        Self {
            inner,
            list_changed: Arc::new(AtomicBool::new(false)),
            child,
        }
    }

    /// The flag raised by `notifications/tools/list_changed`.
    pub(super) fn list_changed_flag(&self) -> Arc<AtomicBool> {
        self.list_changed.clone()
    }
}

/// How long a server program gets to exit after its stdin is closed, before it is killed.
const EXIT_GRACE: Duration = Duration::from_secs(2);

impl<T: Transport<RoleClient>> Transport<RoleClient> for Watched<T> {
    type Error = T::Error;

    fn send(
        &mut self,
        item: TxJsonRpcMessage<RoleClient>,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send + 'static {
        self.inner.send(item)
    }

    async fn receive(&mut self) -> Option<RxJsonRpcMessage<RoleClient>> {
        let message = self.inner.receive().await;
        if let Some(JsonRpcMessage::Notification(notification)) = &message
            && matches!(
                notification.notification,
                ServerNotification::ToolListChangedNotification(_)
            )
        {
            self.list_changed.store(true, Ordering::SeqCst);
        }
        message
    }

    async fn close(&mut self) -> Result<(), Self::Error> {
        let closed = self.inner.close().await;
        if let Some(mut child) = self.child.take()
            && tokio::time::timeout(EXIT_GRACE, child.wait())
                .await
                .is_err()
        {
            let _ = child.kill().await;
        }
        closed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_keeps_argument_boundaries() {
        let one = shell_line(&["a b".into()]);
        let two = shell_line(&["a".into(), "b".into()]);
        assert_eq!(one, "'a b'");
        assert_eq!(two, "a b");
        assert_eq!(shell_line(&["it's".into(), "".into()]), "'it'\\''s' ''");
        assert_eq!(
            shell_line(&["/usr/bin/node".into(), "--port=3".into()]),
            "/usr/bin/node --port=3"
        );
    }

    #[test]
    fn urls_must_be_https_or_loopback_http() {
        assert!(check_url("https://mcp.example.com/mcp").is_ok());
        assert!(check_url("http://127.0.0.1:8080/mcp").is_ok());
        assert!(check_url("http://localhost/mcp").is_ok());
        assert!(check_url("http://[::1]:9/mcp").is_ok());
        assert!(check_url("http://mcp.example.com/mcp").is_err());
        assert!(check_url("http://10.0.0.1/mcp").is_err());
        assert!(check_url("file:///etc/passwd").is_err());
        assert!(check_url("https://user:pw@mcp.example.com/").is_err());
        assert!(check_url("not a url").is_err());
    }

    #[test]
    fn specs_are_checked_before_consent() {
        let stdio = |command: Vec<&str>, env: Vec<(&str, &str)>| McpServerSpec::Stdio {
            command: command.into_iter().map(String::from).collect(),
            env: env.into_iter().map(|(k, v)| (k.into(), v.into())).collect(),
        };
        assert!(check_spec(&stdio(vec![], vec![])).is_err());
        assert!(check_spec(&stdio(vec![""], vec![])).is_err());
        assert!(check_spec(&stdio(vec!["srv"], vec![("A=B", "c")])).is_err());
        assert!(check_spec(&stdio(vec!["srv"], vec![("A", "c\0")])).is_err());
        assert!(check_spec(&stdio(vec!["srv", "--x"], vec![("A", "c")])).is_ok());
    }

    #[test]
    fn the_consent_text_names_the_command_and_the_variables_but_no_values() {
        let spec = McpServerSpec::Stdio {
            command: vec!["npx".into(), "-y".into(), "server\u{200b}".into()],
            env: vec![("GITHUB_TOKEN".into(), "secret-value".into())],
        };
        let shown = spec.display();
        assert!(shown.contains("npx -y 'server\\u{200b}'"), "{shown}");
        assert!(shown.contains("PATH, GITHUB_TOKEN"), "{shown}");
        assert!(!shown.contains("secret-value"), "{shown}");
        assert_eq!(spec.identity(), "stdio:npx -y 'server\u{200b}'");
    }
}
