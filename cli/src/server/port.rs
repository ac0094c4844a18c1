//! The completion-port model: worker threads drain one port that every socket is associated with.
//!
//! This is the pattern Windows servers are built on (the chapter's `IOCPEchoServ`). The listener
//! and every connection are associated with one [`CompletionPort`]; a connection's key is its
//! number in the table of connections, the listener's is [`LISTENER_KEY`]. Accepting is
//! overlapped too (`AcceptEx`): a few accepts are always pending, each into a fresh socket, and
//! each finished one is replaced. So the workers wait in one place only, the port, and every
//! packet is one of three things: a connection accepted, data received, or an echo sent.
//!
//! A connection has one overlapped object, reused by its operations in turn, so at most one of
//! them is pending at a time and no two workers ever handle it at once; its state is
//! reached through the table, never through a pointer in the key. Sockets skip the port when an
//! operation succeeds at once (S44): an echo that the kernel takes at once needs no packet, and
//! the worker goes straight on to the next receive.
//!
//! A connection waits for its next message with a pooled receive (`Socket::recv_pooled`): the
//! receive stays posted, and the port's pool lends it a buffer only when data arrives, so an idle
//! connection holds no buffer and a message costs no extra system call. A connection whose
//! receive finds the pool empty waits in a list until an echo gives a buffer back. The two
//! older ways remain: `--pool-buffers 0` waits with a zero-byte receive (S9), the Windows
//! servers' idiom, and takes a buffer of the server's own when data is there (the receive that
//! follows finds it at once: one more system call per message); `--pin-buffers` keeps a buffered
//! receive posted (one buffer held per idle connection).

use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::thread;
use std::time::Duration;

use rustc_hash::FxHashMap;

use overlapped::{
    codes, BufferPool, CompletionPort, Error, Family, Kind, Overlapped, Packet, Prefix, Socket,
    Started,
};

use super::echo_buf::EchoBuf;
use crate::failure::{Context, Failure, Outcome};

/// The size of each connection's buffer.
const BUF_SIZE: usize = 4096;
/// The buffers of the port's pool unless told otherwise: far more than the connections that have
/// data in hand at once, and memory only for those ever used (16 MiB at most).
pub const DEFAULT_POOL_BUFFERS: usize = 4096;
/// The key of the listener's packets (accepted connections).
const LISTENER_KEY: usize = 0;
/// Accepts kept pending at all times.
const PENDING_ACCEPTS: usize = 16;
/// A connection's pending operation: a zero-byte receive waiting for data.
const WAITING: u8 = 0;
/// A connection's pending operation: a receive into a buffer.
const RECEIVING: u8 = 1;
/// A connection's pending operation: the echo of what was received.
const SENDING: u8 = 2;
/// A connection that yielded its worker: a packet posted to itself resumes it.
const YIELDED: u8 = 3;
/// Steps a connection may take in a row before it lets the worker serve the packets behind it.
const STEPS_PER_TURN: usize = 16;
/// Packets a worker takes from the port at once (`GetQueuedCompletionStatusEx`): a batch the
/// kernel completed together costs one get instead of one each. Few enough that with several
/// workers one of them does not keep a large batch to itself.
const PACKETS_PER_GET: usize = 16;

/// What a connection does next.
#[derive(Clone, Copy)]
enum Step {
    /// Wait for data with a zero-byte receive.
    WaitForData,
    /// Receive into a buffer from the pool.
    Receive,
    /// A receive brought this many bytes: echo them.
    Received(usize),
    /// The echo is sent.
    Echoed,
}
/// A connection's buffer: the whole of it receives, the bytes that came are echoed from it.
type Buf = EchoBuf;
/// Free receive buffers kept for reuse at most.
const POOL_MAX: usize = 1024;

/// How the port model runs.
pub struct Tuning {
    /// Worker threads; 0: one per CPU.
    pub threads: usize,
    /// The port's batch window in microseconds (0: off).
    pub batch_us: u64,
    /// How a connection waits for its next message.
    pub receive: Receive,
}

