//! Request metrics, per process and for the whole pod.
//!
//! Each process keeps its numbers in one fixed array of atomic words ([`Counters`]), laid out
//! like a *slot* ([`Slot`], a plain struct of words that zerocopy turns into bytes and back). In pre-fork mode the supervisor creates an anonymous shared file (memfd) with
//! one slot per worker process and passes it to every worker; when a response head is ready a
//! worker writes its whole slot (one `pwrite` of [`SLOT_BYTES`], checksummed), and whoever
//! answers `/metrics` reads all slots (`pread`) and adds them up. So the request and run counts
//! are for the pod whichever worker answers, exact at the moment a response is sent (everything
//! a request counted happened before its head was ready), without a round trip to the
//! supervisor and without `unsafe` shared memory. What happens after the head — the in-flight
//! gauge going down, the duration histogram, a streamed run finishing — is written with the
//! next response or by the worker's one-second tick, so in other workers' view it is at most a
//! second old; a worker's own numbers are always read from its memory. One write per request
//! instead of one per change is what keeps pre-fork mode's request rate close to one process's
//! (bench/README.md).
//!
//! Slots outlive processes: when a worker exits, the supervisor zeroes the slot's in-flight
//! gauge and hands the slot to the next worker it starts, which continues the counters from
//! where its predecessor stopped. Counters therefore never go down, and the file holds at most
//! as many slots as workers can be alive at once.
//!
//! A slot also holds the worker's open connections, written when one is accepted, so that a
//! worker ahead of the others leaves the next connection to them
//! ([`Counters::over_share`]).
//!
//! Besides the request counters a slot holds the worker's durable-run counters (started,
//! completed, failed, replayed, taken_over) and a snapshot of each of its connection pools (max size, open,
//! in use, idle, waiters, wait timeouts), refreshed every second and before `/metrics` answers.
//! Pool gauges are added over live workers only; the timeout counters continue across
//! replacements like the request counters.
//!
//! Parts: `slot` (the slot's layout and the shared file), `counters` (this process's
//! numbers), `pod` (the sum over slots), `exposition` (the JSON and Prometheus views of that
//! sum). Requests are counted per status class and per route of [`crate::routes::Route::ALL`],
//! the one table of routes. The shared file is a few `pread`/`pwrite` calls around zerocopy's
//! casts rather than a memory map: mapping it (memmap2 and the like) takes `unsafe`, and one
//! write per response is cheap enough (bench/README.md).

mod counters;
mod exposition;
mod pod;
mod slot;

pub use counters::{ConnectionGuard, Counters, InFlightGuard, RunEvent};
pub use exposition::PodCollector;
pub use pod::{PodSnapshot, WorkerView};
pub use slot::{
    BUCKETS, CLASSES, POOLS, ROUTES, RUN_EVENTS, SLOT_BYTES, SharedFile, Slot, SlotState,
};
