//! Process metrics in the Prometheus text format, served at `GET /metrics`.
//!
//! Two kinds of series:
//! - **Counted in this process** (HTTP latency, claims, browsers, agent steps, model tokens):
//!   recorded with the free functions below into one process-wide registry. Metrics are
//!   process-wide by nature (one scrape reads one process), so this is the one global in
//!   smoothd; it holds no settings. In a deployment of many processes, sum these across
//!   instances.
//! - **Read from the database at scrape time** (tasks by status, queue depth and oldest
//!   waiting age, artifact bytes): passed to [`render`] as a [`DbSnapshot`]. They describe the
//!   whole cluster, so every process reports the same values: take `max`, not `sum`, across
//!   instances.
//!
//! # For the agent
//! The agent loop calls, per step and per task:
//! ```
//! use std::time::Duration;
//! // After each model round trip and its actions:
//! smoothd_metrics::record_step(Duration::from_millis(850), 1200, 80, 1);
//! // A model request that failed for good (after its retries):
//! smoothd_metrics::record_model_error();
//! // When the agent loop of a task ends, however it ended:
//! smoothd_metrics::record_task_end(7);
//! ```
//! None of them blocks or fails; each is a few atomic additions.
//!
//! Every series is named `smoothd_*`; durations are in seconds, sizes in bytes.
#![forbid(unsafe_code)]

use std::sync::OnceLock;
use std::time::Duration;

use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry, TextEncoder,
};

/// The content type of [`render`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// What the database says at scrape time.
#[derive(Debug, Clone, Default)]
pub struct DbSnapshot {
    /// Task count per status (`waiting`, `running`, `done`, `failed`, `cancelled`).
    pub tasks_by_status: Vec<(String, i64)>,
    /// Tasks waiting to be claimed.
    pub queue_depth: i64,
    /// Age of the oldest waiting task (zero when none waits).
    pub oldest_waiting: Duration,
    /// Stored artifact bytes per artifact kind.
    pub artifact_bytes: Vec<(String, i64)>,
}

/// The series counted in this process.
struct Metrics {
    registry: Registry,
    http: HistogramVec,
    queue_wait: Histogram,
    claims: IntCounterVec,
    claim_query: Histogram,
    finished: IntCounterVec,
    reaped: IntCounter,
    step_latency: Histogram,
    steps_per_task: Histogram,
    tokens: IntCounterVec,
    model_retries: IntCounter,
    model_errors: IntCounter,
    browsers: IntGauge,
    browser_launches: IntCounter,
    browser_crashes: IntCounter,
    sessions: IntCounterVec,
    spare_ready: IntGauge,
}

fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0,
];
const QUEUE_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0,
];
const STEP_BUCKETS: &[f64] = &[0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0, 60.0, 120.0];
const STEPS_BUCKETS: &[f64] = &[1.0, 2.0, 3.0, 5.0, 8.0, 13.0, 21.0, 32.0, 64.0, 128.0];

