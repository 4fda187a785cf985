//! Assembles and runs the relay: ingest thread, table, HTTP server, and the
//! graceful shutdown that drains them.

use std::future::Future;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::admission::ConnSlots;
use crate::api::{AppState, Shared};
use crate::config::Config;
use crate::fanout::Hub;
use crate::http::router;
use crate::metrics::Metrics;
use crate::table::Table;
use crate::transport::task::Pacers;
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

/// The HTTP/1.1 accept loop. Hand-rolled over hyper rather than
/// `axum::serve` for one setting: a 8 KiB cap on hyper's per-connection read
/// buffer (its minimum). A streaming response (SSE, a parked long poll)
/// keeps that buffer for its whole life; left adaptive it grows to 16 KiB.
async fn serve_http(
    listener: TcpListener,
    app: axum::Router,
    policy: crate::config::ClientPolicy,
    metrics: crate::metrics::StreamMetrics,
    cancel: CancellationToken,
    tracker: TaskTracker,
) -> std::io::Result<()> {
    use crate::transport::slow::{Route, SlowSignal, TimedIo};
    let write_timeout = policy.write_timeout;
    use tower::ServiceExt;

    let mut http = hyper::server::conn::http1::Builder::new();
    http.max_buf_size(8192)
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(std::time::Duration::from_secs(30));
    loop {
        let (tcp, remote) = tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of descriptors or a reset before accept: not fatal.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        // Small frames must not wait for Nagle.
        let _ = tcp.set_nodelay(true);
        // The relay's own write timeout closes a slow client first — counted,
        // logged, told (4008 / `event: error`). The kernel's, at twice that,
        // is the backstop for a connection nothing polls any more: it drops a
        // peer that leaves written data unacknowledged (or its window shut).
        let _ = socket2::SockRef::from(&tcp).set_tcp_user_timeout(Some(write_timeout * 2));
        // A bounded send buffer (`send_buffer`): on loopback the kernel's
        // autotuning gives a socket up to 4 MiB, which a client that stopped
        // reading fills with stale ticks (copies the relay pays for beside
        // everyone else's frames) before its write timeout can even start.
        if policy.send_buffer > 0 {
            let _ = socket2::SockRef::from(&tcp).set_send_buffer_size(policy.send_buffer);
        }
        let metrics = metrics.clone();
        let cancel = cancel.clone();
        let app = app.clone();
        let http = http.clone();
        tracker.spawn(async move {
            // SSE streams and WebSockets are served off hyper, without its
            // buffers, each in a task of its own size (which their handler
            // spawns).
            if crate::accept::wants(&tcp).await {
                crate::accept::serve(tcp, remote, app).await;
                return;
            }
            // Boxed: this task is sized for the stream's head, not for
            // hyper's connection, while thousands of streams connect.
            Box::pin(async move {
                // A write that makes no progress for the write timeout ends the
                // connection, counted under the transport of the request; an SSE
                // stream is told first (`signal`) and ends with its error event.
                let route = Route::default();
                let signal = SlowSignal::default();
                let io = TimedIo::new(
                    tcp,
                    remote,
                    write_timeout,
                    route.clone(),
                    signal.clone(),
                    metrics,
                );
                let svc =
                    app.map_request(move |mut req: axum::http::Request<hyper::body::Incoming>| {
                        route.set(req.uri().path());
                        req.extensions_mut()
                            .insert(axum::extract::ConnectInfo(remote));
                        req.extensions_mut().insert(signal.clone());
                        req
                    });
                let conn = http
                    .serve_connection(
                        hyper_util::rt::TokioIo::new(io),
                        hyper_util::service::TowerToHyperService::new(svc),
                    )
                    .with_upgrades();
                let mut conn = std::pin::pin!(conn);
                let result = tokio::select! {
                    r = conn.as_mut() => r,
                    _ = cancel.cancelled() => {
                        // Finish the request in flight, then close.
                        conn.as_mut().graceful_shutdown();
                        conn.await
                    }
                };
                if let Err(e) = result {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
            })
            .await;
        });
    }
}

/// Pokes every client when the feed status changes and at shutdown. A
/// WebSocket or SSE connection's task keeps no future of its own for either
/// (it would be in every idle connection): woken, it looks at both.
async fn wake_streams(
    hub: Arc<Hub>,
    mut feed: tokio::sync::watch::Receiver<crate::feed::FeedState>,
    cancel: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            changed = feed.changed() => match changed {
                Ok(()) => hub.poke_all(),
                // The ingest is gone: only the shutdown is left to tell.
                Err(_) => {
                    cancel.cancelled().await;
                    break;
                }
            },
        }
    }
    hub.poke_all();
}

