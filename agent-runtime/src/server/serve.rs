//! Accept loop, per-connection keep-alive handling and graceful shutdown of one process.
//!
//! Connections are served by hyper's HTTP/1.1 server. Keep-alive is managed here rather
//! than by hyper: a connection with no request in flight for `--timeout-keep-alive` is
//! closed. On shutdown the listener is closed at once (new connections are refused once no
//! process holds the socket any more), responses from then on carry `Connection: close`,
//! idle connections are closed after at most [`DRAIN_IDLE`], and whatever still runs at
//! `--timeout-graceful` is logged and cut.

use std::convert::Infallible;
use std::future::Future;
use std::net::TcpListener as StdTcpListener;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::pin::pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderValue, Request, header};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;
use tower::ServiceExt;

use super::body::GuardedBody;
use super::http::AppState;

/// While draining, idle keep-alive connections are closed after this long (or the
/// keep-alive timeout, if shorter). Clients that are actively sending get `Connection:
/// close` on their next response instead, so steady keep-alive traffic sees no reset.
pub const DRAIN_IDLE: Duration = Duration::from_secs(2);
/// Time allowed to receive a request head.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Listen backlog.
pub const BACKLOG: i32 = 1024;

/// Timeouts of [`serve`].
#[derive(Debug, Clone, Copy)]
pub struct ServeOptions {
    /// Idle keep-alive timeout.
    pub keep_alive: Duration,
    /// Graceful shutdown budget, counted from the shutdown signal.
    pub graceful: Duration,
}

/// Binds a listening TCP socket (SO_REUSEADDR, backlog [`BACKLOG`], close-on-exec).
pub fn bind(host: IpAddr, port: u16) -> std::io::Result<StdTcpListener> {
    use nix::sys::socket::{
        AddressFamily, Backlog, SockFlag, SockType, SockaddrIn, SockaddrIn6, bind, listen,
        setsockopt, socket, sockopt,
    };
    let addr = SocketAddr::new(host, port);
    let family = if addr.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    };
    let fd = socket(family, SockType::Stream, SockFlag::SOCK_CLOEXEC, None)?;
    setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    match addr {
        SocketAddr::V4(a) => bind(fd.as_raw_fd(), &SockaddrIn::from(a))?,
        SocketAddr::V6(a) => bind(fd.as_raw_fd(), &SockaddrIn6::from(a))?,
    }
    listen(&fd, Backlog::new(BACKLOG).unwrap_or(Backlog::MAXCONN))?;
    Ok(StdTcpListener::from(fd))
}

/// Serves `app` on `listener` until `shutdown` resolves, then drains (see module docs).
/// Returns the number of requests cut at the deadline.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    state: Arc<AppState>,
    opts: ServeOptions,
    shutdown: impl Future<Output = ()>,
) -> usize {
    let (drain_tx, drain_rx) = watch::channel(false);
    let mut conns = JoinSet::new();
    let mut shutdown = pin!(shutdown);
    loop {
        tokio::select! {
            biased;
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    let _ = stream.set_nodelay(true);
                    conns.spawn(serve_conn(stream, app.clone(), opts, drain_rx.clone()));
                }
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(event = "accept_failed", error = %e);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    let started = Instant::now();
    drop(listener);
    let _ = drain_tx.send(true);
    let all_closed = async { while conns.join_next().await.is_some() {} };
    let deadline = opts.graceful.saturating_sub(started.elapsed());
    if tokio::time::timeout(deadline, all_closed).await.is_ok() {
        return 0;
    }
    let cut = state.in_flight.list();
    for (method, path, running) in &cut {
        tracing::warn!(
            event = "request_cut",
            instance_id = %state.instance_id,
            method = %method,
            path = %path,
            running_ms = running.as_millis() as u64,
        );
    }
    tracing::warn!(
        event = "shutdown_cut",
        instance_id = %state.instance_id,
        requests_cut = cut.len(),
        connections_open = conns.len(),
        timeout_graceful_s = opts.graceful.as_secs_f64(),
    );
    conns.abort_all();
    cut.len()
}

/// Requests in flight on one connection and when it last became idle.
struct ConnTracker {
    state: Mutex<(usize, Instant)>,
    changed: Notify,
}

impl ConnTracker {
    fn begin(&self) {
        if let Ok(mut s) = self.state.lock() {
            s.0 += 1;
        }
        self.changed.notify_one();
    }

    fn end(&self) {
        if let Ok(mut s) = self.state.lock() {
            s.0 = s.0.saturating_sub(1);
            s.1 = Instant::now();
        }
        self.changed.notify_one();
    }

    fn idle_since(&self) -> Option<Instant> {
        self.state
            .lock()
            .ok()
            .and_then(|s| (s.0 == 0).then_some(s.1))
    }
}

/// Marks the end of a request on its connection when dropped.
struct ActiveRequest(Arc<ConnTracker>);

impl Drop for ActiveRequest {
    fn drop(&mut self) {
        self.0.end();
    }
}

async fn serve_conn(
    stream: TcpStream,
    app: Router,
    opts: ServeOptions,
    mut drain: watch::Receiver<bool>,
) {
    let tracker = Arc::new(ConnTracker {
        state: Mutex::new((0, Instant::now())),
        changed: Notify::new(),
    });
    let svc_tracker = tracker.clone();
    let svc_drain = drain.clone();
    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
        let app = app.clone();
        let tracker = svc_tracker.clone();
        let drain = svc_drain.clone();
        tracker.begin();
        let active = ActiveRequest(tracker);
        async move {
            let resp = match app.oneshot(req.map(Body::new)).await {
                Ok(r) => r,
                Err(never) => match never {},
            };
            let mut resp = resp.map(|b| Body::new(GuardedBody::new(b, active)));
            if *drain.borrow() {
                resp.headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            Ok::<_, Infallible>(resp)
        }
    });

    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .keep_alive(true)
        .header_read_timeout(HEADER_READ_TIMEOUT);
    let mut conn = pin!(builder.serve_connection(TokioIo::new(stream), svc));
    let mut closing = false;
    let mut drain_seen = *drain.borrow();
    loop {
        let limit = if drain_seen {
            opts.keep_alive.min(DRAIN_IDLE)
        } else {
            opts.keep_alive
        };
        let idle_deadline = tracker.idle_since().map(|t| t + limit);
        tokio::select! {
            _ = conn.as_mut() => break,
            () = sleep_until(idle_deadline), if !closing && idle_deadline.is_some() => {
                if tracker.idle_since().is_some_and(|t| t.elapsed() >= limit) {
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                }
            }
            () = tracker.changed.notified() => {}
            _ = drain.changed(), if !drain_seen => {
                drain_seen = true;
            }
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
    }
}
