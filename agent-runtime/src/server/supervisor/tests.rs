//! The supervisor's decisions, driven by hand: no process, no clock.

use std::collections::BTreeMap;

use rand::SeedableRng;
use rand::rngs::StdRng;

use super::*;

const GRACEFUL: Duration = Duration::from_secs(30);

fn config(workers: usize) -> Config {
    Config {
        workers,
        slots: workers * 2 + 2,
        max_requests: 0,
        max_requests_jitter: 0,
        timeout_graceful: GRACEFUL,
    }
}

/// A supervisor and what its executor would see: the processes, their slots' states, time.
struct Pod {
    sup: Supervisor<StdRng>,
    now: Instant,
    next_pid: i32,
    /// Live processes by pid, with their slots.
    slot_of: BTreeMap<i32, usize>,
    states: Vec<SlotState>,
    /// Starts fail (fork refused).
    fail_spawns: bool,
}

impl Pod {
    fn new(config: Config) -> Self {
        let states = vec![SlotState::Empty; config.slots];
        Self {
            sup: Supervisor::new(config, StdRng::seed_from_u64(7)),
            now: Instant::now(),
            next_pid: 100,
            slot_of: BTreeMap::new(),
            states,
            fail_spawns: false,
        }
    }

    /// Started with all workers accepting.
    fn running(config: Config) -> Self {
        let mut pod = Self::new(config);
        pod.on(Event::Start);
        for pid in pod.pids() {
            pod.set(pid, SlotState::Ready);
        }
        pod
    }

    /// Sends `event` and, like the executor, reports each start's outcome at once. Returns
    /// every action, starts included, in order.
    fn on(&mut self, event: Event) -> Vec<Action> {
        let mut out = Vec::new();
        let mut todo = VecDeque::from(self.sup.on(event, self.now));
        while let Some(action) = todo.pop_front() {
            out.push(action.clone());
            if let Action::Spawn { slot, .. } = action {
                let outcome = if self.fail_spawns {
                    Event::SpawnFailed { slot }
                } else {
                    let pid = self.next_pid;
                    self.next_pid += 1;
                    self.slot_of.insert(pid, slot);
                    self.states[slot] = SlotState::Starting;
                    Event::Spawned { slot, pid }
                };
                todo.extend(self.sup.on(outcome, self.now));
            }
        }
        out
    }

    fn tick(&mut self) -> Vec<Action> {
        let slots = self.states.clone();
        self.on(Event::Tick { slots })
    }

    fn exit(&mut self, pid: i32) -> Vec<Action> {
        if let Some(slot) = self.slot_of.remove(&pid) {
            self.states[slot] = SlotState::Exited;
        }
        self.on(Event::Exited {
            pid,
            status: "signal: 9 (SIGKILL)".into(),
        })
    }

    fn set(&mut self, pid: i32, state: SlotState) {
        self.states[self.slot_of[&pid]] = state;
    }

    fn advance(&mut self, by: Duration) {
        self.now += by;
    }

    fn pids(&self) -> Vec<i32> {
        self.slot_of.keys().copied().collect()
    }

    /// The pid of the process last started.
    fn newest(&self) -> i32 {
        self.next_pid - 1
    }
}

fn spawns(actions: &[Action]) -> usize {
    actions
        .iter()
        .filter(|a| matches!(a, Action::Spawn { .. }))
        .count()
}

fn budgets(actions: &[Action]) -> Vec<u64> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Spawn { request_budget, .. } => Some(*request_budget),
            _ => None,
        })
        .collect()
}

#[test]
fn starts_the_workers_one_after_the_other() {
    let mut sup = Supervisor::new(config(3), StdRng::seed_from_u64(1));
    let now = Instant::now();
    let first = sup.on(Event::Start, now);
    let spawn = |slot| Action::Spawn {
        slot,
        request_budget: 0,
    };
    assert_eq!(first, vec![spawn(0)]);
    assert_eq!(
        sup.on(Event::Spawned { slot: 0, pid: 10 }, now),
        vec![spawn(1)]
    );
    // A start that fails counts as missing; the next one is tried all the same.
    assert_eq!(sup.on(Event::SpawnFailed { slot: 1 }, now), vec![spawn(2)]);
    assert_eq!(sup.on(Event::Spawned { slot: 2, pid: 12 }, now), vec![]);
    assert_eq!(sup.worker_count(), 2);
}

