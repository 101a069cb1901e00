//! Accept loop, per-connection keep-alive handling and graceful shutdown of one process.
//!
//! Connections are served by hyper's HTTP/1.1 server. Keep-alive is managed here rather
//! than by hyper: a connection with no request in flight for `--timeout-keep-alive` is
//! closed. On shutdown the listener is closed at once (new connections are refused once no
//! process holds the socket any more), responses from then on carry `Connection: close`,
//! idle connections are closed after at most [`DRAIN_IDLE`], open streams end with a `resume`
//! event [`WRAP_UP_MARGIN`] before `--timeout-graceful`, and whatever still runs at
//! `--timeout-graceful` is logged and cut.

use std::convert::Infallible;
use std::future::Future;
use std::net::TcpListener as StdTcpListener;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderValue, Request, header};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tower::ServiceExt;

use super::body::GuardedBody;
use super::http::AppState;

/// While draining, idle keep-alive connections are closed after this long (or the
/// keep-alive timeout, if shorter). Clients that are actively sending get `Connection:
/// close` on their next response instead, so steady keep-alive traffic sees no reset.
pub const DRAIN_IDLE: Duration = Duration::from_secs(2);
/// Open streams are ended this long before `--timeout-graceful` (at most a quarter of it), with
/// a final `resume` event, so that they finish before the cut.
pub const WRAP_UP_MARGIN: Duration = Duration::from_secs(2);
/// Time allowed to receive a request head.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Listen backlog.
pub const BACKLOG: i32 = 1024;
/// How long a pre-fork worker holding more than its share of connections waits before it
/// accepts the next one, leaving it to a less loaded worker meanwhile.
pub const ACCEPT_DEFER: Duration = Duration::from_millis(1);

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
    // Pre-fork workers accept on one shared socket, and whichever is awake takes what arrives:
    // left alone, one worker can take every connection of a burst while another idles. So a
    // worker ahead of the least loaded one waits ACCEPT_DEFER before its next accept (once per
    // accept: a worker that stopped accepting delays the others by that much at most).
    let mut waited = false;
    loop {
        if !waited && state.counters.over_share() {
            waited = true;
            tokio::select! {
                biased;
                () = &mut shutdown => break,
                () = tokio::time::sleep(ACCEPT_DEFER) => {}
            }
        }
        tokio::select! {
            biased;
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    waited = false;
                    let _ = stream.set_nodelay(true);
                    let open = state.counters.connection_opened();
                    let conn = serve_conn(stream, app.clone(), opts, drain_rx.clone());
                    conns.spawn(async move {
                        conn.await;
                        drop(open);
                    });
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
    let deadline = opts.graceful.saturating_sub(started.elapsed());
    // Open streams end a little before the deadline, each with a final event telling its
    // client where to resume, so that none is cut mid-event.
    let wrap_at = deadline.saturating_sub(WRAP_UP_MARGIN.min(deadline / 4));
    // Runs driven here without a connection (background runs) count as in flight too.
    let all_closed = async {
        while conns.join_next().await.is_some() {}
        state.runs.idle().await;
    };
    if tokio::time::timeout(wrap_at, all_closed).await.is_ok() {
        return 0;
    }
    tracing::info!(
        event = "streams_wrapped_up",
        instance_id = %state.instance_id,
        connections_open = conns.len(),
    );
    state.runs.wrap_up();
    let all_closed = async {
        while conns.join_next().await.is_some() {}
        state.runs.idle().await;
    };
    if tokio::time::timeout(deadline.saturating_sub(wrap_at), all_closed)
        .await
        .is_ok()
    {
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

/// Requests in flight on one connection and when it last became idle. Plain atomics: a request
/// only counts itself in and out; the connection's loop reads them when its timer fires, so a
/// request wakes nothing.
struct ConnTracker {
    /// When the connection was accepted; times below are milliseconds since.
    epoch: Instant,
    active: AtomicUsize,
    idle_since_ms: AtomicU64,
}

impl ConnTracker {
    fn new() -> Self {
        Self {
            epoch: Instant::now(),
            active: AtomicUsize::new(0),
            idle_since_ms: AtomicU64::new(0),
        }
    }

    fn begin(&self) {
        self.active.fetch_add(1, Ordering::AcqRel);
    }

    fn end(&self) {
        // The time first, so whoever sees no request active also sees when the last one ended.
        let ms = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.idle_since_ms.store(ms, Ordering::Release);
        self.active.fetch_sub(1, Ordering::AcqRel);
    }

    fn idle_since(&self) -> Option<Instant> {
        (self.active.load(Ordering::Acquire) == 0)
            .then(|| self.epoch + Duration::from_millis(self.idle_since_ms.load(Ordering::Acquire)))
    }
}

/// Holds one request in its connection's [`ConnTracker`] until the response body is done.
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
    let tracker = Arc::new(ConnTracker::new());
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
    // Fires when the connection may have been idle for the limit: then it looks, and either
    // closes the connection or sets itself for the next time it could be.
    let mut timer = pin!(tokio::time::sleep(opts.keep_alive));
    loop {
        let limit = if drain_seen {
            opts.keep_alive.min(DRAIN_IDLE)
        } else {
            opts.keep_alive
        };
        tokio::select! {
            _ = conn.as_mut() => break,
            () = timer.as_mut(), if !closing => {
                let now = Instant::now();
                match tracker.idle_since() {
                    Some(since) if now.saturating_duration_since(since) >= limit => {
                        conn.as_mut().graceful_shutdown();
                        closing = true;
                    }
                    Some(since) => timer.as_mut().reset((since + limit).into()),
                    // Busy: it cannot be idle for the limit before a whole limit from now.
                    None => timer.as_mut().reset((now + limit).into()),
                }
            }
            _ = drain.changed(), if !drain_seen => {
                drain_seen = true;
                // The limit just got shorter: look again now.
                timer.as_mut().reset(Instant::now().into());
            }
        }
    }
}
