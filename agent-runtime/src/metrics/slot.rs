//! The slot: one process's numbers as they are laid out in the shared file, and the file.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

/// Route labels metrics are kept for; anything else is counted as `other`.
pub const ROUTES: &[&str] = &[
    "/chat",
    "/chat/stream",
    "/health",
    "/ready",
    "/metrics",
    "/runs",
    "other",
];
/// Status classes kept per route.
pub const CLASSES: &[&str] = &["1xx", "2xx", "3xx", "4xx", "5xx"];
/// Upper bounds (seconds) of the request duration histogram buckets.
pub const BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Bytes per slot in the shared file.
pub const SLOT_BYTES: usize = 1024;

/// Slot format version 4 (version 2 added runs and pools and 1024-byte slots; version 3 the
/// `taken_over` run counter; version 4 a word-wise checksum). Supervisor and workers are
/// the same binary, so a slot is only ever read by the version that wrote it; the magic still
/// changes with the layout so a mismatch reads as an unusable slot, never as wrong numbers.
pub(super) const MAGIC: u64 = 0x4641_5f4d_4554_5234; // "FA_METR4"

/// Pools reported per slot, in this order.
pub const POOLS: &[&str] = &[crate::pools::REDIS_POOL, crate::pools::DB_POOL];
/// Words per pool: max size, open, in use, idle, waiters, timeouts.
pub(super) const POOL_WORDS: usize = 6;
/// Durable-run events counted per slot, in this order.
pub const RUN_EVENTS: &[&str] = &["started", "completed", "failed", "replayed", "taken_over"];

// Word indices of a slot.
pub(super) const W_MAGIC: usize = 0;
pub(super) const W_STATE: usize = 1;
pub(super) const W_PID: usize = 2;
pub(super) const W_STARTED_MS: usize = 3;
pub(super) const W_IN_FLIGHT: usize = 4;
pub(super) const W_MAX_IN_FLIGHT: usize = 5;
pub(super) const W_REJECTED: usize = 6;
pub(super) const W_HANDLED: usize = 7; // requests by this process (not carried over)
pub(super) const W_DURATION_SUM_US: usize = 8;
pub(super) const W_ROUTES: usize = 9;
pub(super) const W_BUCKETS: usize = W_ROUTES + 7 * 5;
pub(super) const W_RUNS: usize = W_BUCKETS + 12 + 1; // one more bucket: +Inf
pub(super) const W_POOLS: usize = W_RUNS + 5;
pub(super) const W_CHECKSUM: usize = W_POOLS + 2 * POOL_WORDS;
pub(super) const WORDS: usize = W_CHECKSUM + 1;

const _: () = assert!(ROUTES.len() == 7 && CLASSES.len() == 5 && BUCKETS.len() == 12);
const _: () = assert!(RUN_EVENTS.len() == 5 && POOLS.len() == 2);
const _: () = assert!(WORDS * 8 <= SLOT_BYTES);

/// Lifecycle of the process owning a slot, as seen by the supervisor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u64)]
pub enum SlotState {
    /// Never used.
    Empty = 0,
    /// Process started, not accepting yet.
    Starting = 1,
    /// Accepting connections.
    Ready = 2,
    /// Served its request budget; asks the supervisor for a replacement.
    RecycleRequested = 3,
    /// Stopped accepting, finishing in-flight requests.
    Draining = 4,
    /// Process gone; counters kept for the next owner.
    Exited = 5,
}

impl SlotState {
    pub(super) fn from_word(w: u64) -> Self {
        match w {
            1 => Self::Starting,
            2 => Self::Ready,
            3 => Self::RecycleRequested,
            4 => Self::Draining,
            5 => Self::Exited,
            _ => Self::Empty,
        }
    }

    /// Whether a live process owns the slot.
    pub fn is_alive(self) -> bool {
        matches!(
            self,
            Self::Starting | Self::Ready | Self::RecycleRequested | Self::Draining
        )
    }

    pub(super) fn name(self) -> &'static str {
        match self {
            Self::Empty => "empty",
            Self::Starting => "starting",
            Self::Ready => "ready",
            Self::RecycleRequested => "recycle_requested",
            Self::Draining => "draining",
            Self::Exited => "exited",
        }
    }
}

pub(super) fn checksum(words: &[u64; WORDS]) -> u64 {
    // Over the words before the checksum word, a word at a time (a byte-wise FNV-1a cost
    // microseconds per write): detects a slot read while it was being written (the reader then
    // retries). Each word is mixed with its position, so equal words in swapped places differ.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for (i, w) in words[..W_CHECKSUM].iter().enumerate() {
        h = (h ^ w.wrapping_add(i as u64).rotate_left(29)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        h ^= h >> 32;
    }
    h
}

