//! A Model Context Protocol client whose tools are pinned: trust on first use, made explicit.
//!
//! MCP servers run outside our sandbox: a stdio server is a local program with the user's
//! rights, an HTTP server is someone else's machine. So:
//!
//! - a stdio server is started only after the user consents to its exact command line
//!   ([`Consent`]), in an environment holding `PATH` and the granted variables only;
//! - every tool's definition (name, description, input schema) is hashed
//!   ([`definition_hash`]); a tool is offered and callable only while its hash is the one the
//!   user approved ([`McpLock`]). A new tool (a renamed one too) is unapproved; a changed one
//!   is blocked, and [`McpTool::diff`] shows what changed (threat T6, the "rug pull");
//! - `notifications/tools/list_changed` makes the client list the tools again and re-check
//!   them before the next call, and withhold the result of a call during which the called
//!   tool changed;
//! - what the server sends is untrusted data: messages are capped, calls time out, the number
//!   of tools, the size of descriptions, schemas and results are bounded ([`McpLimits`]);
//! - [`McpToolbox`] offers the approved tools to an agent, each description prefixed with
//!   [`OUTSIDE_SANDBOX`].
//!
//! The client owns a current-thread tokio runtime, so callers stay synchronous.

mod definition;
mod lock;
mod toolbox;
mod transport;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ClientCapabilities, ClientConfig,
    ContentBlock, Implementation, PaginatedRequestParams, ProtocolVersion, ResourceContents, Tool,
};
use rmcp::service::{Peer, RunningService, ServiceError};
use rmcp::transport::Transport;
use rmcp::{ClientCacheConfig, RoleClient, ServiceExt};
use serde_json::Value;

pub use definition::{McpDefinition, definition_hash, diff, visible};
pub use lock::{McpLock, McpLockEntry, approved_definition, approving};
pub use toolbox::{McpToolbox, OUTSIDE_SANDBOX};
pub use transport::{Consent, McpServerSpec};

/// Bounds on what a server may send and how long it may take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct McpLimits {
    /// Time to start or reach the server and finish the handshake, and to list its tools.
    pub connect_timeout: Duration,
    /// Time for one tool call.
    pub call_timeout: Duration,
    /// Largest message read from the server (a stdio line, an HTTP body or SSE event); a
    /// larger one is dropped, so the request it answers times out.
    pub max_message_bytes: usize,
    /// Most tools a server may list; more is an error for the whole server.
    pub max_tools: usize,
    /// Largest description (UTF-8 bytes); a tool with a larger one is rejected.
    pub max_description_bytes: usize,
    /// Largest input schema (canonical JSON bytes); a tool with a larger one is rejected.
    pub max_schema_bytes: usize,
    /// Largest result handed back from a call (UTF-8 bytes of the text).
    pub max_result_bytes: usize,
}

impl Default for McpLimits {
    /// Connect 30 s, call 60 s, messages 16 MiB, 256 tools, descriptions 16 KiB (as a tool
    /// package's), schemas 1 MiB, results 1 MiB (as a sandboxed tool's default).
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(30),
            call_timeout: Duration::from_secs(60),
            max_message_bytes: 16 << 20,
            max_tools: 256,
            max_description_bytes: 16 << 10,
            max_schema_bytes: 1 << 20,
            max_result_bytes: 1 << 20,
        }
    }
}

/// Most pages of `tools/list` followed: a server cannot page forever.
const MAX_LIST_PAGES: usize = 64;

