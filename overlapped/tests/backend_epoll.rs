//! The epoll backend's selection: forced by `OVERLAPPED_BACKEND`, and chosen by itself when the
//! kernel refuses io_uring, as Docker's default seccomp profile does.
//!
//! The backend is chosen once per process, so each case runs in a child process of this test
//! binary: the parent re-runs the `child` test with `ROLE_VAR` naming the case, and checks that
//! the child played it to the end.

use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd};
use std::process::Command;
use std::time::Duration;

use overlapped::{
    backend_info, codes, stats, BackendKind, CompletionPort, Event, Overlapped, Socket, Started,
};

const BACKEND_VAR: &str = "OVERLAPPED_BACKEND";
/// Tells a child process which case to play.
const ROLE_VAR: &str = "OVERLAPPED_EPOLL_TEST_ROLE";
/// Bounds every wait: a hang fails the test instead of stalling it.
const TIMEOUT: Duration = Duration::from_secs(20);

/// Runs the `child` test in a new process of this binary with `env`, and returns its stdout once
/// it has passed; `remove` names variables the child must not inherit.
fn run_role(role: &str, env: &[(&str, &str)], remove: &[&str]) -> String {
    let exe = std::env::current_exe().expect("the test binary's path");
    let mut cmd = Command::new(exe);
    cmd.args(["child", "--exact", "--nocapture", "--test-threads", "1"])
        .env(ROLE_VAR, role)
        .envs(env.iter().copied());
    for name in remove {
        cmd.env_remove(name);
    }
    let out = cmd.output().expect("start the child test process");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains(&format!("role {role} played")),
        "child `{role}` failed ({})\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        out.status
    );
    stdout
}

#[test]
fn forced_epoll_is_reported_and_carries_an_echo() {
    let out = run_role("forced", &[(BACKEND_VAR, "epoll")], &[]);
    assert!(out.contains("backend: epoll"), "{out}");
}

#[test]
fn seccomp_refusing_io_uring_falls_back_to_epoll() {
    let out = run_role("seccomp", &[], &[BACKEND_VAR]);
    assert!(out.contains("backend: epoll"), "{out}");
}

/// S33 on epoll: a receive cancelled while data arrives completes once, with the data or
/// aborted, and an aborted one took nothing: every byte is received exactly once, in order.
#[test]
fn cancel_racing_with_data_loses_nothing_on_epoll() {
    run_role("cancel-race", &[(BACKEND_VAR, "epoll")], &[]);
}

/// A receive on a socket that a port's ring found drained, with nothing arrived since, waits
/// without a single system call: no attempt bound to fail, no registration (the socket keeps
/// the one it has). It completes when data comes.
#[test]
fn a_receive_on_a_drained_socket_waits_without_a_system_call() {
    run_role("drained", &[(BACKEND_VAR, "epoll")], &[]);
}

/// Data arriving on an event-model socket with nothing pending does not wake the thread that
/// reaps the shared ring: that ring arms a socket's registration only while a request waits.
#[test]
fn arrivals_on_an_idle_socket_do_not_wake_the_shared_ring() {
    run_role("idle-arrivals", &[(BACKEND_VAR, "epoll")], &[]);
}

/// A socket closed while the ring watched it, and a new one given the same descriptor number:
/// the new socket is watched anew, and its receive completes.
#[test]
fn a_reused_descriptor_number_is_watched_anew() {
    run_role("reused-number", &[(BACKEND_VAR, "epoll")], &[]);
}

#[test]
fn forcing_io_uring_where_it_is_refused_is_an_error() {
    run_role("seccomp-forced-uring", &[(BACKEND_VAR, "uring")], &[]);
}

#[test]
fn an_unknown_backend_name_is_an_error() {
    run_role("unknown", &[(BACKEND_VAR, "kqueue")], &[]);
}

