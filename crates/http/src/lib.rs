//! The HTTP/1.1 serving loop both safeformers servers run on: the Hub mirror
//! (`safeformers mirror`) and the OpenAI-compatible server (`safeformers serve`).
//!
//! [`accept_loop`] holds a bounded number of connections, gives each a watchdog (header, idle and
//! optional stall deadlines, the slowloris defences) and has hyper refuse requests with too many
//! or too large headers (431) before any handler runs. What a request means is the handler's
//! business.

mod connection;

pub use connection::{ConnectionLimits, MIN_HEADER_BYTES, accept_loop};