/// Everything that can go wrong talking to an MCP server. Texts from the server appear with
/// invisible characters made visible and cut to a few hundred bytes.
#[derive(Debug, thiserror::Error)]
pub enum McpError {
    /// A stdio server spec without a program.
    #[error("the MCP server's command line is empty: name the program to run")]
    EmptyCommand,
    /// An environment variable (or argument) a process cannot hold.
    #[error(
        "the environment variable {name:?} cannot be passed to an MCP server (empty, or holds '=' or NUL)"
    )]
    BadEnvironment {
        /// The variable's name.
        name: String,
    },
    /// An HTTP server URL we do not connect to.
    #[error("the MCP server URL {url:?} is refused: {reason}")]
    BadUrl {
        /// The URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// The user did not consent: nothing was started.
    #[error("not started: the user did not consent to the MCP server {server}")]
    ConsentRefused {
        /// The server's identity.
        server: String,
    },
    /// The runtime of the client could not be made.
    #[error("the MCP client's runtime could not start: {0}")]
    Runtime(#[source] std::io::Error),
    /// The server program could not be started.
    #[error("could not start the MCP server {server}: {source}")]
    Spawn {
        /// The server's identity.
        server: String,
        /// The error from the OS.
        #[source]
        source: std::io::Error,
    },
    /// The HTTP client could not be made.
    #[error("could not set up the HTTP client for the MCP server {url}: {reason}")]
    HttpClient {
        /// The server's URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// The handshake failed.
    #[error("the MCP server {server} did not complete the handshake: {reason}")]
    Handshake {
        /// The server's identity.
        server: String,
        /// What went wrong.
        reason: String,
    },
    /// A request took longer than allowed.
    #[error("the MCP server {server} did not answer {what} within {seconds} s")]
    Timeout {
        /// The server's identity.
        server: String,
        /// The request.
        what: &'static str,
        /// The limit.
        seconds: u64,
    },
    /// A request failed at the protocol level.
    #[error("the MCP server {server} failed {what}: {reason}")]
    Protocol {
        /// The server's identity.
        server: String,
        /// The request.
        what: &'static str,
        /// The error.
        reason: String,
    },
    /// The server lists more tools than allowed.
    #[error("the MCP server {server} lists more than {max} tools")]
    TooManyTools {
        /// The server's identity.
        server: String,
        /// The limit.
        max: usize,
    },
    /// The server lists one name twice: which definition would be pinned is ambiguous.
    #[error("the MCP server {server} lists the tool {tool:?} more than once")]
    DuplicateTool {
        /// The server's identity.
        server: String,
        /// The name.
        tool: String,
    },
    /// No tool of that name on the server.
    #[error("the MCP server {server} has no tool {tool:?}")]
    UnknownTool {
        /// The server's identity.
        server: String,
        /// The name asked for.
        tool: String,
    },
    /// The tool was never approved.
    #[error(
        "the MCP tool {tool:?} of {server} is not approved: review its definition and approve it"
    )]
    NotApproved {
        /// The server's identity.
        server: String,
        /// The tool.
        tool: String,
    },
    /// The tool's definition is not the approved one (a rug pull, or an update).
    #[error(
        "the MCP tool {tool:?} of {server} changed since it was approved (approved {approved}, now {current}): review the diff and approve it again"
    )]
    Changed {
        /// The server's identity.
        server: String,
        /// The tool.
        tool: String,
        /// The approved hash.
        approved: String,
        /// The hash of what the server sends now.
        current: String,
    },
    /// The tool breaks a bound or a naming rule and cannot be approved.
    #[error("the MCP tool {tool:?} of {server} is rejected: {reason}")]
    Rejected {
        /// The server's identity.
        server: String,
        /// The tool.
        tool: String,
        /// Which rule.
        reason: String,
    },
    /// The definition changed between review and approval: nothing was approved.
    #[error(
        "the MCP tool {tool:?} changed after it was reviewed (reviewed {reviewed}, now {current}): review it again"
    )]
    ApprovalStale {
        /// The tool.
        tool: String,
        /// The hash the user reviewed.
        reviewed: String,
        /// The hash the server sends now.
        current: String,
    },
    /// Arguments that are not a JSON object.
    #[error("the arguments of the MCP tool {tool:?} must be a JSON object")]
    ArgumentsNotObject {
        /// The tool.
        tool: String,
    },
    /// A result over the size bound.
    #[error("the MCP tool {tool:?} returned {bytes} bytes, more than the {max} allowed")]
    ResultTooLarge {
        /// The tool.
        tool: String,
        /// Its size.
        bytes: usize,
        /// The limit.
        max: usize,
    },
    /// The tool ran and reported an error (`isError`): shown to the model, which may retry.
    #[error("the MCP tool {tool:?} failed: {message}")]
    ToolFailed {
        /// The tool.
        tool: String,
        /// The tool's error text (bounded).
        message: String,
    },
    /// The client was closed.
    #[error("the connection to the MCP server {server} is closed")]
    Closed {
        /// The server's identity.
        server: String,
    },
}

