//! IOCPEchoServ, the book's echo server on an I/O completion port, ported with the `winsock`
//! facade.
//!
//! Usage: `iocp_echo_serv <port>`. Listens on the port (all IPv4 addresses), creates a
//! completion port and one worker thread per CPU, and echoes what each client sends. The main
//! thread accepts connections, associates each with the port and posts its first receive; the
//! workers take the packets (`GetQueuedCompletionStatus`): a finished receive is echoed back
//! (`message received!`), a finished send posts the next receive (`message sent!`), and a
//! receive of 0 bytes (the client closed) closes the connection.
//!
//! # What the book's version gets wrong, and this one does not
//! - It passes the address of its per-connection data as the completion key through a `DWORD`,
//!   which cuts a 64-bit pointer in half. Here the key is the connection's `SOCKET` handle, a
//!   `usize` kept whole, and the per-connection data ([`PerHandleData`]) lives in a map from key
//!   to `Arc`, owned by nobody's stack.
//! - It posts the next receive right after starting a send, so two operations of one connection
//!   are in flight at once, and two workers may hold its data at the same moment: when one of
//!   them sees the end of the stream and frees it, the other goes on using it (a use after free).
//!   Here a connection has one operation in flight at a time — receive, then the echo's send,
//!   then the next receive — and its state is behind a lock that the thread starting its next
//!   operation holds until the call has returned. A worker that takes the packet of that
//!   operation (which may come before the call returns) waits for the lock, so the connection
//!   and its overlapped object are only ever in one thread's hands, and the thread that closes
//!   the connection is the last to touch it. Its data is reference-counted besides.
//! - It ignores the `BOOL` of `GetQueuedCompletionStatus`, so a failed operation (a reset
//!   connection, say) is taken for data, and a wait that failed leaves its pointers garbage. Here
//!   a failed packet closes that connection cleanly (said on stderr) and the server goes on; a
//!   failure of the port itself is fatal.
//! - It checks neither `WSARecv` nor `WSASend`: an operation that fails at once posts no packet
//!   (S4), so its connection would stay open and forgotten. Here every call is checked.
//! - It never gives the receive buffer its full length back after an echo; here it does.

use std::collections::HashMap;
use std::io::{self, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::process;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;

use overlapped::code_name;
use overlapped::winsock::{
    accept, bind, closesocket, create_io_completion_port, get_last_error,
    get_queued_completion_status, listen, make_word, wsa_get_last_error, wsa_recv, wsa_send,
    wsa_socket, wsa_startup, WsaData, WsaOverlapped, AF_INET, ERROR_ABANDONED_WAIT_0, HANDLE,
    INFINITE, INVALID_HANDLE_VALUE, INVALID_SOCKET, SOCKET, SOCKET_ERROR, SOCK_STREAM,
    WSAECONNABORTED, WSAECONNRESET, WSA_FLAG_OVERLAPPED, WSA_IO_PENDING,
};

const BUF_SIZE: usize = 100;

/// Which operation of a connection is in flight (the book's `rwMode`).
#[derive(Clone, Copy, PartialEq, Eq)]
enum RwMode {
    Read,
    Write,
}

/// One connection (the book's `PER_HANDLE_DATA`, plus its `rwMode`): its socket, the client's
/// address, and which of its operations is in flight. The thread that handles the connection
/// holds the lock on `rw_mode` from taking its packet until its next operation has started.
struct PerHandleData {
    h_clnt_sock: SOCKET,
    clnt_adr: SocketAddr,
    rw_mode: Mutex<RwMode>,
}

/// The connections by completion key (their `SOCKET` handle, which is never reused).
type Clients = Arc<Mutex<HashMap<usize, Arc<PerHandleData>>>>;

fn locked<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
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

    let Some(h_com_port) = create_io_completion_port(INVALID_HANDLE_VALUE, None, 0, 0) else {
        error_handling("CreateIoCompletionPort() error!");
    };
    let clients = Clients::default();
    let processors = thread::available_parallelism().map_or(1, |n| n.get());
    for i in 0..processors {
        let clients = clients.clone();
        let spawned = thread::Builder::new()
            .name(format!("echo-{i}"))
            .spawn(move || echo_thread_main(h_com_port, clients));
        if let Err(e) = spawned {
            error_handling_plain(&format!("cannot start a worker thread: {e}"));
        }
    }

    let h_serv_sock = wsa_socket(AF_INET, SOCK_STREAM, 0, WSA_FLAG_OVERLAPPED);
    if h_serv_sock == INVALID_SOCKET {
        error_handling("WSASocket() error!");
    }
    let serv_adr = SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), port);
    if bind(h_serv_sock, &serv_adr) == SOCKET_ERROR {
        error_handling("bind() error");
    }
    if listen(h_serv_sock, 5) == SOCKET_ERROR {
        error_handling("listen() error");
    }

    // The server runs until it is stopped; each turn accepts one connection.
    loop {
        let mut clnt_adr = SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), 0);
        let h_clnt_sock = accept(h_serv_sock, Some(&mut clnt_adr));
        if h_clnt_sock == INVALID_SOCKET {
            match wsa_get_last_error() {
                // A client that gave up before it was accepted: not the server's failure.
                WSAECONNABORTED | WSAECONNRESET => continue,
                _ => error_handling("accept() error"),
            }
        }
        let handle_info = Arc::new(PerHandleData {
            h_clnt_sock,
            clnt_adr,
            rw_mode: Mutex::new(RwMode::Read),
        });
        let mut rw_mode = locked(&handle_info.rw_mode);
        locked(&clients).insert(h_clnt_sock, handle_info.clone());
        // The key is the socket handle itself: a usize, nothing truncated.
        if create_io_completion_port(h_clnt_sock, Some(h_com_port), h_clnt_sock, 0).is_none() {
            client_failed(
                &clients,
                &handle_info,
                "CreateIoCompletionPort()",
                get_last_error(),
            );
            continue;
        }
        let io_info = WsaOverlapped::new();
        start_recv(
            &clients,
            &handle_info,
            &mut rw_mode,
            io_info,
            vec![0; BUF_SIZE],
        );
    }
}

