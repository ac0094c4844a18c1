//! The result of a run: throughput, latency percentiles and errors, as text or JSON.

use std::io::Write;
use std::sync::atomic::Ordering;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde_json::json;

use super::worker::{Measured, Shared};
use super::Options;
use crate::failure::{Failure, Outcome};

/// What a run measured, over all threads.
pub struct Summary<'a> {
    options: &'a Options,
    threads: usize,
    duration: Duration,
    messages: u64,
    latency_ns: Histogram<u64>,
    errors: u64,
    first_error: Option<String>,
}

impl<'a> Summary<'a> {
    pub fn new(
        options: &'a Options,
        threads: usize,
        duration: Duration,
        measured: &[Measured],
        shared: &Shared,
    ) -> Outcome<Summary<'a>> {
        let mut latency_ns = Histogram::new_from(&measured[0].latency_ns);
        for m in measured {
            latency_ns
                .add(&m.latency_ns)
                .map_err(|e| Failure::new(format!("merging histograms: {e}")))?;
        }
        let first_error = shared
            .first_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        Ok(Summary {
            options,
            threads,
            duration,
            messages: measured.iter().map(|m| m.messages).sum(),
            latency_ns,
            errors: shared.errors.load(Ordering::Relaxed),
            first_error,
        })
    }

    fn rate(&self) -> f64 {
        self.messages as f64 / self.duration.as_secs_f64()
    }

    /// A latency percentile in microseconds (0 when nothing was measured).
    fn micros(&self, percentile: f64) -> f64 {
        self.latency_ns.value_at_percentile(percentile) as f64 / 1000.0
    }

    /// Prints the summary on stdout.
    pub fn print(&self, as_json: bool) -> std::io::Result<()> {
        let mut out = std::io::stdout().lock();
        if as_json {
            let o = self.options;
            let value = json!({
                "addr": o.addr.to_string(),
                "connections": o.connections,
                "size": o.size,
                "depth": o.depth,
                "rate": o.rate,
                "threads": self.threads,
                "duration_s": self.duration.as_secs_f64(),
                "messages": self.messages,
                "msgs_per_s": self.rate(),
                "latency_us": {
                    "p50": self.micros(50.0),
                    "p99": self.micros(99.0),
                    "p999": self.micros(99.9),
                    "max": self.latency_ns.max() as f64 / 1000.0,
                    "mean": self.latency_ns.mean() / 1000.0,
                },
                "errors": self.errors,
                "first_error": self.first_error,
            });
            writeln!(out, "{value}")?;
        } else {
            let offered = match self.options.rate {
                Some(rate) => format!(" (offered {rate:.0} msg/s)"),
                None => String::new(),
            };
            writeln!(
                out,
                "{} messages in {:.2} s: {:.0} msg/s{offered}",
                self.messages,
                self.duration.as_secs_f64(),
                self.rate()
            )?;
            writeln!(
                out,
                "latency: p50 {:.1} us, p99 {:.1} us, p99.9 {:.1} us, max {:.1} us",
                self.micros(50.0),
                self.micros(99.0),
                self.micros(99.9),
                self.latency_ns.max() as f64 / 1000.0
            )?;
            write!(out, "errors: {}", self.errors)?;
            match &self.first_error {
                Some(e) => writeln!(out, " (first: {e})")?,
                None => writeln!(out)?,
            }
        }
        out.flush()
    }
}
