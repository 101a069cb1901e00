//! The pre-fork supervisor process (`--server gunicorn`, several workers, recycling,
//! `--reload`), and the entry point of its workers.
//!
//! The supervisor binds the one listening socket and creates the shared metrics file, then
//! starts each worker by re-executing this binary as `fastagentic worker --listen-fd N
//! --metrics-fd M --slot S ... <the run options>` with both descriptors inherited. All
//! workers accept on the same socket, so a worker that stops accepting leaves queued
//! connections to the others (no SO_REUSEPORT queue is dropped), and the socket stays bound
//! for as long as the supervisor lives. Workers share the connections out among themselves
//! through their metrics slots (see [`serve`](super::serve::serve)). Workers get SIGTERM if the supervisor dies
//! (PR_SET_PDEATHSIG).
//!
//! When to start, replace, stop and kill workers is decided by
//! [`Supervisor`](super::supervisor::Supervisor) (crashes, rolling replacement, recycling,
//! shutdown: see there). This module only executes: it turns child exits, signals, file
//! changes, a tick reading the slots' states every 25 ms and the supervisor's deadline
//! into [`Event`]s, and carries out the [`Action`]s (start a process, signal it, mark its
//! slot, close the socket, exit).

use std::collections::VecDeque;
use std::ffi::OsString;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::{ExitCode, Stdio};
use std::time::{Duration, Instant};

use nix::fcntl::{FcntlArg, FdFlag, fcntl};
use nix::sys::signal::{Signal as OsSignal, kill};
use nix::unistd::Pid;
use rand::Rng;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;

use super::reload;
use super::serve;
use super::supervisor::{Action, Config, Event, Signal, Supervisor};
use crate::config::{RunArgs, WorkerArgs};
use crate::metrics::{Counters, SharedFile, SlotState};

/// How often the supervisor looks at the workers' slots.
const TICK: Duration = Duration::from_millis(25);

/// Carries out the supervisor's actions.
struct Executor {
    exe: PathBuf,
    /// The `run` options as given, passed on to every worker.
    raw_args: Vec<OsString>,
    instance_id: String,
    /// Closed (`None`) when shutdown begins.
    listener: Option<std::net::TcpListener>,
    file: SharedFile,
    /// Where each worker's exit (pid, status) is reported.
    exits: mpsc::UnboundedSender<(i32, String)>,
    /// When to send [`Event::Deadline`].
    wake_at: Option<tokio::time::Instant>,
}

/// What the supervisor listens to.
struct Inputs {
    exits: mpsc::UnboundedReceiver<(i32, String)>,
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
    /// Changed files (`--reload`; never sends otherwise).
    changes: mpsc::UnboundedReceiver<PathBuf>,
    _watcher: Option<notify::RecommendedWatcher>,
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
    let config = Config::from_args(&args);
    let (mut exec, mut inputs) = match set_up(&args, &config, raw_args, &instance_id) {
        Ok(set) => set,
        Err((step, e)) => {
            tracing::error!(event = "startup_failed", instance_id = %instance_id, step, error = %e);
            return ExitCode::FAILURE;
        }
    };
    let address = exec
        .listener
        .as_ref()
        .and_then(|l| l.local_addr().ok())
        .map(|a| a.to_string())
        .unwrap_or_default();
    tracing::info!(
        event = "startup",
        role = "supervisor",
        instance_id = %instance_id,
        pid = std::process::id(),
        version = env!("CARGO_PKG_VERSION"),
        server = %args.server,
        address = %address,
        workers = args.workers,
        max_concurrent = %args.max_concurrent,
        max_requests = args.max_requests,
        reload = args.reload,
    );
    let mut sup = Supervisor::new(config, rand::rng());
    let actions = sup.on(Event::Start, Instant::now());
    if !exec.execute(&mut sup, actions) {
        event_loop(&mut sup, &mut exec, &mut inputs).await;
    }
    tracing::info!(event = "shutdown_complete", instance_id = %instance_id, role = "supervisor");
    ExitCode::SUCCESS
}

/// Binds the socket, creates the metrics file, installs the signal handlers and the
/// `--reload` watcher. An error names the step that failed.
fn set_up(
    args: &RunArgs,
    config: &Config,
    raw_args: Vec<OsString>,
    instance_id: &str,
) -> Result<(Executor, Inputs), (&'static str, String)> {
    let listener = serve::bind(args.host, args.port).map_err(|e| ("bind", e.to_string()))?;
    // Both descriptors must survive exec into the workers.
    fcntl(&listener, FcntlArg::F_SETFD(FdFlag::empty()))
        .map_err(|e| ("listener inheritance", e.to_string()))?;
    let file = SharedFile::create(config.slots).map_err(|e| ("metrics file", e.to_string()))?;
    let exe = std::env::current_exe().map_err(|e| ("current_exe", e.to_string()))?;
    let (term, int, hup) = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) {
        (Ok(t), Ok(i), Ok(h)) => (t, i, h),
        _ => return Err(("signals", "cannot install signal handlers".into())),
    };
    let (exits_tx, exits) = mpsc::unbounded_channel();
    let (changes_tx, changes) = mpsc::unbounded_channel();
    let watcher = if args.reload {
        Some(reload::watch_working_dir(changes_tx).map_err(|e| ("reload watcher", e))?)
    } else {
        None
    };
    let exec = Executor {
        exe,
        raw_args,
        instance_id: instance_id.to_owned(),
        listener: Some(listener),
        file,
        exits: exits_tx,
        wake_at: None,
    };
    let inputs = Inputs {
        exits,
        term,
        int,
        hup,
        changes,
        _watcher: watcher,
    };
    Ok((exec, inputs))
}

