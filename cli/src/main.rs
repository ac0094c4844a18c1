//! `overlapped`: the command that shows the library at work.
//!
//! - `overlapped demo` runs the chapter's scenario end to end on loopback and prints each step
//!   (see [`demo`]).
//! - `overlapped echo-server --model event|routine|port` serves echo clients with one of the
//!   notification models (see [`server`]); `overlapped echo-client` talks to one.
//! - `overlapped bench` loads an echo server and reports throughput and latency.
//!
//! Every subcommand returns an [`failure::Outcome`]; a failure is printed on stderr as one line
//! saying which step failed and why, and the process exits with status 1.

mod bench;
mod client;
mod demo;
mod failure;
mod server;

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
    /// Run an echo server on one of the notification models.
    ///
    /// An option given twice takes its last value: a script may add to a server's command line
    /// what the line already sets.
    #[command(args_override_self = true)]
    EchoServer(server::Options),
    /// Send lines to an echo server and print what comes back (`Q` quits).
    EchoClient(client::Options),
    /// Load an echo server: many connections, pipelined messages, every byte verified.
    Bench(bench::Options),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Demo => demo::run(),
        Command::EchoServer(options) => server::run(&options),
        Command::EchoClient(options) => client::run(&options),
        Command::Bench(options) => bench::run(&options),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("overlapped: error: {failure}");
            ExitCode::FAILURE
        }
    }
}
