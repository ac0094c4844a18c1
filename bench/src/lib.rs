//! What the peer echo servers share: the command line (`--port`, and the io_uring server's
//! settings), the `listening on` line, and turning off Nagle's algorithm.
//!
//! Each server in `src/bin/` serves echo clients on one thread, binds 127.0.0.1, and prints
//! `listening on ADDRESS:PORT` (flushed) once it accepts connections, exactly like
//! `overlapped echo-server`, so the comparison script starts them all the same way.

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr};

/// The size of each connection's receive buffer in every peer server.
pub const BUF_SIZE: usize = 4096;

/// The address to listen on, from `--port P` (default 0: the kernel chooses).
pub fn listen_addr() -> SocketAddr {
    options(false).addr
}

/// What a server was asked for on its command line.
pub struct Options {
    /// Where to listen: 127.0.0.1 and `--port P` (default 0: the kernel chooses).
    pub addr: SocketAddr,
    /// `--batch-us N`: wait up to N µs for a batch of completions (default 0: no batching).
    pub batch_us: u32,
    /// `--plain`: no registered files or ring descriptor.
    pub plain: bool,
}

/// The command line's options: `--port P`, and where `uring` allows them (the io_uring server's
/// settings) `--batch-us N` and `--plain`.
pub fn options(uring: bool) -> Options {
    let mut args = std::env::args().skip(1);
    let (mut port, mut batch_us, mut plain) = (0u16, 0u32, false);
    while let Some(arg) = args.next() {
        if uring && arg == "--plain" {
            plain = true;
            continue;
        }
        let (name, value) = match arg.split_once('=') {
            Some((name, value)) => (name.to_owned(), Some(value.to_owned())),
            None => (arg.clone(), args.next()),
        };
        let parsed = match (name.as_str(), value) {
            ("--port", Some(v)) => v.parse().map(|p| port = p).ok(),
            ("--batch-us", Some(v)) if uring => v.parse().map(|us| batch_us = us).ok(),
            _ => None,
        };
        if parsed.is_none() {
            usage(&arg, uring);
        }
    }
    Options {
        addr: SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
        batch_us,
        plain,
    }
}

fn usage(arg: &str, uring: bool) -> ! {
    let settings = if uring {
        " [--batch-us N] [--plain]"
    } else {
        ""
    };
    eprintln!("unexpected argument {arg:?}; usage: [--port PORT]{settings}");
    std::process::exit(2)
}

/// Prints `listening on ADDRESS:PORT` and flushes it.
pub fn announce(bound: SocketAddr) {
    let mut out = std::io::stdout().lock();
    // A closed stdout only loses the announcement; the server still serves.
    let _ = writeln!(out, "listening on {bound}").and_then(|()| out.flush());
}

/// Exits with a message: the server cannot start.
pub fn fatal(what: &str, e: std::io::Error) -> ! {
    eprintln!("{what}: {e}");
    std::process::exit(1)
}

/// Turns off Nagle's algorithm on an accepted connection, as every server here does. A failure
/// only leaves the connection slower.
pub fn set_nodelay(fd: std::os::fd::RawFd) {
    let one: libc::c_int = 1;
    // SAFETY: `one` outlives the call and its size is passed.
    unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_NODELAY,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
}
