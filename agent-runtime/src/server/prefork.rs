//! The pre-fork supervisor (`--server gunicorn`, several workers, recycling, `--reload`).
//!
//! The supervisor binds the one listening socket and creates the shared metrics file, then
//! starts each worker by re-executing this binary as `fastagentic worker --listen-fd N
//! --metrics-fd M --slot S ... <the run options>` with both descriptors inherited. All
//! workers accept on the same socket, so a worker that stops accepting leaves queued
//! connections to the others (no SO_REUSEPORT queue is dropped), and the socket stays bound
//! for as long as the supervisor lives.
//!
//! - A worker that dies is replaced at once (with a pause after repeated crashes).
//! - Replacing (SIGHUP, a worker that served its `--max-requests` budget, a reload) is
//!   rolling: start the new worker, wait until it accepts, then SIGTERM the old one, which
//!   drains; one worker at a time.
//! - SIGTERM/SIGINT: close the supervisor's copy of the socket, forward SIGTERM to every
//!   worker, wait up to `--timeout-graceful` (+1 s for the workers' own cut), SIGKILL what is
//!   left, exit 0.
//! - Workers get SIGTERM if the supervisor dies (PR_SET_PDEATHSIG).

use std::collections::{HashMap, VecDeque};
use std::ffi::OsString;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::time::{Duration, Instant};

use nix::fcntl::{FcntlArg, FdFlag, fcntl};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use rand::Rng;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;

use super::serve;
use crate::config::{RunArgs, WorkerArgs};
use crate::metrics::{Counters, SharedFile, SlotState};

/// How often the supervisor looks at the workers' slots.
const TICK: Duration = Duration::from_millis(25);
/// A new worker that is not accepting after this long is given up on.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// More unexpected exits than this within [`CRASH_WINDOW`] pause restarts for [`CRASH_PAUSE`].
const CRASH_LIMIT: usize = 5;
const CRASH_WINDOW: Duration = Duration::from_secs(10);
const CRASH_PAUSE: Duration = Duration::from_secs(1);
/// Reload: wait this long after a change for more changes before restarting.
const RELOAD_DEBOUNCE: Duration = Duration::from_millis(200);

#[derive(Debug)]
struct Worker {
    slot: usize,
    retiring: bool,
}

#[derive(Debug)]
struct Replacement {
    old: i32,
    new: i32,
    new_slot: usize,
    since: Instant,
}

struct Supervisor {
    args: RunArgs,
    raw_args: Vec<OsString>,
    instance_id: String,
    exe: PathBuf,
    listener: Option<std::net::TcpListener>,
    file: SharedFile,
    free_slots: VecDeque<usize>,
    workers: HashMap<i32, Worker>,
    exits: mpsc::UnboundedSender<(i32, String)>,
    queue: VecDeque<i32>,
    current: Option<Replacement>,
    crashes: VecDeque<Instant>,
    restart_after: Option<Instant>,
    missing: usize,
}

/// Runs the supervisor; `raw_args` are the `run` options as given (passed to workers).
pub fn run(args: RunArgs, raw_args: Vec<OsString>, instance_id: String) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(event = "startup_failed", error = %e);
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(supervise(args, raw_args, instance_id))
}