/// The child side: does nothing unless a parent named a role.
#[test]
fn child() {
    let Ok(role) = std::env::var(ROLE_VAR) else {
        return;
    };
    match role.as_str() {
        "forced" => {
            let info = backend_info().expect("a backend");
            println!("backend: {} ({})", info.kind, info.reason);
            assert_eq!(info.kind, BackendKind::Epoll);
            assert!(info.reason.contains("forced"), "{}", info.reason);
            echo_round_trip();
        }
        "seccomp" => {
            forbid_io_uring_setup();
            let info = backend_info().expect("a backend");
            println!("backend: {} ({})", info.kind, info.reason);
            assert_eq!(info.kind, BackendKind::Epoll);
            assert!(
                info.reason.contains("io_uring_setup failed")
                    && info.reason.contains("EPERM")
                    && info.reason.contains("using epoll"),
                "{}",
                info.reason
            );
            echo_round_trip();
        }
        "seccomp-forced-uring" => {
            forbid_io_uring_setup();
            let error = backend_info().expect_err("a forced io_uring that the kernel refuses");
            assert_eq!(error.raw_os_error(), Some(libc::EPERM), "{error}");
            // Operations fail at once with the same error; nothing is silently rerouted.
            let (a, _b) = tcp_pair();
            let ov = Overlapped::with_event(Event::new());
            let refused = a.send(&ov, vec![b"x".to_vec()], 0);
            assert_eq!(refused.err(), Some(error));
        }
        "unknown" => {
            let error = backend_info().expect_err("an unknown backend name");
            assert_eq!(error.code(), codes::WSAEINVAL, "{error}");
        }
        "drained" => {
            assert_eq!(backend_info().unwrap().kind, BackendKind::Epoll);
            receive_on_drained_socket();
        }
        "idle-arrivals" => {
            assert_eq!(backend_info().unwrap().kind, BackendKind::Epoll);
            arrivals_on_idle_socket();
        }
        "reused-number" => {
            assert_eq!(backend_info().unwrap().kind, BackendKind::Epoll);
            reused_descriptor_number();
        }
        "cancel-race" => {
            assert_eq!(backend_info().unwrap().kind, BackendKind::Epoll);
            cancel_race();
        }
        other => panic!("unknown role {other:?}"),
    }
    println!("role {role} played");
}

/// Makes `io_uring_setup` fail with `EPERM` in this thread and the threads it starts, as
/// Docker's default seccomp profile does; checks that it does.
fn forbid_io_uring_setup() {
    #[cfg(target_arch = "x86_64")]
    const AUDIT_ARCH: u32 = 0xC000_003E; // AUDIT_ARCH_X86_64
    #[cfg(target_arch = "aarch64")]
    const AUDIT_ARCH: u32 = 0xC000_00B7; // AUDIT_ARCH_AARCH64
    const ARCH_OFFSET: u32 = 4; // offsetof(struct seccomp_data, arch)
    const NR_OFFSET: u32 = 0; // offsetof(struct seccomp_data, nr)
    let stmt = |code: u32, k: u32| libc::sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    };
    let jump_eq = |k: u32, jt: u8, jf: u8| libc::sock_filter {
        code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
        jt,
        jf,
        k,
    };
    let load = libc::BPF_LD | libc::BPF_W | libc::BPF_ABS;
    let ret = libc::BPF_RET | libc::BPF_K;
    let mut program = [
        stmt(load, ARCH_OFFSET),
        // Another architecture's system call numbers mean other calls: let them be.
        jump_eq(AUDIT_ARCH, 0, 3),
        stmt(load, NR_OFFSET),
        jump_eq(libc::SYS_io_uring_setup as u32, 0, 1),
        stmt(ret, libc::SECCOMP_RET_ERRNO | libc::EPERM as u32),
        stmt(ret, libc::SECCOMP_RET_ALLOW),
    ];
    let fprog = libc::sock_fprog {
        len: program.len() as u16,
        filter: program.as_mut_ptr(),
    };
    // SAFETY: plain prctl calls; `fprog` points to a valid filter program that outlives them
    // (the kernel copies it).
    unsafe {
        assert_eq!(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), 0);
        assert_eq!(
            libc::prctl(
                libc::PR_SET_SECCOMP,
                libc::SECCOMP_MODE_FILTER,
                &fprog as *const libc::sock_fprog
            ),
            0,
            "install the seccomp filter: {}",
            std::io::Error::last_os_error()
        );
    }
    let mut params = [0u8; 120]; // struct io_uring_params, zeroed
                                 // SAFETY: io_uring_setup with a zeroed parameter block of the kernel's size; a descriptor it
                                 // might return is closed below.
    let fd = unsafe { libc::syscall(libc::SYS_io_uring_setup, 1, params.as_mut_ptr()) };
    let errno = std::io::Error::last_os_error().raw_os_error();
    if fd >= 0 {
        // SAFETY: the descriptor was just returned to us and is not used elsewhere.
        unsafe { libc::close(fd as i32) };
    }
    assert_eq!(
        (fd, errno),
        (-1, Some(libc::EPERM)),
        "the filter forbids io_uring_setup"
    );
}

