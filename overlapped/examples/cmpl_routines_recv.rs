//! CmplRoutinesRecv, the chapter's receiver that learns of its `WSARecv` through a completion
//! routine, ported line by line with the `winsock` facade.
//!
//! Usage: `cmpl_routines_recv <port>`. Listens on the port (all IPv4 addresses), accepts one
//! connection and starts an overlapped `WSARecv` with a completion routine. Then it waits,
//! alertably, on an event that nothing ever signals: the only way out of that wait is the
//! routine, which runs inside it, prints `Received message: Network is Computer!` (with
//! `overlapped_send` as the sender), after which the wait returns `WAIT_IO_COMPLETION` and the
//! program prints `Overlapped I/O Completed`. A receive that cannot complete at once first
//! prints `Background data receive`.
//!
//! The routine runs on this program's one thread, in its alertable wait: that is the point of
//! the model (S27, S28). The book keeps the buffer in a global for the routine to print; here the
//! buffer travels with the overlapped object, which the routine gets back (S26).
//!
//! What the book's version gets wrong, and this one does not: it checks neither `WSASocket` nor
//! `WSARecv` (a receive that fails at once leaves it in an infinite wait that nothing can end);
//! it prints its buffer with `%s` whatever arrived, reading past the received bytes when they
//! hold no NUL; and it takes the first piece of the stream for the whole message. Here every call
//! is checked, the message is the received bytes up to its NUL, and the routine starts the next
//! receive (routines may, S29) until the NUL arrives, the sender closes, or the buffer is full.

use std::cell::RefCell;
use std::net::{Ipv4Addr, SocketAddr};
use std::process;
use std::rc::Rc;

use overlapped::code_name;
use overlapped::winsock::{
    accept, bind, closesocket, listen, make_word, wsa_cleanup, wsa_close_event, wsa_create_event,
    wsa_get_last_error, wsa_recv, wsa_socket, wsa_startup, wsa_wait_for_multiple_events, WsaData,
    WsaOverlapped, AF_INET, INVALID_SOCKET, SOCKET, SOCKET_ERROR, SOCK_STREAM, WAIT_IO_COMPLETION,
    WSA_FLAG_OVERLAPPED, WSA_INFINITE, WSA_IO_PENDING,
};

const BUF_SIZE: usize = 1024;

/// What the routines have received so far, and whether the message is complete.
#[derive(Default)]
struct Received {
    message: Vec<u8>,
    done: bool,
}

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

    let overlapped = WsaOverlapped::new();
    let received = Rc::new(RefCell::new(Received::default()));
    let ev_obj = wsa_create_event(); // A dummy event: nothing signals it.
    start_receive(h_recv_sock, &overlapped, &received);

    // Each routine runs inside this wait and ends it; a routine that starts another receive
    // leaves the message unfinished, and the program waits again.
    while !received.borrow().done {
        let idx = wsa_wait_for_multiple_events(&[&ev_obj], false, WSA_INFINITE, true);
        if idx != WAIT_IO_COMPLETION {
            error_handling("WSAWaitForMultipleEvents() error");
        }
    }
    println!("Overlapped I/O Completed");

    wsa_close_event(ev_obj);
    if closesocket(h_recv_sock) == SOCKET_ERROR || closesocket(h_lisn_sock) == SOCKET_ERROR {
        error_handling("closesocket() error!");
    }
    wsa_cleanup();
}

/// Starts one overlapped receive of what room is left, with [`comp_routine`] as its routine.
fn start_receive(s: SOCKET, overlapped: &WsaOverlapped, received: &Rc<RefCell<Received>>) {
    let room = BUF_SIZE - received.borrow().message.len();
    let mut data_buf = vec![vec![0u8; room]];
    let mut recv_bytes: u32 = 0;
    let mut flags: u32 = 0;
    let received = received.clone();
    let routine = move |dw_error, sz_recv_bytes, lp_overlapped, flags| {
        comp_routine(s, &received, dw_error, sz_recv_bytes, lp_overlapped, flags)
    };

    if wsa_recv(
        s,
        &mut data_buf,
        &mut recv_bytes,
        &mut flags,
        Some(overlapped),
        Some(Box::new(routine)),
    ) == SOCKET_ERROR
    {
        if wsa_get_last_error() == WSA_IO_PENDING {
            println!("Background data receive");
        } else {
            // Failed at once: no routine will run (S4), so the wait would never end.
            error_handling("WSARecv() error");
        }
    }
    // Done at once: the routine is queued all the same (S30) and runs in the next wait.
}

/// The completion routine: takes the received bytes from the overlapped object, and either
/// prints the message or receives the rest of it.
fn comp_routine(
    s: SOCKET,
    received: &Rc<RefCell<Received>>,
    dw_error: u32,
    sz_recv_bytes: u32,
    lp_overlapped: WsaOverlapped,
    _flags: u32,
) {
    if dw_error != 0 {
        wsa_error_exit("CompRoutine error", dw_error);
    }
    let Ok(mut bufs) = lp_overlapped.take_buffers() else {
        error_handling_plain("CompRoutine error: the buffer did not come back");
    };
    let mut buf = bufs.pop().unwrap_or_default();
    buf.truncate(sz_recv_bytes as usize);

    let mut state = received.borrow_mut();
    state.message.extend_from_slice(&buf);
    let closed = sz_recv_bytes == 0;
    let whole = state.message.contains(&0) || state.message.len() >= BUF_SIZE;
    if !closed && !whole {
        drop(state);
        start_receive(s, &lp_overlapped, received);
        return;
    }
    if state.message.is_empty() {
        error_handling_plain("WSARecv() error: the connection closed before any data");
    }
    let end = state
        .message
        .iter()
        .position(|&b| b == 0)
        .unwrap_or(state.message.len());
    println!(
        "Received message: {}",
        String::from_utf8_lossy(&state.message[..end])
    );
    state.done = true;
}

/// The book's `ErrorHandling`, with the failed call's error code: prints and exits with 1.
fn error_handling(message: &str) -> ! {
    wsa_error_exit(message, wsa_get_last_error())
}

/// Prints `message` with the Winsock error `code` on stderr and exits with 1.
fn wsa_error_exit(message: &str, code: u32) -> ! {
    error_handling_plain(&format!("{message} ({} {code})", code_name(code)))
}

/// Prints `message` on stderr and exits with 1.
fn error_handling_plain(message: &str) -> ! {
    eprintln!("{message}");
    process::exit(1);
}