async fn supervise(args: RunArgs, raw_args: Vec<OsString>, instance_id: String) -> ExitCode {
    let fail = |what: &str, e: &dyn std::fmt::Display| {
        tracing::error!(event = "startup_failed", instance_id = %instance_id, step = what, error = %e);
        ExitCode::FAILURE
    };
    let listener = match serve::bind(args.host, args.port) {
        Ok(l) => l,
        Err(e) => return fail("bind", &e),
    };
    // Both descriptors must survive exec into the workers.
    if let Err(e) = fcntl(&listener, FcntlArg::F_SETFD(FdFlag::empty())) {
        return fail("listener inheritance", &e);
    }
    let slots = args.workers as usize * 2 + 2;
    let file = match SharedFile::create(slots) {
        Ok(f) => f,
        Err(e) => return fail("metrics file", &e),
    };
    let exe = match std::env::current_exe() {
        Ok(p) => p,
        Err(e) => return fail("current_exe", &e),
    };
    let (mut signals, mut exits_rx, exits_tx) = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) {
        (Ok(t), Ok(i), Ok(h)) => {
            let (tx, rx) = mpsc::unbounded_channel();
            ((t, i, h), rx, tx)
        }
        _ => return fail("signals", &"cannot install signal handlers"),
    };
    let (reload_tx, mut reload_rx) = mpsc::unbounded_channel::<PathBuf>();
    let _watcher = if args.reload {
        match std::env::current_dir()
            .map_err(|e| e.to_string())
            .and_then(|dir| watch(&dir, reload_tx).map(|w| (w, dir)))
        {
            Ok((w, dir)) => {
                tracing::info!(event = "reload_watching", directory = %dir.display());
                Some(w)
            }
            Err(e) => return fail("reload watcher", &e),
        }
    } else {
        drop(reload_tx);
        None
    };

    let address = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let mut sup = Supervisor {
        free_slots: (0..file.slots()).collect(),
        file,
        listener: Some(listener),
        raw_args,
        instance_id: instance_id.clone(),
        exe,
        workers: HashMap::new(),
        exits: exits_tx,
        queue: VecDeque::new(),
        current: None,
        crashes: VecDeque::new(),
        restart_after: None,
        missing: 0,
        args,
    };
    tracing::info!(
        event = "startup",
        role = "supervisor",
        instance_id = %instance_id,
        pid = std::process::id(),
        version = env!("CARGO_PKG_VERSION"),
        server = %sup.args.server,
        address = %address,
        workers = sup.args.workers,
        max_concurrent = %sup.args.max_concurrent,
        max_requests = sup.args.max_requests,
        reload = sup.args.reload,
    );
    for _ in 0..sup.args.workers {
        if sup.spawn().is_none() {
            sup.missing += 1;
        }
    }

    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (term, int, hup) = &mut signals;
    let sig = loop {
        tokio::select! {
            Some((pid, status)) = exits_rx.recv() => sup.on_exit(pid, &status),
            _ = term.recv() => break "SIGTERM",
            _ = int.recv() => break "SIGINT",
            _ = hup.recv() => {
                tracing::info!(event = "rolling_restart", reason = "SIGHUP", workers = sup.workers.len());
                sup.queue_all();
            }
            Some(path) = reload_rx.recv() => {
                // Debounce: editors write several files (and several times) per save.
                let deadline = tokio::time::Instant::now() + RELOAD_DEBOUNCE;
                while let Ok(Some(_)) = tokio::time::timeout_at(deadline, reload_rx.recv()).await {}
                tracing::info!(event = "reload_triggered", path = %path.display());
                sup.queue_all();
            }
            _ = tick.tick() => sup.on_tick(),
        }
    };
    sup.shutdown(sig, &mut exits_rx).await;
    ExitCode::SUCCESS
}

impl Supervisor {
    fn live(&self) -> usize {
        self.workers.values().filter(|w| !w.retiring).count()
    }

    /// Starts a worker in a free slot; returns its pid.
    fn spawn(&mut self) -> Option<i32> {
        let Some(listener) = &self.listener else {
            return None;
        };
        let Some(slot) = self.free_slots.pop_front() else {
            tracing::error!(
                event = "worker_spawn_failed",
                error = "no free metrics slot"
            );
            return None;
        };
        let budget = if self.args.max_requests > 0 {
            self.args.max_requests + rand::rng().random_range(0..=self.args.max_requests_jitter)
        } else {
            0
        };
        let mut cmd = tokio::process::Command::new(&self.exe);
        cmd.arg("worker")
            .arg("--listen-fd")
            .arg(listener.as_raw_fd().to_string())
            .arg("--metrics-fd")
            .arg(self.file.inheritable_fd().to_string())
            .arg("--slot")
            .arg(slot.to_string())
            .arg("--slots")
            .arg(self.file.slots().to_string())
            .arg("--request-budget")
            .arg(budget.to_string())
            .arg("--master-pid")
            .arg(std::process::id().to_string())
            .arg("--pod-instance-id")
            .arg(&self.instance_id)
            .args(&self.raw_args)
            .stdin(Stdio::null())
            .kill_on_drop(false);
        match cmd.spawn() {
            Ok(mut child) => {
                let Some(pid) = child.id().map(|p| p as i32) else {
                    self.free_slots.push_back(slot);
                    return None;
                };
                let tx = self.exits.clone();
                tokio::spawn(async move {
                    let status = match child.wait().await {
                        Ok(s) => s.to_string(),
                        Err(e) => format!("wait failed: {e}"),
                    };
                    let _ = tx.send((pid, status));
                });
                tracing::info!(event = "worker_started", pid, slot, request_budget = budget);
                self.workers.insert(
                    pid,
                    Worker {
                        slot,
                        retiring: false,
                    },
                );
                Some(pid)
            }
            Err(e) => {
                self.free_slots.push_back(slot);
                tracing::error!(event = "worker_spawn_failed", error = %e);
                None
            }
        }
    }

