//! From the command line to [`super::Cli`]: parsing, validation, and one-line errors that
//! name the flag, its variable, the value and what is accepted.

use std::ffi::OsString;

use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::{CommandFactory, Parser};

use super::{Cli, Command};

/// What `main` should do after parsing.
#[derive(Debug)]
pub enum CliOutcome {
    /// Parsed and validated.
    Ok(Box<Cli>),
    /// Print to stdout and exit 0 (`--help`, `--version`).
    Print(String),
    /// Print this one line to stderr and exit with [`super::EXIT_USAGE`].
    Usage(String),
}

/// Parses and validates the command line (`args` includes the program name); the
/// environment supplies the `FASTAGENTIC_*` variables.
pub fn parse_cli<I, T>(args: I) -> CliOutcome
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
    match Cli::try_parse_from(&args) {
        Ok(cli) => {
            let check = match &cli.command {
                Command::Run(run) => run.validate(),
                Command::Worker(w) => w.run.validate(),
            };
            match check {
                Ok(()) => CliOutcome::Ok(Box::new(cli)),
                Err(line) => CliOutcome::Usage(format!("fastagentic: {line}")),
            }
        }
        Err(err) => match err.kind() {
            ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
                CliOutcome::Print(err.render().to_string())
            }
            _ => CliOutcome::Usage(one_line(&err, &args)),
        },
    }
}

/// Renders a clap error as one line naming the flag, its variable, the value and what is
/// accepted.
fn one_line(err: &clap::Error, args: &[OsString]) -> String {
    let arg = match err.get(ContextKind::InvalidArg) {
        Some(ContextValue::String(s)) => Some(s.clone()),
        _ => None,
    };
    let value = match err.get(ContextKind::InvalidValue) {
        Some(ContextValue::String(s)) => Some(s.clone()),
        _ => None,
    };
    if let (Some(arg), Some(value), ErrorKind::ValueValidation | ErrorKind::InvalidValue) =
        (&arg, &value, err.kind())
    {
        let long = arg.split_whitespace().next().unwrap_or(arg).to_owned();
        let env = env_of(&long);
        let accepted = match err.kind() {
            ErrorKind::ValueValidation => std::error::Error::source(err)
                .map(|s| s.to_string())
                .unwrap_or_else(|| "see --help".to_owned()),
            _ => match err.get(ContextKind::ValidValue) {
                Some(ContextValue::Strings(v)) => format!("accepted: one of {}", v.join(", ")),
                _ => "see --help".to_owned(),
            },
        };
        let on_command_line = args.iter().any(|a| {
            let a = a.to_string_lossy();
            a == long || a.starts_with(&format!("{long}="))
        });
        let origin = match (&env, on_command_line) {
            (Some(env), false) => format!("{env} (for {long})"),
            (Some(env), true) => format!("{long} (env {env})"),
            (None, _) => long.clone(),
        };
        return format!("fastagentic: invalid value '{value}' for {origin}: {accepted}");
    }
    // Anything else (unknown option, missing subcommand, ...): clap's first line.
    let rendered = err.render().to_string();
    let first = rendered
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("invalid command line")
        .trim()
        .trim_start_matches("error: ");
    format!("fastagentic: {first} (see 'fastagentic run --help')")
}

/// The variable of a `run` flag (`--workers` → `FASTAGENTIC_WORKERS`).
fn env_of(long: &str) -> Option<String> {
    let cmd = Cli::command();
    let name = long.trim_start_matches("--");
    cmd.get_subcommands()
        .flat_map(|s| s.get_arguments())
        .find(|a| a.get_long() == Some(name))
        .and_then(|a| a.get_env())
        .map(|e| e.to_string_lossy().into_owned())
}
