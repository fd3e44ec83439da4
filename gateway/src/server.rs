//! Client connections: accepted under a cap, served by hyper's HTTP/1 with the
//! deadlines a server facing untrusted clients needs.
//!
//! - **Connection cap** (`server.max_connections`, by default derived from the
//!   open-file limit, see [`max_connections`]): past it a new connection gets an
//!   immediate `503 overloaded` problem and is closed, while the open ones keep
//!   being served. Counted (`sg_connections_refused_total`) and logged at most
//!   once per [`REFUSAL_LOG_EVERY`].
//! - **Header-read timeout** (`server.header_read_timeout`): a connection must send
//!   a complete request head within it of being accepted, or of the first byte of
//!   its next request; otherwise it is closed (slowloris, idle sockets that never
//!   send).
//! - **Idle timeout** (`server.idle_timeout`): a keep-alive connection with no
//!   request under way and nothing sent for that long is closed.
//! - **Protocol errors** hyper answers itself (a malformed request line, a head
//!   over hyper's buffer, a URI over 64 KiB) are counted
//!   (`sg_http_protocol_errors_total{reason}`) and logged; heads that hyper can
//!   parse but that are over the gateway's own limits get a problem+json answer
//!   from [`crate::middleware::limits`].
//!
//! Deadlines are kept by one watchdog per connection, polled in the connection's
//! own task: it wakes only at a deadline (never per request), reads the
//! connection's [`Activity`] and closes the connection if the deadline still
//! holds. A request under way is never cut by these deadlines: the request and
//! body-read timeouts of the middleware stack cover it.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use gateway_config::ServerConfig;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, Semaphore, watch};
use tokio::time::Instant;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use crate::error::Problem;
use crate::middleware::request_id::MakeId;

/// `sg_connections_open`: client connections open now.
pub const CONNECTIONS_OPEN: &str = "sg_connections_open";
/// `sg_connections_refused_total`: connections refused at the cap.
pub const CONNECTIONS_REFUSED: &str = "sg_connections_refused_total";
/// `sg_connections_timed_out_total{reason}`: connections closed by a deadline.
pub const CONNECTIONS_TIMED_OUT: &str = "sg_connections_timed_out_total";
/// `sg_http_protocol_errors_total{reason}`: requests hyper refused before routing.
pub const PROTOCOL_ERRORS: &str = "sg_http_protocol_errors_total";

/// File descriptors kept for everything that is not a client connection,
/// besides each provider's and the webhook worker's connection caps: the
/// listener, the store's connections, the runtime, logs, the config file.
const FD_RESERVE: u64 = 64;

/// The default cap however high the open-file limit (containers often allow
/// a million): an idle connection costs about 14 KiB, so this bounds them to
/// ~110 MiB even before the header and idle deadlines close them. Set
/// `server.max_connections` to go higher.
const DEFAULT_MAX_CONNECTIONS: usize = 8192;

/// hyper's read buffer per connection: room for the largest head
/// `middleware::limits` accepts (8 KiB URI, 32 KiB of headers) and more.
const MAX_BUFFER_BYTES: usize = 64 * 1024;

/// At most this many refused connections linger to read what their clients
/// still send; past it a refused connection is closed right after its answer.
const MAX_REFUSALS_IN_FLIGHT: usize = 64;

/// After a refusal is written, how long the request the client may be sending
/// is waited for (and read, so that closing does not reset the connection
/// before the client has read the answer). Short: a client that sends nothing
/// must not hold a refusal's place.
const REFUSAL_LINGER: Duration = Duration::from_millis(50);

/// At most one log line this often about refused connections or accept errors.
const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(10);

/// Pause after an accept error other than a vanished connection (EMFILE and
/// the like), so the loop does not spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);

/// The connection deadlines and cap, resolved from the config.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
}

impl Limits {
    /// `server.*` with `max_connections` derived from `fd_limit` if unset;
    /// `outbound` is the most connections the gateway may open itself.
    pub fn new(server: &ServerConfig, fd_limit: u64, outbound: usize) -> Self {
        Self {
            header_read_timeout: server.header_read_timeout,
            idle_timeout: server.idle_timeout,
            max_connections: server.max_connections.unwrap_or_else(|| max_connections(fd_limit, outbound)),
        }
    }
}

