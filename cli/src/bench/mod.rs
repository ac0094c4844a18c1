//! `overlapped bench`: a load generator for echo servers.
//!
//! It opens `--connections` TCP connections to `--addr`, spread over a few threads (one per CPU it
//! may run on, see [`worker`]), and sends messages of `--size` bytes with up to `--depth` in flight
//! per connection. Unpaced, every echo is answered with the next message at once; with `--rate`,
//! messages are sent on a fixed schedule and latency counts from the *scheduled* send time. Every
//! echoed byte is checked against what was sent (see [`conn`]). The first `--warmup` seconds are
//! not measured; then for `--duration` seconds it counts completed messages and records their
//! latency in an HDR histogram. A progress bar shows on stderr when stderr is a terminal.
//! The result is printed as text, or as one JSON object with `--json` (see [`report`]).

mod conn;
mod report;
mod worker;

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

use crate::failure::{Context, Failure, Outcome};
use worker::{Measured, Plan, Shared};

/// The options of `bench`.
#[derive(Args, Debug, Clone)]
pub struct Options {
    /// The echo server's address.
    #[arg(long, default_value = "127.0.0.1:9190")]
    pub addr: SocketAddr,
    /// How many connections to open.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..))]
    pub connections: u64,
    /// Bytes per message.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=1 << 20))]
    pub size: u64,
    /// Messages in flight per connection.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub depth: u64,
    /// Seconds measured (after the warm-up).
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Seconds of load before measuring starts.
    #[arg(long, default_value_t = 2.0)]
    pub warmup: f64,
    /// Messages per second over all connections, sent on a schedule; unpaced if absent.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Load-generating threads; default: one per CPU this process may run on.
    #[arg(long)]
    pub threads: Option<usize>,
    /// Print the result as one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// Runs the load, then prints the result.
pub fn run(options: &Options) -> Outcome<()> {
    let duration = seconds(options.duration, "--duration")?;
    let warmup = seconds(options.warmup, "--warmup")?;
    if duration.is_zero() {
        return Err(Failure::new("--duration must be more than 0"));
    }
    if let Some(rate) = options.rate.filter(|r| !(r.is_finite() && *r > 0.0)) {
        return Err(Failure::new(format!(
            "--rate must be a positive number, not {rate}"
        )));
    }
    let cpus = thread::available_parallelism().map_or(1, usize::from);
    let threads = options
        .threads
        .unwrap_or(cpus)
        .clamp(1, options.connections as usize);
    let plans = split(options, threads, warmup, duration);
    let shared = Arc::new(Shared::default());
    let barrier = Arc::new(Barrier::new(threads + 1));
    let handles: Vec<_> = plans
        .into_iter()
        .map(|plan| {
            let (shared, barrier) = (shared.clone(), barrier.clone());
            thread::Builder::new()
                .name("bench".into())
                .spawn(move || worker::run(&plan, &barrier, &shared))
                .context("starting a load thread")
        })
        .collect::<Outcome<_>>()?;
    barrier.wait();
    if !shared.aborted.load(Ordering::SeqCst) {
        show_progress(&shared, warmup, duration);
    }
    let mut measured: Vec<Measured> = Vec::new();
    for handle in handles {
        match handle.join() {
            Ok(Ok(m)) => measured.push(m),
            Ok(Err(e)) => return Err(Failure::new(e)),
            Err(_) => return Err(Failure::new("a load thread panicked")),
        }
    }
    let summary = report::Summary::new(options, threads, duration, &measured, &shared)?;
    summary.print(options.json).context("writing the result")
}

fn seconds(value: f64, name: &str) -> Outcome<Duration> {
    Duration::try_from_secs_f64(value).map_err(|e| Failure::new(format!("{name} {value}: {e}")))
}

/// Divides the connections (and the rate, in proportion) among the threads.
fn split(options: &Options, threads: usize, warmup: Duration, duration: Duration) -> Vec<Plan> {
    let total = options.connections;
    let per = total / threads as u64;
    let extra = total % threads as u64;
    let mut first = 0;
    (0..threads as u64)
        .map(|t| {
            let count = per + u64::from(t < extra);
            let ids = first..first + count;
            first += count;
            Plan {
                addr: options.addr,
                ids,
                size: options.size as usize,
                depth: options.depth as usize,
                rate: options.rate.map(|r| r * count as f64 / total as f64),
                warmup,
                duration,
            }
        })
        .collect()
}

/// Shows a progress bar on a terminal until the run is over; elsewhere just waits.
fn show_progress(shared: &Shared, warmup: Duration, duration: Duration) {
    let start = Instant::now();
    let end = start + warmup + duration;
    if !std::io::stderr().is_terminal() {
        thread::sleep(end.saturating_duration_since(Instant::now()));
        return;
    }
    let bar = ProgressBar::new((warmup + duration).as_millis() as u64);
    if let Ok(style) = ProgressStyle::with_template("{spinner} {elapsed:>4} [{bar:40}] {msg}") {
        bar.set_style(style.progress_chars("=> "));
    }
    let (mut last_count, mut last_time) = (0, start);
    loop {
        let now = Instant::now();
        if now >= end {
            break;
        }
        thread::sleep(Duration::from_millis(200).min(end - now));
        let now = Instant::now();
        let count = shared.completed.load(Ordering::Relaxed);
        let rate = (count - last_count) as f64 / (now - last_time).as_secs_f64();
        (last_count, last_time) = (count, now);
        let phase = if now < start + warmup {
            "warming up"
        } else {
            "measuring"
        };
        let errors = shared.errors.load(Ordering::Relaxed);
        bar.set_position((now - start).as_millis() as u64);
        bar.set_message(format!("{phase}: {rate:.0} msg/s, {errors} errors"));
    }
    bar.finish_and_clear();
}
