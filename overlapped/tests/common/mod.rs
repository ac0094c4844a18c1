//! Helpers shared by the SPEC tests: running each test on every backend, socket pairs, bounded
//! waits, and a buffer type that counts its live instances.
//!
//! # Every backend in one run
//! A SPEC test is an ordinary `#[test]` whose body is wrapped in [`on_every_backend!`]. When
//! `OVERLAPPED_BACKEND` is unset, the body runs in this process (on the backend the library picks
//! by itself), then the same test is run again in a child process of this test binary once for
//! each backend in [`EXTRA_BACKENDS`], with `OVERLAPPED_BACKEND` naming it. The variable is read
//! once per process by the library, so a child per backend is the only way to cover them all in
//! one `cargo test`. When `OVERLAPPED_BACKEND` is set, the body runs here only.
//!
//! [`in_child_process!`] uses the same mechanism for tests that change per-process state, such
//! as the descriptor limit.

#![allow(dead_code, unused_macros)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::panic::{self, AssertUnwindSafe};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use overlapped::{
    BufferPool, Completion, CompletionPort, Event, IoBuf, IoBufMut, Overlapped, PooledBuf, Socket,
    Started,
};

/// The variable that forces a backend; read once per process by the library.
pub const BACKEND_VAR: &str = "OVERLAPPED_BACKEND";

/// The backends that run in child processes besides the default one (io_uring where the kernel
/// allows it). Adding a backend to the library is adding its name here. Where the default is
/// itself epoll (io_uring refused), epoll simply runs twice.
pub const EXTRA_BACKENDS: &[&str] = &["epoll"];

/// Set in a child started by [`in_child_process!`]: the body runs there, and only there.
const CHILD_VAR: &str = "OVERLAPPED_SPEC_CHILD";

/// How long any single wait in a test may take before the test fails. Generous: it bounds a
/// hang, it does not measure speed.
pub const TIMEOUT: Duration = Duration::from_secs(20);

/// The libtest name of the test function this macro is expanded in.
macro_rules! test_name {
    () => {{
        fn here() {}
        $crate::common::test_name_from(::std::any::type_name_of_val(&here))
    }};
}

/// Runs the closure on every backend: here, then in one child process per extra backend.
macro_rules! on_every_backend {
    ($body:expr) => {
        $crate::common::on_every_backend(&test_name!(), $body)
    };
}

/// Runs the closure in a child process of this test binary (and only there).
macro_rules! in_child_process {
    ($body:expr) => {
        $crate::common::in_child_process(&test_name!(), $body)
    };
}

/// `crate_name::path::to::test::{{closure}}::here` → `path::to::test`, the name libtest filters
/// on.
pub fn test_name_from(here: &str) -> String {
    let path = here
        .strip_suffix("::here")
        .expect("a path ending in ::here");
    let path = path.replace("::{{closure}}", "");
    match path.split_once("::") {
        Some((_crate, rest)) => rest.to_string(),
        None => path,
    }
}

