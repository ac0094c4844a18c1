//! OverlappedRecv, the receiving half of the chapter's first overlapped program, ported line by
//! line with the `winsock` facade.
//!
//! Usage: `overlapped_recv <port>`. Listens on the port (all IPv4 addresses), accepts one
//! connection, receives with an overlapped `WSARecv` whose completion signals an event, and prints
//! the message as a string: `Received message: Network is Computer!` when `overlapped_send` is
//! the sender. A receive that cannot complete at once first prints `Background data receive`.
//!
//! What the book's version gets wrong, and this one does not: it checks neither `WSASocket`, nor
//! `accept`, nor the wait, nor `WSAGetOverlappedResult` (passing NULL for its flags); it prints
//! its buffer with `%s` whatever arrived, reading past the received bytes when they hold no NUL;
//! and it takes the first piece of the stream for the whole message. Here every call is
//! checked, the message is the received bytes up to its NUL, and receiving goes on until the NUL
//! arrives, the sender closes, or the buffer is full.

use std::net::{Ipv4Addr, SocketAddr};
use std::process;

use overlapped::code_name;
use overlapped::winsock::{
    accept, bind, closesocket, listen, make_word, wsa_cleanup, wsa_close_event, wsa_create_event,
    wsa_get_last_error, wsa_get_overlapped_result, wsa_recv, wsa_socket, wsa_startup,
    wsa_wait_for_multiple_events, WsaData, WsaEvent, WsaOverlapped, AF_INET, INVALID_SOCKET,
    SOCKET, SOCKET_ERROR, SOCK_STREAM, WSA_FLAG_OVERLAPPED, WSA_INFINITE, WSA_IO_PENDING,
    WSA_WAIT_FAILED,
};

const BUF_SIZE: usize = 1024;

fn main() {
    let argv: Vec<String> = std::env::args().collect();
    if argv.len() != 2 {
        eprintln!("Usage : {} <port>", argv[0]);
        process::exit(1);
    }
    let port = match argv[1].parse::<u16>() {
        Ok(port) if port != 0 => port,
        _ => error_handling_plain(&format!("invalid port (1-65535): {}", argv[1])),
    };

    let mut wsa_data = WsaData::default();
    if wsa_startup(make_word(2, 2), &mut wsa_data) != 0 {
        error_handling("WSAStartup() error!");
    }

    let h_lisn_sock = wsa_socket(AF_INET, SOCK_STREAM, 0, WSA_FLAG_OVERLAPPED);
    if h_lisn_sock == INVALID_SOCKET {
        error_handling("WSASocket() error!");
    }
    let lisn_adr = SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), port);
    if bind(h_lisn_sock, &lisn_adr) == SOCKET_ERROR {
        error_handling("bind() error");
    }
    if listen(h_lisn_sock, 5) == SOCKET_ERROR {
        error_handling("listen() error");
    }

    let mut recv_adr = lisn_adr;
    let h_recv_sock = accept(h_lisn_sock, Some(&mut recv_adr));
    if h_recv_sock == INVALID_SOCKET {
        error_handling("accept() error");
    }

    let ev_obj = wsa_create_event();
    let overlapped = WsaOverlapped::with_event(ev_obj.clone());
    let mut message: Vec<u8> = Vec::with_capacity(BUF_SIZE);
    while !message.contains(&0) && message.len() < BUF_SIZE {
        let received = receive(h_recv_sock, &overlapped, &ev_obj, BUF_SIZE - message.len());
        if received.is_empty() {
            break; // The sender closed the connection.
        }
        message.extend_from_slice(&received);
    }
    if message.is_empty() {
        error_handling_plain("WSARecv() error: the connection closed before any data");
    }
    let end = message
        .iter()
        .position(|&b| b == 0)
        .unwrap_or(message.len());

    println!(
        "Received message: {}",
        String::from_utf8_lossy(&message[..end])
    );
    wsa_close_event(ev_obj);
    if closesocket(h_recv_sock) == SOCKET_ERROR || closesocket(h_lisn_sock) == SOCKET_ERROR {
        error_handling("closesocket() error!");
    }
    wsa_cleanup();
}

/// One overlapped receive of at most `room` bytes, as the book does it: start it, and if it is
/// pending, wait for its event and collect its result. Returns the bytes received; none when the
/// sender has closed.
fn receive(s: SOCKET, overlapped: &WsaOverlapped, ev_obj: &WsaEvent, room: usize) -> Vec<u8> {
    let mut data_buf = vec![vec![0u8; room]];
    let mut recv_bytes: u32 = 0;
    let mut flags: u32 = 0;

    if wsa_recv(
        s,
        &mut data_buf,
        &mut recv_bytes,
        &mut flags,
        Some(overlapped),
        None,
    ) == SOCKET_ERROR
    {
        if wsa_get_last_error() == WSA_IO_PENDING {
            println!("Background data receive");
            if wsa_wait_for_multiple_events(&[ev_obj], true, WSA_INFINITE, false) == WSA_WAIT_FAILED
            {
                error_handling("WSAWaitForMultipleEvents() error!");
            }
            if !wsa_get_overlapped_result(s, overlapped, &mut recv_bytes, false, &mut flags) {
                error_handling("WSAGetOverlappedResult() error!");
            }
        } else {
            error_handling("WSARecv() error");
        }
    }

    // The buffer comes back from the overlapped object now that the receive is over.
    let Ok(mut bufs) = overlapped.take_buffers() else {
        error_handling_plain("WSARecv() error: the buffer did not come back");
    };
    let mut buf = bufs.pop().unwrap_or_default();
    buf.truncate(recv_bytes as usize);
    buf
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
