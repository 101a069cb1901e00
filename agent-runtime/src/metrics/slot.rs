//! The slot: one process's numbers as they are laid out in the shared file, and the file.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use crate::routes::Route;

/// Route labels metrics are kept for, in [`Route::ALL`] order; any other path is counted as
/// `other`.
pub const ROUTES: &[&str] = &{
    let mut labels = [""; Route::COUNT];
    let mut i = 0;
    while i < Route::COUNT {
        labels[i] = Route::ALL[i].label;
        i += 1;
    }
    labels
};
/// Status classes kept per route.
pub const CLASSES: &[&str] = &["1xx", "2xx", "3xx", "4xx", "5xx"];
/// Upper bounds (seconds) of the request duration histogram buckets.
pub const BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Bytes per slot in the shared file.
pub const SLOT_BYTES: usize = 1024;

/// Slot format version 6 (version 2 added runs and pools and 1024-byte slots; version 3 the
/// `taken_over` run counter; version 4 a word-wise checksum; version 5 two more routes;
/// version 6 the open-connections gauge). Supervisor and workers are
/// the same binary, so a slot is only ever read by the version that wrote it; the magic still
/// changes with the layout so a mismatch reads as an unusable slot, never as wrong numbers.
pub(super) const MAGIC: u64 = 0x4641_5f4d_4554_5236; // "FA_METR6"

/// Pools reported per slot, in this order.
pub const POOLS: &[&str] = &[crate::pools::REDIS_POOL, crate::pools::DB_POOL];
/// Words per pool: max size, open, in use, idle, waiters, timeouts.
pub(super) const POOL_WORDS: usize = 6;
/// Index of the wait-timeouts counter among a pool's words; the words before it are gauges.
pub(super) const POOL_TIMEOUTS: usize = POOL_WORDS - 1;
/// Durable-run events counted per slot, in this order.
pub const RUN_EVENTS: &[&str] = &["started", "completed", "failed", "replayed", "taken_over"];

/// One process's numbers as the shared file holds them: the first bytes of its
/// [`SLOT_BYTES`]-byte slot (the rest stays zero).
///
/// All fields are `u64` and the struct is `#[repr(C)]`, so it has no padding and every byte
/// pattern is a valid value: zerocopy's derives check this at compile time, and the slot is
/// written and read with its safe byte casts. The words are in the machine's byte order: the
/// file is anonymous memory shared by processes of one binary on one machine. On
/// little-endian machines word `i` is at byte `8 * i`, little-endian
/// (`layout_is_format_version_6` and `bytes_are_format_version_6s` pin this).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    zerocopy::FromBytes,
    zerocopy::IntoBytes,
    zerocopy::Immutable,
    zerocopy::KnownLayout,
)]
#[repr(C)]
pub struct Slot {
    /// The format magic once written; 0 for a slot never used.
    pub magic: u64,
    /// [`SlotState`] of the owning process.
    pub state: u64,
    /// Process id of the owner.
    pub pid: u64,
    /// When the owner started (ms since the epoch).
    pub started_ms: u64,
    /// Admitted agent-route requests in flight.
    pub in_flight: u64,
    /// Highest in-flight count this slot has reached.
    pub max_in_flight: u64,
    /// Requests refused by the concurrency limit (HTTP 503).
    pub rejected: u64,
    /// Requests handled by the owning process (not carried over to the next owner).
    pub handled: u64,
    /// Sum of request durations (µs).
    pub duration_sum_us: u64,
    /// Responses per route ([`ROUTES`] order) and status class ([`CLASSES`] order).
    pub routes: [[u64; CLASSES.len()]; Route::COUNT],
    /// Durations per [`BUCKETS`] bound (not cumulative); the last one is `+Inf`.
    pub buckets: [u64; BUCKETS.len() + 1],
    /// Durable-run events, in [`RUN_EVENTS`] order.
    pub runs: [u64; RUN_EVENTS.len()],
    /// Per pool ([`POOLS`] order): max size, open, in use, idle, waiters, wait timeouts.
    pub pools: [[u64; POOL_WORDS]; POOLS.len()],
    /// Connections the owner has open (what pre-fork workers balance accepting on).
    pub connections: u64,
    /// [`Slot::compute_checksum`] of the words before it; must stay the last field.
    pub checksum: u64,
}

/// Words in a [`Slot`].
pub(super) const WORDS: usize = size_of::<Slot>() / 8;

