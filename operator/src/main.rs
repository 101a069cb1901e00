//! `fastagentic-operator`: the FastAgentic operator's command line.
//!
//! - `crd` prints the CustomResourceDefinition generated from the Rust types.

#![forbid(unsafe_code)]

use std::io::Write;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Runs FastAgentic agent servers on Kubernetes.
#[derive(Parser, Debug)]
#[command(name = "fastagentic-operator", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Print the FastAgentic CustomResourceDefinition as YAML.
    Crd,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Crd => print_crd(),
    }
}

fn print_crd() -> ExitCode {
    match fastagentic_crd::crd_yaml() {
        Ok(yaml) => {
            let mut out = std::io::stdout().lock();
            if let Err(err) = out.write_all(yaml.as_bytes()).and_then(|()| out.flush()) {
                eprintln!("error: writing the CRD to stdout: {err}");
                return ExitCode::FAILURE;
            }
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("error: serializing the CRD: {err}");
            ExitCode::FAILURE
        }
    }
}