impl Metrics {
    /// Registers every series.
    ///
    /// Long because it is a table: one definition per series, each with its help text.
    #[expect(
        clippy::expect_used,
        reason = "constant metric definitions, checked by every_series_registers"
    )]
    fn new() -> Self {
        let registry = Registry::new();
        // The names and label sets below are constants, so registration cannot fail unless two
        // series share a name, which `every_series_registers` rules out; `reg` panics on that
        // programming error at the first metric call, never on input.
        fn reg<C: prometheus::core::Collector + Clone + 'static>(r: &Registry, c: C) -> C {
            r.register(Box::new(c.clone())).expect("metric names are unique");
            c
        }
        fn hist(name: &str, help: &str, buckets: &[f64]) -> HistogramOpts {
            HistogramOpts::new(name, help).buckets(buckets.to_vec())
        }
        Self {
            http: reg(
                &registry,
                HistogramVec::new(
                    hist(
                        "smoothd_http_request_duration_seconds",
                        "HTTP request latency by method, matched route and status code.",
                        LATENCY_BUCKETS,
                    ),
                    &["method", "route", "status"],
                )
                .expect("valid"),
            ),
            queue_wait: reg(
                &registry,
                Histogram::with_opts(hist(
                    "smoothd_claim_latency_seconds",
                    "Time from submission to a worker's first claim of a task.",
                    QUEUE_BUCKETS,
                ))
                .expect("valid"),
            ),
            claims: reg(
                &registry,
                IntCounterVec::new(
                    Opts::new(
                        "smoothd_claims_total",
                        "Tasks claimed by this process's workers; attempt=retry is a re-claim after a lost worker.",
                    ),
                    &["attempt"],
                )
                .expect("valid"),
            ),
            claim_query: reg(
                &registry,
                Histogram::with_opts(hist(
                    "smoothd_claim_query_seconds",
                    "Duration of one claim statement against the database.",
                    LATENCY_BUCKETS,
                ))
                .expect("valid"),
            ),
            finished: reg(
                &registry,
                IntCounterVec::new(
                    Opts::new(
                        "smoothd_worker_tasks_finished_total",
                        "Tasks this process's workers gave a final state, by status.",
                    ),
                    &["status"],
                )
                .expect("valid"),
            ),
            reaped: reg(
                &registry,
                IntCounter::new(
                    "smoothd_tasks_reaped_total",
                    "Tasks this process's reaper finished because their worker was lost.",
                )
                .expect("valid"),
            ),
            step_latency: reg(
                &registry,
                Histogram::with_opts(hist(
                    "smoothd_agent_step_duration_seconds",
                    "Duration of one agent step (model round trip and its actions).",
                    STEP_BUCKETS,
                ))
                .expect("valid"),
            ),
            steps_per_task: reg(
                &registry,
                Histogram::with_opts(hist(
                    "smoothd_agent_steps_per_task",
                    "Agent steps a task took, recorded when its agent loop ends.",
                    STEPS_BUCKETS,
                ))
                .expect("valid"),
            ),
            tokens: reg(
                &registry,
                IntCounterVec::new(
                    Opts::new("smoothd_model_tokens_total", "Model tokens used, by kind (prompt, completion)."),
                    &["kind"],
                )
                .expect("valid"),
            ),
            model_retries: reg(
                &registry,
                IntCounter::new(
                    "smoothd_model_retries_total",
                    "Model requests retried (429, 5xx, timeouts, unreadable replies).",
                )
                .expect("valid"),
            ),
            model_errors: reg(
                &registry,
                IntCounter::new(
                    "smoothd_model_errors_total",
                    "Model requests that failed for good, after their retries.",
                )
                .expect("valid"),
            ),
            browsers: reg(
                &registry,
                IntGauge::new(
                    "smoothd_browser_processes",
                    "Chromium processes this process runs (the warm shared one and dedicated ones).",
                )
                .expect("valid"),
            ),
            browser_launches: reg(
                &registry,
                IntCounter::new("smoothd_browser_launches_total", "Chromium processes started.").expect("valid"),
            ),
            spare_ready: reg(
                &registry,
                IntGauge::new(
                    "smoothd_browser_spare_ready",
                    "1 while a browser context is prepared ahead for the next task (see spare_session).",
                )
                .expect("valid"),
            ),
            sessions: reg(
                &registry,
                IntCounterVec::new(
                    Opts::new(
                        "smoothd_browser_sessions_total",
                        "Browser contexts given to tasks in the shared Chromium, by source: `spare` (prepared \
                         ahead, nothing to wait for) or `opened` (prepared when the task started).",
                    ),
                    &["source"],
                )
                .expect("valid"),
            ),
            browser_crashes: reg(
                &registry,
                IntCounter::new(
                    "smoothd_browser_crashes_total",
                    "Chromium processes that exited or disconnected without being asked to.",
                )
                .expect("valid"),
            ),
            registry,
        }
    }
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// One HTTP request: `route` is the matched route pattern (`/v1/task/{id}`), never the raw
/// path, so the label set stays small.
pub fn record_http(method: &str, route: &str, status: u16, elapsed: Duration) {
    metrics()
        .http
        .with_label_values(&[method, route, &status.to_string()])
        .observe(secs(elapsed));
}

/// A worker claimed a task. `queue_wait` is the time since submission, for a first claim;
/// `None` for a re-claim after a lost worker (its wait is not a queue latency).
pub fn record_claim(queue_wait: Option<Duration>) {
    let m = metrics();
    match queue_wait {
        Some(w) => {
            m.claims.with_label_values(&["first"]).inc();
            m.queue_wait.observe(secs(w));
        }
        None => m.claims.with_label_values(&["retry"]).inc(),
    }
}

/// One claim statement took `elapsed` (found work or not).
pub fn record_claim_query(elapsed: Duration) {
    metrics().claim_query.observe(secs(elapsed));
}

/// A worker wrote a task's final state (`done`, `failed`, `cancelled`).
pub fn record_task_finished(status: &str) {
    metrics().finished.with_label_values(&[status]).inc();
}

/// The reaper finished `n` tasks whose workers were lost.
pub fn record_reaped(n: usize) {
    metrics().reaped.inc_by(u64::try_from(n).unwrap_or(u64::MAX));
}

/// One agent step: its duration, the model tokens it used and the model retries it needed.
pub fn record_step(latency: Duration, prompt_tokens: u64, completion_tokens: u64, retries: u32) {
    let m = metrics();
    m.step_latency.observe(secs(latency));
    m.tokens.with_label_values(&["prompt"]).inc_by(prompt_tokens);
    m.tokens
        .with_label_values(&["completion"])
        .inc_by(completion_tokens);
    m.model_retries.inc_by(u64::from(retries));
}

