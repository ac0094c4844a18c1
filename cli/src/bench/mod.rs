//! `overlapped bench`: a load generator for echo servers.

use clap::Args;

use crate::failure::{Failure, Outcome};

/// The options of `bench`.
#[derive(Args, Debug)]
pub struct Options {}

/// Runs the benchmark.
pub fn run(_options: &Options) -> Outcome<()> {
    Err(Failure::new("bench: not implemented yet"))
}
