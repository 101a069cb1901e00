//! [`Timed`] around a fake backend that is slow where a test wants it: each limit fires with
//! its message, and none fires while the backend stays within it. Real, short durations with
//! wide margins (a limit ten times the wait, or a wait ten times the limit), so a loaded
//! machine does not flip a result.

use super::*;

/// A limit that a fast step never reaches.
const LONG: Duration = Duration::from_secs(2);
/// A limit that a slow step always passes.
const SHORT: Duration = Duration::from_millis(150);
/// How long a slow step takes.
const SLOW: Duration = Duration::from_millis(1500);
/// How long a fast step takes.
const FAST: Duration = Duration::from_millis(10);

/// A backend: waits `open` before its stream exists, `first` before the answer or first chunk,
/// `between` before each later chunk, and yields `chunks` chunks (`None`: forever).
#[derive(Clone, Copy)]
struct Fake {
    open: Duration,
    first: Duration,
    between: Duration,
    chunks: Option<usize>,
}

impl Fake {
    fn quick() -> Self {
        Self {
            open: Duration::ZERO,
            first: FAST,
            between: FAST,
            chunks: Some(3),
        }
    }
}

#[async_trait]
impl Agent for Fake {
    fn name(&self) -> &'static str {
        "fake"
    }

    async fn run(&self, request: AgentRequest) -> Result<AgentReply, AgentError> {
        tokio::time::sleep(self.first).await;
        Ok(AgentReply {
            output: request.message,
            run_id: None,
            extra: serde_json::Map::new(),
        })
    }

    async fn stream(&self, _request: AgentRequest) -> Result<ChunkStream, AgentError> {
        tokio::time::sleep(self.open).await;
        let this = *self;
        Ok(Box::pin(futures::stream::unfold(
            0usize,
            move |i| async move {
                if this.chunks.is_some_and(|n| i >= n) {
                    return None;
                }
                tokio::time::sleep(if i == 0 { this.first } else { this.between }).await;
                Some((Ok(format!("c{i}")), i + 1))
            },
        )))
    }
}

fn limits(first_byte: Duration, stream_idle: Duration, run_max: Option<Duration>) -> TimeLimits {
    TimeLimits {
        first_byte,
        stream_idle,
        run_max,
    }
}

fn timed(fake: Fake, limits: TimeLimits) -> Timed {
    Timed::new(Arc::new(fake), limits)
}

fn request() -> AgentRequest {
    AgentRequest {
        message: "hi".into(),
        run_id: None,
        extra: serde_json::Map::new(),
    }
}

/// The chunks of a stream, and the error that ended it (if one did).
async fn drain(agent: &Timed) -> (Vec<String>, Option<AgentError>) {
    let mut chunks = match agent.stream(request()).await {
        Ok(s) => s,
        Err(e) => return (Vec::new(), Some(e)),
    };
    let mut texts = Vec::new();
    while let Some(item) = chunks.next().await {
        match item {
            Ok(text) => texts.push(text),
            Err(e) => {
                assert!(chunks.next().await.is_none(), "the error ends the stream");
                return (texts, Some(e));
            }
        }
    }
    (texts, None)
}

fn assert_timeout(error: Option<AgentError>, needles: &[&str]) {
    let Some(error) = error else {
        panic!("expected a timeout naming {needles:?}")
    };
    assert_eq!(error.kind, AgentErrorKind::Timeout, "{error:?}");
    for needle in needles {
        assert!(error.message.contains(needle), "{needle:?} in {error:?}");
    }
}

#[tokio::test]
async fn a_slow_answer_hits_the_first_byte_timeout() {
    let slow = Fake {
        first: SLOW,
        ..Fake::quick()
    };
    let started = std::time::Instant::now();
    let result = timed(slow, limits(SHORT, LONG, None)).run(request()).await;
    assert!(started.elapsed() < SLOW, "gave up at the limit");
    let error = result.err();
    assert_eq!(
        error.as_ref().map(|e| e.message.as_str()),
        Some("no first byte from the agent within 0.15 s (--agent-first-byte-timeout)")
    );
    assert_timeout(error, &[]);

    let within = timed(slow, limits(Duration::from_secs(20), SHORT, None));
    let reply = within.run(request()).await;
    assert!(matches!(&reply, Ok(r) if r.output == "hi"), "{reply:?}");
}

