//! The `raftlog` command: parses the command line and runs one subcommand.
//!
//! Every error leaves as one line on stderr (`error: ...`) and a non-zero exit
//! code; stdout carries only data, so scripts can pipe it.

pub mod args;
mod config;
mod offline;
pub mod output;

use std::process::ExitCode;

use clap::Parser;

pub use args::Cli;
use args::Command;

/// Exit code for a failed command (bad input, unreachable cluster, corrupt data).
pub const EXIT_FAILURE: u8 = 1;

/// Runs the command line given to the process and returns its exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {}", one_line(&error));
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

/// An error and its causes on one line: `what failed: why: deeper why`.
pub fn one_line(error: &anyhow::Error) -> String {
    let mut line = String::new();
    for (depth, cause) in error.chain().enumerate() {
        let text = cause.to_string();
        // thiserror messages often repeat their source; print each cause once.
        if depth > 0 && line.contains(&text) {
            continue;
        }
        if depth > 0 {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line.replace('\n', " ")
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve(args) => config::serve_config(*args).map(|_| ExitCode::SUCCESS),
        Command::Verify(args) => offline::run_verify(args),
        Command::Dump(args) => offline::run_dump(args).map(|()| ExitCode::SUCCESS),
        _ => anyhow::bail!("this subcommand is not available in this build yet"),
    }
}
