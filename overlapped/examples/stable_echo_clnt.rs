//! StableEchoClnt, the book's echo client for its completion-port server, ported with the
//! `winsock` facade.
//!
//! Usage: `stable_echo_clnt <IP> <port>`. Connects (`Connected...........`), then reads lines
//! from standard input, after the prompt `Input message(Q to quit): `: each line is sent to the
//! server, and once as many bytes have come back, printed as `Message from server: <line>`. A
//! line `Q` or `q`, or the end of the input, ends the program. The client is "stable" because it
//! reads until the whole echo has arrived, however the server's replies are split.
//!
//! What the book's version gets wrong, and this one does not: it adds `recv`'s return value to
//! the count without looking at it, so a server that closes the connection (`recv` returns 0)
//! makes it loop forever, and a failed `recv` (-1) counts backwards; it receives up to
//! `BUF_SIZE - 1` bytes at an offset into a buffer of `BUF_SIZE`, which can write past its end;
//! it ignores the end of the input (`fgets` returns NULL) and sends the last line again; and it
//! checks neither `send` nor the socket's creation. Here a closed server or any failure is
//! reported on stderr and ends the program with status 1; each receive takes no more than what
//! is still missing of the echo, into a buffer of that size.

use std::io::{self, BufRead, Write};
use std::net::{IpAddr, SocketAddr};
use std::process;

use overlapped::code_name;
use overlapped::winsock::{
    closesocket, connect, make_word, socket, wsa_cleanup, wsa_get_last_error, wsa_recv, wsa_send,
    wsa_startup, WsaData, AF_INET, AF_INET6, INVALID_SOCKET, SOCKET, SOCKET_ERROR, SOCK_STREAM,
};

fn main() {
    let argv: Vec<String> = std::env::args().collect();
    if argv.len() != 3 {
        eprintln!("Usage : {} <IP> <port>", argv[0]);
        process::exit(1);
    }
    let Ok(ip) = argv[1].parse::<IpAddr>() else {
        error_handling_plain(&format!("invalid IP address: {}", argv[1]));
    };
    let port = match argv[2].parse::<u16>() {
        Ok(port) if port != 0 => port,
        _ => error_handling_plain(&format!("invalid port (1-65535): {}", argv[2])),
    };
    let serv_adr = SocketAddr::new(ip, port);
    let af = if ip.is_ipv4() { AF_INET } else { AF_INET6 };

    let mut wsa_data = WsaData::default();
    if wsa_startup(make_word(2, 2), &mut wsa_data) != 0 {
        error_handling("WSAStartup() error!");
    }
    let h_socket = socket(af, SOCK_STREAM, 0);
    if h_socket == INVALID_SOCKET {
        error_handling("socket() error");
    }
    if connect(h_socket, &serv_adr) == SOCKET_ERROR {
        error_handling("connect() error!");
    }
    println!("Connected...........");

    let stdin = io::stdin();
    let mut input = stdin.lock();
    let mut message = Vec::new();
    loop {
        prompt("Input message(Q to quit): ");
        message.clear();
        match input.read_until(b'\n', &mut message) {
            Ok(0) => break, // the end of the input
            Ok(_) => {}
            Err(e) => error_handling_plain(&format!("cannot read the input: {e}")),
        }
        if matches!(strip_newline(&message), b"q" | b"Q") {
            break;
        }
        send_all(h_socket, &message);
        let echo = recv_exactly(h_socket, message.len());
        let mut out = b"Message from server: ".to_vec();
        out.extend_from_slice(&echo);
        if !out.ends_with(b"\n") {
            out.push(b'\n');
        }
        write_stdout(&out);
    }

    if closesocket(h_socket) == SOCKET_ERROR {
        error_handling("closesocket() error");
    }
    wsa_cleanup();
}

/// The line without its line end (`\n` or `\r\n`).
fn strip_newline(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// Sends the whole message with a blocking `send` (which, on a stream, completes only when
/// every byte is taken).
fn send_all(h_socket: SOCKET, message: &[u8]) {
    let mut buf = vec![message.to_vec()];
    let mut sent = 0;
    if wsa_send(h_socket, &mut buf, &mut sent, 0, None, None) == SOCKET_ERROR {
        error_handling("send() error");
    }
}

/// Receives until `len` bytes have come back; a server that closes first is reported.
fn recv_exactly(h_socket: SOCKET, len: usize) -> Vec<u8> {
    let mut echo = Vec::with_capacity(len);
    // Each turn receives at least one byte or ends the program, so at most `len` turns.
    while echo.len() < len {
        let mut buf = vec![vec![0u8; len - echo.len()]];
        let (mut recv_len, mut flags) = (0, 0);
        if wsa_recv(h_socket, &mut buf, &mut recv_len, &mut flags, None, None) == SOCKET_ERROR {
            error_handling("recv() error");
        }
        if recv_len == 0 {
            error_handling_plain("The server closed the connection.");
        }
        echo.extend_from_slice(&buf[0][..recv_len as usize]);
    }
    echo
}

fn prompt(text: &str) {
    write_stdout(text.as_bytes());
}

/// Writes to stdout at once (the prompt has no line end); a closed stdout ends the program.
fn write_stdout(bytes: &[u8]) {
    let mut out = io::stdout().lock();
    if let Err(e) = out.write_all(bytes).and_then(|()| out.flush()) {
        error_handling_plain(&format!("cannot write the output: {e}"));
    }
}

/// The book's `ErrorHandling`, with the failed call's error code: prints and exits with 1.
fn error_handling(message: &str) -> ! {
    let code = wsa_get_last_error();
    error_handling_plain(&format!("{message} ({} {code})", code_name(code)))
}

/// Prints `message` on stderr and exits with 1.
fn error_handling_plain(message: &str) -> ! {
    eprintln!("{message}");
    process::exit(1);
}
