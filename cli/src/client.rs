//! `overlapped echo-client <ip> <port>`: an interactive echo client on the library's Rust API.
//!
//! It behaves as the chapter's `StableEchoClnt`: after the prompt `Input message(Q to quit): ` it
//! sends each line of standard input and prints `Message from server: <line>` once the whole echo
//! is back, however the server splits it. `Q` or `q`, or the end of the input, ends it. A server
//! that closes the connection or fails is reported and ends the program with an error, instead of
//! being waited on forever. Each send and receive is an overlapped operation whose completion is
//! read from its overlapped object.

use std::io::{self, BufRead, Write};
use std::net::{IpAddr, SocketAddr};

use clap::Args;
use overlapped::{codes, Error, Overlapped, Socket};

use crate::failure::{Context, Failure, Outcome};

/// The options of `echo-client`.
#[derive(Args, Debug)]
pub struct Options {
    /// The server's address.
    pub ip: IpAddr,
    /// The server's port.
    pub port: u16,
}

/// Connects, then echoes lines until `Q`, the end of the input, or a failure.
pub fn run(options: &Options) -> Outcome<()> {
    let addr = SocketAddr::new(options.ip, options.port);
    let sock = Socket::connect_tcp(addr).context(format_args!("connecting to {addr}"))?;
    println!("Connected...........");
    let ov: Overlapped = Overlapped::new();
    let mut input = io::stdin().lock();
    let mut line = String::new();
    loop {
        print!("Input message(Q to quit): ");
        io::stdout().flush().context("writing to stdout")?;
        line.clear();
        if input
            .read_line(&mut line)
            .context("reading standard input")?
            == 0
        {
            println!();
            return Ok(()); // the end of the input
        }
        let message = line.trim_end_matches(['\n', '\r']);
        if message == "q" || message == "Q" {
            return Ok(());
        }
        let echo = exchange(&sock, &ov, message.as_bytes())?;
        println!("Message from server: {}", String::from_utf8_lossy(&echo));
    }
}

/// Sends `message` and receives as many bytes back.
fn exchange(sock: &Socket, ov: &Overlapped, message: &[u8]) -> Outcome<Vec<u8>> {
    if message.is_empty() {
        return Ok(Vec::new());
    }
    let sent = sock.send(ov, vec![message.to_vec()], 0);
    sent.and_then(|_| ov.result(true))
        .map_err(|e| gone(e, "sending"))?;
    let mut echo = Vec::with_capacity(message.len());
    while echo.len() < message.len() {
        let missing = message.len() - echo.len();
        let received = sock.recv(ov, vec![vec![0; missing]], 0);
        let n = received
            .and_then(|_| ov.result(true))
            .map_err(|e| gone(e, "receiving"))?;
        if n == 0 {
            return Err(Failure::new("the server closed the connection"));
        }
        let buf = ov.take_buffers().context("receiving")?;
        echo.extend_from_slice(&buf[0][..n]);
    }
    Ok(echo)
}

/// A failure while `doing`; a connection the server reset or shut is reported as closed.
fn gone(e: Error, doing: &str) -> Failure {
    match e.code() {
        codes::WSAECONNRESET | codes::WSAECONNABORTED | codes::WSAESHUTDOWN => {
            Failure::new(format!("the server closed the connection ({doing}: {e})"))
        }
        _ => Failure::new(format!("{doing}: {e}")),
    }
}
