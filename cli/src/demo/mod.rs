//! `overlapped demo`: the chapter's scenario, end to end, on loopback.
//!
//! The demo is a list of scenarios, each a function in its own file that sets up its own sockets
//! on ephemeral loopback ports and prints one or two lines per step. Its purpose is to let a
//! reader *see* the model (an operation that is pending, the event that says it finished, the
//! result read from the overlapped object), so each step also checks what it shows: if the
//! library does not behave as the SPEC promises, the demo stops with an error naming the step,
//! and exits non-zero. A scenario is added by writing a file and appending it
//! to [`SCENARIOS`].
//!
//! Every wait is bounded by [`STEP_TIMEOUT`], so a library bug shows as an error, never a hang.

mod events;
mod port;
mod routines;

use std::fmt::Display;
use std::net::SocketAddr;
use std::time::Duration;

use overlapped::{codes, Completion, Overlapped, Socket};

use crate::failure::{Context, Failure, Outcome};

/// How long any one step may wait for the library before the demo calls it a failure.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(10);

/// One scenario of the demo.
struct Scenario {
    /// What the scenario shows, printed as its heading.
    title: &'static str,
    run: fn(&mut Steps) -> Outcome<()>,
}

/// The scenarios, in the order the chapter tells them.
const SCENARIOS: &[Scenario] = &[
    Scenario {
        title: "overlapped send and receive, notified through event objects",
        run: events::run,
    },
    Scenario {
        title: "an overlapped receive, notified through a completion routine",
        run: routines::run,
    },
    Scenario {
        title: "an echo through a completion port drained by two workers",
        run: port::run,
    },
];

/// Runs every scenario, then prints the engine's counters.
pub fn run() -> Outcome<()> {
    println!("overlapped demo: Windows' Overlapped IO model for sockets, on Linux");
    let info = overlapped::backend_info().context("setting up the backend")?;
    println!("backend: {} ({})", info.kind, info.reason);
    for (i, scenario) in SCENARIOS.iter().enumerate() {
        println!();
        println!("== {}. {} ==", i + 1, scenario.title);
        let mut steps = Steps::default();
        (scenario.run)(&mut steps).context(format_args!("scenario {}", i + 1))?;
    }
    let stats = overlapped::stats();
    println!();
    println!(
        "engine counters: {} kernel submissions, {} kernel completions, {} kernel entries, \
         {} operations completed at once",
        stats.submissions, stats.completions, stats.kernel_entries, stats.immediate
    );
    println!("demo finished: every step behaved as the model promises");
    Ok(())
}

/// Numbers and prints the steps of a scenario.
#[derive(Default)]
pub struct Steps {
    done: usize,
}

impl Steps {
    /// Prints the next step's first line.
    pub fn step(&mut self, text: impl Display) {
        self.done += 1;
        println!("{:>3}. {text}", self.done);
    }

    /// Prints a second line for the current step.
    pub fn more(&self, text: impl Display) {
        println!("     {text}");
    }
}

/// A listener on an ephemeral loopback port, a client connected to it, and the server side of
/// that connection: `(listener, client, server)`.
pub fn loopback_pair(steps: &mut Steps) -> Outcome<(Socket, Socket, Socket)> {
    let any: SocketAddr = ([127, 0, 0, 1], 0).into();
    let listener = Socket::listen_tcp(any, 16).context("creating the listener")?;
    let addr = listener
        .local_addr()
        .context("reading the listener's address")?;
    steps.step(format_args!("listener: listening on {addr}"));
    let client = Socket::connect_tcp(addr).context("connecting to the listener")?;
    let (server, peer) = listener.accept().context("accepting the connection")?;
    steps.step(format_args!(
        "connected: client {peer} -> server {addr} (both overlapped sockets)"
    ));
    Ok((listener, client, server))
}

/// Waits (at most [`STEP_TIMEOUT`]) for the operation of `ov` to finish and returns its
/// completion; an operation that failed is an error naming `what`.
pub fn finished<B: Send + 'static>(ov: &Overlapped<B>, what: &str) -> Outcome<Completion> {
    let completion = match ov.completion_timeout(Some(STEP_TIMEOUT)) {
        Ok(c) => c,
        Err(e) if e.code() == codes::WSA_IO_INCOMPLETE => {
            return Err(Failure::new(format!(
                "{what}: still pending after {} s",
                STEP_TIMEOUT.as_secs()
            )))
        }
        Err(e) => return Err(e).context(what),
    };
    completion.result().context(what)?;
    Ok(completion)
}

/// Bytes as a quoted, escaped string: `"dead"`.
pub fn quoted(bytes: &[u8]) -> String {
    format!("\"{}\"", bytes.escape_ascii())
}

/// Fails with `message` unless `ok`.
pub fn check(ok: bool, message: impl FnOnce() -> String) -> Outcome<()> {
    if ok {
        Ok(())
    } else {
        Err(Failure::new(message()))
    }
}
