//! The JSON log line: `{"timestamp":"2026-12-01T19:55:50.748835Z","level":"INFO",<fields>}`,
//! the event's fields flattened in the order they were recorded, as tracing-subscriber's JSON
//! format with `flatten_event` writes it, without spans or target.
//!
//! Written directly into the line rather than through serde: every request logs one line, and
//! the generic formatter (a serde serializer per event, each field formatted and then escaped,
//! the date formatted from scratch) was the largest part of a small request's own CPU time.
//! The date part of the timestamp is formatted once per second per thread.

use std::cell::RefCell;
use std::fmt::{self, Write as _};
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// The event format (see the module docs).
#[derive(Debug, Default, Clone, Copy)]
pub struct JsonLine;

impl<S, N> FormatEvent<S, N> for JsonLine
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        LINE.with(|line| {
            let mut line = line.try_borrow_mut().map_err(|_| fmt::Error)?;
            line.clear();
            write_line(&mut line, SystemTime::now(), event);
            writer.write_str(&line)
        })
    }
}

thread_local! {
    /// The line being built, reused.
    static LINE: RefCell<String> = RefCell::new(String::with_capacity(256));
    /// `(second, "YYYY-MM-DDTHH:MM:SS")` of the last timestamp this thread wrote.
    static DATE: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
}

/// Appends the whole line for `event` at `now`, newline included.
fn write_line(line: &mut String, now: SystemTime, event: &Event<'_>) {
    line.push_str("{\"timestamp\":\"");
    timestamp(line, now);
    line.push_str("\",\"level\":\"");
    line.push_str(event.metadata().level().as_str());
    line.push('"');
    event.record(&mut Fields { line });
    line.push_str("}\n");
}

/// `2026-12-01T19:55:50.748835Z` (UTC, microseconds).
fn timestamp(line: &mut String, now: SystemTime) {
    let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    DATE.with(|date| match date.try_borrow_mut() {
        Ok(mut date) => {
            if date.0 != secs {
                date.1.clear();
                push_date(&mut date.1, secs);
                date.0 = secs;
            }
            line.push_str(&date.1);
        }
        Err(_) => push_date(line, secs),
    });
    let _ = write!(line, ".{:06}Z", since.subsec_micros());
}

/// `YYYY-MM-DDTHH:MM:SS` of `secs` since the epoch.
fn push_date(out: &mut String, secs: u64) {
    let formatted = i64::try_from(secs)
        .ok()
        .and_then(|s| chrono::DateTime::<chrono::Utc>::from_timestamp(s, 0));
    match formatted {
        Some(t) => {
            let _ = write!(out, "{}", t.format("%Y-%m-%dT%H:%M:%S"));
        }
        None => out.push_str("1970-01-01T00:00:00"),
    }
}

/// Appends each field as `,"name":value`.
struct Fields<'a> {
    line: &'a mut String,
}

impl Fields<'_> {
    fn key(&mut self, field: &Field) {
        self.line.push(',');
        push_json_str(self.line, field.name());
        self.line.push(':');
    }

    /// `,"name":value` for an integer.
    fn number(&mut self, field: &Field, value: impl fmt::Display) {
        self.key(field);
        let _ = write!(self.line, "{value}");
    }
}

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.key(field);
        push_json_str(self.line, value);
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.number(field, value);
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.number(field, value);
    }

    fn record_i128(&mut self, field: &Field, value: i128) {
        self.number(field, value);
    }

    fn record_u128(&mut self, field: &Field, value: u128) {
        self.number(field, value);
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.key(field);
        // As serde_json: a number, or null when it is not finite.
        match serde_json::Number::from_f64(value) {
            Some(n) => {
                let _ = write!(self.line, "{n}");
            }
            None => self.line.push_str("null"),
        }
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.key(field);
        self.line.push_str(if value { "true" } else { "false" });
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.key(field);
        self.line.push('"');
        let _ = write!(Escaped(self.line), "{value:?}");
        self.line.push('"');
    }
}

/// A JSON string: quoted, with `"`, `\` and control characters escaped as serde_json does.
fn push_json_str(out: &mut String, s: &str) {
    out.push('"');
    let _ = Escaped(out).write_str(s);
    out.push('"');
}

/// Writes into a JSON string's contents, escaping as it goes.
struct Escaped<'a>(&'a mut String);