const _: () = assert!(size_of::<Slot>() <= SLOT_BYTES);
const _: () = assert!(core::mem::offset_of!(Slot, checksum) == (WORDS - 1) * 8);

/// Index of a [`Slot`] field's first word in [`Slot::words`] (and in a process's atomic words,
/// which are laid out the same way); an array field's elements follow in row-major order.
macro_rules! word {
    ($field:ident) => {
        ::core::mem::offset_of!($crate::metrics::Slot, $field) / 8
    };
}
pub(super) use word;

impl Slot {
    /// An unused slot (all zero).
    pub fn empty() -> Self {
        zerocopy::FromZeros::new_zeroed()
    }

    /// The slot's words, in layout order.
    pub fn words(&self) -> &[u64; WORDS] {
        zerocopy::transmute_ref!(self)
    }

    /// The slot with these words, in layout order.
    pub(super) fn from_words(words: [u64; WORDS]) -> Self {
        zerocopy::transmute!(words)
    }

    /// Lifecycle state of the owning process.
    pub fn state(&self) -> SlotState {
        SlotState::from_word(self.state)
    }

    /// Checksum of the words before the checksum word.
    pub fn compute_checksum(&self) -> u64 {
        // A word at a time (a byte-wise FNV-1a cost microseconds per write): detects a slot
        // read while it was being written (the reader then retries). Each word is mixed with
        // its position, so equal words in swapped places differ.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for (i, w) in self.words()[..WORDS - 1].iter().enumerate() {
            h = (h ^ w.wrapping_add(i as u64).rotate_left(29)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
            h ^= h >> 32;
        }
        h
    }

    /// The slot with its checksum set, ready to be written.
    pub(super) fn sealed(mut self) -> Self {
        self.checksum = self.compute_checksum();
        self
    }

    /// The slot's bytes in the file.
    pub(super) fn encode(&self) -> [u8; SLOT_BYTES] {
        let mut buf = [0u8; SLOT_BYTES];
        buf[..size_of::<Slot>()].copy_from_slice(zerocopy::IntoBytes::as_bytes(self));
        buf
    }

