//! CmplRouEchoServ, the chapter's echo server built on completion routines alone, ported with
//! the `winsock` facade.
//!
//! Usage: `cmpl_rou_echo_serv <port>`. Listens on the port (all IPv4 addresses) and echoes what
//! each client sends, printing `Client connected.....` and `Client disconnected.....` as the
//! book's server does. Each connection has one overlapped object and one buffer, which go round
//! a chain of routines: the receive's routine ([`read_comp_routine`]) sends what arrived, the
//! send's routine ([`write_comp_routine`]) posts the next receive. Every routine runs on the main
//! thread, which issued every operation, inside its alertable wait (S27); routines start the
//! next operation themselves (S29).
//!
//! # Accepting without polling
//! The book makes its listening socket non-blocking and loops on `SleepEx(100, TRUE)` then
//! `accept`: the thread is alertable only while it sleeps, and a new client waits up to 100 ms
//! while an idle server wakes ten times a second for nothing. Here a helper thread blocks in
//! `accept` and hands each new socket over through a queue and an event; the main thread waits
//! on that event with `WaitForSingleObjectEx(..., TRUE)`, which returns `WAIT_OBJECT_0` when a
//! client arrives and `WAIT_IO_COMPLETION` after running routines, and never otherwise. The main
//! thread resets the event *before* it drains the queue, so a socket queued after the drain
//! leaves the event set for the next wait.
//!
//! What the book's version gets wrong, and this one does not: it ignores `dwError`, so a reset
//! connection is taken for data; it checks neither `WSARecv` nor `WSASend`, so an operation that
//! fails at once (no routine will come, S4) leaves its connection open and forgotten; and it
//! never gives the buffer its full length back after an echo, so each receive is limited to the
//! size of the message before it. Here every error is checked: a failed operation closes its
//! connection, says so on stderr, and the server goes on.

use std::collections::VecDeque;
use std::net::{Ipv4Addr, SocketAddr};
use std::process;
use std::sync::{Arc, Mutex};
use std::thread;

use overlapped::code_name;
use overlapped::winsock::{
    accept, bind, closesocket, listen, make_word, wait_for_single_object_ex, wsa_create_event,
    wsa_get_last_error, wsa_recv, wsa_reset_event, wsa_send, wsa_set_event, wsa_socket,
    wsa_startup, WsaData, WsaEvent, WsaOverlapped, AF_INET, INFINITE, INVALID_SOCKET, SOCKET,
    SOCKET_ERROR, SOCK_STREAM, WAIT_IO_COMPLETION, WAIT_OBJECT_0, WSAECONNABORTED, WSAECONNRESET,
    WSA_FLAG_OVERLAPPED, WSA_IO_PENDING,
};

const BUF_SIZE: usize = 1024;

/// Sockets accepted by the helper thread, waiting for the main thread.
type Incoming = Arc<Mutex<VecDeque<SOCKET>>>;

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

    let accepted = wsa_create_event();
    let incoming = Incoming::default();
    spawn_acceptor(h_lisn_sock, incoming.clone(), accepted.clone());

    loop {
        match wait_for_single_object_ex(&accepted, INFINITE, true) {
            WAIT_IO_COMPLETION => {} // Routines ran: echoes and receives went on.
            WAIT_OBJECT_0 => {
                wsa_reset_event(&accepted);
                while let Some(h_recv_sock) = pop(&incoming) {
                    println!("Client connected.....");
                    start_receive(h_recv_sock, WsaOverlapped::new());
                }
            }
            _ => error_handling("WaitForSingleObjectEx() error"),
        }
    }
}