impl fmt::Write for Escaped<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let mut start = 0;
        for (i, b) in s.bytes().enumerate() {
            let escape = match b {
                b'"' => "\\\"",
                b'\\' => "\\\\",
                b'\n' => "\\n",
                b'\r' => "\\r",
                b'\t' => "\\t",
                0x08 => "\\b",
                0x0c => "\\f",
                0x00..=0x1f => "",
                _ => continue,
            };
            self.0.push_str(&s[start..i]);
            if escape.is_empty() {
                let _ = write!(self.0, "\\u{b:04x}");
            } else {
                self.0.push_str(escape);
            }
            start = i + 1;
        }
        self.0.push_str(&s[start..]);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use serde_json::{Value, json};
    use tracing_subscriber::fmt::MakeWriter;

    use super::*;

    /// A writer collecting every line.
    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Lines {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            if let Ok(mut v) = self.0.lock() {
                v.extend_from_slice(buf);
            }
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Lines {
        type Writer = Lines;
        fn make_writer(&'a self) -> Self::Writer {
            self.clone()
        }
    }

    fn text(lines: &Lines) -> String {
        String::from_utf8(lines.0.lock().map(|v| v.clone()).unwrap_or_default()).unwrap_or_default()
    }

    /// What `f` logs, once with this format and once with tracing-subscriber's own JSON
    /// format (flattened, no target, no spans).
    fn both(f: impl Fn()) -> (String, String) {
        let ours = Lines::default();
        let theirs = Lines::default();
        let sub = tracing_subscriber::fmt()
            .event_format(JsonLine)
            .with_writer(ours.clone())
            .finish();
        tracing::subscriber::with_default(sub, &f);
        let sub = tracing_subscriber::fmt()
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .with_target(false)
            .with_writer(theirs.clone())
            .finish();
        tracing::subscriber::with_default(sub, &f);
        (text(&ours), text(&theirs))
    }

    #[test]
    fn lines_have_the_same_keys_values_and_order_as_the_generic_json_format() {
        let path = "/chat?q=\"x\"\\\n\t\u{1}é";
        let (ours, theirs) = both(|| {
            tracing::info!(
                event = "request_completed",
                instance_id = %"pod-1",
                method = %http::Method::POST,
                path = %path,
                status = 200u16,
                duration_ms = 0.125,
                negative = -3i64,
                ok = true,
                big = u64::MAX,
                nan = f64::NAN,
                "done {}", 42
            );
            tracing::warn!(error = ?Some("debug \"quoted\""), "careful");
        });
        let ours: Vec<&str> = ours.lines().collect();
        let theirs: Vec<&str> = theirs.lines().collect();
        assert_eq!(ours.len(), 2, "{ours:?}");
        for (a, b) in ours.iter().zip(&theirs) {
            let a: serde_json::Map<String, Value> = serde_json::from_str(a).unwrap_or_default();
            let b: serde_json::Map<String, Value> = serde_json::from_str(b).unwrap_or_default();
            assert!(!a.is_empty(), "our line must be a JSON object");
            let keys = |m: &serde_json::Map<String, Value>| m.keys().cloned().collect::<Vec<_>>();
            assert_eq!(keys(&a), keys(&b));
            for (k, v) in &a {
                if k != "timestamp" {
                    assert_eq!(Some(v), b.get(k), "field {k}");
                }
            }
        }
        let first: Value = serde_json::from_str(ours[0]).unwrap_or_default();
        assert_eq!(first["path"], json!(path));
        assert_eq!(first["message"], json!("done 42"));
        assert_eq!(first["nan"], Value::Null);
        assert_eq!(first["level"], json!("INFO"));
    }

    #[test]
    fn the_timestamp_is_utc_with_microseconds() {
        let at = UNIX_EPOCH + Duration::from_micros(1_796_154_950_748_835);
        let mut line = String::new();
        timestamp(&mut line, at);
        assert_eq!(line, "2026-12-01T19:55:50.748835Z");
        // The same second again (the cached date), then the next one.
        line.clear();
        timestamp(&mut line, at + Duration::from_micros(7));
        assert_eq!(line, "2026-12-01T19:55:50.748842Z");
        line.clear();
        timestamp(&mut line, at + Duration::from_secs(10));
        assert_eq!(line, "2026-12-01T19:56:00.748835Z");
        // The generic format agrees on the shape.
        let (ours, theirs) = both(|| tracing::info!("x"));
        let ts = |l: &str| {
            serde_json::from_str::<Value>(l.trim()).unwrap_or_default()["timestamp"]
                .as_str()
                .map(str::len)
        };
        assert_eq!(ts(&ours), ts(&theirs));
        assert_eq!(ts(&ours), Some("2026-12-01T19:55:50.748835Z".len()));
    }
}
