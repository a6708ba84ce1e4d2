//! `GET /metrics`: Prometheus' text format (0.0.4) of what the server has done. Every series
//! has a fixed, small label set (endpoints are this server's, statuses the ones it answers), so
//! no client can make the metrics grow.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The endpoints counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Endpoint {
    /// `POST /v1/chat/completions`.
    ChatCompletions,
    /// `POST /v1/completions`.
    Completions,
    /// `POST /v1/embeddings`.
    Embeddings,
    /// `POST /embed` (TEI).
    TeiEmbed,
    /// `GET /v1/models`.
    Models,
    /// `GET /health`.
    Health,
    /// `GET /metrics`.
    Metrics,
    /// Anything else (answered 404 or 405).
    Other,
}

impl Endpoint {
    /// The path counted (`other` for the rest).
    pub fn label(self) -> &'static str {
        match self {
            Endpoint::ChatCompletions => "/v1/chat/completions",
            Endpoint::Completions => "/v1/completions",
            Endpoint::Embeddings => "/v1/embeddings",
            Endpoint::TeiEmbed => "/embed",
            Endpoint::Models => "/v1/models",
            Endpoint::Health => "/health",
            Endpoint::Metrics => "/metrics",
            Endpoint::Other => "other",
        }
    }
}

/// Upper bounds (seconds) of the latency histograms' buckets.
const LATENCY_BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// A latency histogram: counts per bucket (cumulative when rendered), the sum in microseconds.
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    /// Counts one observation.
    pub fn observe(&self, latency: Duration) {
        let seconds = latency.as_secs_f64();
        if let Some(bucket) = LATENCY_BUCKETS
            .iter()
            .position(|&bound| seconds <= bound)
            .and_then(|index| self.buckets.get(index))
        {
            bucket.fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }

    fn render(&self, name: &str, help: &str, out: &mut String) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (bound, bucket) in LATENCY_BUCKETS.iter().zip(&self.buckets) {
            cumulative += bucket.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        let count = self.count.load(Ordering::Relaxed);
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {count}");
    }
}

/// The server's counters, gauges and histograms, shared by every request.
#[derive(Debug, Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(Endpoint, u16), u64>>,
    prompt_tokens: AtomicU64,
    generated_tokens: AtomicU64,
    queued: AtomicU64,
    running: AtomicU64,
    cancelled: AtomicU64,
    /// Time from a request's arrival to its first token.
    pub time_to_first_token: Histogram,
    /// Time between two tokens of one sequence.
    pub inter_token_latency: Histogram,
}

impl Metrics {
    /// Counts a request answered with `status`.
    pub fn count_request(&self, endpoint: Endpoint, status: u16) {
        let mut requests = match self.requests.lock() {
            Ok(requests) => requests,
            Err(poisoned) => poisoned.into_inner(),
        };
        *requests.entry((endpoint, status)).or_insert(0) += 1;
    }

    /// Counts tokens read from prompts and generated.
    pub fn count_tokens(&self, prompt: u64, generated: u64) {
        self.prompt_tokens.fetch_add(prompt, Ordering::Relaxed);
        self.generated_tokens
            .fetch_add(generated, Ordering::Relaxed);
    }

    /// Counts sequences whose client went away before they finished.
    pub fn count_cancelled(&self, sequences: u64) {
        self.cancelled.fetch_add(sequences, Ordering::Relaxed);
    }

    /// Sets the gauges: requests waiting for a slot, sequences being generated.
    pub fn set_load(&self, queued: u64, running: u64) {
        self.queued.store(queued, Ordering::Relaxed);
        self.running.store(running, Ordering::Relaxed);
    }

    /// The text `GET /metrics` answers.
    pub fn render(&self) -> String {
        let mut out = String::new();
        out.push_str(
            "# HELP safeformers_requests_total Requests answered, by endpoint and status.\n\
             # TYPE safeformers_requests_total counter\n",
        );
        let requests = match self.requests.lock() {
            Ok(requests) => requests.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        };
        for ((endpoint, status), count) in requests {
            let _ = writeln!(
                out,
                "safeformers_requests_total{{endpoint=\"{}\",status=\"{status}\"}} {count}",
                endpoint.label()
            );
        }
        for (name, help, kind, value) in [
            (
                "safeformers_prompt_tokens_total",
                "Prompt tokens read.",
                "counter",
                &self.prompt_tokens,
            ),
            (
                "safeformers_generated_tokens_total",
                "Tokens generated.",
                "counter",
                &self.generated_tokens,
            ),
            (
                "safeformers_cancelled_sequences_total",
                "Sequences cancelled because their client went away.",
                "counter",
                &self.cancelled,
            ),
            (
                "safeformers_queue_depth",
                "Requests waiting for a slot.",
                "gauge",
                &self.queued,
            ),
            (
                "safeformers_running_sequences",
                "Sequences being generated.",
                "gauge",
                &self.running,
            ),
        ] {
            let value = value.load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        }
        self.time_to_first_token.render(
            "safeformers_time_to_first_token_seconds",
            "From a request's arrival to its first token.",
            &mut out,
        );
        self.inter_token_latency.render(
            "safeformers_inter_token_latency_seconds",
            "Between two tokens of one sequence.",
            &mut out,
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let metrics = Metrics::default();
        metrics.count_request(Endpoint::ChatCompletions, 200);
        metrics.count_request(Endpoint::ChatCompletions, 200);
        metrics.count_request(Endpoint::Other, 404);
        metrics.count_tokens(12, 30);
        metrics.set_load(3, 16);
        metrics
            .time_to_first_token
            .observe(Duration::from_millis(40));
        metrics
            .time_to_first_token
            .observe(Duration::from_secs(100));
        let text = metrics.render();
        for line in [
            "safeformers_requests_total{endpoint=\"/v1/chat/completions\",status=\"200\"} 2",
            "safeformers_requests_total{endpoint=\"other\",status=\"404\"} 1",
            "safeformers_prompt_tokens_total 12",
            "safeformers_generated_tokens_total 30",
            "safeformers_queue_depth 3",
            "safeformers_running_sequences 16",
            "safeformers_time_to_first_token_seconds_bucket{le=\"0.025\"} 0",
            "safeformers_time_to_first_token_seconds_bucket{le=\"0.05\"} 1",
            "safeformers_time_to_first_token_seconds_bucket{le=\"30\"} 1",
            "safeformers_time_to_first_token_seconds_bucket{le=\"+Inf\"} 2",
            "safeformers_time_to_first_token_seconds_sum 100.04",
            "safeformers_time_to_first_token_seconds_count 2",
            "safeformers_inter_token_latency_seconds_count 0",
            "# TYPE safeformers_queue_depth gauge",
        ] {
            assert!(
                text.lines().any(|got| got == line),
                "missing `{line}` in\n{text}"
            );
        }
    }
}