/// Runs `body` here, then `test` in a child process per extra backend, unless a backend is
/// already forced. Every backend runs even if an earlier one failed, so that a failure says
/// which backends it concerns.
pub fn on_every_backend(test: &str, body: impl FnOnce()) {
    let forced = std::env::var_os(BACKEND_VAR).is_some() || std::env::var_os(CHILD_VAR).is_some();
    let here = panic::catch_unwind(AssertUnwindSafe(body));
    if forced {
        return here.unwrap_or_else(|p| panic::resume_unwind(p));
    }
    let failures: Vec<String> = EXTRA_BACKENDS
        .iter()
        .filter_map(|backend| run_child(test, &[(BACKEND_VAR, backend)]).err())
        .collect();
    if let Err(p) = here {
        eprintln!("{test} failed on the default backend; other backends: {failures:?}");
        panic::resume_unwind(p);
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Runs `body` in a child process running only `test` (and only there).
pub fn in_child_process(test: &str, body: impl FnOnce()) {
    if std::env::var_os(CHILD_VAR).is_some() {
        body();
    } else if let Err(failure) = run_child(test, &[(CHILD_VAR, "1")]) {
        panic!("{failure}");
    }
}

/// Runs exactly one test of this binary in a child process; `Err` with its output unless it ran
/// exactly that one test and it passed.
pub fn run_child(test: &str, env: &[(&str, &str)]) -> Result<(), String> {
    let exe = std::env::current_exe().expect("the test binary's path");
    let out = Command::new(exe)
        .args([test, "--exact", "--nocapture", "--test-threads", "1"])
        .envs(env.iter().copied())
        .output()
        .expect("start the child test process");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let ran_one = stdout.contains("running 1 test");
    let passed = stdout.contains("test result: ok. 1 passed");
    if out.status.success() && ran_one && passed {
        return Ok(());
    }
    Err(format!(
        "child run of `{test}` with {env:?} failed ({}; ran one test: {ran_one}, passed: \
         {passed})\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        out.status
    ))
}

// ---------------------------------------------------------------------------------------------
// Sockets

pub fn localhost() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

pub fn localhost_v6() -> SocketAddr {
    "[::1]:0".parse().unwrap()
}

/// A connected pair of overlapped TCP sockets on `addr` (port 0).
pub fn tcp_pair_on(addr: SocketAddr) -> (Socket, Socket) {
    let listener = Socket::listen_tcp(addr, 8).expect("listen");
    let client = Socket::connect_tcp(listener.local_addr().unwrap()).expect("connect");
    let (server, _) = listener.accept().expect("accept");
    (client, server)
}

/// A connected pair of overlapped TCP sockets on 127.0.0.1.
pub fn tcp_pair() -> (Socket, Socket) {
    tcp_pair_on(localhost())
}

/// An overlapped TCP socket and its peer as a plain `std` stream.
pub fn tcp_pair_std() -> (Socket, TcpStream) {
    let listener = TcpListener::bind(localhost()).expect("listen");
    let sock = Socket::connect_tcp(listener.local_addr().unwrap()).expect("connect");
    let (peer, _) = listener.accept().expect("accept");
    peer.set_read_timeout(Some(TIMEOUT)).unwrap();
    (sock, peer)
}

/// Two UDP sockets bound on 127.0.0.1.
pub fn udp_pair() -> (Socket, Socket) {
    let a = Socket::bind_udp(localhost()).expect("bind");
    let b = Socket::bind_udp(localhost()).expect("bind");
    (a, b)
}

/// Sends one datagram and checks that all of it went.
pub fn send_datagram(from: &Socket, data: &[u8], to: SocketAddr) {
    let ov = Overlapped::new();
    let started = from.send_to(&ov, vec![data.to_vec()], 0, to).unwrap();
    assert_eq!(settle(&ov, started).result(), Ok(data.len()));
}

/// Reads exactly `n` bytes from a plain stream (bounded by its read timeout).
pub fn read_exact(peer: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut data = vec![0; n];
    peer.read_exact(&mut data).expect("peer read");
    data
}

pub fn write_all(peer: &mut TcpStream, data: &[u8]) {
    peer.write_all(data).expect("peer write");
}

// ---------------------------------------------------------------------------------------------
// Overlapped objects and waiting

/// An overlapped object with a fresh manual-reset event.
pub fn ov_with_event<B: Send + 'static>() -> Overlapped<B> {
    Overlapped::with_event(Event::new())
}

/// Waits (bounded) for the object's operation to finish and returns its completion.
pub fn wait_done<B: Send + 'static>(ov: &Overlapped<B>) -> Completion {
    ov.completion_timeout(Some(TIMEOUT))
        .unwrap_or_else(|e| panic!("operation not finished within {TIMEOUT:?}: {e}"))
}

/// Waits (bounded) for the object's event to be signalled.
pub fn wait_event<B: Send + 'static>(ov: &Overlapped<B>) {
    let event = ov.event().expect("the overlapped object has an event");
    assert!(
        event.wait(Some(TIMEOUT)),
        "event not signalled within {TIMEOUT:?}"
    );
}

/// The buffers of a finished operation, concatenated up to the byte count.
pub fn received(ov: &Overlapped<Vec<u8>>, bytes: usize) -> Vec<u8> {
    let bufs = ov.take_buffers().expect("buffers come back");
    let mut all: Vec<u8> = bufs.concat();
    all.truncate(bytes);
    all
}

/// Whatever the start returned (done at once or pending, S3), the completion once it is over;
/// a "done at once" must agree with the completion's byte count.
pub fn settle<B: Send + 'static>(ov: &Overlapped<B>, started: Started) -> Completion {
    let completion = wait_done(ov);
    if let Started::Done(n) = started {
        assert_eq!(completion.bytes, n, "done-at-once count vs completion");
        assert!(completion.error.is_none());
    }
    completion
}

/// Polls `cond` until it holds, at most [`TIMEOUT`]; panics with `what` otherwise.
pub fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + TIMEOUT;
    for _ in 0..1_000_000 {
        if cond() {
            return;
        }
        if Instant::now() >= deadline {
            break;
        }
        thread::sleep(Duration::from_millis(1));
    }
    panic!("not within {TIMEOUT:?}: {what}");
}

/// A short pause that gives a wrongly eager completion the chance to show itself. Tests never
/// assert on how long anything took.
pub fn settle_time() {
    thread::sleep(Duration::from_millis(50));
}

