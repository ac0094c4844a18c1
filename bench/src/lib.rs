//! What the peer echo servers share: the `--port` option and the `listening on` line.
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
    let mut args = std::env::args().skip(1);
    let mut port = 0u16;
    while let Some(arg) = args.next() {
        let value = match arg.as_str() {
            "--port" => args.next(),
            other => other.strip_prefix("--port=").map(str::to_owned),
        };
        match value.map(|v| v.parse()) {
            Some(Ok(p)) => port = p,
            _ => usage(&arg),
        }
    }
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

fn usage(arg: &str) -> ! {
    eprintln!("unexpected argument {arg:?}; usage: [--port PORT]");
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