/// How a connection waits for its next message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Receive {
    /// A zero-byte receive, then a receive into a buffer once data is there.
    ZeroByte,
    /// A receive into the connection's buffer, kept posted (a buffer pinned per connection).
    Pinned,
    /// A pooled receive kept posted, from a pool of `count` buffers; where the kernel has no
    /// buffer pools, zero-byte receives instead if `or_zero_byte` (the default), else an error.
    /// With `ahead`, connections receive ahead into the pool (`Socket::receive_ahead`).
    Pooled {
        count: usize,
        or_zero_byte: bool,
        ahead: bool,
    },
}

/// Serves connections accepted on `listener` until a fatal error.
pub fn serve(listener: Socket, tuning: Tuning, verbose: bool) -> Outcome<()> {
    let Tuning {
        threads,
        batch_us,
        mut receive,
    } = tuning;
    let port: CompletionPort<Buf> =
        match CompletionPort::with_batch_window(threads, Duration::from_micros(batch_us)) {
            Err(e) if e.code() == codes::WSAEOPNOTSUPP => {
                return Err(Failure::new(
                    "--batch-us needs io_uring with batched waits (Linux 6.12 or later)",
                ))
            }
            port => port.context("creating the port")?,
        };
    port.associate(&listener, LISTENER_KEY)
        .context("associating the listener with the port")?;
    let buffers = match receive {
        Receive::Pooled {
            count,
            or_zero_byte,
            ..
        } => match port.buffer_pool(count, BUF_SIZE) {
            Ok(pool) => Some(pool),
            Err(e) if e.code() == codes::WSAEOPNOTSUPP && or_zero_byte => {
                eprintln!(
                    "overlapped: no buffer pools here ({e}); waiting for data with zero-byte \
                     receives"
                );
                receive = Receive::ZeroByte;
                None
            }
            Err(e) if e.code() == codes::WSAEOPNOTSUPP => {
                return Err(Failure::new(format!(
                    "the buffer pool needs io_uring's provided buffer rings (Linux 5.19); \
                     --pool-buffers 0 waits with zero-byte receives instead: {e}"
                )))
            }
            Err(e) => return Err(Failure::new(format!("making the buffer pool: {e}"))),
        },
        Receive::ZeroByte | Receive::Pinned => None,
    };
    let server = Arc::new(Server {
        port,
        listener,
        accepts: Mutex::new(Vec::new()),
        conns: RwLock::new(FxHashMap::default()),
        next_key: AtomicUsize::new(LISTENER_KEY + 1),
        pool: Mutex::new(Vec::new()),
        receive,
        buffers,
        starved: Mutex::new(Vec::new()),
        starved_count: AtomicUsize::new(0),
        verbose,
    });
    for _ in 0..PENDING_ACCEPTS {
        server.post_accept()?;
    }
    let workers: Vec<_> = (0..server.port.concurrency())
        .map(|i| {
            let server = server.clone();
            thread::Builder::new()
                .name(format!("worker-{i}"))
                .spawn(move || server.work())
                .context("starting a worker")
        })
        .collect::<Outcome<_>>()?;
    for worker in workers {
        match worker.join() {
            Ok(outcome) => outcome?,
            Err(_) => return Err(Failure::new("a worker panicked")),
        }
    }
    Ok(())
}

struct Server {
    port: CompletionPort<Buf>,
    listener: Socket,
    /// Pending accepts: the socket each one fills, with its overlapped object.
    accepts: Mutex<Vec<(Socket, Overlapped<Buf>)>>,
    /// Looked up for every packet, by keys handed out in turn: a keyed hash (SipHash) would guard
    /// against keys chosen by an attacker, and these are not.
    conns: RwLock<FxHashMap<usize, Arc<Conn>>>,
    next_key: AtomicUsize,
    /// Receive buffers not in use: only connections with data in hand hold one.
    pool: Mutex<Vec<Prefix<Vec<u8>>>>,
    /// How connections wait for their next message.
    receive: Receive,
    /// The port's buffer pool, with `--pool-buffers`.
    buffers: Option<BufferPool>,
    /// Connections whose pooled receive found no free buffer, waiting for an echo to give one
    /// back, and how many there are (looked at without the lock after every echo).
    starved: Mutex<Vec<usize>>,
    starved_count: AtomicUsize,
    verbose: bool,
}