    /// A slot from its bytes in the file: an empty slot for a never-used one, `None` for a
    /// foreign format or a torn read (checksum mismatch).
    pub(super) fn decode(buf: &[u8]) -> Option<Self> {
        let (slot, _) = <Slot as zerocopy::FromBytes>::read_from_prefix(buf).ok()?;
        if slot.magic == 0 {
            return Some(Self::empty());
        }
        (slot.magic == MAGIC && slot.checksum == slot.compute_checksum()).then_some(slot)
    }
}

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

    /// Whether the owning process accepts connections (ready, or ready and asking to be
    /// recycled).
    pub fn is_accepting(self) -> bool {
        matches!(self, Self::Ready | Self::RecycleRequested)
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

    /// Writes one slot (sealed: with its checksum).
    pub(super) fn write_slot(&self, slot: usize, data: &Slot) -> std::io::Result<()> {
        self.file
            .write_all_at(&data.encode(), (slot * SLOT_BYTES) as u64)
    }

    /// Reads one slot, retrying while it is being written.
    pub fn read_slot(&self, slot: usize) -> Option<Slot> {
        let mut buf = [0u8; SLOT_BYTES];
        for _ in 0..100 {
            if self
                .file
                .read_exact_at(&mut buf, (slot * SLOT_BYTES) as u64)
                .is_err()
            {
                return None;
            }
            if let Some(s) = Slot::decode(&buf) {
                return Some(s);
            }
            std::thread::yield_now();
        }
        None
    }

    /// State of a slot.
    pub fn state(&self, slot: usize) -> SlotState {
        self.read_slot(slot)
            .map(|s| s.state())
            .unwrap_or(SlotState::Empty)
    }

    /// Supervisor side: the slot's process is gone; keep its counters, clear its gauges.
    pub fn mark_exited(&self, slot: usize) -> std::io::Result<()> {
        let mut s = self.read_slot(slot).unwrap_or_else(Slot::empty);
        s.magic = MAGIC;
        s.state = SlotState::Exited as u64;
        s.in_flight = 0;
        s.connections = 0;
        for pool in &mut s.pools {
            pool[..POOL_TIMEOUTS].fill(0);
        }
        self.write_slot(slot, &s.sealed())
    }

    /// Every slot, at its index: the whole file in one read, and a slot that was being written
    /// at that moment read again on its own; one that stays unreadable is empty (not counted).
    pub(super) fn read_all(&self) -> Vec<Slot> {
        let mut buf = vec![0u8; self.slots * SLOT_BYTES];
        let whole = self.file.read_exact_at(&mut buf, 0).is_ok();
        buf.chunks_exact(SLOT_BYTES)
            .enumerate()
            .map(|(s, bytes)| {
                whole
                    .then(|| Slot::decode(bytes))
                    .flatten()
                    .or_else(|| self.read_slot(s))
                    .unwrap_or_else(Slot::empty)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use core::mem::offset_of;

    use super::*;
    use crate::metrics::Counters;

    #[test]
    fn slot_roundtrip_and_torn_read_detection() {
        let c = Counters::local();
        let _g = c.enter();
        c.response_started("/chat", 200, false);
        let s = c.snapshot();
        let mut buf = s.encode();
        assert_eq!(Slot::decode(&buf), Some(s));
        buf[offset_of!(Slot, routes)] ^= 1;
        assert_eq!(
            Slot::decode(&buf),
            None,
            "a changed word must fail the checksum"
        );
        assert_eq!(Slot::decode(&[0u8; SLOT_BYTES]), Some(Slot::empty()));
        assert_eq!(Slot::decode(&buf[..8]), None, "a short read is no slot");
    }

    #[test]
    fn read_all_keeps_each_slot_at_its_index() {
        let file = SharedFile::create(3).expect("memfd");
        let mut s = Slot::empty();
        s.magic = MAGIC;
        s.pid = 7;
        file.write_slot(0, &s.sealed()).expect("write");
        s.pid = 9;
        file.write_slot(2, &s.sealed()).expect("write");
        // Slot 1 unreadable: a foreign magic.
        file.file
            .write_all_at(&[0xff; 8], SLOT_BYTES as u64)
            .expect("write");
        let all = file.read_all();
        assert_eq!(all.iter().map(|s| s.pid).collect::<Vec<_>>(), [7, 0, 9]);
        assert_eq!(all[1], Slot::empty());
    }

    /// The byte layout of format version 6 (version 4 had 7 routes, version 5 no
    /// `connections`), word by word. A change here changes the format: give it a new [`MAGIC`].
    #[test]
    fn layout_is_format_version_6() {
        let at = |offset: usize| offset / 8;
        assert_eq!(at(offset_of!(Slot, magic)), 0);
        assert_eq!(at(offset_of!(Slot, state)), 1);
        assert_eq!(at(offset_of!(Slot, pid)), 2);
        assert_eq!(at(offset_of!(Slot, started_ms)), 3);
        assert_eq!(at(offset_of!(Slot, in_flight)), 4);
        assert_eq!(at(offset_of!(Slot, max_in_flight)), 5);
        assert_eq!(at(offset_of!(Slot, rejected)), 6);
        assert_eq!(at(offset_of!(Slot, handled)), 7);
        assert_eq!(at(offset_of!(Slot, duration_sum_us)), 8);
        assert_eq!(at(offset_of!(Slot, routes)), 9);
        assert_eq!(at(offset_of!(Slot, buckets)), 9 + 9 * 5);
        assert_eq!(at(offset_of!(Slot, runs)), 9 + 9 * 5 + 13);
        assert_eq!(at(offset_of!(Slot, pools)), 9 + 9 * 5 + 13 + 5);
        assert_eq!(
            at(offset_of!(Slot, connections)),
            9 + 9 * 5 + 13 + 5 + 2 * 6
        );
        assert_eq!(
            at(offset_of!(Slot, checksum)),
            9 + 9 * 5 + 13 + 5 + 2 * 6 + 1
        );
        assert_eq!(WORDS, 86);
        assert_eq!(MAGIC.to_be_bytes(), *b"FA_METR6");
    }

    /// Version 6 writes word `i` little-endian at byte `8 * i`, the rest of the slot zero.
    #[cfg(target_endian = "little")]
    #[test]
    fn bytes_are_format_version_6s() {
        let mut s = Slot::empty();
        for (i, w) in s.routes.as_flattened_mut().iter_mut().enumerate() {
            *w = 0x0102_0304_0506_0700 + i as u64;
        }
        s.magic = MAGIC;
        s.pid = 4242;
        s.pools[1][POOL_TIMEOUTS] = 7;
        s.connections = 3;
        let s = s.sealed();
        let mut v6 = [0u8; SLOT_BYTES];
        for (i, w) in s.words().iter().enumerate() {
            v6[i * 8..i * 8 + 8].copy_from_slice(&w.to_le_bytes());
        }
        assert_eq!(s.encode(), v6);
    }
}