/// Feeds OS events to the supervisor and executes its actions until it exits. Once shutdown
/// began, only worker exits and the deadline are listened to.
async fn event_loop<R: Rng>(sup: &mut Supervisor<R>, exec: &mut Executor, inputs: &mut Inputs) {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let running = sup.is_running();
        let wake_at = exec.wake_at;
        let event = tokio::select! {
            Some((pid, status)) = inputs.exits.recv() => Event::Exited { pid, status },
            _ = inputs.term.recv(), if running => exec.shutdown_signal(Signal::Term, sup),
            _ = inputs.int.recv(), if running => exec.shutdown_signal(Signal::Int, sup),
            _ = inputs.hup.recv(), if running => Event::Signal(Signal::Hup),
            Some(path) = inputs.changes.recv(), if running => {
                reload::settle(&mut inputs.changes).await;
                tracing::info!(event = "reload_triggered", path = %path.display());
                Event::Reload
            }
            _ = tick.tick(), if running => Event::Tick { slots: exec.slot_states() },
            () = tokio::time::sleep_until(wake_at.unwrap_or_else(tokio::time::Instant::now)),
                if wake_at.is_some() =>
            {
                exec.wake_at = None;
                Event::Deadline
            }
            else => return,
        };
        let actions = sup.on(event, Instant::now());
        if exec.execute(sup, actions) {
            return;
        }
    }
}

impl Executor {
    /// Carries out `actions` in order; true once the supervisor is done. A start's outcome
    /// goes straight back to the supervisor, and its next actions are carried out too.
    fn execute<R: Rng>(&mut self, sup: &mut Supervisor<R>, actions: Vec<Action>) -> bool {
        let mut todo = VecDeque::from(actions);
        let mut done = false;
        while let Some(action) = todo.pop_front() {
            match action {
                Action::Spawn {
                    slot,
                    request_budget,
                } => {
                    let outcome = match self.spawn(slot, request_budget) {
                        Some(pid) => Event::Spawned { slot, pid },
                        None => Event::SpawnFailed { slot },
                    };
                    todo.extend(sup.on(outcome, Instant::now()));
                }
                Action::MarkExited { slot } => {
                    if let Err(e) = self.file.mark_exited(slot) {
                        tracing::warn!(event = "metrics_write_failed", error = %e);
                    }
                }
                Action::Terminate { pid } => {
                    let _ = kill(Pid::from_raw(pid), OsSignal::SIGTERM);
                }
                Action::Kill { pid } => {
                    let _ = kill(Pid::from_raw(pid), OsSignal::SIGKILL);
                }
                // Our copy of the socket goes now; it closes for good when the last worker
                // lets go.
                Action::CloseListener => self.listener = None,
                Action::WakeAt(at) => self.wake_at = Some(tokio::time::Instant::from_std(at)),
                Action::Exit => done = true,
            }
        }
        done
    }

    /// Starts a worker owning `slot`; returns its pid. Its exit is reported on `exits`.
    fn spawn(&self, slot: usize, request_budget: u64) -> Option<i32> {
        let listener = self.listener.as_ref()?;
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
            .arg(request_budget.to_string())
            .arg("--master-pid")
            .arg(std::process::id().to_string())
            .arg("--pod-instance-id")
            .arg(&self.instance_id)
            .args(&self.raw_args)
            .stdin(Stdio::null())
            .kill_on_drop(false);
        let mut child = match cmd.spawn() {
            Ok(child) => child,
            Err(e) => {
                tracing::error!(event = "worker_spawn_failed", error = %e);
                return None;
            }
        };
        let pid = child.id().map(|p| p as i32)?;
        let tx = self.exits.clone();
        tokio::spawn(async move {
            let status = match child.wait().await {
                Ok(s) => s.to_string(),
                Err(e) => format!("wait failed: {e}"),
            };
            let _ = tx.send((pid, status));
        });
        tracing::info!(event = "worker_started", pid, slot, request_budget);
        Some(pid)
    }

    /// The state of every slot of the metrics file.
    fn slot_states(&self) -> Vec<SlotState> {
        (0..self.file.slots()).map(|s| self.file.state(s)).collect()
    }

    /// SIGTERM/SIGINT arrived: the event, logged.
    fn shutdown_signal<R: Rng>(&self, sig: Signal, sup: &Supervisor<R>) -> Event {
        tracing::info!(
            event = "shutdown_started",
            instance_id = %self.instance_id,
            role = "supervisor",
            signal = sig.name(),
            workers = sup.worker_count(),
        );
        Event::Signal(sig)
    }
}

/// Entry point of a worker process.
pub fn run_worker(w: WorkerArgs) -> ExitCode {
    use super::inherit::{Kind, adopt};
    // Stop with the supervisor, and notice if it is already gone.
    let _ = nix::sys::prctl::set_pdeathsig(OsSignal::SIGTERM);
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
