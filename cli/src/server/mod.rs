//! `overlapped echo-server`: an echo server on one of the notification models.
//!
//! Everything that does not depend on the model lives here: the options, creating the listening
//! socket, and announcing the bound address. The announcement is the line
//! `listening on ADDRESS:PORT`, flushed at once, so that scripts and tests that start the server
//! with `--port 0` can read which port the kernel chose. Each model is a sibling file with one
//! entry point taking the listener; `--model port` is added by writing its file and a variant
//! of [`Model`].

mod accept;
mod echo_buf;
mod event;
mod port;
mod routine;

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use clap::{Args, ValueEnum};
use overlapped::Socket;

use crate::failure::{Context, Outcome};

/// How the server learns that an operation finished.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Model {
    /// One event per connection, waited on all at once (`WSAWaitForMultipleEvents`).
    Event,
    /// Completion routines: each connection a chain of routines, run in alertable waits.
    Routine,
    /// A completion port drained by worker threads (`--threads`).
    Port,
}

impl std::fmt::Display for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Model::Event => "event (one event per connection, all waited on together)",
            Model::Routine => "routine (completion routines, run in one thread's alertable waits)",
            Model::Port => "port (a completion port drained by worker threads)",
        })
    }
}

/// The options of `echo-server`.
#[derive(Args, Debug)]
pub struct Options {
    /// The notification model.
    #[arg(long, value_enum)]
    pub model: Model,
    /// The port to listen on; 0 lets the kernel choose one.
    #[arg(long, default_value_t = 9190)]
    pub port: u16,
    /// The address to listen on.
    #[arg(long, default_value_t = IpAddr::V4(Ipv4Addr::LOCALHOST))]
    pub address: IpAddr,
    /// Worker threads of the port model; 0 means one per CPU.
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Port model: let the thread waiting in the kernel gather completions until this many
    /// microseconds have passed since its wait began, or 64 have come (0: off). Less CPU per
    /// message when the window holds many messages, for up to that much more latency; needs
    /// io_uring on Linux 6.12 or later.
    #[arg(long, default_value_t = 0)]
    pub batch_us: u64,
    /// Port model: keep a receive buffer posted on every connection (one buffer pinned per idle
    /// connection) instead of a pooled receive.
    #[arg(long, conflicts_with = "pool_buffers")]
    pub pin_buffers: bool,
    /// Port model: the pool that connections' receives take a buffer from when data arrives
    /// (4,096 buffers of 4 KiB by default, at most 32,768); 0 waits for data with zero-byte
    /// receives instead, as Windows servers do (one more system call per message). Pools need
    /// io_uring on Linux 5.19 or later, or the epoll backend; without this option the server
    /// falls back to zero-byte receives where they are missing.
    #[arg(long)]
    pub pool_buffers: Option<usize>,
    /// Port model with a pool: post each receive on its own, instead of letting connections
    /// receive ahead (one receive kept in the kernel for as long as data comes, on io_uring).
    #[arg(long, conflicts_with = "pin_buffers")]
    pub no_receive_ahead: bool,
    /// Print a line for each connection that opens or closes.
    #[arg(long, short)]
    pub verbose: bool,
}

/// Connections queued in the kernel before the server accepts them.
const BACKLOG: i32 = 1024;

/// Binds, announces the address, and serves until killed or a fatal error.
pub fn run(options: &Options) -> Outcome<()> {
    let addr = SocketAddr::new(options.address, options.port);
    let listener =
        Socket::listen_tcp(addr, BACKLOG).context(format_args!("listening on {addr}"))?;
    let bound = listener
        .local_addr()
        .context("reading the listener's address")?;
    let backend = overlapped::backend_info().context("setting up the backend")?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "listening on {bound}")
        .and_then(|()| writeln!(out, "model: {}; backend: {}", options.model, backend.kind))
        .and_then(|()| out.flush())
        .context("writing to stdout")?;
    drop(out);
    match options.model {
        Model::Event => event::serve(listener, options.verbose),
        Model::Routine => routine::serve(listener, options.verbose),
        Model::Port => {
            let pool = options.pool_buffers.unwrap_or(port::DEFAULT_POOL_BUFFERS);
            let receive = match (options.pin_buffers, pool) {
                (true, _) => port::Receive::Pinned,
                (false, 0) => port::Receive::ZeroByte,
                (false, count) => port::Receive::Pooled {
                    count,
                    or_zero_byte: options.pool_buffers.is_none(),
                    ahead: !options.no_receive_ahead,
                },
            };
            let tuning = port::Tuning {
                threads: options.threads,
                batch_us: options.batch_us,
                receive,
            };
            port::serve(listener, tuning, options.verbose)
        }
    }
}
