//! Assembles and runs the relay: ingest thread, table, HTTP server, and the
//! graceful shutdown that drains them.

use std::future::Future;
use std::sync::Arc;

use anyhow::Context;
use axum::serve::ListenerExt;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::fanout::Hub;
use crate::http::{AppState, Shared, router};
use crate::limits::ConnLimiter;
use crate::metrics::Metrics;
use crate::table::Table;
use tokio_util::task::TaskTracker;

/// Binds the HTTP listener, naming the setting when it fails.
pub async fn bind(config: &Config) -> anyhow::Result<TcpListener> {
    TcpListener::bind(config.http).await.with_context(|| {
        format!(
            "invalid setting `http` (--http, TICKRELAY_HTTP): cannot listen on {}",
            config.http
        )
    })
}

/// Runs the relay on `listener` until `shutdown` resolves, then stops
/// accepting, lets open requests finish within the grace period, and stops
/// the ingest thread. Tests call this with a `127.0.0.1:0` listener.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let metrics = Arc::new(Metrics::new());
    let table = Arc::new(Table::new());
    let cancel = CancellationToken::new();
    let hub = Hub::new(table.clone(), metrics.stream.clone());
    let feed = crate::feed::start(
        config.feed.clone(),
        table.clone(),
        metrics.feed.clone(),
        hub.listener(),
        cancel.clone(),
    )
    .context("cannot open the feed sockets (settings feed_a, feed_b, interface)")?;
    let fanout = tokio::spawn(hub.clone().run(cancel.clone()));
    let tracker = TaskTracker::new();
    let state = AppState(Arc::new(Shared {
        table,
        metrics,
        config: config.clone(),
        feed: feed.state.clone(),
        hub,
        conns: ConnLimiter::new(
            config.limits.max_connections,
            config.limits.max_connections_per_ip,
        ),
        cancel: cancel.clone(),
        tracker: tracker.clone(),
    }));
    let app = router(state);
    let listener = listener.tap_io(|tcp| {
        // Small frames must not wait for Nagle.
        let _ = tcp.set_nodelay(true);
    });
    let stop = cancel.clone();
    let server = tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .with_graceful_shutdown(async move { stop.cancelled().await })
        .await
    });
    shutdown.await;
    tracing::info!(
        grace_ms = config.shutdown_grace.as_millis() as u64,
        "shutting down"
    );
    // Streams see the cancellation, send their notice and end; the server
    // stops accepting and finishes in-flight requests. Upgraded WebSockets
    // are tracked apart because the HTTP server no longer sees them.
    cancel.cancel();
    tracker.close();
    let drain = async {
        let served = server.await;
        tracker.wait().await;
        served
    };
    match tokio::time::timeout(config.shutdown_grace, drain).await {
        Ok(joined) => joined
            .context("server task failed")?
            .context("server error")?,
        Err(_) => tracing::warn!("grace period over; closing the remaining connections"),
    }
    let _ = fanout.await;
    tokio::task::spawn_blocking(move || feed.join()).await.ok();
    Ok(())
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