    fn on_exit(&mut self, pid: i32, status: &str) {
        let Some(w) = self.workers.remove(&pid) else {
            return;
        };
        if let Err(e) = self.file.mark_exited(w.slot) {
            tracing::warn!(event = "metrics_write_failed", error = %e);
        }
        self.free_slots.push_back(w.slot);
        if w.retiring {
            tracing::info!(event = "worker_retired", pid, slot = w.slot, status = %status);
            return;
        }
        tracing::warn!(event = "worker_exited", pid, slot = w.slot, status = %status);
        if let Some(r) = self.current.as_ref().filter(|r| r.new == pid) {
            // The replacement died before accepting: try again later.
            self.queue.push_front(r.old);
            self.current = None;
        }
        self.queue.retain(|p| *p != pid);
        let now = Instant::now();
        self.crashes.push_back(now);
        while self
            .crashes
            .front()
            .is_some_and(|t| now.duration_since(*t) > CRASH_WINDOW)
        {
            self.crashes.pop_front();
        }
        self.missing += 1;
        if self.crashes.len() > CRASH_LIMIT {
            tracing::error!(
                event = "worker_crash_loop",
                pause_ms = CRASH_PAUSE.as_millis() as u64
            );
            self.restart_after = Some(now + CRASH_PAUSE);
        } else {
            self.refill();
        }
    }

    /// Starts workers for those that died.
    fn refill(&mut self) {
        while self.missing > 0 && self.live() < self.args.workers as usize {
            if self.spawn().is_none() {
                break;
            }
            self.missing -= 1;
        }
        if self.live() >= self.args.workers as usize {
            self.missing = 0;
        }
    }

    fn queue_all(&mut self) {
        let mut pids: Vec<i32> = self
            .workers
            .iter()
            .filter(|(_, w)| !w.retiring)
            .map(|(p, _)| *p)
            .collect();
        pids.sort_unstable();
        for p in pids {
            if !self.queue.contains(&p) && self.current.as_ref().is_none_or(|r| r.old != p) {
                self.queue.push_back(p);
            }
        }
    }

    fn on_tick(&mut self) {
        if self.restart_after.is_some_and(|t| Instant::now() >= t) {
            self.restart_after = None;
            self.refill();
        }
        // Workers that served their request budget ask to be replaced.
        let mut asking: Vec<i32> = self
            .workers
            .iter()
            .filter(|(_, w)| !w.retiring)
            .filter(|(_, w)| self.file.state(w.slot) == SlotState::RecycleRequested)
            .map(|(p, _)| *p)
            .collect();
        asking.sort_unstable();
        for p in asking {
            let busy = self.queue.contains(&p)
                || self
                    .current
                    .as_ref()
                    .is_some_and(|r| r.old == p || r.new == p);
            if !busy {
                self.queue.push_back(p);
            }
        }
        if let Some(r) = &self.current {
            let state = self.file.state(r.new_slot);
            if matches!(state, SlotState::Ready | SlotState::RecycleRequested) {
                let (old, new) = (r.old, r.new);
                self.current = None;
                self.retire(old);
                tracing::info!(event = "worker_replaced", old_pid = old, new_pid = new);
            } else if r.since.elapsed() > START_TIMEOUT {
                tracing::error!(event = "worker_start_timeout", pid = r.new);
                let _ = kill(Pid::from_raw(r.new), Signal::SIGKILL);
                self.current = None;
            }
            return;
        }
        while let Some(old) = self.queue.pop_front() {
            if self.workers.get(&old).is_none_or(|w| w.retiring) {
                continue;
            }
            if let Some(new) = self.spawn() {
                let new_slot = self.workers.get(&new).map(|w| w.slot).unwrap_or_default();
                self.current = Some(Replacement {
                    old,
                    new,
                    new_slot,
                    since: Instant::now(),
                });
            } else {
                self.queue.push_front(old);
            }
            break;
        }
    }

