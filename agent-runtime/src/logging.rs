//! JSON logs on stdout via tracing ([`line`] writes each line), and a panic hook that logs
//! panics as JSON events.
//!
//! Lines are written by a background thread (`tracing-appender`), so a request never waits for
//! a `write` to stdout on its own thread: with one access-log line per request the direct
//! writes were the largest cost of a small request. The thread buffers what is queued and writes
//! it when the queue is empty (one `write` for many lines under load, one per line when quiet,
//! so nothing waits in the buffer). The writer is not lossy: when its queue is full, logging
//! waits instead of dropping lines. The returned guard flushes what is queued when it is
//! dropped, at the end of `main`.

mod line;

use tracing_appender::non_blocking::{NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::EnvFilter;

/// Bytes the log thread gathers before a write (it also writes whenever its queue runs empty).
const LOG_BUFFER_BYTES: usize = 64 * 1024;
/// Lines queued for the log thread before logging waits. The queue's slots are allocated and
/// written when it is made, so its size is resident from the start: tracing-appender's default
/// of 128,000 lines held 4 MiB of every process's idle memory. 4,096 lines of ~200 bytes are
/// about 60 ms of the fastest access log this runtime writes.
const LOG_QUEUE_LINES: usize = 4096;

/// Installs the JSON subscriber with `filter` (EnvFilter syntax, already validated). Keep the
/// guard alive until the process exits: dropping it flushes the queued lines.
#[must_use = "dropping the guard stops the log writer"]
pub fn init(filter: &str) -> WorkerGuard {
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let (writer, guard) = NonBlockingBuilder::default()
        .buffered_lines_limit(LOG_QUEUE_LINES)
        .lossy(false)
        .thread_name("fastagentic-log")
        .finish(std::io::BufWriter::with_capacity(
            LOG_BUFFER_BYTES,
            std::io::stdout(),
        ));
    let _ = tracing_subscriber::fmt()
        .event_format(line::JsonLine)
        .with_env_filter(filter)
        .with_writer(writer)
        .try_init();
    std::panic::set_hook(Box::new(|info| {
        let message = panic_message(info.payload()).unwrap_or("unknown");
        let location = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        tracing::error!(event = "handler_panic", message = %message, location = %location);
    }));
    guard
}

/// The message a panic was raised with (`panic!` with a literal or a format), if it has one.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> Option<&str> {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
}
