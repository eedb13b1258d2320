//! `/metrics`: the coordinator's counts in Prometheus' text format. Counts come from the state
//! machine's snapshot (they only grow, across forgotten sessions too) and the hub (refusals);
//! the request latency histogram is the dashboard's own.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use super::AppState;
use crate::hub::Snapshot;

type Labels = Vec<(String, String)>;

/// The dashboard's own measurements.
#[derive(Debug)]
pub struct HttpMetrics {
    /// How long requests took, by route.
    latency: Family<Labels, Histogram, fn() -> Histogram>,
}

impl Default for HttpMetrics {
    fn default() -> Self {
        fn histogram() -> Histogram {
            // 0.1 ms to about 1.6 s.
            Histogram::new(exponential_buckets(0.0001, 4.0, 8))
        }
        HttpMetrics {
            latency: Family::new_with_constructor(histogram),
        }
    }
}

/// Times every request, by its route's pattern (so the label's values are few).
pub(crate) async fn time_requests(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |p| p.as_str())
        // `/sessions/{id}` as `/sessions/:id`: braces in a label value trip some parsers.
        .replace('{', ":")
        .replace('}', "");
    let started = Instant::now();
    let response = next.run(request).await;
    state
        .metrics
        .latency
        .get_or_create(&vec![("route".into(), route)])
        .observe(started.elapsed().as_secs_f64());
    response
}

/// The text exposition of `snapshot` and the latency histogram.
pub(crate) fn render(snapshot: &Snapshot, metrics: &HttpMetrics) -> String {
    let mut registry = Registry::with_prefix("task_sharding");
    let gauge = |registry: &mut Registry, name: &str, help: &str, value: u64| {
        let gauge = Gauge::<i64>::default();
        gauge.set(value as i64);
        registry.register(name, help, gauge);
    };
    let counter = |registry: &mut Registry, name: &str, help: &str, value: u64| {
        let counter = Counter::<u64>::default();
        counter.inc_by(value);
        registry.register(name, help, counter);
    };
    let counts = &snapshot.counts;
    gauge(
        &mut registry,
        "sessions",
        "Sessions held now",
        snapshot.sessions as u64,
    );
    gauge(
        &mut registry,
        "clients",
        "Client connections open now",
        snapshot.connections as u64,
    );
    counter(
        &mut registry,
        "sessions_created",
        "Sessions created",
        counts.sessions_created,
    );
    counter(
        &mut registry,
        "tasks_handed",
        "Tasks handed out, backup copies included",
        counts.tasks_handed,
    );
    counter(
        &mut registry,
        "backups",
        "Backup copies of long tasks handed out",
        counts.backups,
    );
    counter(
        &mut registry,
        "reconnects",
        "Members that came back with their ticket",
        counts.reconnects,
    );
    let results = Family::<Labels, Counter>::default();
    for (outcome, n) in &counts.results {
        results
            .get_or_create(&vec![("outcome".into(), outcome.to_string())])
            .inc_by(*n);
    }
    registry.register("results", "Task results counted, by outcome", results);
    let refusals = Family::<Labels, Counter>::default();
    for (reason, n) in &snapshot.refusals {
        refusals
            .get_or_create(&vec![("reason".into(), reason.clone())])
            .inc_by(*n);
    }
    registry.register("refusals", "Clients refused, by reason", refusals);
    registry.register(
        "http_request_duration_seconds",
        "Dashboard requests, by route",
        metrics.latency.clone(),
    );
    let mut text = String::new();
    encode(&mut text, &registry).expect("writing to a String cannot fail");
    text
}