/// One client.
struct Conn {
    sock: Socket,
    /// The connection's one overlapped object: its operations follow one another (wait for
    /// data, receive, echo), never two at once.
    ov: Overlapped<Buf>,
    /// Which of them is pending: [`WAITING`], [`RECEIVING`] or [`SENDING`].
    phase: AtomicU8,
}

impl Server {
    /// The workers' loop: take the packets that are there (up to [`PACKETS_PER_GET`]), act on
    /// each in turn.
    fn work(&self) -> Outcome<()> {
        let mut packets = Vec::with_capacity(PACKETS_PER_GET);
        loop {
            match self.port.get_many_into(&mut packets, PACKETS_PER_GET, None) {
                Ok(_) => {}
                Err(e) if e.code() == codes::ERROR_ABANDONED_WAIT_0 => return Ok(()),
                Err(e) => return Err(Failure::new(format!("waiting on the port: {e}"))),
            }
            // Taken from the back of the reversed list: in order, with no drain to keep.
            packets.reverse();
            while let Some(packet) = packets.pop() {
                if packet.key == LISTENER_KEY {
                    self.accepted(packet)?;
                } else {
                    self.transferred(packet);
                }
            }
        }
    }

    /// Keeps one more accept pending, into a fresh socket.
    fn post_accept(&self) -> Outcome<()> {
        let family = match self
            .listener
            .local_addr()
            .context("the listener's address")?
        {
            addr if addr.is_ipv4() => Family::V4,
            _ => Family::V6,
        };
        let sock = Socket::new(family, Kind::Stream).context("creating an accept socket")?;
        let ov = Overlapped::new();
        let mut accepts = self.accepts.lock().unwrap_or_else(|e| e.into_inner());
        match self.listener.accept_ex(&sock, &ov, Vec::new()) {
            Ok(_) => {
                accepts.push((sock, ov));
                Ok(())
            }
            Err(e) => Err(Failure::new(format!("posting an accept: {e}"))),
        }
    }