/// The default connection cap: the open-file limit less what the gateway needs
/// for its own connections (`outbound`) and [`FD_RESERVE`], at least 16 and at
/// most [`DEFAULT_MAX_CONNECTIONS`].
pub fn max_connections(fd_limit: u64, outbound: usize) -> usize {
    let reserved = FD_RESERVE.saturating_add(outbound as u64);
    usize::try_from(fd_limit.saturating_sub(reserved)).unwrap_or(usize::MAX).clamp(16, DEFAULT_MAX_CONNECTIONS)
}

/// Raises the soft open-file limit to the hard one and returns the limit now
/// in force (`u64::MAX`: unlimited or unknown).
pub fn raise_fd_limit() -> u64 {
    #[cfg(unix)]
    {
        match rlimit::increase_nofile_limit(u64::MAX) {
            Ok(limit) => limit,
            Err(e) => {
                tracing::warn!(error = %e, "could not raise the open-file limit");
                rlimit::getrlimit(rlimit::Resource::NOFILE).map_or(u64::MAX, |(soft, _)| soft)
            }
        }
    }
    #[cfg(not(unix))]
    {
        u64::MAX
    }
}

/// Serves `router` on `listener` until `shutdown` completes; then stops
/// accepting, asks every connection to close once its request is answered,
/// and returns when all are closed.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let refusals = Arc::new(Semaphore::new(MAX_REFUSALS_IN_FLIGHT));
    let (stop, stopping) = watch::channel(false);
    let connections = TaskTracker::new();
    let ids = MakeId::default();
    let log = Throttle::default();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            biased;
            () = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        let tcp = match accepted {
            Ok((tcp, _peer)) => tcp,
            // The client went away between SYN and accept: nothing to do.
            Err(e) if is_connection_error(&e) => continue,
            Err(e) => {
                if log.ready() {
                    tracing::error!(error = %e, "cannot accept connections; retrying");
                }
                tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                continue;
            }
        };
        // Small JSON answers: do not wait for Nagle.
        let _ = tcp.set_nodelay(true);
        if let Ok(slot) = Arc::clone(&slots).try_acquire_owned() {
            let router = router.clone();
            let stopping = stopping.clone();
            let open = metrics::gauge!(CONNECTIONS_OPEN);
            open.increment(1);
            connections.spawn(async move {
                serve_connection(tcp, router, limits, stopping).await;
                open.decrement(1);
                drop(slot);
            });
        } else {
            metrics::counter!(CONNECTIONS_REFUSED).increment(1);
            if log.ready() {
                tracing::warn!(
                    max_connections = limits.max_connections,
                    "connection cap reached: refusing new connections with 503 (see sg_connections_refused_total)"
                );
            }
            if let Some(tcp) = refuse(tcp, &ids.next_value())
                && let Ok(permit) = Arc::clone(&refusals).try_acquire_owned()
            {
                tokio::spawn(async move {
                    linger(tcp).await;
                    drop(permit);
                });
            }
        }
    }
    drop(listener);
    let _ = stop.send(true);
    connections.close();
    connections.wait().await;
    Ok(())
}

/// Accept errors that concern one connection only.
fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset
    )
}

/// Writes a `503 overloaded` problem to a connection over the cap, at once and
/// without waiting (the socket's send buffer is empty: a few hundred bytes
/// fit), and closes its sending side. Returns the socket if it may still be
/// worth reading from (see [`linger`]).
fn refuse(tcp: TcpStream, request_id: &str) -> Option<TcpStream> {
    let mut problem = Problem::new(
        http::StatusCode::SERVICE_UNAVAILABLE,
        "overloaded",
        "the gateway has as many connections open as it allows; retry shortly".to_owned(),
    );
    request_id.clone_into(&mut problem.request_id);
    let body = serde_json::to_vec(&problem).unwrap_or_default();
    let mut answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/problem+json\r\nretry-after: 1\r\n\
         x-request-id: {request_id}\r\nconnection: close\r\ncontent-length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    answer.extend_from_slice(&body);
    let mut written = 0;
    while written < answer.len() {
        match tcp.try_write(&answer[written..]) {
            Ok(0) | Err(_) => return None,
            Ok(n) => written += n,
        }
    }
    let tcp = tcp.into_std().ok()?;
    tcp.shutdown(std::net::Shutdown::Write).ok()?;
    // What the client sent already is read, so that closing now does not reset
    // the connection before it has read the answer.
    let mut sink = [0u8; 4096];
    loop {
        match io::Read::read(&mut &tcp, &mut sink) {
            Ok(0) => return None,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(_) => return None,
        }
    }
    TcpStream::from_std(tcp).ok()
}