fn tcp_pair() -> (Socket, Socket) {
    let listener = Socket::listen_tcp("127.0.0.1:0".parse().unwrap(), 4).unwrap();
    let client = Socket::connect_tcp(listener.local_addr().unwrap()).unwrap();
    let (server, _) = listener.accept().unwrap();
    (client, server)
}

/// Waits for the operation on `ov` and returns its byte count.
fn finished(ov: &Overlapped<Vec<u8>>, started: Started) -> usize {
    if let Started::Pending = started {
        assert!(
            ov.event().unwrap().wait(Some(TIMEOUT)),
            "the operation completed"
        );
    }
    ov.result(false).expect("the operation succeeded")
}

/// A message to a server and back, where the server's receive is posted before any data is
/// there, so that it has to wait on the ring.
fn echo_round_trip() {
    let (client, server) = tcp_pair();
    let before = stats();
    let server_ov = Overlapped::with_event(Event::new());
    let started = server.recv(&server_ov, vec![vec![0u8; 64]], 0).unwrap();
    assert_eq!(started, Started::Pending, "nothing was sent yet");

    let client_ov = Overlapped::with_event(Event::new());
    let started = client
        .send(&client_ov, vec![b"ping over epoll".to_vec()], 0)
        .unwrap();
    assert_eq!(finished(&client_ov, started), 15);

    let n = finished(&server_ov, Started::Pending);
    let mut got = server_ov.take_buffers().unwrap().remove(0);
    got.truncate(n);
    assert_eq!(got, b"ping over epoll");

    let reply_ov = Overlapped::with_event(Event::new());
    let started = server.send(&reply_ov, vec![got], 0).unwrap();
    assert_eq!(finished(&reply_ov, started), 15);
    let back_ov = Overlapped::with_event(Event::new());
    let started = client.recv(&back_ov, vec![vec![0u8; 64]], 0).unwrap();
    let n = finished(&back_ov, started);
    let mut back = back_ov.take_buffers().unwrap().remove(0);
    back.truncate(n);
    assert_eq!(back, b"ping over epoll");

    let after = stats();
    assert!(
        after.submissions > before.submissions && after.completions > before.completions,
        "the pending receive went through the ring: {before:?} -> {after:?}"
    );
}

/// Posts a receive before data is there, has the peer send `data`, and returns what arrived.
fn receive_posted_before_data(sock: &Socket, peer: &Socket, data: &[u8]) -> Vec<u8> {
    let ov = Overlapped::with_event(Event::new());
    let started = sock.recv(&ov, vec![vec![0u8; 64]], 0).unwrap();
    assert_eq!(started, Started::Pending, "nothing was sent yet");
    let peer_ov = Overlapped::with_event(Event::new());
    let sent = peer.send(&peer_ov, vec![data.to_vec()], 0).unwrap();
    assert_eq!(finished(&peer_ov, sent), data.len());
    let n = finished(&ov, Started::Pending);
    let mut got = ov.take_buffers().unwrap().remove(0);
    got.truncate(n);
    got
}

fn receive_on_drained_socket() {
    let port: CompletionPort = CompletionPort::new(1).unwrap();
    let (sock, peer) = tcp_pair();
    port.associate(&sock, 1).unwrap();
    let mut peer = peer.into_tcp_stream().map_err(|(e, _)| e).unwrap();
    // Read short by the ring: the socket is known to be drained.
    let ov = Overlapped::new();
    let started = sock.recv(&ov, vec![vec![0u8; 64]], 0).unwrap();
    assert_eq!(started, Started::Pending, "nothing was sent yet");
    peer.write_all(b"first").unwrap();
    assert_eq!(port.get(Some(TIMEOUT)).unwrap().result(), Ok(5));
    let before = stats();
    let started = sock.recv(&ov, vec![vec![0u8; 64]], 0).unwrap();
    let after = stats();
    assert_eq!(started, Started::Pending);
    assert_eq!(
        after.kernel_entries, before.kernel_entries,
        "no system call to start a receive on a drained socket"
    );
    peer.write_all(b"second").unwrap();
    let n = port.get(Some(TIMEOUT)).unwrap().result().unwrap();
    assert_eq!(&ov.take_buffers().unwrap()[0][..n], b"second");
}

