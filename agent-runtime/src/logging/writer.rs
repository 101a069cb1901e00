//! Where log lines go: a buffer the logging threads append to, written out by a thread of its
//! own in batches.
//!
//! A request never waits for a `write` to stdout on its own thread (stdout is often a pipe that
//! a log collector drains at its own pace). The log thread is woken once per batch, not once per
//! line: the first line into an empty buffer wakes it, it lets lines gather for [`GATHER`] (less
//! once [`WRITE_AT`] bytes wait), then writes them all at once. So a line of a quiet process is
//! written within [`GATHER`], and under load the thread wakes about `1 / GATHER` times a second
//! whatever the request rate. Waking it for every few lines cost more than writing them: each
//! wake-up is a context switch on the cores the requests are served on.
//!
//! Nothing is dropped: past [`MAX_PENDING`] waiting bytes a logging thread waits for the log
//! thread to take them. Dropping the [`Guard`] writes what is left (waiting at most
//! [`SHUTDOWN_WAIT`] for an output that does not take it); lines logged after that are dropped.

use std::io::Write;
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tracing_subscriber::fmt::MakeWriter;

/// How long the log thread lets lines gather before it writes them.
pub const GATHER: Duration = Duration::from_millis(5);
/// Waiting bytes that make the log thread write at once.
pub const WRITE_AT: usize = 64 * 1024;
/// Waiting bytes past which logging waits for the log thread.
pub const MAX_PENDING: usize = 1024 * 1024;
/// How long dropping the [`Guard`] waits for the last lines to be written.
pub const SHUTDOWN_WAIT: Duration = Duration::from_secs(1);

/// What the logging threads and the log thread share.
#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    /// The log thread waits on it for lines (and for the shutdown).
    lines: Condvar,
    /// Logging threads wait on it while the buffer is full.
    room: Condvar,
}

#[derive(Default)]
struct State {
    /// Whole lines not yet taken by the log thread.
    pending: Vec<u8>,
    /// Set by the [`Guard`]: the log thread writes what is left and ends.
    closed: bool,
    /// Logging threads waiting for room.
    waiting: usize,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // The lock is only held to move bytes, which cannot leave the state half-changed.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The writer the subscriber logs through (cheap to clone).
#[derive(Clone)]
pub struct LogWriter {
    shared: Arc<Shared>,
}

/// Keeps the log thread; dropping it writes the lines still waiting and ends the thread.
#[must_use = "dropping the guard stops the log writer"]
pub struct Guard {
    shared: Arc<Shared>,
    done: mpsc::Receiver<()>,
}

/// Starts the log thread writing to `out`.
pub fn spawn<W: Write + Send + 'static>(out: W) -> std::io::Result<(LogWriter, Guard)> {
    let shared = Arc::new(Shared::default());
    let (done_tx, done) = mpsc::channel();
    let thread_shared = shared.clone();
    std::thread::Builder::new()
        .name("fastagentic-log".into())
        .spawn(move || {
            write_batches(&thread_shared, out);
            let _ = done_tx.send(());
        })?;
    Ok((
        LogWriter {
            shared: shared.clone(),
        },
        Guard { shared, done },
    ))
}

impl LogWriter {
    /// Appends `line` (one whole line: the subscriber writes each event at once).
    fn push(&self, line: &[u8]) {
        let mut st = self.shared.lock();
        while st.pending.len() >= MAX_PENDING && !st.closed {
            st.waiting += 1;
            st = self
                .shared
                .room
                .wait(st)
                .unwrap_or_else(PoisonError::into_inner);
            st.waiting -= 1;
        }
        if st.closed {
            return;
        }
        let before = st.pending.len();
        st.pending.extend_from_slice(line);
        let after = st.pending.len();
        drop(st);
        // The first line wakes the log thread; crossing WRITE_AT cuts its wait short.
        if before == 0 || (before < WRITE_AT && after >= WRITE_AT) {
            self.shared.lines.notify_one();
        }
    }
}