impl McpError {
    /// Whether this is a refusal by policy (no consent, a tool not approved or changed since,
    /// a server URL we do not talk to) rather than a failure.
    pub fn is_policy_refusal(&self) -> bool {
        matches!(
            self,
            McpError::ConsentRefused { .. }
                | McpError::BadUrl { .. }
                | McpError::NotApproved { .. }
                | McpError::Changed { .. }
                | McpError::Rejected { .. }
                | McpError::ApprovalStale { .. }
        )
    }

    /// Whether the caller asked for something that cannot be done as asked.
    pub fn is_usage_error(&self) -> bool {
        matches!(
            self,
            McpError::EmptyCommand | McpError::BadEnvironment { .. } | McpError::UnknownTool { .. }
        )
    }
}

/// Where a listed tool stands against the approvals.
#[derive(Debug, Clone, PartialEq)]
pub enum ToolStatus {
    /// Its definition hash is the approved one: offered and callable.
    Approved,
    /// Never approved on this server (a new tool, or a renamed one).
    Unapproved,
    /// Approved once, but the server now sends another definition: blocked.
    Changed {
        /// The approved hash.
        approved_hash: String,
        /// The approved definition, when the lock holds it intact: the old side of the diff.
        approved: Option<McpDefinition>,
    },
    /// Breaks a bound or naming rule: blocked and cannot be approved.
    Rejected {
        /// Which rule.
        reason: String,
    },
}

/// A tool as listed by its server, with its standing.
#[derive(Debug, Clone, PartialEq)]
pub struct McpTool {
    /// What the server sends now.
    pub definition: McpDefinition,
    /// [`definition_hash`] of it: pass it to [`McpClient::approve`] after review.
    pub definition_hash: String,
    /// Approved, unapproved, changed or rejected.
    pub status: ToolStatus,
}

impl McpTool {
    /// Whether the tool may be offered and called.
    pub fn is_approved(&self) -> bool {
        self.status == ToolStatus::Approved
    }

    /// For a changed tool, what changed since approval ([`diff`]).
    pub fn diff(&self) -> Option<String> {
        match &self.status {
            ToolStatus::Changed {
                approved: Some(approved),
                ..
            } => Some(diff(approved, &self.definition)),
            ToolStatus::Changed {
                approved: None,
                approved_hash,
            } => Some(format!(
                "(the recorded definition of hash {approved_hash} is missing or does not match \
                 it; the whole definition now sent follows)\n{}",
                self.review()
            )),
            _ => None,
        }
    }

    /// The whole definition for review before approval, invisible characters made visible,
    /// with its hash.
    pub fn review(&self) -> String {
        let mut text = self.definition.review_lines().join("\n");
        text.push_str(&format!("\ndefinition hash: {}\n", self.definition_hash));
        text
    }
}

/// A connection to one MCP server, with its tools checked against the approvals.
///
/// Dropping it closes the connection and stops a stdio server (its stdin is closed; it is
/// killed if it has not exited within 2 s).
pub struct McpClient {
    runtime: tokio::runtime::Runtime,
    service: Option<RunningService<RoleClient, ClientConfig>>,
    server: String,
    lock: McpLock,
    tools: Vec<McpTool>,
    list_changed: Arc<AtomicBool>,
    limits: McpLimits,
}

impl std::fmt::Debug for McpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("McpClient")
            .field("server", &self.server)
            .field("tools", &self.tools)
            .finish_non_exhaustive()
    }
}

