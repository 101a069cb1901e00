//! A minimal server-sent-events decoder: bytes in, `data` payloads out.
//!
//! Kept free of I/O so the framing rules (split lines and UTF-8 sequences across network
//! chunks, CRLF, multi-line `data`, comments) are tested on their own.

/// One decoded event: its `event` name (`message` when the server gave none) and its `data`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` field, or `message`.
    pub event: String,
    /// The `data:` lines, joined by newlines.
    pub data: String,
}

/// Incremental decoder; feed it chunks as they arrive.
#[derive(Debug, Default)]
pub struct SseDecoder {
    line: Vec<u8>,
    event: Option<String>,
    data: Option<String>,
}

impl SseDecoder {
    /// Adds `bytes` and returns the `data` payloads of every event they complete.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<String> {
        self.push_events(bytes)
            .into_iter()
            .map(|e| e.data)
            .collect()
    }

    /// Adds `bytes` and returns every event they complete, with its name.
    pub fn push_events(&mut self, bytes: &[u8]) -> Vec<SseEvent> {
        let mut events = Vec::new();
        for &b in bytes {
            if b == b'\n' {
                let mut line = std::mem::take(&mut self.line);
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                self.line_done(&String::from_utf8_lossy(&line), &mut events);
            } else {
                self.line.push(b);
            }
        }
        events
    }

    /// Ends the input: an event not closed by a blank line is still delivered.
    pub fn finish(&mut self) -> Option<String> {
        self.finish_event().map(|e| e.data)
    }

    /// [`SseDecoder::finish`], with the event's name.
    pub fn finish_event(&mut self) -> Option<SseEvent> {
        if !self.line.is_empty() {
            let line = std::mem::take(&mut self.line);
            let mut ignored = Vec::new();
            self.line_done(&String::from_utf8_lossy(&line), &mut ignored);
        }
        self.take_event()
    }

    fn take_event(&mut self) -> Option<SseEvent> {
        let event = self.event.take();
        self.data.take().map(|data| SseEvent {
            event: event.unwrap_or_else(|| "message".to_owned()),
            data,
        })
    }

    fn line_done(&mut self, line: &str, events: &mut Vec<SseEvent>) {
        if line.is_empty() {
            if let Some(event) = self.take_event() {
                events.push(event);
            }
            return;
        }
        if line.starts_with(':') {
            return; // comment / keep-alive
        }
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line, ""),
        };
        match field {
            "data" => match &mut self.data {
                Some(data) => {
                    data.push('\n');
                    data.push_str(value);
                }
                None => self.data = Some(value.to_owned()),
            },
            "event" => self.event = Some(value.to_owned()),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_split_anywhere_are_reassembled() {
        let input = "data: {\"a\":1}\r\n\r\n: keep-alive\n\ndata: héllo\ndata: world\n\nevent: x\ndata: [DONE]\n\n";
        let bytes = input.as_bytes();
        for split in 1..bytes.len() {
            let mut decoder = SseDecoder::default();
            let mut events = decoder.push(&bytes[..split]);
            events.extend(decoder.push(&bytes[split..]));
            assert_eq!(
                events,
                vec!["{\"a\":1}", "héllo\nworld", "[DONE]"],
                "split at {split}"
            );
            assert_eq!(decoder.finish(), None);
        }
    }

    #[test]
    fn unterminated_last_event_is_delivered_by_finish() {
        let mut decoder = SseDecoder::default();
        assert!(decoder.push(b"data: tail").is_empty());
        assert_eq!(decoder.finish().as_deref(), Some("tail"));
    }

    #[test]
    fn event_names_are_kept_and_default_to_message() {
        let mut decoder = SseDecoder::default();
        let events =
            decoder.push_events(b"event: token\ndata: a\n\ndata: b\n\nevent: done\ndata: {}\n\n");
        let named: Vec<(&str, &str)> = events
            .iter()
            .map(|e| (e.event.as_str(), e.data.as_str()))
            .collect();
        assert_eq!(named, [("token", "a"), ("message", "b"), ("done", "{}")]);
        assert!(decoder.push_events(b"event: error\ndata: boom").is_empty());
        let last = decoder.finish_event();
        assert_eq!(
            last.as_ref().map(|e| (e.event.as_str(), e.data.as_str())),
            Some(("error", "boom"))
        );
    }
}