/// A started relay: feed joined, fan-out and HTTP server running.
pub struct Running {
    config: Config,
    cancel: CancellationToken,
    tracker: TaskTracker,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
    fanout: Vec<std::thread::JoinHandle<()>>,
    feed: crate::feed::FeedHandle,
    addr: std::net::SocketAddr,
    draining: Arc<std::sync::atomic::AtomicBool>,
    /// The bridge's publisher, finished after the ingest stops.
    publisher: Option<tokio::task::JoinHandle<()>>,
    /// The usage flusher: its stop and its task.
    usage_flusher: Option<(CancellationToken, tokio::task::JoinHandle<()>)>,
}

/// The delayed view's footprint, read on each scrape.
fn delayed_gauges(view: &Arc<crate::table::DelayedView>) -> crate::metrics::ScrapedGauges {
    let (samples, steps) = (view.clone(), view.clone());
    crate::metrics::ScrapedGauges::default()
        .add(
            "tickrelay_delayed_view_samples",
            "States held by the delayed view over every symbol (bytes: times tickrelay_delayed_view_sample_bytes)",
            Box::new(move || samples.footprint().0 as f64),
        )
        .add(
            "tickrelay_delayed_view_steps",
            "Steps of the delayed view's log",
            Box::new(move || steps.footprint().1 as f64),
        )
        .add(
            "tickrelay_delayed_view_sample_bytes",
            "Bytes one state takes in the delayed view",
            Box::new(|| crate::table::delayed::SAMPLE_BYTES as f64),
        )
}

/// Joins the feed and starts serving on `listener`. When this returns, the
/// feed sockets are open: a producer may start sending.
pub async fn start(listener: TcpListener, config: Config) -> anyhow::Result<Running> {
    start_with(listener, config, None).await
}

/// [`start`], and when `publish` is set, a bridge too: every sequenced feed
/// datagram is published to that JetStream stream (`tickrelay bridge`).
pub async fn start_with(
    listener: TcpListener,
    config: Config,
    publish: Option<crate::nats::NatsTarget>,
) -> anyhow::Result<Running> {
    let addr = listener.local_addr()?;
    let mut metrics = Metrics::new();
    // Only users' tokens carry a delay: without them no view is kept.
    let delayed = config
        .delayed
        .filter(|_| config.access.jwt.enabled())
        .map(|d| {
            Arc::new(crate::table::DelayedView::new(
                d.resolution_ms,
                d.max_delay_ms,
            ))
        });
    if let Some(view) = &delayed {
        metrics.register_scraped(delayed_gauges(view));
    }
    let metrics = Arc::new(metrics);
    let table = Arc::new(Table::with_limits(config.history, config.max_book_levels));
    let cancel = CancellationToken::new();
    let hub = Hub::with_view(
        table.clone(),
        metrics.stream.clone(),
        config.fanout_shards,
        delayed,
    );
    let mut extras = crate::feed::Extras::default();
    let mut publisher = None;
    if let Some(target) = publish {
        // The publisher outlives the ingest (it drains what was queued), so
        // it has its own token, cancelled once the ingest has stopped.
        let (forward, task) =
            crate::nats::spawn_publisher(target, metrics.nats.clone(), CancellationToken::new());
        extras.forward = Some(forward);
        publisher = Some(task);
    }
    if let Some(target) = config.feed.nats.clone() {
        extras.nats = Some(crate::nats::spawn_line(
            target,
            metrics.nats.clone(),
            cancel.clone(),
        ));
    }
    let feed = crate::feed::start_with(
        config.feed.clone(),
        table.clone(),
        metrics.feed.clone(),
        hub.listener(),
        cancel.clone(),
        extras,
    )
    .context("cannot open the feed sockets (settings feed_a, feed_b, interface)")?;
    let fanout = hub
        .spawn_shards(&cancel)
        .context("cannot start the fan-out threads (setting fanout_shards)")?;
    tokio::spawn(wake_streams(
        hub.clone(),
        feed.state.clone(),
        cancel.clone(),
    ));
    // Usage is written by its own task, with its own token: it flushes
    // once more after the connections have ended, before the relay exits.
    let usage = match &config.usage {
        Some((db, every)) => {
            let store = crate::usage::Store::open(db)
                .map_err(|e| anyhow::anyhow!("invalid setting `usage_db`: {e}"))?;
            let usage = crate::usage::Usage::new();
            let stop = CancellationToken::new();
            let task =
                crate::usage::spawn_flusher(usage.clone(), Arc::new(store), *every, stop.clone());
            Some((usage, (stop, task)))
        }
        None => None,
    };
    let tracker = TaskTracker::new();
    let draining = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let state = AppState(Arc::new(Shared {
        table,
        metrics,
        config: config.clone(),
        feed: feed.state.clone(),
        hub,
        conns: ConnSlots::new(
            config.policy.max_connections,
            config.policy.max_connections_per_ip,
        ),
        cancel: cancel.clone(),
        tracker: tracker.clone(),
        draining: draining.clone(),
        verifier: arc_swap::ArcSwapOption::from(
            crate::auth::Verifier::load(&config.access.jwt)?.map(Arc::new),
        ),
        anonymous: Arc::new(crate::auth::Identity::anonymous()),
        users: Arc::default(),
        usage: usage.as_ref().map(|(u, _)| u.clone()),
    }));
    if state.config.access.jwt.jwks_file.is_some() {
        tokio::spawn(reload_keys_on_sighup(state.clone(), cancel.clone()));
    }
    let metrics = state.hub.metrics.clone();
    // Pings and keep-alives for every streaming connection, from one task
    // each; the handlers find them in the request's extensions.
    let pacers = Pacers::spawn(&config.policy, &cancel);
    let app = router(state).layer(axum::Extension(pacers));
    let server = tokio::spawn(serve_http(
        listener,
        app,
        config.policy.clone(),
        metrics,
        cancel.clone(),
        tracker.clone(),
    ));
    Ok(Running {
        config,
        cancel,
        tracker,
        server,
        fanout,
        feed,
        addr,
        draining,
        publisher,
        usage_flusher: usage.map(|(_, f)| f),
    })
}