    /// A connection arrived: give it a key, start its first receive, replace the accept.
    fn accepted(&self, packet: Packet<Buf>) -> Outcome<()> {
        let Some(ov) = packet.overlapped else {
            return Err(Failure::new(
                "an accept packet without its overlapped object",
            ));
        };
        let entry = {
            let mut accepts = self.accepts.lock().unwrap_or_else(|e| e.into_inner());
            let found = accepts.iter().position(|(_, pending)| pending.same_as(&ov));
            found.map(|i| accepts.swap_remove(i))
        };
        self.post_accept()?;
        let Some((sock, _)) = entry else {
            return Err(Failure::new("an accept packet for no pending accept"));
        };
        if let Some(e) = packet.error {
            eprintln!("overlapped: an accept failed: {e}");
            return Ok(());
        }
        let key = self.next_key.fetch_add(1, Ordering::Relaxed);
        let ready = sock
            .set_nodelay(true)
            .and_then(|()| self.port.associate(&sock, key));
        let ready = ready.and_then(|()| match (&self.buffers, self.receive) {
            (Some(pool), Receive::Pooled { ahead: true, .. }) => sock.receive_ahead(pool),
            _ => Ok(()),
        });
        if let Err(e) = ready {
            eprintln!("overlapped: setting up a connection: {e}");
            return Ok(());
        }
        sock.set_skip_completion_port_on_success(true);
        if self.verbose {
            let peer = sock.peer_addr().map(|p| p.to_string()).unwrap_or_default();
            println!("{peer}: connected (key {key})");
        }
        let conn = Arc::new(Conn {
            sock,
            ov: Overlapped::new(),
            phase: AtomicU8::new(RECEIVING),
        });
        self.conns
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, conn.clone());
        self.drive(key, &conn, self.next_receive());
        Ok(())
    }

    /// A receive or an echo of connection `packet.key` finished, or the connection's turn came
    /// back after it yielded.
    fn transferred(&self, packet: Packet<Buf>) {
        let conn = self
            .conns
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&packet.key)
            .cloned();
        let Some(conn) = conn else {
            return; // a packet of a connection already closed
        };
        let phase = conn.phase.load(Ordering::Relaxed);
        match packet.error {
            Some(e) if e.code() == codes::WSAENOBUFS && phase == RECEIVING => {
                return self.starve(packet.key, e)
            }
            Some(e) => return self.close(packet.key, Some(e)),
            None => {}
        }
        let next = match phase {
            WAITING => Step::Receive,
            RECEIVING => Step::Received(packet.bytes),
            SENDING => Step::Echoed,
            _ => self.next_receive(), // YIELDED: a packet posted to come back here
        };
        self.drive(packet.key, &conn, next);
    }

    /// How the connection waits for its next message.
    fn next_receive(&self) -> Step {
        match self.receive {
            Receive::Pinned | Receive::Pooled { .. } => Step::Receive,
            Receive::ZeroByte => Step::WaitForData,
        }
    }

    /// Runs the connection's steps until one is pending. Operations that complete at once (the
    /// epoll backend tries each at once; data may keep coming) would otherwise chain without end,
    /// so after [`STEPS_PER_TURN`] steps the connection yields: it posts itself a packet and the
    /// worker goes on to the packets queued before it.
    fn drive(&self, key: usize, conn: &Conn, mut next: Step) {
        let mut taken = 0;
        // Yield only between messages (no data in hand), so resuming means receiving again.
        while taken < STEPS_PER_TURN || !matches!(next, Step::WaitForData | Step::Receive) {
            next = match self.step(key, conn, next) {
                Some(next) => next,
                None => return, // pending, or the connection ended
            };
            taken += 1;
        }
        conn.phase.store(YIELDED, Ordering::Relaxed);
        if let Err(e) = self.port.post(0, key, None) {
            self.close(key, Some(e));
        }
    }

    /// One step; the next one if this one completed at once.
    ///
    /// A connection's buffer list travels with its operations: each step takes it back from the
    /// overlapped object and passes it on, so that no step allocates one; the receive buffer
    /// itself carries the echo, cut to the bytes that came.
    fn step(&self, key: usize, conn: &Conn, step: Step) -> Option<Step> {
        let started = match step {
            // A zero-byte receive: the connection waits for data without a buffer (S9), so an
            // idle connection pins none.
            Step::WaitForData => {
                let mut bufs = self.buffer_list(key, conn)?;
                if let Some(buf) = bufs.pop() {
                    self.recycle(buf);
                }
                bufs.push(EchoBuf::Owned(Prefix::new(Vec::new())));
                conn.phase.store(WAITING, Ordering::Relaxed);
                conn.sock.recv(&conn.ov, bufs, 0)
            }
            Step::Receive => {
                let mut bufs = self.buffer_list(key, conn)?;
                if let Some(pool) = &self.buffers {
                    let gave_back = bufs.pop().is_some(); // the last echo's, back to the pool
                    conn.phase.store(RECEIVING, Ordering::Relaxed);
                    let started = conn.sock.recv_pooled(&conn.ov, bufs, pool, 0);
                    if gave_back {
                        self.feed_starved();
                    }
                    started
                } else {
                    // The buffer the last echo went out from, whole again, or one from the pool.
                    let buf = match bufs.pop() {
                        Some(EchoBuf::Owned(mut buf)) if buf.capacity() == BUF_SIZE => {
                            buf.reset();
                            buf
                        }
                        _ => self.buffer(),
                    };
                    bufs.push(EchoBuf::Owned(buf));
                    conn.phase.store(RECEIVING, Ordering::Relaxed);
                    conn.sock.recv(&conn.ov, bufs, 0)
                }
            }
            Step::Received(0) => {
                self.close(key, None); // S10: the peer closed gracefully.
                return None;
            }
            Step::Received(bytes) => {
                let mut bufs = self.buffer_list(key, conn)?;
                match bufs.last_mut() {
                    Some(EchoBuf::Owned(buf)) => buf.set_len(bytes),
                    Some(EchoBuf::Pooled(buf)) => buf.truncate(bytes), // it holds just these
                    None => {}
                }
                conn.phase.store(SENDING, Ordering::Relaxed);
                conn.sock.send(&conn.ov, bufs, 0)
            }
            // The echo is sent (S8: whole): the connection waits for its next message.
            Step::Echoed => return Some(self.next_receive()),
        };
        match (step, started) {
            (_, Ok(Started::Pending)) => None, // its packet comes when it completes
            (Step::WaitForData, Ok(Started::Done(_))) => Some(Step::Receive),
            (Step::Receive, Ok(Started::Done(n))) => Some(Step::Received(n)),
            (_, Ok(Started::Done(_))) => Some(Step::Echoed),
            (Step::Receive, Err(e)) if e.code() == codes::WSAENOBUFS => {
                self.starve(key, e);
                None
            }
            (_, Err(e)) => {
                self.close(key, Some(e));
                None
            }
        }
    }

    /// The connection's buffer list, back from its last operation (empty before the first).
    fn buffer_list(&self, key: usize, conn: &Conn) -> Option<Vec<Buf>> {
        match conn.ov.take_buffers() {
            Ok(bufs) => Some(bufs),
            // No operation yet: the connection's first list.
            Err(e) if e.code() == codes::WSAEINVAL => Some(Vec::with_capacity(1)),
            Err(e) => {
                self.close(key, Some(e));
                None
            }
        }
    }

    /// Parks a connection whose pooled receive found no free buffer until an echo gives one
    /// back. Parking comes first and a look at the pool after it, while a giver gives back
    /// first and looks at the list after (each side's store before its load, sequentially
    /// consistent): one of the two sees the other, so no connection stays parked after the last
    /// buffer came back. Without a pool, `error` came from the kernel: the connection ends.
    fn starve(&self, key: usize, error: Error) {
        let Some(pool) = &self.buffers else {
            return self.close(key, Some(error));
        };
        {
            let mut starved = self.starved.lock().unwrap_or_else(|e| e.into_inner());
            starved.push(key);
            self.starved_count.store(starved.len(), Ordering::SeqCst);
        }
        if pool.in_use() < pool.buffer_count() {
            self.feed_starved();
        }
    }

    /// A buffer went back to the pool: the connection that waited longest for one tries again.
    fn feed_starved(&self) {
        if self.starved_count.load(Ordering::SeqCst) == 0 {
            return;
        }
        let key = {
            let mut starved = self.starved.lock().unwrap_or_else(|e| e.into_inner());
            if starved.is_empty() {
                return;
            }
            let key = starved.remove(0);
            self.starved_count.store(starved.len(), Ordering::SeqCst);
            key
        };
        self.resume(key);
    }

    /// Makes a connection receive again, from its own packet (never from within another
    /// connection's step).
    fn resume(&self, key: usize) {
        let conn = self
            .conns
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
            .cloned();
        if let Some(conn) = conn {
            conn.phase.store(YIELDED, Ordering::Relaxed);
            if let Err(e) = self.port.post(0, key, None) {
                self.close(key, Some(e));
            }
        }
    }

    /// A receive buffer from the pool, or a new one.
    fn buffer(&self) -> Prefix<Vec<u8>> {
        let pooled = self.pool.lock().unwrap_or_else(|e| e.into_inner()).pop();
        pooled.unwrap_or_else(|| Prefix::new(vec![0; BUF_SIZE]))
    }

    /// Puts a receive buffer back in the pool, whole again.
    fn recycle(&self, buf: Buf) {
        let EchoBuf::Owned(mut buf) = buf else { return };
        if buf.capacity() != BUF_SIZE {
            return; // not one of the pool's (the zero-byte receive's empty buffer)
        }
        buf.reset();
        let mut pool = self.pool.lock().unwrap_or_else(|e| e.into_inner());
        if pool.len() < POOL_MAX {
            pool.push(buf);
        }
    }

    /// Forgets a connection; dropping the last reference closes its socket.
    fn close(&self, key: usize, error: Option<Error>) {
        let conn = self
            .conns
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&key);
        if conn.is_none() {
            return;
        }
        drop(conn); // its buffers, if no packet of it is being handled
        self.feed_starved();
        match error {
            Some(e) if !is_ordinary(&e) => eprintln!("overlapped: connection {key}: {e}"),
            Some(e) if self.verbose => println!("connection {key}: {e}"),
            None if self.verbose => println!("connection {key}: closed by the peer"),
            _ => {}
        }
    }
}

/// Whether an error is a normal way for a client to leave.
fn is_ordinary(e: &Error) -> bool {
    matches!(
        e.code(),
        codes::WSAECONNRESET | codes::WSAECONNABORTED | codes::WSAESHUTDOWN
    )
}
