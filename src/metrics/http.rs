//! The HTTP front's metrics: requests by route and status, and their
//! duration to the response head.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use super::*;

/// Labels of an HTTP request counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    /// Matched route pattern (never the raw path, to bound cardinality).
    pub route: String,
    /// Status code.
    pub status: u16,
}

/// Label: HTTP route pattern.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabel {
    /// Matched route pattern.
    pub route: String,
}

/// HTTP metrics.
#[derive(Clone, Debug)]
pub struct HttpMetrics {
    /// Requests by route and status.
    pub requests: Family<HttpLabels, Counter>,
    /// Request duration by route (to the response head; streams excluded).
    pub duration: Family<RouteLabel, AtomicHistogram>,
}

impl HttpMetrics {
    /// Builds the HTTP metrics and registers them.
    pub(super) fn register(registry: &mut Registry) -> Self {
        let http = HttpMetrics {
            requests: Family::default(),
            duration: Family::new_with_constructor(|| AtomicHistogram::new(latency_buckets())),
        };
        registry.register(
            "http_requests",
            "HTTP requests, by route and status",
            http.requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "HTTP request duration to the response head, by route",
            http.duration.clone(),
        );

        http
    }
}
