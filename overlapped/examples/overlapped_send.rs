//! OverlappedSend, the chapter's first overlapped program, ported line by line with the
//! `winsock` facade.
//!
//! Usage: `overlapped_send <IP> <port>`. Connects to the receiver (`overlapped_recv`), sends
//! "Network is Computer!" with its terminating NUL (21 bytes) in one overlapped `WSASend` whose
//! completion signals an event, and prints `Send data size: 21`. If the send cannot complete at
//! once it first prints `Background data send`, waits for the event and collects the byte count
//! with `WSAGetOverlappedResult`.
//!
//! What the book's version gets wrong, and this one does not: it checks neither `WSASocket`, nor
//! the wait, nor `WSAGetOverlappedResult` (whose flags argument it passes as NULL, which Windows
//! does not allow); it takes a mistyped address or port silently (`inet_addr`, `atoi`). Here
//! every call is checked, and any failure prints what failed, with its error code, and exits
//! with status 1.

use std::net::{IpAddr, SocketAddr};
use std::process;

use overlapped::code_name;
use overlapped::winsock::{
    closesocket, connect, make_word, wsa_cleanup, wsa_close_event, wsa_create_event,
    wsa_get_last_error, wsa_get_overlapped_result, wsa_send, wsa_socket, wsa_startup,
    wsa_wait_for_multiple_events, WsaData, WsaOverlapped, AF_INET, AF_INET6, INVALID_SOCKET,
    SOCKET_ERROR, SOCK_STREAM, WSA_FLAG_OVERLAPPED, WSA_INFINITE, WSA_IO_PENDING, WSA_WAIT_FAILED,
};

fn main() {
    let argv: Vec<String> = std::env::args().collect();
    if argv.len() != 3 {
        eprintln!("Usage: {} <IP> <port>", argv[0]);
        process::exit(1);
    }
    let Ok(ip) = argv[1].parse::<IpAddr>() else {
        error_handling_plain(&format!("invalid IP address: {}", argv[1]));
    };
    let port = match argv[2].parse::<u16>() {
        Ok(port) if port != 0 => port,
        _ => error_handling_plain(&format!("invalid port (1-65535): {}", argv[2])),
    };
    let send_adr = SocketAddr::new(ip, port);
    let af = if ip.is_ipv4() { AF_INET } else { AF_INET6 };

    let mut wsa_data = WsaData::default();
    if wsa_startup(make_word(2, 2), &mut wsa_data) != 0 {
        error_handling("WSAStartup() error!");
    }

    let h_socket = wsa_socket(af, SOCK_STREAM, 0, WSA_FLAG_OVERLAPPED);
    if h_socket == INVALID_SOCKET {
        error_handling("WSASocket() error!");
    }
    if connect(h_socket, &send_adr) == SOCKET_ERROR {
        error_handling("connect() error!");
    }

    let ev_obj = wsa_create_event();
    let overlapped = WsaOverlapped::with_event(ev_obj.clone());
    let msg = b"Network is Computer!\0";
    let mut data_buf = vec![msg.to_vec()];
    let mut send_bytes: u32 = 0;

    if wsa_send(
        h_socket,
        &mut data_buf,
        &mut send_bytes,
        0,
        Some(&overlapped),
        None,
    ) == SOCKET_ERROR
    {
        if wsa_get_last_error() == WSA_IO_PENDING {
            println!("Background data send");
            if wsa_wait_for_multiple_events(&[&ev_obj], true, WSA_INFINITE, false)
                == WSA_WAIT_FAILED
            {
                error_handling("WSAWaitForMultipleEvents() error!");
            }
            let mut flags = 0;
            if !wsa_get_overlapped_result(h_socket, &overlapped, &mut send_bytes, false, &mut flags)
            {
                error_handling("WSAGetOverlappedResult() error!");
            }
        } else {
            error_handling("WSASend() error!");
        }
    }

    println!("Send data size: {send_bytes}");
    wsa_close_event(ev_obj);
    if closesocket(h_socket) == SOCKET_ERROR {
        error_handling("closesocket() error!");
    }
    wsa_cleanup();
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
