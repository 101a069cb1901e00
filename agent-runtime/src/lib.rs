//! The `fastagentic` agent runtime: configuration, HTTP server, process models, metrics.
//!
//! Entry point: [`main_entry`]. Parts:
//! - [`config`]: every option, flag over `FASTAGENTIC_*` variable over default, with the
//!   value parsers in [`parse`];
//! - [`server`]: HTTP application and layers, serving loop, pre-fork supervisor;
//! - [`metrics`]: per-process counters, the shared-memory slot, the pod-wide view, exposition;
//! - [`routes`]: the route table the router and the metrics share;
//! - [`agent`]: the agent seam behind `POST /chat`;
//! - [`error`]: every error as its HTTP answer (the only place that knows statuses);
//! - [`services`]: what a worker serves (agent backend, pools, run store, readiness checks,
//!   extra routes);
//! - [`pools`], [`store`], [`agents`], [`runs`]: per-worker Redis/PostgreSQL pools, the durable
//!   run store, the agent backends, and durable runs over HTTP.
#![deny(unsafe_code)]

pub mod agent;
pub mod config;
pub mod error;
pub mod logging;
pub mod metrics;
pub mod parse;
pub mod routes;
pub mod server;
pub mod services;

pub mod agents;
pub mod pools;
pub mod runs;
pub mod store;

use std::ffi::OsString;
use std::io::Write;
use std::process::ExitCode;

use config::{CliOutcome, Command, Mode};

/// Parses the command line and runs; returns the process exit status.
pub fn main_entry() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().collect();
    let cli = match config::parse_cli(args.clone()) {
        CliOutcome::Ok(cli) => cli,
        CliOutcome::Print(text) => {
            let _ = std::io::stdout().write_all(text.as_bytes());
            return ExitCode::SUCCESS;
        }
        CliOutcome::Usage(line) => {
            let _ = writeln!(std::io::stderr(), "{line}");
            return ExitCode::from(config::EXIT_USAGE);
        }
    };
    match cli.command {
        Command::Run(run) => {
            let _log = logging::init(&run.log_level);
            let instance_id = run.instance_id();
            match run.mode() {
                Mode::Single => {
                    let listener = match server::serve::bind(run.host, run.port) {
                        Ok(l) => l,
                        Err(e) => {
                            tracing::error!(
                                event = "startup_failed",
                                step = "bind",
                                address = %std::net::SocketAddr::new(run.host, run.port),
                                error = %e,
                            );
                            return ExitCode::FAILURE;
                        }
                    };
                    server::process::run(
                        run,
                        instance_id,
                        listener,
                        metrics::Counters::local(),
                        server::process::Role::Single,
                    )
                }
                Mode::Supervised => {
                    // Workers get the `run` options exactly as given.
                    let raw: Vec<OsString> = args
                        .iter()
                        .skip_while(|a| a.as_os_str() != "run")
                        .skip(1)
                        .cloned()
                        .collect();
                    server::prefork::run(*Box::new(run), raw, instance_id)
                }
            }
        }
        Command::Worker(w) => {
            let _log = logging::init(&w.run.log_level);
            server::prefork::run_worker(w)
        }
    }
}