impl Write for &LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.push(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for LogWriter {
    type Writer = &'a LogWriter;

    fn make_writer(&'a self) -> Self::Writer {
        self
    }
}

/// The log thread: takes what is waiting, one batch at a time, and writes it to `out`.
fn write_batches<W: Write>(shared: &Shared, mut out: W) {
    let mut batch = Vec::new();
    loop {
        let mut st = shared.lock();
        while st.pending.is_empty() && !st.closed {
            st = shared
                .lines
                .wait(st)
                .unwrap_or_else(PoisonError::into_inner);
        }
        if st.pending.is_empty() {
            return; // closed, and everything written
        }
        if !st.closed && st.pending.len() < WRITE_AT {
            st = shared
                .lines
                .wait_timeout_while(st, GATHER, |s| !s.closed && s.pending.len() < WRITE_AT)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        std::mem::swap(&mut st.pending, &mut batch);
        let someone_waits = st.waiting > 0;
        drop(st);
        if someone_waits {
            shared.room.notify_all();
        }
        // Nowhere to report a failed write to: the lines are given up, the next ones tried.
        let _ = out.write_all(&batch).and_then(|()| out.flush());
        batch.clear();
        // A burst's buffer is not kept for ever.
        batch.shrink_to(2 * WRITE_AT);
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.lines.notify_one();
        self.shared.room.notify_all();
        let _ = self.done.recv_timeout(SHUTDOWN_WAIT);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::time::Instant;

    use super::*;

    /// An output that records what it is given and how many writes it took, and can be held
    /// shut (a pipe nobody reads).
    #[derive(Clone, Default)]
    struct Out {
        bytes: Arc<Mutex<Vec<u8>>>,
        writes: Arc<AtomicUsize>,
        shut: Arc<AtomicBool>,
    }

    impl Write for Out {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            while self.shut.load(Ordering::Acquire) {
                std::thread::sleep(Duration::from_millis(1));
            }
            self.writes.fetch_add(1, Ordering::AcqRel);
            self.bytes.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Out {
        fn text(&self) -> String {
            String::from_utf8(self.bytes.lock().unwrap().clone()).unwrap()
        }
    }

    fn line(writer: &LogWriter, text: &str) {
        (&*writer).write_all(text.as_bytes()).unwrap();
    }

    fn wait_until(what: &str, f: impl Fn() -> bool) {
        let start = Instant::now();
        while !f() {
            assert!(start.elapsed() < Duration::from_secs(10), "{what}");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn a_quiet_line_is_written_without_the_guard_being_dropped() {
        let out = Out::default();
        let (writer, _guard) = spawn(out.clone()).unwrap();
        line(&writer, "one\n");
        wait_until("the line is written", || out.text() == "one\n");
    }

    #[test]
    fn many_lines_go_out_in_order_in_few_writes() {
        let out = Out::default();
        let (writer, guard) = spawn(out.clone()).unwrap();
        let expected: String = (0..20_000).map(|i| format!("line {i}\n")).collect();
        for l in expected.split_inclusive('\n') {
            line(&writer, l);
        }
        drop(guard);
        assert_eq!(out.text(), expected, "every line, in order");
        let writes = out.writes.load(Ordering::Acquire);
        assert!(writes < 1_000, "{writes} writes for 20,000 lines");
    }

    #[test]
    fn lines_of_concurrent_threads_stay_whole() {
        let out = Out::default();
        let (writer, guard) = spawn(out.clone()).unwrap();
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let writer = writer.clone();
                std::thread::spawn(move || {
                    for i in 0..5_000 {
                        line(&writer, &format!("{{\"thread\":{t},\"i\":{i}}}\n"));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        drop(guard);
        let text = out.text();
        let mut next = [0u64; 4];
        for l in text.lines() {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            let t = usize::try_from(v["thread"].as_u64().unwrap()).unwrap();
            assert_eq!(
                v["i"].as_u64().unwrap(),
                next[t],
                "thread {t}'s lines in order"
            );
            next[t] += 1;
        }
        assert_eq!(next, [5_000; 4]);
    }

    #[test]
    fn a_full_buffer_makes_logging_wait_instead_of_dropping_lines() {
        let out = Out::default();
        out.shut.store(true, Ordering::Release);
        let (writer, guard) = spawn(out.clone()).unwrap();
        let chunk = format!("{}\n", "x".repeat(1023));
        let lines = 3 * MAX_PENDING / chunk.len();
        let logged = Arc::new(AtomicUsize::new(0));
        let logger = {
            let (writer, chunk, logged) = (writer.clone(), chunk.clone(), logged.clone());
            std::thread::spawn(move || {
                for _ in 0..lines {
                    line(&writer, &chunk);
                    logged.fetch_add(1, Ordering::AcqRel);
                }
            })
        };
        // Logging stops (the count holds still) once the buffer is full, not after every line.
        let full = MAX_PENDING / chunk.len();
        let stuck_at = {
            let start = Instant::now();
            loop {
                let at = logged.load(Ordering::Acquire);
                std::thread::sleep(Duration::from_millis(100));
                if at >= full && logged.load(Ordering::Acquire) == at {
                    break at;
                }
                assert!(start.elapsed() < Duration::from_secs(10), "logged {at}");
            }
        };
        assert!(
            stuck_at < lines,
            "logging goes on while the output takes nothing: {stuck_at} of {lines}"
        );
        out.shut.store(false, Ordering::Release);
        logger.join().unwrap();
        drop(guard);
        assert_eq!(out.text().len(), lines * chunk.len(), "no line lost");
    }
}