/// A worker: takes packets off the port until the port is closed.
fn echo_thread_main(h_com_port: HANDLE, clients: Clients) {
    loop {
        let mut bytes_trans: u32 = 0;
        let mut key: usize = 0;
        let mut io_info: Option<WsaOverlapped> = None;
        let ok = get_queued_completion_status(
            h_com_port,
            &mut bytes_trans,
            &mut key,
            &mut io_info,
            INFINITE,
        );
        let Some(io_info) = io_info else {
            // No packet: the wait itself failed.
            if get_last_error() == ERROR_ABANDONED_WAIT_0 {
                return;
            }
            error_handling("GetQueuedCompletionStatus() error");
        };
        let Some(handle_info) = locked(&clients).get(&key).cloned() else {
            complain(&format!("a packet for an unknown connection (key {key})"));
            continue;
        };
        // Waits, if need be, until the thread that started this operation is done with it.
        let mut rw_mode = locked(&handle_info.rw_mode);
        if !ok {
            let what = match *rw_mode {
                RwMode::Read => "WSARecv()",
                RwMode::Write => "WSASend()",
            };
            client_failed(&clients, &handle_info, what, get_last_error());
            continue;
        }
        let mut buf_info = match io_info.take_buffers() {
            Ok(mut bufs) if bufs.len() == 1 => bufs.remove(0),
            Ok(_) => {
                let code = overlapped::codes::WSAEINVAL;
                client_failed(&clients, &handle_info, "taking back the buffer", code);
                continue;
            }
            Err(e) => {
                client_failed(&clients, &handle_info, "taking back the buffer", e.code());
                continue;
            }
        };
        match *rw_mode {
            RwMode::Read => {
                say("message received!");
                if bytes_trans == 0 {
                    // The client closed its side (S10).
                    close_client(&clients, &handle_info);
                    continue;
                }
                buf_info.truncate(bytes_trans as usize);
                start_send(&clients, &handle_info, &mut rw_mode, io_info, buf_info);
            }
            RwMode::Write => {
                say("message sent!");
                buf_info.resize(BUF_SIZE, 0);
                start_recv(&clients, &handle_info, &mut rw_mode, io_info, buf_info);
            }
        }
    }
}

/// Posts a receive for the connection; one that fails at once ends it (no packet will come).
fn start_recv(
    clients: &Clients,
    handle_info: &PerHandleData,
    rw_mode: &mut RwMode,
    io_info: WsaOverlapped,
    buf: Vec<u8>,
) {
    *rw_mode = RwMode::Read;
    let mut buf_info = vec![buf];
    let (mut recv_bytes, mut flags) = (0, 0);
    if wsa_recv(
        handle_info.h_clnt_sock,
        &mut buf_info,
        &mut recv_bytes,
        &mut flags,
        Some(&io_info),
        None,
    ) == SOCKET_ERROR
        && wsa_get_last_error() != WSA_IO_PENDING
    {
        client_failed(clients, handle_info, "WSARecv()", wsa_get_last_error());
    }
}

/// Sends the echo; a send that fails at once ends the connection.
fn start_send(
    clients: &Clients,
    handle_info: &PerHandleData,
    rw_mode: &mut RwMode,
    io_info: WsaOverlapped,
    buf: Vec<u8>,
) {
    *rw_mode = RwMode::Write;
    let mut buf_info = vec![buf];
    let mut sent_bytes = 0;
    if wsa_send(
        handle_info.h_clnt_sock,
        &mut buf_info,
        &mut sent_bytes,
        0,
        Some(&io_info),
        None,
    ) == SOCKET_ERROR
        && wsa_get_last_error() != WSA_IO_PENDING
    {
        client_failed(clients, handle_info, "WSASend()", wsa_get_last_error());
    }
}

/// Prints a line of progress, as the book's `puts` does. Like `puts`, a failure to print is not
/// the server's concern: a closed stdout must not stop a worker that serves clients.
fn say(line: &str) {
    let _ = writeln!(io::stdout(), "{line}");
}

/// Reports a failure of one connection on stderr; as with [`say`], a closed stderr does not
/// stop the worker.
fn complain(line: &str) {
    let _ = writeln!(io::stderr(), "{line}");
}

/// Reports a failed operation of one connection and closes it.
fn client_failed(clients: &Clients, handle_info: &PerHandleData, what: &str, code: u32) {
    complain(&format!(
        "{what} error ({} {code}), client {}",
        code_name(code),
        handle_info.clnt_adr
    ));
    close_client(clients, handle_info);
}

/// Forgets the connection and closes its socket. It has no operation in flight: the one that
/// was is the packet being handled, or failed at once.
fn close_client(clients: &Clients, handle_info: &PerHandleData) {
    locked(clients).remove(&handle_info.h_clnt_sock);
    if closesocket(handle_info.h_clnt_sock) == SOCKET_ERROR {
        let code = wsa_get_last_error();
        complain(&format!("closesocket() error ({} {code})", code_name(code)));
    }
}

/// The book's `ErrorHandling`, with the failed call's error code: prints and exits with 1.
fn error_handling(message: &str) -> ! {
    let code = get_last_error();
    error_handling_plain(&format!("{message} ({} {code})", code_name(code)))
}

/// Prints `message` on stderr and exits with 1.
fn error_handling_plain(message: &str) -> ! {
    eprintln!("{message}");
    process::exit(1);
}
