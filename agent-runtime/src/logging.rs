//! JSON logs on stdout via tracing ([`line`] writes each line, [`writer`] takes them to stdout
//! from a thread of its own, in batches), and a panic hook that logs panics as JSON events.

mod line;
pub mod writer;

use tracing_subscriber::EnvFilter;

/// Installs the JSON subscriber with `filter` (EnvFilter syntax, already validated). Keep the
/// guard alive until the process exits: dropping it writes the lines still waiting. `None` when
/// the log thread could not be started: lines are then written to stdout directly.
#[must_use = "dropping the guard stops the log writer"]
pub fn init(filter: &str) -> Option<writer::Guard> {
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let subscriber = tracing_subscriber::fmt()
        .event_format(line::JsonLine)
        .with_env_filter(filter);
    let guard = match writer::spawn(std::io::stdout()) {
        Ok((writer, guard)) => {
            let _ = subscriber.with_writer(writer).try_init();
            Some(guard)
        }
        Err(_) => {
            let _ = subscriber.with_writer(std::io::stdout).try_init();
            None
        }
    };
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
