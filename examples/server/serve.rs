//! Serving on a public port: hyper's own server rather than `axum::serve`, for the limits
//! a server on the open network needs.
//!
//! * A connection that has had no request under way for 30 s is closed: one that never
//!   sends a whole request head (nothing at all, a slow head, only the HTTP/2 preface)
//!   holds its descriptor no longer.
//! * A failed `accept` (no descriptor left) is logged, at most once per 10 s, and retried
//!   after a short pause; it never ends the server.
//! * On SIGINT or SIGTERM it stops accepting, gives the requests under way up to the
//!   shutdown deadline, then closes every connection left.

use std::{
    net::SocketAddr,
    pin::pin,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex, PoisonError,
    },
    time::Duration,
};

use axum::{extract::ConnectInfo, Router};
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::{conn::auto, graceful::GracefulShutdown},
    service::TowerToHyperService,
};
use tokio::{
    net::TcpListener,
    signal::unix::{signal, SignalKind},
    sync::watch,
    time::Instant,
};
use tower::ServiceExt;

/// How long a connection may go without a request under way.
const IDLE: Duration = Duration::from_secs(30);
/// The pause after a failed `accept`.
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);

/// What one connection is doing: requests under way, and when it last started or finished
/// one (or was accepted).
struct Activity {
    under_way: AtomicUsize,
    last: Mutex<Instant>,
}

impl Activity {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            under_way: AtomicUsize::new(0),
            last: Mutex::new(Instant::now()),
        })
    }

    fn touch(&self) {
        *self.last.lock().unwrap_or_else(PoisonError::into_inner) = Instant::now();
    }

    fn begin(&self) {
        self.under_way.fetch_add(1, Ordering::Relaxed);
        self.touch();
    }

    fn end(&self) {
        self.under_way.fetch_sub(1, Ordering::Relaxed);
        self.touch();
    }

    /// When the connection is idle long enough to close, unless something happens first.
    fn idle_deadline(&self) -> Instant {
        *self.last.lock().unwrap_or_else(PoisonError::into_inner) + IDLE
    }

    fn busy(&self) -> bool {
        self.under_way.load(Ordering::Relaxed) > 0
    }
}

/// Serves `app` on `listener` until SIGINT or SIGTERM, then stops accepting, waits up to
/// `deadline` for the requests under way, and closes every connection left.
pub(crate) async fn until_signalled(listener: TcpListener, app: Router, deadline: Duration) {
    let mut server = auto::Builder::new(TokioExecutor::new());
    server
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(IDLE);
    let connections = GracefulShutdown::new();
    let (close, closing) = watch::channel(false);
    let mut stop = pin!(signalled());
    let mut last_warning: Option<Instant> = None;
    loop {
        let (stream, client) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    if last_warning.is_none_or(|at| at.elapsed() >= Duration::from_secs(10)) {
                        tracing::warn!(%error, "cannot accept a connection; retrying");
                        last_warning = Some(Instant::now());
                    }
                    tokio::time::sleep(ACCEPT_PAUSE).await;
                    continue;
                }
            },
            () = &mut stop => break,
        };
        let activity = Activity::new();
        let service = app
            .clone()
            .map_request({
                let activity = activity.clone();
                move |mut request: axum::http::Request<_>| {
                    activity.begin();
                    // The client's address, for the admin token's count of failures.
                    request
                        .extensions_mut()
                        .insert(ConnectInfo::<SocketAddr>(client));
                    request
                }
            })
            .map_response({
                let activity = activity.clone();
                move |response| {
                    activity.end();
                    response
                }
            });
        let connection = server
            .serve_connection_with_upgrades(TokioIo::new(stream), TowerToHyperService::new(service))
            .into_owned();
        let connection = connections.watch(connection);
        let mut closing = closing.clone();
        tokio::spawn(async move {
            let mut connection = pin!(connection);
            // Returning drops the connection, which closes it.
            loop {
                tokio::select! {
                    // A client that goes away mid-request is its own business.
                    _ = connection.as_mut() => return,
                    () = tokio::time::sleep_until(activity.idle_deadline()) => {
                        if !activity.busy() {
                            return;
                        }
                        // A request under way: look again a whole period later.
                        activity.touch();
                    }
                    _ = closing.changed() => return,
                }
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(deadline, connections.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            ?deadline,
            "requests still under way at the shutdown deadline; closing their connections"
        );
    }
    let _ = close.send(true);
}

/// SIGINT or SIGTERM (what a terminal and a container runtime send).
async fn signalled() {
    let Ok(mut terminate) = signal(SignalKind::terminate()) else {
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
}