impl Running {
    /// The HTTP address.
    pub fn local_addr(&self) -> std::net::SocketAddr {
        self.addr
    }

    /// Serves until `shutdown` resolves, then drains: streams get their
    /// notice, in-flight requests finish within the grace period, the ingest
    /// thread stops.
    pub async fn wait(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        shutdown.await;
        // Not ready first: a load balancer's health check stops sending new
        // clients here while the current ones are still served.
        self.draining
            .store(true, std::sync::atomic::Ordering::Relaxed);
        if !self.config.drain.is_zero() {
            tracing::info!(
                drain_ms = self.config.drain.as_millis() as u64,
                "draining: /readyz answers 503 before the shutdown notices"
            );
            tokio::time::sleep(self.config.drain).await;
        }
        let grace = self.config.shutdown_grace;
        tracing::info!(grace_ms = grace.as_millis() as u64, "shutting down");
        // Upgraded WebSockets are tracked apart: the HTTP server no longer
        // sees them once upgraded.
        self.cancel.cancel();
        self.tracker.close();
        let tracker = self.tracker.clone();
        let drain = async move {
            let served = self.server.await;
            tracker.wait().await;
            served
        };
        match tokio::time::timeout(grace, drain).await {
            Ok(joined) => joined
                .context("server task failed")?
                .context("server error")?,
            Err(_) => tracing::warn!("grace period over; closing the remaining connections"),
        }
        let (feed, fanout) = (self.feed, self.fanout);
        tokio::task::spawn_blocking(move || {
            for shard in fanout {
                let _ = shard.join();
            }
            feed.join()
        })
        .await
        .ok();
        if let Some((stop, task)) = self.usage_flusher {
            // The last flush: what the ended connections did is kept.
            stop.cancel();
            let _ = task.await;
        }
        if let Some(publisher) = self.publisher {
            // The ingest is gone, so its queue is closed: the publisher ends
            // once what it holds is acknowledged.
            if tokio::time::timeout(std::time::Duration::from_secs(3), publisher)
                .await
                .is_err()
            {
                tracing::warn!("bridge publisher did not finish in time");
            }
        }
        Ok(())
    }
}

/// Runs the relay on `listener` until `shutdown` resolves. Tests call this
/// with a `127.0.0.1:0` listener.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    start(listener, config).await?.wait(shutdown).await
}

#[cfg(unix)]
async fn recv(signal: Option<&mut tokio::signal::unix::Signal>) {
    match signal {
        Some(s) => {
            s.recv().await;
        }
        None => std::future::pending::<()>().await,
    }
}

/// Resolves on SIGINT or SIGTERM. The handlers are installed when this is
/// called, not when the future is first polled: call it before announcing
/// the address, so a signal sent right after is never the default (death).
/// Must be called within the runtime.
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    let signals = {
        use tokio::signal::unix::{SignalKind, signal};
        (
            signal(SignalKind::interrupt()).ok(),
            signal(SignalKind::terminate()).ok(),
        )
    };
    async move {
        #[cfg(unix)]
        {
            let (mut int, mut term) = signals;
            tokio::select! {
                _ = recv(int.as_mut()) => {},
                _ = recv(term.as_mut()) => {},
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Rereads the users' key set on SIGHUP (a rotated JWKS); a set that does
/// not load leaves the current one in place.
async fn reload_keys_on_sighup(state: AppState, cancel: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        return;
    };
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            got = hup.recv() => if got.is_none() { return },
        }
        match crate::auth::Verifier::load(&state.config.access.jwt) {
            Ok(v) => {
                state.verifier.store(v.map(Arc::new));
                tracing::info!("users' keys reloaded (SIGHUP)");
            }
            Err(e) => tracing::warn!(error = %e, "users' keys not reloaded; the current ones stay"),
        }
    }
}