#[test]
fn request_budgets_are_max_requests_plus_jitter() {
    let mut pod = Pod::new(Config {
        max_requests: 50,
        max_requests_jitter: 10,
        ..config(8)
    });
    let b = budgets(&pod.on(Event::Start));
    assert_eq!(b.len(), 8);
    assert!(b.iter().all(|b| (50..=60).contains(b)), "{b:?}");
    assert!(b.iter().any(|x| *x != b[0]), "jitter draws differ: {b:?}");
}

#[test]
fn a_dead_worker_is_replaced_at_once_in_a_free_slot() {
    let mut pod = Pod::running(config(2));
    let [a, b] = pod.pids()[..] else { panic!() };
    let actions = pod.exit(a);
    assert_eq!(
        actions,
        vec![
            Action::MarkExited { slot: 0 },
            Action::Spawn {
                slot: 2,
                request_budget: 0
            }
        ]
    );
    assert_eq!(pod.pids(), vec![b, pod.newest()]);
    assert_eq!(pod.exit(999), vec![], "not a worker of ours");
}

#[test]
fn a_crash_loop_pauses_restarts_instead_of_forking_in_a_loop() {
    let mut pod = Pod::running(config(2));
    // Five crashes in a row are replaced at once.
    for _ in 0..CRASH_LIMIT {
        pod.advance(Duration::from_millis(10));
        let victim = pod.pids()[0];
        assert_eq!(spawns(&pod.exit(victim)), 1);
    }
    // The sixth within the window pauses restarts; so does each further one.
    pod.advance(Duration::from_millis(10));
    let victim = pod.pids()[0];
    let actions = pod.exit(victim);
    assert!(
        matches!(actions[..], [Action::MarkExited { .. }]),
        "{actions:?}"
    );
    pod.advance(Duration::from_millis(500));
    let last = pod.pids()[0];
    assert_eq!(spawns(&pod.exit(last)), 0);
    assert!(pod.pids().is_empty());
    // Ticks during the pause start nothing; the first after it starts `--workers`, no more.
    for _ in 0..39 {
        pod.advance(Duration::from_millis(25));
        assert_eq!(pod.tick(), vec![]);
    }
    pod.advance(Duration::from_millis(25));
    assert_eq!(spawns(&pod.tick()), 2);
    assert_eq!(pod.pids().len(), 2);
    assert_eq!(spawns(&pod.tick()), 0);
}

#[test]
fn workers_that_die_at_once_for_ten_seconds_cost_a_bounded_number_of_forks() {
    let mut pod = Pod::running(config(2));
    let mut forks = 0;
    // Every worker dies 10 ms after it starts; the executor ticks every 25 ms.
    for _ in 0..400 {
        pod.advance(Duration::from_millis(10));
        for pid in pod.pids() {
            forks += spawns(&pod.exit(pid));
        }
        pod.advance(Duration::from_millis(15));
        forks += spawns(&pod.tick());
    }
    // Without the pause: two forks every 10 ms (about 800).
    assert!(forks <= CRASH_LIMIT + 2 * 11, "{forks} forks in 10 s");
    assert!(forks >= 2 * 9, "restarts go on after each pause: {forks}");
    // Once the crashes stop and the window has passed, a death is replaced at once again.
    pod.advance(Duration::from_secs(2));
    pod.tick();
    pod.advance(CRASH_WINDOW);
    pod.tick();
    let victim = pod.pids()[0];
    assert_eq!(spawns(&pod.exit(victim)), 1);
}

#[test]
fn sighup_replaces_one_worker_at_a_time_new_one_accepting_before_the_old_one_stops() {
    let mut pod = Pod::running(config(3));
    let old = pod.pids();
    assert_eq!(pod.on(Event::Signal(Signal::Hup)), vec![]);
    let mut new = Vec::new();
    for (i, &o) in old.iter().enumerate() {
        let started = pod.tick();
        assert_eq!(spawns(&started), 1, "one new worker for {o}: {started:?}");
        let n = pod.newest();
        new.push(n);
        // Until the new worker accepts, the old one serves and nothing else starts.
        for _ in 0..10 {
            pod.advance(Duration::from_millis(25));
            assert_eq!(pod.tick(), vec![]);
        }
        pod.set(n, SlotState::Ready);
        assert_eq!(pod.tick(), vec![Action::Terminate { pid: o }]);
        pod.set(o, SlotState::Draining);
        // The old worker drains; its exit is expected and replaced by nothing.
        if i == 1 {
            assert_eq!(pod.exit(old[0]), vec![Action::MarkExited { slot: 0 }]);
        }
    }
    assert_eq!(pod.tick(), vec![]);
    assert_eq!(pod.exit(old[1]), vec![Action::MarkExited { slot: 1 }]);
    assert_eq!(pod.exit(old[2]), vec![Action::MarkExited { slot: 2 }]);
    assert_eq!(pod.pids(), new);
    assert_eq!(pod.tick(), vec![]);
}