/// Starts the thread that blocks in `accept` and hands each new socket to the main thread.
fn spawn_acceptor(h_lisn_sock: SOCKET, incoming: Incoming, accepted: WsaEvent) {
    let spawned = thread::Builder::new().name("accept".into()).spawn(move || {
        // Bounded by the process: the thread ends when `accept` fails for good (then the whole
        // server exits) or when the main thread exits.
        loop {
            let mut recv_adr = SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), 0);
            let h_recv_sock = accept(h_lisn_sock, Some(&mut recv_adr));
            if h_recv_sock == INVALID_SOCKET {
                match wsa_get_last_error() {
                    // A client that gave up before it was accepted: not the server's failure.
                    WSAECONNABORTED | WSAECONNRESET => continue,
                    _ => error_handling("accept() error"),
                }
            }
            incoming
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push_back(h_recv_sock);
            wsa_set_event(&accepted);
        }
    });
    if let Err(e) = spawned {
        error_handling_plain(&format!("cannot start the accepting thread: {e}"));
    }
}

fn pop(incoming: &Incoming) -> Option<SOCKET> {
    incoming
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .pop_front()
}

/// Posts a receive into a buffer of full size, with [`read_comp_routine`] as its routine. A
/// receive that fails at once ends the connection (its routine would never run).
fn start_receive(h_sock: SOCKET, lp_overlapped: WsaOverlapped) {
    let mut buf_info = vec![vec![0u8; BUF_SIZE]];
    let mut recv_bytes: u32 = 0;
    let mut flag_info: u32 = 0;
    let routine = move |dw_error, sz_recv_bytes, lp_overlapped, flags| {
        read_comp_routine(h_sock, dw_error, sz_recv_bytes, lp_overlapped, flags)
    };
    if wsa_recv(
        h_sock,
        &mut buf_info,
        &mut recv_bytes,
        &mut flag_info,
        Some(&lp_overlapped),
        Some(Box::new(routine)),
    ) == SOCKET_ERROR
        && wsa_get_last_error() != WSA_IO_PENDING
    {
        client_failed(h_sock, "WSARecv()", wsa_get_last_error());
    }
}

/// The receive's routine: echoes what arrived, or closes the connection when the client has
/// closed (0 bytes, S10) or the receive failed.
fn read_comp_routine(
    h_sock: SOCKET,
    dw_error: u32,
    sz_recv_bytes: u32,
    lp_overlapped: WsaOverlapped,
    _flags: u32,
) {
    if dw_error != 0 {
        return client_failed(h_sock, "WSARecv()", dw_error);
    }
    if sz_recv_bytes == 0 {
        return disconnect(h_sock);
    }
    let mut buf_info = match lp_overlapped.take_buffers() {
        Ok(bufs) => bufs,
        Err(e) => return client_failed(h_sock, "taking back the buffer", e.code()),
    };
    buf_info[0].truncate(sz_recv_bytes as usize);
    let mut sent_bytes: u32 = 0;
    let routine = move |dw_error, sz_send_bytes, lp_overlapped, flags| {
        write_comp_routine(h_sock, dw_error, sz_send_bytes, lp_overlapped, flags)
    };
    if wsa_send(
        h_sock,
        &mut buf_info,
        &mut sent_bytes,
        0,
        Some(&lp_overlapped),
        Some(Box::new(routine)),
    ) == SOCKET_ERROR
        && wsa_get_last_error() != WSA_IO_PENDING
    {
        client_failed(h_sock, "WSASend()", wsa_get_last_error());
    }
}

/// The send's routine: posts the next receive with the same overlapped object.
fn write_comp_routine(
    h_sock: SOCKET,
    dw_error: u32,
    _sz_send_bytes: u32,
    lp_overlapped: WsaOverlapped,
    _flags: u32,
) {
    if dw_error != 0 {
        return client_failed(h_sock, "WSASend()", dw_error);
    }
    start_receive(h_sock, lp_overlapped);
}

/// Reports a failed operation of one client and ends that connection.
fn client_failed(h_sock: SOCKET, what: &str, code: u32) {
    eprintln!("{what} error ({} {code})", code_name(code));
    disconnect(h_sock);
}

/// Closes a client's socket, as the book does when its client has gone.
fn disconnect(h_sock: SOCKET) {
    if closesocket(h_sock) == SOCKET_ERROR {
        let code = wsa_get_last_error();
        eprintln!("closesocket() error ({} {code})", code_name(code));
    }
    println!("Client disconnected.....");
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