/// Reads, for [`REFUSAL_LINGER`], what a refused client is still sending, then closes.
async fn linger(tcp: TcpStream) {
    let mut sink = [0u8; 4096];
    let drain = async {
        loop {
            tcp.readable().await?;
            match tcp.try_read(&mut sink) {
                Ok(0) => return Ok::<(), io::Error>(()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
    };
    let _ = tokio::time::timeout(REFUSAL_LINGER, drain).await;
}

/// Serves one connection until it closes, a deadline closes it, or the server
/// stops (then it closes once its request under way is answered).
async fn serve_connection(tcp: TcpStream, router: Router, limits: Limits, mut stopping: watch::Receiver<bool>) {
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(Watched { inner: tcp, activity: Arc::clone(&activity) });
    let tracked = Arc::clone(&activity);
    let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
        let guard = tracked.start();
        let answer = router.clone().oneshot(request.map(Body::new));
        async move {
            let response = answer.await;
            drop(guard);
            response
        }
    });
    let connection = hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        // Deadlines are the watchdog's (below): hyper's own header timeout
        // would also cut idle keep-alive connections at the header deadline.
        .header_read_timeout(None)
        // A head over this is hyper's own 431; up to the gateway's limits
        // (`middleware::limits`) it is a problem+json answer. Bounds each
        // connection's read buffer too.
        .max_buf_size(MAX_BUFFER_BYTES)
        .serve_connection(io, service);
    let mut connection = std::pin::pin!(connection);
    let watchdog = watchdog(&activity, limits);
    let mut watchdog = std::pin::pin!(watchdog);
    let mut closing = *stopping.borrow();
    if closing {
        connection.as_mut().graceful_shutdown();
    }
    loop {
        tokio::select! {
            result = connection.as_mut() => {
                match result {
                    Err(e) => protocol_error(&e),
                    // hyper answered a head it refused without saying so (a head over its buffer).
                    Ok(()) => if let Some(status) = activity.refused_with() {
                        refused_head(status);
                    }
                }
                return;
            }
            changed = stopping.changed(), if !closing => {
                if changed.is_err() || *stopping.borrow() {
                    closing = true;
                    connection.as_mut().graceful_shutdown();
                }
            }
            reason = watchdog.as_mut() => {
                metrics::counter!(CONNECTIONS_TIMED_OUT, "reason" => reason).increment(1);
                tracing::debug!(reason, "closing a client connection");
                return;
            }
        }
    }
}

/// Counts and logs an error that ended a connection.
fn protocol_error(e: &hyper::Error) {
    let reason = if e.is_parse_too_large() {
        "head_too_large"
    } else if e.is_parse() {
        if e.to_string().contains("URI") { "uri_too_long" } else { "malformed" }
    } else if e.is_incomplete_message() || e.is_canceled() || e.is_closed() || e.is_body_write_aborted() {
        // The client went away mid-exchange: nothing the gateway could answer.
        tracing::debug!(error = %e, "client connection ended early");
        return;
    } else {
        "other"
    };
    metrics::counter!(PROTOCOL_ERRORS, "reason" => reason).increment(1);
    tracing::info!(reason, error = %e, "refused a request hyper could not parse (answered 400/414/431, connection closed)");
}

/// Counts and logs a head hyper answered itself with `status`.
fn refused_head(status: u16) {
    let reason = match status {
        431 => "head_too_large",
        414 => "uri_too_long",
        _ => "malformed",
    };
    metrics::counter!(PROTOCOL_ERRORS, "reason" => reason).increment(1);
    tracing::info!(reason, status, "refused a request head hyper could not take (connection closed)");
}

/// What a connection is doing, for its watchdog. Written only by the
/// connection's own task (reads, request start and end), so relaxed atomics do.
struct Activity {
    /// When the connection was accepted.
    accepted: Instant,
    /// Requests whose answer is still being made.
    in_flight: AtomicUsize,
    /// Requests answered on this connection.
    answered: AtomicU64,
    /// Whether bytes of a next request arrived since the last answer.
    reading: AtomicBool,
    /// The last answer's end, or the first byte of the next request after it.
    since: Mutex<Instant>,
    /// The status of an answer written before any request reached the service:
    /// hyper's own refusal of a head.
    refused: AtomicU16,
    /// Woken when the deadline moves earlier (a next request starts on an
    /// idle connection: the header deadline is nearer than the idle one).
    earlier: Notify,
}

/// Marks a request as under way until dropped.
struct InFlight(Arc<Activity>);

impl Activity {
    fn new() -> Self {
        let now = Instant::now();
        Self {
            accepted: now,
            in_flight: AtomicUsize::new(0),
            answered: AtomicU64::new(0),
            reading: AtomicBool::new(false),
            since: Mutex::new(now),
            refused: AtomicU16::new(0),
            earlier: Notify::new(),
        }
    }

    /// Bytes are written: before any request reached the service, that is hyper
    /// answering a head it refused; keep its status.
    fn write(&self, buf: &[u8]) {
        if self.answered.load(Ordering::Relaxed) == 0
            && self.in_flight.load(Ordering::Relaxed) == 0
            && self.refused.load(Ordering::Relaxed) == 0
            && let Some(status) = buf.strip_prefix(b"HTTP/1.1 ").and_then(|rest| rest.get(..3))
            && let Some(status) = std::str::from_utf8(status).ok().and_then(|s| s.parse().ok())
        {
            self.refused.store(status, Ordering::Relaxed);
        }
    }

    /// The status hyper refused a head with, if it did.
    fn refused_with(&self) -> Option<u16> {
        Some(self.refused.load(Ordering::Relaxed)).filter(|s| *s != 0)
    }

    /// A request head is complete (hyper calls the service).
    fn start(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(Arc::clone(self))
    }

    /// Bytes arrived: if the connection was idle, a next request is starting.
    fn read(&self) {
        if !self.reading.load(Ordering::Relaxed)
            && self.in_flight.load(Ordering::Relaxed) == 0
            && self.answered.load(Ordering::Relaxed) > 0
        {
            self.reading.store(true, Ordering::Relaxed);
            *self.since.lock().unwrap_or_else(PoisonError::into_inner) = Instant::now();
            // The watchdog may be asleep until the idle deadline.
            self.earlier.notify_one();
        }
    }

    /// The deadline that applies now and why it would close the connection;
    /// `None` while a request is under way.
    fn deadline(&self, limits: Limits) -> Option<(Instant, &'static str)> {
        if self.in_flight.load(Ordering::Relaxed) > 0 {
            return None;
        }
        if self.answered.load(Ordering::Relaxed) == 0 {
            return Some((self.accepted + limits.header_read_timeout, "header_timeout"));
        }
        let since = *self.since.lock().unwrap_or_else(PoisonError::into_inner);
        if self.reading.load(Ordering::Relaxed) {
            Some((since + limits.header_read_timeout, "header_timeout"))
        } else {
            Some((since + limits.idle_timeout, "idle_timeout"))
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let activity = &self.0;
        *activity.since.lock().unwrap_or_else(PoisonError::into_inner) = Instant::now();
        activity.reading.store(false, Ordering::Relaxed);
        activity.answered.fetch_add(1, Ordering::Relaxed);
        activity.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Completes with the reason once a deadline of `activity` has passed.
/// Sleeps from deadline to deadline: a request's start or end moves the
/// deadline later, which the next wake-up sees, so nothing is reset per request;
/// the one move earlier (a next head starting on an idle connection) wakes it.
async fn watchdog(activity: &Activity, limits: Limits) -> &'static str {
    loop {
        let now = Instant::now();
        let wake = match activity.deadline(limits) {
            Some((at, reason)) if at <= now => return reason,
            Some((at, _)) => at,
            // A request under way: look again when the earliest deadline could
            // apply after it ends.
            None => now + limits.header_read_timeout.min(limits.idle_timeout),
        };
        tokio::select! {
            () = tokio::time::sleep_until(wake) => {}
            () = activity.earlier.notified() => {}
        }
    }
}

/// A client socket that tells its [`Activity`] when bytes arrive.
struct Watched {
    inner: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Watched {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.read();
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.activity.write(buf);
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if let Some(first) = bufs.first() {
            self.activity.write(first);
        }
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Lets a log line through at most once per [`REFUSAL_LOG_EVERY`].
#[derive(Default)]
struct Throttle(Mutex<Option<Instant>>);

impl Throttle {
    fn ready(&self) -> bool {
        let mut last = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if last.is_some_and(|at| at.elapsed() < REFUSAL_LOG_EVERY) {
            return false;
        }
        *last = Some(Instant::now());
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: 10,
        }
    }

    #[test]
    fn the_default_cap_leaves_room_for_the_gateways_own_connections() {
        assert_eq!(max_connections(1024, 276), 1024 - 64 - 276);
        assert_eq!(max_connections(100, 276), 16, "never below 16");
        assert_eq!(max_connections(u64::MAX, 10), DEFAULT_MAX_CONNECTIONS, "bounded if the fd limit is not");
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_that_sends_no_head_is_closed_at_the_header_deadline() {
        let activity = Arc::new(Activity::new());
        let started = Instant::now();
        assert_eq!(watchdog(&activity, limits()).await, "header_timeout");
        assert_eq!(started.elapsed(), Duration::from_secs(10));
    }

    #[tokio::test(start_paused = true)]
    async fn a_keep_alive_connection_is_closed_when_idle_and_a_slow_next_head_at_the_header_deadline() {
        let activity = Arc::new(Activity::new());
        tokio::time::advance(Duration::from_secs(3)).await;
        drop(activity.start());
        let answered = Instant::now();
        assert_eq!(watchdog(&activity, limits()).await, "idle_timeout");
        assert_eq!(answered.elapsed(), Duration::from_secs(60));

        let activity = Arc::new(Activity::new());
        drop(activity.start());
        tokio::time::advance(Duration::from_secs(30)).await;
        activity.read();
        let first_byte = Instant::now();
        assert_eq!(watchdog(&activity, limits()).await, "header_timeout");
        assert_eq!(first_byte.elapsed(), Duration::from_secs(10));
    }

    #[tokio::test(start_paused = true)]
    async fn a_next_head_starting_while_the_watchdog_sleeps_to_the_idle_deadline_gets_the_header_deadline() {
        let activity = Arc::new(Activity::new());
        drop(activity.start());
        let watch = tokio::spawn({
            let activity = Arc::clone(&activity);
            async move { watchdog(&activity, limits()).await }
        });
        tokio::task::yield_now().await;
        tokio::time::advance(Duration::from_secs(5)).await;
        activity.read();
        let first_byte = Instant::now();
        assert_eq!(watch.await.unwrap(), "header_timeout");
        assert_eq!(first_byte.elapsed(), Duration::from_secs(10));
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_under_way_is_never_cut_and_the_idle_clock_starts_at_its_end() {
        let activity = Arc::new(Activity::new());
        let request = activity.start();
        let watch = tokio::spawn({
            let activity = Arc::clone(&activity);
            async move { watchdog(&activity, limits()).await }
        });
        tokio::time::advance(Duration::from_secs(95)).await;
        tokio::task::yield_now().await;
        assert!(!watch.is_finished(), "cut a request under way");
        drop(request);
        let ended = Instant::now();
        assert_eq!(watch.await.unwrap(), "idle_timeout");
        assert_eq!(ended.elapsed(), Duration::from_secs(60));
    }
}