/// A model request failed for good (after its retries).
pub fn record_model_error() {
    metrics().model_errors.inc();
}

/// A task's agent loop ended after `steps` steps.
pub fn record_task_end(steps: u32) {
    metrics().steps_per_task.observe(f64::from(steps));
}

/// A Chromium process started.
pub fn browser_launched() {
    let m = metrics();
    m.browsers.inc();
    m.browser_launches.inc();
}

/// A task got a browser context in the shared Chromium: the spare prepared ahead (`spare`
/// true) or one opened for it.
pub fn browser_session(spare: bool) {
    metrics()
        .sessions
        .with_label_values(&[if spare { "spare" } else { "opened" }])
        .inc();
}

/// A spare browser context is ready (or was taken or dropped).
pub fn spare_ready(ready: bool) {
    metrics().spare_ready.set(i64::from(ready));
}

/// A Chromium process ended; `crashed` when nobody asked it to.
pub fn browser_exited(crashed: bool) {
    let m = metrics();
    m.browsers.dec();
    if crashed {
        m.browser_crashes.inc();
    }
}

/// Everything, in the Prometheus text format: this process's series and, when given, the
/// database's.
pub fn render(db: Option<&DbSnapshot>) -> String {
    let mut families = metrics().registry.gather();
    if let Some(db) = db {
        families.extend(db_families(db));
    }
    families.sort_by(|a, b| a.name().cmp(b.name()));
    let mut out = Vec::new();
    // Encoding into a Vec only fails on invalid metric families, which the registry prevents;
    // an empty answer is better than a panic in a scrape.
    let _ = TextEncoder::new().encode(&families, &mut out);
    String::from_utf8(out).unwrap_or_default()
}

/// The database series, in a registry of their own per scrape, so two servers in one process
/// (as in tests) never read each other's values.
fn db_families(db: &DbSnapshot) -> Vec<prometheus::proto::MetricFamily> {
    let r = Registry::new();
    let tasks = IntGaugeVec::new(
        Opts::new("smoothd_tasks", "Tasks in the database by status."),
        &["status"],
    );
    let depth = IntGauge::new("smoothd_queue_depth", "Tasks waiting to be claimed.");
    let oldest = Gauge::new(
        "smoothd_queue_oldest_waiting_seconds",
        "Age of the oldest task waiting to be claimed (0 when none waits).",
    );
    let bytes = IntGaugeVec::new(
        Opts::new("smoothd_artifact_bytes", "Stored artifact bytes by kind."),
        &["kind"],
    );
    let (Ok(tasks), Ok(depth), Ok(oldest), Ok(bytes)) = (tasks, depth, oldest, bytes) else {
        return Vec::new();
    };
    // Every status appears, zero or not, so a dashboard's series do not vanish.
    for s in ["waiting", "running", "done", "failed", "cancelled"] {
        tasks.with_label_values(&[s]).set(0);
    }
    for (status, n) in &db.tasks_by_status {
        tasks.with_label_values(&[status]).set(*n);
    }
    depth.set(db.queue_depth);
    oldest.set(secs(db.oldest_waiting));
    for (kind, n) in &db.artifact_bytes {
        bytes.with_label_values(&[kind]).set(*n);
    }
    for c in [
        Box::new(tasks) as Box<dyn prometheus::core::Collector>,
        Box::new(depth),
        Box::new(oldest),
        Box::new(bytes),
    ] {
        if r.register(c).is_err() {
            return Vec::new();
        }
    }
    r.gather()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_series_registers_and_renders() {
        record_http("GET", "/v1/task/{id}", 202, Duration::from_millis(3));
        record_claim(Some(Duration::from_millis(40)));
        record_claim(None);
        record_step(Duration::from_millis(900), 100, 20, 2);
        record_task_end(4);
        browser_session(true);
        let text = render(Some(&DbSnapshot {
            tasks_by_status: vec![("done".into(), 3)],
            queue_depth: 2,
            oldest_waiting: Duration::from_secs(5),
            artifact_bytes: vec![("recording".into(), 1024)],
        }));
        for line in [
            "smoothd_tasks{status=\"done\"} 3",
            "smoothd_tasks{status=\"waiting\"} 0",
            "smoothd_queue_depth 2",
            "smoothd_queue_oldest_waiting_seconds 5",
            "smoothd_artifact_bytes{kind=\"recording\"} 1024",
            "smoothd_claims_total{attempt=\"retry\"}",
            "smoothd_http_request_duration_seconds_count{method=\"GET\",route=\"/v1/task/{id}\",status=\"202\"}",
            "smoothd_agent_steps_per_task_count",
            "smoothd_model_tokens_total{kind=\"prompt\"}",
            "smoothd_browser_sessions_total{source=\"spare\"} 1",
        ] {
            assert!(text.contains(line), "missing {line:?} in:\n{text}");
        }
    }
}