/// Byte `i` of a test stream: position-dependent, so reordered or repeated chunks are caught.
pub fn pattern(i: usize) -> u8 {
    ((i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56) as u8 ^ (i >> 20) as u8
}

// ---------------------------------------------------------------------------------------------
// Counted buffers (S15)

/// The byte a counted buffer is filled with when it is dropped.
const POISON: u8 = 0xDB;

/// A per-test tally of [`Counted`] buffers. Declare one `static` per test: tests run in
/// parallel threads, so they must not share a tally.
pub struct Live {
    live: AtomicUsize,
    created: AtomicUsize,
    /// Buffers dropped while their witness event was not yet signalled.
    freed_early: AtomicUsize,
    /// The storage of dropped buffers, poisoned and kept, so that a late write by the kernel lands
    /// in memory that is still allocated and shows up as a changed byte.
    quarantine: Mutex<Vec<Box<[u8]>>>,
}

impl Live {
    pub const fn new() -> Live {
        Live {
            live: AtomicUsize::new(0),
            created: AtomicUsize::new(0),
            freed_early: AtomicUsize::new(0),
            quarantine: Mutex::new(Vec::new()),
        }
    }

    /// A counted buffer of `len` zero bytes.
    pub fn buf(&'static self, len: usize) -> Counted {
        self.make(len, None)
    }

    /// A counted buffer that, when dropped, checks that `witness` is signalled: that the
    /// completion of the operation it served has been delivered.
    pub fn buf_witnessed(&'static self, len: usize, witness: &Event) -> Counted {
        self.make(len, Some(witness.clone()))
    }

    /// A counted buffer holding `bytes`, with a witness as for [`Live::buf_witnessed`].
    pub fn buf_holding(&'static self, bytes: Vec<u8>, witness: &Event) -> Counted {
        self.counted(bytes, Some(witness.clone()))
    }

    fn make(&'static self, len: usize, witness: Option<Event>) -> Counted {
        self.counted(vec![0; len], witness)
    }

    fn counted(&'static self, bytes: Vec<u8>, witness: Option<Event>) -> Counted {
        self.live.fetch_add(1, Ordering::SeqCst);
        self.created.fetch_add(1, Ordering::SeqCst);
        Counted {
            data: Some(bytes.into_boxed_slice()),
            live: self,
            witness,
        }
    }

    pub fn live(&self) -> usize {
        self.live.load(Ordering::SeqCst)
    }

    pub fn created(&self) -> usize {
        self.created.load(Ordering::SeqCst)
    }

    pub fn freed_early(&self) -> usize {
        self.freed_early.load(Ordering::SeqCst)
    }

    /// Waits (bounded) until no counted buffer is alive, then checks that none was freed before
    /// its operation's completion was delivered and none was written after it was freed.
    pub fn assert_all_released_safely(&self) {
        eventually("every counted buffer is freed", || self.live() == 0);
        assert_eq!(self.freed_early(), 0, "buffers freed before the completion");
        self.assert_no_write_after_free();
    }

    /// Panics if any dropped buffer was written after it was dropped.
    pub fn assert_no_write_after_free(&self) {
        let quarantine = self.quarantine.lock().unwrap();
        for (n, data) in quarantine.iter().enumerate() {
            for i in 0..data.len() {
                // SAFETY: `i` is in bounds of a live allocation; a volatile read, as the point is
                // to see a write that nothing in this program made.
                let byte = unsafe { std::ptr::read_volatile(data.as_ptr().add(i)) };
                assert_eq!(byte, POISON, "dropped buffer {n} was written at byte {i}");
            }
        }
    }
}

/// A heap buffer that counts itself in a [`Live`] tally, and is poisoned and quarantined when
/// dropped.
pub struct Counted {
    data: Option<Box<[u8]>>,
    live: &'static Live,
    witness: Option<Event>,
}

impl Counted {
    pub fn bytes(&self) -> &[u8] {
        self.data.as_deref().unwrap()
    }
}

impl std::fmt::Debug for Counted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Counted({} bytes)", self.bytes().len())
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        if let Some(w) = &self.witness {
            if !w.is_set() {
                self.live.freed_early.fetch_add(1, Ordering::SeqCst);
            }
        }
        let mut data = self.data.take().unwrap();
        data.fill(POISON);
        self.live.quarantine.lock().unwrap().push(data);
        self.live.live.fetch_sub(1, Ordering::SeqCst);
    }
}

// SAFETY: the bytes live in a boxed slice that stays allocated (and unmoved) for as long as the
// `Counted` exists, and after it too (quarantine); `len` never changes.
unsafe impl IoBuf for Counted {
    fn as_ptr(&self) -> *const u8 {
        self.bytes().as_ptr()
    }
    fn len(&self) -> usize {
        self.bytes().len()
    }
}

// SAFETY: as for `IoBuf`; the same address, and any byte is a valid `u8`.
unsafe impl IoBufMut for Counted {
    fn as_mut_ptr(&mut self) -> *mut u8 {
        self.data.as_deref_mut().unwrap().as_mut_ptr()
    }
}

/// A port for pooled receives, with a pool of `count` buffers of `size` bytes, and a connected
/// socket on it (key 1) with its peer.
pub fn pooled_pair(
    count: usize,
    size: usize,
) -> (CompletionPort<PooledBuf>, BufferPool, Socket, TcpStream) {
    let port = CompletionPort::new(1).unwrap();
    let pool = port.buffer_pool(count, size).unwrap();
    let (sock, peer) = tcp_pair_std();
    port.associate(&sock, 1).unwrap();
    (port, pool, sock, peer)
}