impl McpClient {
    /// Asks `consent` (with [`McpServerSpec::display`]), then starts or reaches the server,
    /// completes the handshake and lists its tools, each checked against `lock`.
    ///
    /// Without consent nothing is spawned and no connection is made.
    pub fn connect(
        spec: &McpServerSpec,
        consent: &dyn Consent,
        lock: McpLock,
        limits: McpLimits,
    ) -> Result<Self, McpError> {
        transport::check_spec(spec)?;
        let server = spec.identity();
        if !consent.allow_start(&spec.display()) {
            return Err(McpError::ConsentRefused {
                server: visible(&server),
            });
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(McpError::Runtime)?;
        let (service, list_changed) = match spec {
            McpServerSpec::Stdio { command, env } => {
                let transport = {
                    let _in_runtime = runtime.enter();
                    transport::spawn_stdio(command, env, &limits)
                }
                .map_err(|source| McpError::Spawn {
                    server: visible(&server),
                    source,
                })?;
                let flag = transport.list_changed_flag();
                (handshake(&runtime, transport, &server, &limits)?, flag)
            }
            McpServerSpec::Http { url } => {
                let transport = {
                    let _in_runtime = runtime.enter();
                    transport::http_transport(url, &limits)?
                };
                let flag = transport.list_changed_flag();
                (handshake(&runtime, transport, &server, &limits)?, flag)
            }
        };
        let mut client = Self {
            runtime,
            service: Some(service),
            server,
            lock,
            tools: Vec::new(),
            list_changed,
            limits,
        };
        client.relist()?;
        Ok(client)
    }

    /// The server's identity, as pinned in the lock.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// The tools as last listed, each with its standing.
    pub fn tools(&self) -> &[McpTool] {
        &self.tools
    }

    /// The approvals, with those made through [`McpClient::approve`]: for the caller to
    /// persist.
    pub fn lock(&self) -> &McpLock {
        &self.lock
    }

    /// Lists the tools again and re-checks them (done by itself after
    /// `notifications/tools/list_changed`).
    pub fn refresh(&mut self) -> Result<(), McpError> {
        self.relist()
    }

    /// Approves `tool` as the user reviewed it: `reviewed_hash` is the
    /// [`McpTool::definition_hash`] shown to the user. If the server has changed the tool
    /// since, nothing is approved ([`McpError::ApprovalStale`]).
    /// `ask`: each call of the tool also needs the user's yes (recorded with the approval).
    pub fn approve(&mut self, tool: &str, reviewed_hash: &str, ask: bool) -> Result<(), McpError> {
        self.relist_if_changed()?;
        let server = self.server.clone();
        let found = self.tools.iter_mut().find(|t| t.definition.name == tool);
        let Some(found) = found else {
            return Err(McpError::UnknownTool {
                server: visible(&server),
                tool: visible(tool),
            });
        };
        if let ToolStatus::Rejected { reason } = &found.status {
            let (server, tool, reason) = (visible(&server), visible(tool), reason.clone());
            return Err(McpError::Rejected {
                server,
                tool,
                reason,
            });
        }
        if found.definition_hash != reviewed_hash {
            return Err(McpError::ApprovalStale {
                tool: visible(tool),
                reviewed: visible(reviewed_hash),
                current: found.definition_hash.clone(),
            });
        }
        self.lock
            .record(lock::approving(&server, &found.definition, ask));
        found.status = ToolStatus::Approved;
        Ok(())
    }

    /// Calls `tool` with `arguments` (a JSON object) and returns its text result.
    ///
    /// Refused unless the tool is approved as the server lists it now. If the server notified
    /// a change of its tools while the call ran and the tool is no longer the approved one,
    /// the result is withheld ([`McpError::Changed`]).
    pub fn call(&mut self, tool: &str, arguments: &Value) -> Result<String, McpError> {
        self.relist_if_changed()?;
        self.check_callable(tool)?;
        let Value::Object(arguments) = arguments else {
            return Err(McpError::ArgumentsNotObject {
                tool: visible(tool),
            });
        };
        let params = CallToolRequestParams::new(tool.to_owned()).with_arguments(arguments.clone());
        let peer = self.peer()?;
        let response = self.block_on(
            "tools/call",
            self.limits.call_timeout,
            peer.call_tool_once(params),
        )?;
        if self.relist_if_changed()? {
            self.check_callable(tool)?;
        }
        let result = match response {
            CallToolResponse::Complete(result) => result,
            _ => {
                return Err(self.protocol_error(
                    "tools/call",
                    "the server asked for more input or made a task; not supported".into(),
                ));
            }
        };
        render_result(tool, result, self.limits.max_result_bytes)
    }

    /// Closes the connection; a stdio server gets 2 s to exit before it is killed.
    pub fn close(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let Some(service) = self.service.take() {
            let grace = self.limits.connect_timeout.min(Duration::from_secs(5));
            let _ = self
                .runtime
                .block_on(async move { tokio::time::timeout(grace, service.cancel()).await });
        }
    }

    fn peer(&self) -> Result<Peer<RoleClient>, McpError> {
        match &self.service {
            Some(service) => Ok(service.peer().clone()),
            None => Err(McpError::Closed {
                server: visible(&self.server),
            }),
        }
    }

    fn check_callable(&self, tool: &str) -> Result<(), McpError> {
        let (server, name) = (visible(&self.server), visible(tool));
        let Some(found) = self.tools.iter().find(|t| t.definition.name == tool) else {
            return Err(McpError::UnknownTool { server, tool: name });
        };
        match &found.status {
            ToolStatus::Approved => Ok(()),
            ToolStatus::Unapproved => Err(McpError::NotApproved { server, tool: name }),
            ToolStatus::Changed { approved_hash, .. } => Err(McpError::Changed {
                server,
                tool: name,
                approved: visible(approved_hash),
                current: found.definition_hash.clone(),
            }),
            ToolStatus::Rejected { reason } => Err(McpError::Rejected {
                server,
                tool: name,
                reason: reason.clone(),
            }),
        }
    }

    /// Lists again if the server notified a change; whether it did.
    fn relist_if_changed(&mut self) -> Result<bool, McpError> {
        if self.list_changed.load(Ordering::SeqCst) {
            self.relist()?;
            return Ok(true);
        }
        Ok(false)
    }

    fn relist(&mut self) -> Result<(), McpError> {
        // Cleared before listing: a change notified while the list is read raises it again.
        self.list_changed.store(false, Ordering::SeqCst);
        let peer = self.peer()?;
        let max_tools = self.limits.max_tools;
        let listed = self.block_on(
            "tools/list",
            self.limits.connect_timeout,
            list_tools(&peer, max_tools),
        )?;
        let Some(listed) = listed else {
            return Err(McpError::TooManyTools {
                server: visible(&self.server),
                max: max_tools,
            });
        };
        self.tools = check_tools(&self.server, listed, &self.lock, &self.limits)?;
        Ok(())
    }

    fn block_on<T>(
        &self,
        what: &'static str,
        timeout: Duration,
        request: impl Future<Output = Result<T, ServiceError>>,
    ) -> Result<T, McpError> {
        // The timer is made inside the runtime: tokio's timers need its context.
        match self
            .runtime
            .block_on(async { tokio::time::timeout(timeout, request).await })
        {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => Err(self.protocol_error(what, error.to_string())),
            Err(_) => Err(McpError::Timeout {
                server: visible(&self.server),
                what,
                seconds: timeout.as_secs(),
            }),
        }
    }

    fn protocol_error(&self, what: &'static str, reason: String) -> McpError {
        McpError::Protocol {
            server: visible(&self.server),
            what,
            reason: bounded_text(&reason),
        }
    }
}

impl Drop for McpClient {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Starts the MCP session on `transport` within the connect timeout, with rmcp's response
/// cache off: every `tools/list` reaches the server.
fn handshake<T>(
    runtime: &tokio::runtime::Runtime,
    transport: T,
    server: &str,
    limits: &McpLimits,
) -> Result<RunningService<RoleClient, ClientConfig>, McpError>
where
    T: Transport<RoleClient> + 'static,
{
    // The `initialize` lifecycle, which every server of 2025 speaks; no capability offered
    // (no sampling, roots or elicitation for the server to ask of us).
    let config = ClientConfig::new(
        ClientCapabilities::default(),
        Implementation::new("safeformers", env!("CARGO_PKG_VERSION")),
    )
    .with_protocol_version(ProtocolVersion::LATEST_WITH_INITIALIZE);
    let started = runtime.block_on(async {
        let service = tokio::time::timeout(limits.connect_timeout, config.serve(transport)).await;
        if let Ok(Ok(service)) = &service {
            service
                .peer()
                .set_response_cache_config(ClientCacheConfig::disabled())
                .await;
        }
        service
    });
    match started {
        Ok(Ok(service)) => Ok(service),
        Ok(Err(error)) => Err(McpError::Handshake {
            server: visible(server),
            reason: bounded_text(&error.to_string()),
        }),
        Err(_) => Err(McpError::Timeout {
            server: visible(server),
            what: "the handshake",
            seconds: limits.connect_timeout.as_secs(),
        }),
    }
}

/// Every page of `tools/list`, or `None` when there are more than `max_tools` tools or more
/// than [`MAX_LIST_PAGES`] pages.
async fn list_tools(
    peer: &Peer<RoleClient>,
    max_tools: usize,
) -> Result<Option<Vec<Tool>>, ServiceError> {
    let mut tools = Vec::new();
    let mut cursor = None;
    for _ in 0..MAX_LIST_PAGES {
        let params = PaginatedRequestParams::default().with_cursor(cursor);
        let page = peer.list_tools(Some(params)).await?;
        tools.extend(page.tools);
        if tools.len() > max_tools {
            return Ok(None);
        }
        cursor = page.next_cursor;
        if cursor.is_none() {
            return Ok(Some(tools));
        }
    }
    Ok(None)
}

/// Each listed tool's definition, hash and standing against `lock`.
fn check_tools(
    server: &str,
    listed: Vec<Tool>,
    lock: &McpLock,
    limits: &McpLimits,
) -> Result<Vec<McpTool>, McpError> {
    let mut tools: Vec<McpTool> = Vec::with_capacity(listed.len());
    for tool in listed {
        let definition = McpDefinition {
            name: tool.name.into_owned(),
            description: tool.description.map(|d| d.into_owned()).unwrap_or_default(),
            input_schema: Value::Object(Arc::unwrap_or_clone(tool.input_schema)),
        };
        if tools.iter().any(|t| t.definition.name == definition.name) {
            return Err(McpError::DuplicateTool {
                server: visible(server),
                tool: visible(&definition.name),
            });
        }
        let definition_hash = definition.hash();
        let status = match rejection(&definition, limits) {
            Some(reason) => ToolStatus::Rejected { reason },
            None => match lock.entry(server, &definition.name) {
                None => ToolStatus::Unapproved,
                Some(entry) if entry.definition_sha256 == definition_hash => ToolStatus::Approved,
                Some(entry) => ToolStatus::Changed {
                    approved_hash: entry.definition_sha256.clone(),
                    approved: lock::approved_definition(entry),
                },
            },
        };
        tools.push(McpTool {
            definition,
            definition_hash,
            status,
        });
    }
    Ok(tools)
}

/// Why a definition cannot be approved, if it cannot: MCP's naming rule
/// (`[A-Za-z0-9_.-]{1,128}`) and the size bounds.
fn rejection(definition: &McpDefinition, limits: &McpLimits) -> Option<String> {
    let name = &definition.name;
    let name_ok = (1..=128).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
    if !name_ok {
        return Some("its name is not 1 to 128 of A-Z, a-z, 0-9, '_', '.', '-'".into());
    }
    if definition.description.len() > limits.max_description_bytes {
        return Some(format!(
            "its description has {} bytes, more than the {} allowed",
            definition.description.len(),
            limits.max_description_bytes
        ));
    }
    let schema_bytes = definition::canonical(&definition.input_schema).len();
    if schema_bytes > limits.max_schema_bytes {
        return Some(format!(
            "its input schema has {schema_bytes} bytes, more than the {} allowed",
            limits.max_schema_bytes
        ));
    }
    None
}

/// The text of a call's result: its text blocks (and text resources) joined by newlines,
/// other blocks named in brackets, or the structured content as JSON when there is no block.
fn render_result(tool: &str, result: CallToolResult, max: usize) -> Result<String, McpError> {
    let mut parts: Vec<String> = Vec::with_capacity(result.content.len());
    for block in result.content {
        parts.push(match block {
            ContentBlock::Text(text) => text.text,
            ContentBlock::Image(image) => format!("[image: {}]", visible(&image.mime_type)),
            ContentBlock::Audio(audio) => format!("[audio: {}]", visible(&audio.mime_type)),
            ContentBlock::Resource(embedded) => match embedded.resource {
                ResourceContents::TextResourceContents { text, .. } => text,
                ResourceContents::BlobResourceContents { uri, .. } => {
                    format!("[binary resource: {}]", visible(&uri))
                }
                _ => "[resource]".to_owned(),
            },
            ContentBlock::ResourceLink(link) => format!("[resource link: {}]", visible(&link.uri)),
            _ => "[content of a kind not shown]".to_owned(),
        });
    }
    if parts.is_empty()
        && let Some(structured) = &result.structured_content
    {
        parts.push(definition::canonical(structured));
    }
    let text = parts.join("\n");
    if text.len() > max {
        return Err(McpError::ResultTooLarge {
            tool: visible(tool),
            bytes: text.len(),
            max,
        });
    }
    if result.is_error == Some(true) {
        return Err(McpError::ToolFailed {
            tool: visible(tool),
            message: bounded_text(&text),
        });
    }
    Ok(text)
}

/// Server-supplied text for an error message: visible, and at most 512 bytes.
fn bounded_text(text: &str) -> String {
    const MAX: usize = 512;
    let shown = visible(text);
    if shown.len() <= MAX {
        return shown;
    }
    let mut end = MAX;
    while !shown.is_char_boundary(end) {
        end -= 1;
    }
    format!(
        "{}… ({} bytes in all)",
        shown.get(..end).unwrap_or_default(),
        shown.len()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use rmcp::model::{CallToolResult, ContentBlock};
    use serde_json::json;

    fn listed(name: &str, description: &str, schema: Value) -> Tool {
        let Value::Object(schema) = schema else {
            panic!("schema must be an object")
        };
        Tool::new(name.to_owned(), description.to_owned(), Arc::new(schema))
    }

    #[test]
    fn tools_are_checked_against_the_lock() {
        let limits = McpLimits::default();
        let approved = listed("a", "A.", json!({"type": "object"}));
        let mut lock = McpLock::default();
        let def = |t: &Tool| McpDefinition {
            name: t.name.to_string(),
            description: t.description.as_deref().unwrap_or("").to_owned(),
            input_schema: Value::Object((*t.input_schema).clone()),
        };
        lock.record(lock::approving("srv", &def(&approved), true));
        lock.record(lock::approving(
            "srv",
            &def(&listed("b", "B.", json!({}))),
            true,
        ));
        let now = vec![
            approved,
            listed("b", "B. And more.", json!({})),
            listed("c", "C.", json!({})),
            listed("d d", "D.", json!({})),
            listed(
                "e",
                &"x".repeat(limits.max_description_bytes + 1),
                json!({}),
            ),
        ];
        let tools = check_tools("srv", now, &lock, &limits).unwrap();
        let status: Vec<&ToolStatus> = tools.iter().map(|t| &t.status).collect();
        assert_eq!(status[0], &ToolStatus::Approved);
        assert!(matches!(
            status[1],
            ToolStatus::Changed {
                approved: Some(_),
                ..
            }
        ));
        assert_eq!(status[2], &ToolStatus::Unapproved);
        assert!(matches!(status[3], ToolStatus::Rejected { .. }));
        assert!(matches!(status[4], ToolStatus::Rejected { .. }));
        assert!(tools[1].diff().unwrap().contains("+   B. And more."));
        // The same approvals on another server count for nothing.
        let other = check_tools(
            "other",
            vec![listed("a", "A.", json!({"type": "object"}))],
            &lock,
            &limits,
        );
        assert_eq!(other.unwrap()[0].status, ToolStatus::Unapproved);
    }

    #[test]
    fn the_client_can_move_between_threads_and_the_toolbox_be_shared() {
        fn send<T: Send>() {}
        fn sync<T: Sync>() {}
        send::<McpClient>();
        sync::<McpToolbox>();
    }

    #[test]
    fn a_name_listed_twice_is_an_error() {
        let twice = vec![listed("a", "1", json!({})), listed("a", "2", json!({}))];
        let result = check_tools("srv", twice, &McpLock::default(), &McpLimits::default());
        assert!(matches!(result, Err(McpError::DuplicateTool { .. })));
    }

    #[test]
    fn results_are_rendered_bounded_and_errors_kept_apart() {
        let ok =
            CallToolResult::success(vec![ContentBlock::text("one"), ContentBlock::text("two")]);
        assert_eq!(render_result("t", ok, 100).unwrap(), "one\ntwo");
        let big = CallToolResult::success(vec![ContentBlock::text("x".repeat(101))]);
        assert!(matches!(
            render_result("t", big, 100),
            Err(McpError::ResultTooLarge { .. })
        ));
        let failed = CallToolResult::error(vec![ContentBlock::text("bad\u{200b}")]);
        match render_result("t", failed, 100) {
            Err(McpError::ToolFailed { message, .. }) => assert_eq!(message, "bad\\u{200b}"),
            other => panic!("{other:?}"),
        }
        let mut structured = CallToolResult::structured(json!({"b": 1, "a": 2}));
        structured.content.clear();
        let text = render_result("t", structured, 100).unwrap();
        assert!(text.contains("\"a\":2"), "{text}");
    }

    #[test]
    fn error_text_from_a_server_is_bounded() {
        let text = bounded_text(&"é".repeat(1000));
        assert!(text.len() < 600, "{}", text.len());
        assert!(text.ends_with("(2000 bytes in all)"));
    }
}