#[test]
fn reload_replaces_like_sighup() {
    let mut pod = Pod::running(config(1));
    let [old] = pod.pids()[..] else { panic!() };
    assert_eq!(pod.on(Event::Reload), vec![]);
    assert_eq!(spawns(&pod.tick()), 1);
    pod.set(pod.newest(), SlotState::Ready);
    assert_eq!(pod.tick(), vec![Action::Terminate { pid: old }]);
}

#[test]
fn a_replacement_that_dies_before_accepting_puts_the_old_worker_back_first() {
    let mut pod = Pod::running(config(2));
    let [a, b] = pod.pids()[..] else { panic!() };
    pod.on(Event::Signal(Signal::Hup));
    assert_eq!(spawns(&pod.tick()), 1);
    let doomed = pod.newest();
    // Counted as a crash; the old workers still make two, so nothing is started for it.
    assert_eq!(spawns(&pod.exit(doomed)), 0);
    // The next tick tries again for the same old worker.
    assert_eq!(spawns(&pod.tick()), 1);
    pod.set(pod.newest(), SlotState::Ready);
    assert_eq!(pod.tick(), vec![Action::Terminate { pid: a }]);
    assert_eq!(spawns(&pod.tick()), 1);
    pod.set(pod.newest(), SlotState::Ready);
    assert_eq!(pod.tick(), vec![Action::Terminate { pid: b }]);
}

#[test]
fn a_replacement_that_never_accepts_is_killed_after_the_start_timeout() {
    let mut pod = Pod::running(config(2));
    let [a, _] = pod.pids()[..] else { panic!() };
    pod.on(Event::Signal(Signal::Hup));
    pod.tick();
    let stuck = pod.newest();
    pod.advance(START_TIMEOUT);
    assert_eq!(pod.tick(), vec![]);
    pod.advance(Duration::from_millis(25));
    assert_eq!(pod.tick(), vec![Action::Kill { pid: stuck }]);
    assert_eq!(spawns(&pod.exit(stuck)), 0);
    // The rolling restart goes on with the next worker; the first was never stopped.
    assert_eq!(spawns(&pod.tick()), 1);
    assert!(pod.pids().contains(&a));
}

#[test]
fn a_worker_at_its_request_budget_is_recycled_replacement_first() {
    let mut pod = Pod::running(Config {
        max_requests: 50,
        max_requests_jitter: 10,
        ..config(2)
    });
    let [a, b] = pod.pids()[..] else { panic!() };
    assert_eq!(pod.tick(), vec![]);
    pod.set(a, SlotState::RecycleRequested);
    let started = pod.tick();
    assert_eq!(spawns(&started), 1);
    assert!(budgets(&started).iter().all(|b| (50..=60).contains(b)));
    let n = pod.newest();
    // Asking again on every tick queues nothing more; the other worker asking waits its turn.
    pod.set(b, SlotState::RecycleRequested);
    for _ in 0..5 {
        assert_eq!(pod.tick(), vec![]);
    }
    // A new worker that already asks to be recycled is accepting too.
    pod.set(n, SlotState::RecycleRequested);
    assert_eq!(pod.tick(), vec![Action::Terminate { pid: a }]);
    pod.set(a, SlotState::Draining);
    assert_eq!(pod.exit(a), vec![Action::MarkExited { slot: 0 }]);
    // Then the other one, and the new one that asked, one at a time.
    assert_eq!(spawns(&pod.tick()), 1);
    pod.set(pod.newest(), SlotState::Ready);
    assert_eq!(pod.tick(), vec![Action::Terminate { pid: b }]);
    assert_eq!(spawns(&pod.tick()), 1);
    pod.set(pod.newest(), SlotState::Ready);
    assert_eq!(pod.tick(), vec![Action::Terminate { pid: n }]);
    assert_eq!(pod.tick(), vec![]);
}

