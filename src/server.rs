//! Assembles and runs the relay: ingest thread, table, HTTP server, and the
//! graceful shutdown that drains them.

use std::future::Future;
use std::sync::Arc;

use anyhow::Context;
use axum::serve::ListenerExt;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::http::{AppState, Shared, router};
use crate::metrics::Metrics;
use crate::table::Table;

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
    let feed = crate::feed::start(
        config.feed.clone(),
        table.clone(),
        metrics.feed.clone(),
        (),
        cancel.clone(),
    )
    .context("cannot open the feed sockets (settings feed_a, feed_b, interface)")?;
    let state = AppState(Arc::new(Shared {
        table,
        metrics,
        config: config.clone(),
        feed: feed.state.clone(),
    }));
    let app = router(state);
    let listener = listener.tap_io(|tcp| {
        // Small frames must not wait for Nagle.
        let _ = tcp.set_nodelay(true);
    });
    let stop = cancel.clone();
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await
    });
    shutdown.await;
    tracing::info!(
        grace_ms = config.shutdown_grace.as_millis() as u64,
        "shutting down"
    );
    cancel.cancel();
    match tokio::time::timeout(config.shutdown_grace, server).await {
        Ok(joined) => joined
            .context("server task failed")?
            .context("server error")?,
        Err(_) => tracing::warn!("grace period over; closing the remaining connections"),
    }
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