#[tokio::test]
async fn a_stream_is_timed_to_its_first_chunk_opening_included() {
    let late_chunk = Fake {
        first: SLOW,
        ..Fake::quick()
    };
    let (texts, error) = drain(&timed(late_chunk, limits(SHORT, LONG, None))).await;
    assert!(texts.is_empty(), "{texts:?}");
    assert_timeout(
        error,
        &["first byte", "0.15 s", "--agent-first-byte-timeout"],
    );

    let late_open = Fake {
        open: SLOW,
        ..Fake::quick()
    };
    let opened = timed(late_open, limits(SHORT, LONG, None))
        .stream(request())
        .await
        .map(drop);
    assert_timeout(opened.err(), &["--agent-first-byte-timeout"]);

    // Opening and first chunk share one budget: each within it, together over it.
    let both = Fake {
        open: Duration::from_millis(700),
        first: Duration::from_millis(700),
        ..Fake::quick()
    };
    let (_, error) = drain(&timed(both, limits(Duration::from_secs(1), LONG, None))).await;
    assert_timeout(error, &["--agent-first-byte-timeout"]);
}

#[tokio::test]
async fn a_gap_between_chunks_hits_the_stream_idle_timeout() {
    let gap = Fake {
        between: SLOW,
        ..Fake::quick()
    };
    let (texts, error) = drain(&timed(gap, limits(LONG, SHORT, None))).await;
    assert_eq!(texts, vec!["c0"], "the first chunk came in time");
    assert_timeout(
        error,
        &["no chunk from the agent for 0.15 s (--stream-idle-timeout)"],
    );
}

#[tokio::test]
async fn a_stream_within_its_limits_is_untouched() {
    // Every gap is a tenth of the idle limit, though the whole stream outlasts it and the
    // first-byte limit.
    let steady = Fake {
        between: Duration::from_millis(50),
        chunks: Some(14),
        ..Fake::quick()
    };
    let idle = Duration::from_millis(500);
    let (texts, error) = drain(&timed(steady, limits(LONG, idle, None))).await;
    assert!(error.is_none(), "{error:?}");
    assert_eq!(texts.len(), 14, "{texts:?}");
    let first_byte = Duration::from_millis(300);
    let (texts, error) = drain(&timed(steady, limits(first_byte, idle, None))).await;
    assert!(
        error.is_none(),
        "the first-byte limit ended with the first chunk: {error:?}"
    );
    assert_eq!(texts.len(), 14);
}

#[tokio::test]
async fn an_endless_stream_hits_the_run_limit() {
    let endless = Fake {
        chunks: None,
        ..Fake::quick()
    };
    let started = std::time::Instant::now();
    let (texts, error) = drain(&timed(endless, limits(LONG, LONG, Some(SHORT * 2)))).await;
    assert!(started.elapsed() < LONG, "ended at the run limit");
    assert!(!texts.is_empty(), "chunks came until then");
    assert_timeout(
        error,
        &["the run did not finish within 0.3 s (--run-max-duration)"],
    );

    // A run limit shorter than the first-byte limit is the one that fires, and is named.
    let slow = Fake {
        first: SLOW,
        ..Fake::quick()
    };
    let result = timed(slow, limits(LONG, LONG, Some(SHORT)))
        .run(request())
        .await;
    assert_timeout(result.err(), &["--run-max-duration"]);
    // Unlimited, or longer than the run: no effect.
    let (texts, error) = drain(&timed(Fake::quick(), limits(LONG, LONG, Some(LONG)))).await;
    assert_eq!((texts.len(), error.is_none()), (3, true));
}

#[test]
fn the_next_deadline_is_the_phase_limit_or_the_run_limit_whichever_is_first() {
    let start = Instant::now();
    let later = start + Duration::from_secs(5);
    let secs = Duration::from_secs;
    let l = limits(secs(10), secs(3), None);
    assert_eq!(
        next_deadline(&l, start, later, Phase::FirstByte),
        (start + secs(10), Limit::FirstByte),
        "the first byte counts from the start"
    );
    assert_eq!(
        next_deadline(&l, start, later, Phase::Streaming),
        (later + secs(3), Limit::StreamIdle),
        "idle counts from now"
    );
    let capped = limits(secs(10), secs(3), Some(secs(7)));
    assert_eq!(
        next_deadline(&capped, start, start, Phase::FirstByte),
        (start + secs(7), Limit::RunMax)
    );
    assert_eq!(
        next_deadline(&capped, start, later, Phase::Streaming),
        (start + secs(7), Limit::RunMax)
    );
    assert_eq!(
        next_deadline(&capped, start, start, Phase::Streaming),
        (start + secs(3), Limit::StreamIdle)
    );
    let tie = limits(secs(7), secs(3), Some(secs(7)));
    assert_eq!(
        next_deadline(&tie, start, start, Phase::FirstByte).1,
        Limit::RunMax,
        "a tie names the run limit"
    );
}