#[test]
fn sigterm_while_replacing_stops_everything_and_kills_after_the_graceful_timeout() {
    let mut pod = Pod::running(config(2));
    let [a, b] = pod.pids()[..] else { panic!() };
    pod.on(Event::Signal(Signal::Hup));
    pod.tick();
    let n = pod.newest();
    let start = pod.now;
    let kill_at = start + GRACEFUL + KILL_MARGIN;
    assert_eq!(
        pod.on(Event::Signal(Signal::Term)),
        vec![
            Action::CloseListener,
            Action::Terminate { pid: a },
            Action::Terminate { pid: b },
            Action::Terminate { pid: n },
            Action::WakeAt(kill_at),
        ]
    );
    assert!(!pod.sup.is_running());
    // Nothing starts or replaces workers any more.
    pod.set(n, SlotState::Ready);
    pod.set(a, SlotState::RecycleRequested);
    for event in [
        Event::Signal(Signal::Hup),
        Event::Signal(Signal::Term),
        Event::Signal(Signal::Int),
        Event::Reload,
        Event::Start,
    ] {
        assert_eq!(pod.on(event), vec![]);
    }
    assert_eq!(pod.tick(), vec![]);
    assert_eq!(pod.exit(a), vec![Action::MarkExited { slot: 0 }]);
    pod.advance(GRACEFUL);
    assert_eq!(pod.on(Event::Deadline), vec![Action::WakeAt(kill_at)]);
    pod.advance(KILL_MARGIN);
    let give_up_at = pod.now + KILL_WAIT;
    assert_eq!(
        pod.on(Event::Deadline),
        vec![
            Action::Kill { pid: b },
            Action::Kill { pid: n },
            Action::WakeAt(give_up_at),
        ]
    );
    assert_eq!(pod.exit(b), vec![Action::MarkExited { slot: 1 }]);
    assert_eq!(
        pod.exit(n),
        vec![Action::MarkExited { slot: 2 }, Action::Exit]
    );
    assert_eq!(pod.on(Event::Deadline), vec![]);
}

#[test]
fn shutdown_exits_when_the_workers_finish_or_after_the_kill_wait() {
    // Every worker drains in time: exit with the last one.
    let mut pod = Pod::running(config(2));
    let [a, b] = pod.pids()[..] else { panic!() };
    pod.on(Event::Signal(Signal::Int));
    assert_eq!(pod.exit(a), vec![Action::MarkExited { slot: 0 }]);
    assert_eq!(
        pod.exit(b),
        vec![Action::MarkExited { slot: 1 }, Action::Exit]
    );
    // A worker that survives SIGKILL (stuck in the kernel): exit after the kill wait anyway.
    let mut pod = Pod::running(config(1));
    pod.on(Event::Signal(Signal::Term));
    pod.advance(GRACEFUL + KILL_MARGIN);
    assert_eq!(spawns(&pod.on(Event::Deadline)), 0);
    pod.advance(KILL_WAIT);
    assert_eq!(pod.on(Event::Deadline), vec![Action::Exit]);
}

#[test]
fn shutdown_without_workers_exits_at_once() {
    let mut pod = Pod::new(config(1));
    pod.fail_spawns = true;
    pod.on(Event::Start);
    assert_eq!(
        pod.on(Event::Signal(Signal::Term)),
        vec![Action::CloseListener, Action::Exit]
    );
}

#[test]
fn a_failed_start_ends_the_refill_and_gives_the_slot_back() {
    let mut pod = Pod::running(config(3));
    let [a, b, c] = pod.pids()[..] else { panic!() };
    pod.fail_spawns = true;
    assert_eq!(spawns(&pod.exit(a)), 1);
    // Two missing now, but a failed start ends the refill: one attempt.
    let actions = pod.exit(b);
    assert_eq!(
        actions,
        vec![
            Action::MarkExited { slot: 1 },
            Action::Spawn {
                slot: 4,
                request_budget: 0
            }
        ]
    );
    pod.fail_spawns = false;
    // The next death refills every missing worker.
    assert_eq!(spawns(&pod.exit(c)), 3);
    assert_eq!(pod.pids().len(), 3);
}

#[test]
fn a_failed_replacement_start_keeps_the_old_worker_first_in_line() {
    let mut pod = Pod::running(config(2));
    let [a, _] = pod.pids()[..] else { panic!() };
    pod.on(Event::Signal(Signal::Hup));
    pod.fail_spawns = true;
    assert_eq!(spawns(&pod.tick()), 1);
    assert_eq!(spawns(&pod.tick()), 1);
    pod.fail_spawns = false;
    assert_eq!(spawns(&pod.tick()), 1);
    pod.set(pod.newest(), SlotState::Ready);
    assert_eq!(pod.tick(), vec![Action::Terminate { pid: a }]);
}