    /// Asks a worker to drain and exit.
    fn retire(&mut self, pid: i32) {
        if let Some(w) = self.workers.get_mut(&pid) {
            w.retiring = true;
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
    }

    async fn shutdown(
        &mut self,
        sig: &'static str,
        exits: &mut mpsc::UnboundedReceiver<(i32, String)>,
    ) {
        tracing::info!(
            event = "shutdown_started",
            instance_id = %self.instance_id,
            role = "supervisor",
            signal = sig,
            workers = self.workers.len(),
        );
        // Our copy of the socket goes now; it closes for good when the last worker lets go.
        self.listener = None;
        let pids: Vec<i32> = self.workers.keys().copied().collect();
        for pid in &pids {
            self.retire(*pid);
        }
        let deadline =
            tokio::time::Instant::now() + self.args.timeout_graceful + Duration::from_secs(1);
        while !self.workers.is_empty() {
            match tokio::time::timeout_at(deadline, exits.recv()).await {
                Ok(Some((pid, status))) => self.on_exit(pid, &status),
                Ok(None) => break,
                Err(_) => {
                    for pid in self.workers.keys() {
                        tracing::warn!(
                            event = "worker_killed",
                            pid = *pid,
                            reason = "graceful timeout"
                        );
                        let _ = kill(Pid::from_raw(*pid), Signal::SIGKILL);
                    }
                    let grace = tokio::time::Instant::now() + Duration::from_secs(2);
                    while !self.workers.is_empty() {
                        match tokio::time::timeout_at(grace, exits.recv()).await {
                            Ok(Some((pid, status))) => self.on_exit(pid, &status),
                            _ => break,
                        }
                    }
                    break;
                }
            }
        }
        tracing::info!(event = "shutdown_complete", instance_id = %self.instance_id, role = "supervisor");
    }
}

/// Entry point of a worker process.
pub fn run_worker(w: WorkerArgs) -> ExitCode {
    use super::inherit::{Kind, adopt};
    // Stop with the supervisor, and notice if it is already gone.
    let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGTERM);
    if nix::unistd::getppid().as_raw() != w.master_pid {
        tracing::error!(event = "worker_orphaned", master_pid = w.master_pid);
        return ExitCode::FAILURE;
    }
    let listener = match adopt(w.listen_fd, Kind::Socket) {
        Ok(fd) => std::net::TcpListener::from(fd),
        Err(e) => {
            tracing::error!(event = "startup_failed", step = "listener", error = %e);
            return ExitCode::FAILURE;
        }
    };
    let file = match adopt(w.metrics_fd, Kind::File) {
        Ok(fd) => SharedFile::new(std::fs::File::from(fd), w.slots),
        Err(e) => {
            tracing::error!(event = "startup_failed", step = "metrics file", error = %e);
            return ExitCode::FAILURE;
        }
    };
    // Descriptors this process must not pass on to anything it might start.
    let _ = fcntl(&listener, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC));
    let counters = Counters::shared(file, w.slot);
    super::process::run(
        w.run,
        w.pod_instance_id,
        listener,
        counters,
        super::process::Role::Worker {
            request_budget: w.request_budget,
        },
    )
}

/// Watches `dir` (recursively, skipping hidden directories, `target`, `node_modules` and
/// `__pycache__`) and sends the path of each changed file. Directories created later are
/// not watched themselves (their creation is a change in a watched directory).
fn watch(
    dir: &Path,
    tx: mpsc::UnboundedSender<PathBuf>,
) -> Result<notify::RecommendedWatcher, String> {
    use notify::{EventKind, RecursiveMode, Watcher};
    let skip = |p: &Path| {
        p.components().any(|c| {
            let s = c.as_os_str().to_string_lossy();
            s.starts_with('.') && s != "." && s != ".."
                || s == "target"
                || s == "node_modules"
                || s == "__pycache__"
        })
    };
    let root = dir.to_path_buf();
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        let Ok(event) = res else { return };
        if matches!(event.kind, EventKind::Access(_)) {
            return;
        }
        for path in event.paths {
            let rel = path.strip_prefix(&root).unwrap_or(&path);
            if skip(rel) {
                continue;
            }
            let _ = tx.send(path);
        }
    })
    .map_err(|e| e.to_string())?;
    // Watch directory by directory so ignored trees (a `target/` with thousands of
    // directories) cost no inotify watches.
    let mut stack = vec![dir.to_path_buf()];
    let mut watched = 0usize;
    while let Some(d) = stack.pop() {
        if watched >= 4096 {
            tracing::warn!(event = "reload_watch_limit", watched);
            break;
        }
        if watcher.watch(&d, RecursiveMode::NonRecursive).is_ok() {
            watched += 1;
        }
        if let Ok(entries) = std::fs::read_dir(&d) {
            for e in entries.flatten() {
                let p = e.path();
                let rel = p.strip_prefix(dir).unwrap_or(&p);
                if e.file_type().is_ok_and(|t| t.is_dir()) && !skip(rel) {
                    stack.push(p);
                }
            }
        }
    }
    Ok(watcher)
}
