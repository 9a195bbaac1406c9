//! `cronwarden`: one binary for every role. `cronwarden run` is the
//! supervisor, which spawns the same binary as `cronwarden worker`; every
//! other subcommand is a CLI command. The work lives in the library
//! crates: `cronwarden-shared` (config, schedules, wire and status types),
//! `cronwarden-worker` (the scheduler loop and job runner) and
//! `cronwarden-supervisor` (the supervisor, its socket and lock). The CLI
//! itself is [`cli`]; process logging is [`logs`].

mod cli;
mod logs;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(e) => {
            // A closed stdout (`cronwarden next ... | head`) is not an error.
            if e.downcast_ref::<std::io::Error>()
                .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
            {
                return ExitCode::SUCCESS;
            }
            eprintln!("cronwarden: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn run() -> anyhow::Result<ExitCode> {
    cli::run(cli::Cli::parse())
}