fn arrivals_on_idle_socket() {
    let (sock, peer) = tcp_pair();
    let mut peer = peer.into_tcp_stream().map_err(|(e, _)| e).unwrap();
    // A receive that waits on the shared ring registers the socket there.
    let ov = Overlapped::with_event(Event::new());
    let started = sock.recv(&ov, vec![vec![0u8; 64]], 0).unwrap();
    assert_eq!(started, Started::Pending, "nothing was sent yet");
    peer.write_all(b"first").unwrap();
    assert_eq!(finished(&ov, started), 5);
    // Nothing pending now: twenty arrivals, and the reaper makes no system call for them.
    std::thread::sleep(Duration::from_millis(50));
    let before = stats();
    for _ in 0..20 {
        peer.write_all(b"x").unwrap();
        std::thread::sleep(Duration::from_millis(2));
    }
    std::thread::sleep(Duration::from_millis(50));
    let after = stats();
    assert_eq!(
        after.kernel_entries, before.kernel_entries,
        "the shared ring's reaper woke for a socket with nothing pending"
    );
    // The data is all there for the next receive, which completes at once.
    let started = sock.recv(&ov, vec![vec![0u8; 64]], 0).unwrap();
    assert_eq!(finished(&ov, started), 20);
}

fn reused_descriptor_number() {
    let (old, old_peer) = tcp_pair();
    assert_eq!(receive_posted_before_data(&old, &old_peer, b"old"), b"old");
    let number = old.as_raw_fd();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let stream = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (peer, _) = listener.accept().unwrap();
    drop(old);
    // The finished receive's record, which the reaping thread lets go of just after it notifies,
    // may hold the socket open a moment longer: wait until the number is free.
    let deadline = std::time::Instant::now() + TIMEOUT;
    // SAFETY: F_GETFD only asks whether `number` is open.
    while unsafe { libc::fcntl(number, libc::F_GETFD) } != -1 {
        assert!(
            std::time::Instant::now() < deadline,
            "the old socket closes"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    // The new connection takes the old socket's number, as the next descriptor opened would.
    // SAFETY: `dup2` makes `number`, free since `old` closed, a second descriptor of `stream`'s
    // socket; `OwnedFd` then owns it alone (the original closes with `stream`).
    let moved = unsafe { libc::dup2(stream.as_raw_fd(), number) };
    assert_eq!(moved, number, "dup2: {}", std::io::Error::last_os_error());
    drop(stream);
    // SAFETY: `number` is open and owned by nothing else.
    let owned = unsafe { std::os::fd::OwnedFd::from_raw_fd(number) };
    let sock = Socket::try_from(owned).unwrap();
    assert_eq!(
        receive_posted_before_data(&sock, &Socket::from(peer), b"new"),
        b"new"
    );
}

fn cancel_race() {
    const ROUNDS: u8 = 200;
    let (reader, writer) = tcp_pair();
    let (mut aborted, mut won) = (0, 0);
    for round in 0..ROUNDS {
        let ov = Overlapped::with_event(Event::new());
        let started = reader.recv(&ov, vec![vec![0u8; 1]], 0).unwrap();
        assert_eq!(
            started,
            Started::Pending,
            "round {round}: nothing was sent yet"
        );
        let send_ov = Overlapped::with_event(Event::new());
        let sent = writer.send(&send_ov, vec![vec![round]], 0).unwrap();
        // Not found only if the data came first and the receive is already over.
        let cancelled = ov.cancel();
        if let Err(e) = cancelled {
            assert_eq!(e.code(), codes::ERROR_NOT_FOUND, "round {round}: {e}");
            assert!(
                !ov.is_pending() && ov.result(false) == Ok(1),
                "round {round}"
            );
        }
        assert_eq!(finished(&send_ov, sent), 1);
        assert!(
            ov.event().unwrap().wait(Some(TIMEOUT)),
            "round {round}: completed"
        );
        let byte = match ov.completion(false).unwrap().result() {
            Ok(1) => {
                won += 1;
                ov.take_buffers().unwrap()[0][0]
            }
            Err(e) if e.code() == codes::WSA_OPERATION_ABORTED => {
                aborted += 1;
                // The byte is still queued: a new receive gets it.
                let again = Overlapped::with_event(Event::new());
                let started = reader.recv(&again, vec![vec![0u8; 1]], 0).unwrap();
                assert_eq!(finished(&again, started), 1);
                again.take_buffers().unwrap()[0][0]
            }
            other => panic!("round {round}: unexpected result {other:?}"),
        };
        assert_eq!(byte, round, "every byte once, in order");
        assert!(
            ov.cancel().is_err(),
            "round {round}: nothing is left to cancel"
        );
    }
    println!("cancel race: {aborted} aborted, {won} won by the data");
}
