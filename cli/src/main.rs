//! `overlapped`: the command that shows the library at work.
//!
//! - `overlapped demo` runs the chapter's scenario end to end on loopback and prints each step
//!   (see [`demo`]).
//!
//! Every subcommand returns an [`failure::Outcome`]; a failure is printed on stderr as one line
//! saying which step failed and why, and the process exits with status 1.

mod demo;
mod failure;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Windows' Overlapped IO model for sockets, on Linux (io_uring).
#[derive(Parser)]
#[command(name = "overlapped", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the chapter's scenario on loopback and print what happens at each step.
    Demo,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Demo => demo::run(),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("overlapped: error: {failure}");
            ExitCode::FAILURE
        }
    }
}