pub(super) fn encode(words: &[u64; WORDS]) -> [u8; SLOT_BYTES] {
    let mut buf = [0u8; SLOT_BYTES];
    for (i, w) in words.iter().enumerate() {
        buf[i * 8..i * 8 + 8].copy_from_slice(&w.to_le_bytes());
    }
    buf
}

pub(super) fn decode(buf: &[u8]) -> Option<[u64; WORDS]> {
    let mut words = [0u64; WORDS];
    for (i, w) in words.iter_mut().enumerate() {
        let mut b = [0u8; 8];
        b.copy_from_slice(buf.get(i * 8..i * 8 + 8)?);
        *w = u64::from_le_bytes(b);
    }
    if words[W_MAGIC] == 0 {
        return Some([0u64; WORDS]);
    }
    (words[W_MAGIC] == MAGIC && words[W_CHECKSUM] == checksum(&words)).then_some(words)
}

/// The shared metrics file of a pre-fork pod.
#[derive(Debug, Clone)]
pub struct SharedFile {
    file: Arc<File>,
    slots: usize,
}

impl SharedFile {
    /// Wraps the (already sized) file.
    pub fn new(file: File, slots: usize) -> Self {
        Self {
            file: Arc::new(file),
            slots,
        }
    }

    /// Creates an anonymous shared file (memfd) that processes started by this one inherit
    /// (no close-on-exec): see [`SharedFile::inheritable_fd`].
    pub fn create(slots: usize) -> std::io::Result<Self> {
        let fd = nix::sys::memfd::memfd_create(
            "fastagentic-metrics",
            nix::sys::memfd::MFdFlags::empty(),
        )
        .map_err(std::io::Error::from)?;
        let file = File::from(fd);
        file.set_len((slots * SLOT_BYTES) as u64)?;
        Ok(Self::new(file, slots))
    }

    /// Descriptor number child processes inherit.
    pub fn inheritable_fd(&self) -> std::os::fd::RawFd {
        std::os::fd::AsRawFd::as_raw_fd(&*self.file)
    }

    /// Number of slots.
    pub fn slots(&self) -> usize {
        self.slots
    }

    pub(super) fn write_slot(&self, slot: usize, words: &[u64; WORDS]) -> std::io::Result<()> {
        self.file
            .write_all_at(&encode(words), (slot * SLOT_BYTES) as u64)
    }

    /// Reads one slot, retrying while it is being written.
    pub fn read_slot(&self, slot: usize) -> Option<[u64; WORDS]> {
        let mut buf = [0u8; SLOT_BYTES];
        for _ in 0..100 {
            if self
                .file
                .read_exact_at(&mut buf, (slot * SLOT_BYTES) as u64)
                .is_err()
            {
                return None;
            }
            if let Some(w) = decode(&buf) {
                return Some(w);
            }
            std::thread::yield_now();
        }
        None
    }

    /// State of a slot.
    pub fn state(&self, slot: usize) -> SlotState {
        self.read_slot(slot)
            .map(|w| SlotState::from_word(w[W_STATE]))
            .unwrap_or(SlotState::Empty)
    }

    /// Supervisor side: the slot's process is gone; keep its counters, clear its gauges.
    pub fn mark_exited(&self, slot: usize) -> std::io::Result<()> {
        let mut w = self.read_slot(slot).unwrap_or([0u64; WORDS]);
        w[W_MAGIC] = MAGIC;
        w[W_STATE] = SlotState::Exited as u64;
        w[W_IN_FLIGHT] = 0;
        for p in 0..POOLS.len() {
            for k in 0..POOL_WORDS - 1 {
                w[W_POOLS + p * POOL_WORDS + k] = 0;
            }
        }
        w[W_CHECKSUM] = checksum(&w);
        self.write_slot(slot, &w)
    }

    pub(super) fn read_all(&self) -> Vec<[u64; WORDS]> {
        (0..self.slots).filter_map(|s| self.read_slot(s)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Counters;

    #[test]
    fn slot_roundtrip_and_torn_read_detection() {
        let c = Counters::local();
        let _g = c.enter();
        c.response_started("/chat", 200, false);
        let w = c.snapshot_words();
        let mut buf = encode(&w);
        assert_eq!(decode(&buf), Some(w));
        buf[W_ROUTES * 8] ^= 1;
        assert_eq!(decode(&buf), None, "a changed word must fail the checksum");
    }
}
