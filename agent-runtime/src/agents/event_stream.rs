//! An upstream's server-sent events as a [`ChunkStream`]: the driver both streaming backends
//! share. Each backend says what one event means ([`EventReader`]); the driver feeds the
//! response body through the [`SseDecoder`], yields text, skips the rest, and ends at the
//! backend's end marker.
//!
//! A body that ends before the end marker is an error (an event left unterminated by the end of
//! the body is still read first: it may be the marker), so an upstream that dies halfway never
//! looks like a short answer.

use std::collections::VecDeque;

use futures::StreamExt;

use super::sse::{SseDecoder, SseEvent};
use super::{bad_response, upstream_error};
use crate::agent::{AgentError, ChunkStream};

/// What one event means.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// The next piece of text.
    Text(String),
    /// Nothing for the client.
    Skip,
    /// The end, with the last piece of text when it only came now.
    Done(Option<String>),
}

/// Reads the events of one stream (it may remember what came before).
pub trait EventReader: Send + 'static {
    /// What `event` means for the client.
    fn on_event(&mut self, event: &SseEvent) -> Result<Step, AgentError>;
}

struct State<R> {
    upstream: &'static str,
    body: futures::stream::BoxStream<'static, reqwest::Result<Vec<u8>>>,
    decoder: SseDecoder,
    reader: R,
    pending: VecDeque<SseEvent>,
    body_ended: bool,
    finished: bool,
}

impl<R: EventReader> State<R> {
    /// The next chunk of text, an error (which ends the stream), or `None` at the end.
    async fn next_chunk(&mut self) -> Option<Result<String, AgentError>> {
        loop {
            if self.finished {
                return None;
            }
            while let Some(event) = self.pending.pop_front() {
                match self.reader.on_event(&event) {
                    Ok(Step::Text(text)) => return Some(Ok(text)),
                    Ok(Step::Skip) => {}
                    Ok(Step::Done(text)) => {
                        self.finished = true;
                        return text.filter(|t| !t.is_empty()).map(Ok);
                    }
                    Err(e) => {
                        self.finished = true;
                        return Some(Err(e));
                    }
                }
            }
            if self.body_ended {
                self.finished = true;
                return Some(Err(bad_response(
                    self.upstream,
                    "its stream ended before its end event",
                )));
            }
            match self.body.next().await {
                Some(Ok(bytes)) => self.pending.extend(self.decoder.push_events(&bytes)),
                Some(Err(e)) => {
                    self.finished = true;
                    return Some(Err(upstream_error(self.upstream, &e)));
                }
                None => {
                    self.body_ended = true;
                    self.pending.extend(self.decoder.finish_event());
                }
            }
        }
    }
}

/// The chunks `reader` finds in `response`, an event stream from `upstream`.
pub fn chunks(
    upstream: &'static str,
    response: reqwest::Response,
    reader: impl EventReader,
) -> ChunkStream {
    let state = State {
        upstream,
        body: response
            .bytes_stream()
            .map(|chunk| chunk.map(|bytes| bytes.to_vec()))
            .boxed(),
        decoder: SseDecoder::default(),
        reader,
        pending: VecDeque::new(),
        body_ended: false,
        finished: false,
    };
    Box::pin(futures::stream::unfold(state, |mut state| async move {
        let item = state.next_chunk().await?;
        Some((item, state))
    }))
}
