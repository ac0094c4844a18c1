//! A hand-written io_uring echo server on one thread: what io_uring itself costs a server, with
//! no library's model on top. The port model is measured against it to tell what the model costs
//! (BENCHMARKS.md, "Against io_uring by hand").
//!
//! It takes what io_uring offers a server like this: a single issuer with deferred task running,
//! its ring's descriptor registered, connections as registered files, one multishot receive per
//! connection into a ring of provided buffers (4,096 of 4 KiB, as the port model's default pool),
//! and each echo sent straight from the buffer the data arrived in. A connection has one send in
//! flight; what arrives meanwhile waits in order behind it, so that a short send is finished
//! before the next begins. With `--batch-us N` it waits with io_uring's minimum wait (Linux 6.12):
//! up to N µs for a batch of completions, then with whatever has come; without, it wakes for
//! every completion, as the port model does by default. `--plain` leaves out the registered files
//! and ring descriptor (as the port model does), to measure what they are worth.

use std::collections::VecDeque;
use std::io;
use std::net::TcpListener;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use io_uring::squeue::Entry;
use io_uring::types::{BufRingEntry, Fixed, SubmitArgs, Timespec};
use io_uring::{cqueue, opcode, types, IoUring, SubmissionQueue, Submitter};
use overlapped_bench::{announce, fatal, options, set_nodelay, BUF_SIZE};

/// Provided buffers, a power of two as the kernel requires.
const BUFFERS: u16 = 4096;
const GROUP: u16 = 0;
/// Slots of the registered file table; a connection's slot is its descriptor's number.
const FILES: u32 = 16_384;
/// With a batch window: the completions a wait gathers before the window is over.
const BATCH: usize = 64;

/// What a completion is for: the low two bits of its user data.
const ACCEPT: u64 = 0;
const RECV: u64 = 1;
const SEND: u64 = 2;
/// A cancel's own completion: nothing to do.
const CANCEL: u64 = 3;
/// Generations count in the 30 bits of the user data above the kind and the descriptor.
const GENERATIONS: u32 = (1 << 30) - 1;

/// One connection: the echoes not yet sent, `(buffer, sent, length)`, the first in flight while
/// `sending`. The generation tells its completions from those of an earlier connection that had
/// the same descriptor.
struct Conn {
    generation: u32,
    echoes: VecDeque<(u16, u32, u32)>,
    sending: bool,
    receiving: bool,
    /// The peer closed or the connection failed: it closes once no send is in flight.
    ended: bool,
}

/// The provided-buffer ring: the entries shared with the kernel, and the buffers' memory.
struct Buffers {
    entries: *mut BufRingEntry,
    tail: u16,
    memory: Box<[u8]>,
}

impl Buffers {
    /// Allocates the ring and the buffers; all are handed to the kernel by `register`.
    fn new() -> Buffers {
        let layout = ring_layout();
        // SAFETY: the layout has a non-zero size.
        let entries = unsafe { std::alloc::alloc_zeroed(layout) } as *mut BufRingEntry;
        if entries.is_null() {
            std::alloc::handle_alloc_error(layout);
        }
        Buffers {
            entries,
            tail: 0,
            memory: vec![0; BUFFERS as usize * BUF_SIZE].into_boxed_slice(),
        }
    }

    fn register(&mut self, submitter: &Submitter<'_>) -> io::Result<()> {
        // SAFETY: the ring's entries and the buffers live until the process exits (`main` never
        // returns), so they outlive the registration.
        unsafe { submitter.register_buf_ring_with_flags(self.entries as u64, BUFFERS, GROUP, 0) }?;
        for id in 0..BUFFERS {
            self.give_back(id);
        }
        Ok(())
    }

    /// Puts a buffer back at the ring's tail and publishes the tail to the kernel.
    fn give_back(&mut self, id: u16) {
        let slot = (self.tail & (BUFFERS - 1)) as usize;
        // SAFETY: `slot` is within the ring's `BUFFERS` entries, which only this thread writes
        // (the kernel reads entries up to the published tail).
        let entry = unsafe { &mut *self.entries.add(slot) };
        entry.set_addr(self.buffer(id) as u64);
        entry.set_len(BUF_SIZE as u32);
        entry.set_bid(id);
        self.tail = self.tail.wrapping_add(1);
        // SAFETY: the tail lies in the ring's first entry, aligned for a u16, and the kernel reads
        // it only atomically.
        let tail = unsafe { AtomicU16::from_ptr(BufRingEntry::tail(self.entries) as *mut u16) };
        tail.store(self.tail, Ordering::Release);
    }

    fn buffer(&self, id: u16) -> *const u8 {
        self.memory[id as usize * BUF_SIZE..].as_ptr()
    }
}

fn ring_layout() -> std::alloc::Layout {
    let size = BUFFERS as usize * std::mem::size_of::<BufRingEntry>();
    std::alloc::Layout::from_size_align(size, 4096).expect("a valid layout")
}

fn main() {
    let options = options(true);
    let listener = TcpListener::bind(options.addr).unwrap_or_else(|e| fatal("binding", e));
    let mut ring = IoUring::builder()
        .setup_single_issuer()
        .setup_defer_taskrun()
        .setup_cqsize(16_384)
        .build(1024)
        .unwrap_or_else(|e| fatal("setting up io_uring (Linux 6.1 or later)", e));
    let (mut submitter, mut sq, mut cq) = ring.split();
    if !options.plain {
        submitter
            .register_ring_fd()
            .unwrap_or_else(|e| fatal("registering the ring's descriptor", e));
        submitter
            .register_files_sparse(FILES)
            .unwrap_or_else(|e| fatal("registering the file table", e));
    }
    let mut buffers = Buffers::new();
    buffers
        .register(&submitter)
        .unwrap_or_else(|e| fatal("registering the buffer ring", e));
    let listener_fd = listener.as_raw_fd();
    push(&submitter, &mut sq, accept(listener_fd));
    announce(
        listener
            .local_addr()
            .unwrap_or_else(|e| fatal("local_addr", e)),
    );
    let mut server = Server {
        submitter,
        plain: options.plain,
        listener: listener_fd,
        conns: Vec::new(),
        generations: Vec::new(),
        starved: Vec::new(),
        buffers,
    };
    let forever = Timespec::from(Duration::from_secs(3600));
    let args = SubmitArgs::new()
        .timespec(&forever)
        .min_wait_usec(options.batch_us);
    let mut completed = Vec::with_capacity(1024);
    let mut next = Vec::with_capacity(1024);
    loop {
        sq.sync();
        let entered = match options.batch_us {
            0 => server.submitter.submit_and_wait(1),
            _ => server.submitter.submit_with_args(BATCH, &args),
        };
        match entered {
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EINTR | libc::ETIME | libc::EBUSY)
                ) => {}
            Err(e) => fatal("io_uring_enter", e),
        }
        cq.sync();
        completed.extend((&mut cq).map(|c: cqueue::Entry| (c.user_data(), c.result(), c.flags())));
        // Publishes the new head: a wait that saw the old one would return at once.
        cq.sync();
        for (user_data, result, flags) in completed.drain(..) {
            server.complete(user_data, result, flags, &mut next);
            for entry in next.drain(..) {
                push(&server.submitter, &mut sq, entry);
            }
        }
    }
}

struct Server<'a> {
    submitter: Submitter<'a>,
    /// Connections are used by descriptor, not as registered files.
    plain: bool,
    listener: RawFd,
    /// Indexed by descriptor, which is also the connection's registered file slot.
    conns: Vec<Option<Conn>>,
    /// The generation of the next connection on each descriptor.
    generations: Vec<u32>,
    /// Connections whose receive stopped for want of buffers: they receive again as buffers
    /// come back.
    starved: Vec<(RawFd, u32)>,
    buffers: Buffers,
}

impl Server<'_> {
    /// Handles one completion; what to submit next goes to `next`.
    fn complete(&mut self, user_data: u64, result: i32, flags: u32, next: &mut Vec<Entry>) {
        let (kind, fd, generation) = untag(user_data);
        match kind {
            CANCEL => return,
            ACCEPT => {
                match result {
                    0.. => next.extend(self.open(result)),
                    _ => eprintln!("accept: {}", io::Error::from_raw_os_error(-result)),
                }
                if !cqueue::more(flags) {
                    next.push(accept(self.listener));
                }
                return;
            }
            _ => {}
        }
        let picked = cqueue::buffer_select(flags);
        let Some(conn) = self.conn_mut(fd, generation) else {
            // A completion of a connection that has closed: its buffer goes back.
            if let Some(id) = picked {
                self.give_back(id, next);
            }
            return;
        };
        if kind == RECV {
            conn.receiving = cqueue::more(flags);
            match (result, picked) {
                (1.., Some(id)) => conn.echoes.push_back((id, 0, result as u32)),
                (r, _) if r == -libc::ENOBUFS => self.starved.push((fd, generation)),
                _ => conn.ended = true, // the peer closed, or the connection failed
            }
            let plain = self.plain;
            let conn = self.conn_mut(fd, generation).expect("looked up above");
            if !conn.receiving && !conn.ended && result != -libc::ENOBUFS {
                conn.receiving = true;
                next.push(recv(plain, fd, generation));
            }
            if !conn.sending {
                self.send_next(fd, generation, next);
            }
            return;
        }
        conn.sending = false;
        if result < 0 {
            conn.ended = true;
        } else if let Some(first) = conn.echoes.front_mut() {
            first.1 += result as u32;
            if first.1 == first.2 {
                let (id, ..) = conn.echoes.pop_front().expect("the echo just sent");
                self.give_back(id, next);
            }
        }
        self.send_next(fd, generation, next);
    }

    /// Takes an accepted connection into the file table and starts receiving on it.
    fn open(&mut self, fd: RawFd) -> Option<Entry> {
        set_nodelay(fd);
        let registered = match u32::try_from(fd).ok().filter(|&slot| slot < FILES) {
            _ if self.plain => Ok(()),
            Some(slot) => self.submitter.register_files_update(slot, &[fd]).map(drop),
            None => Err(io::Error::from_raw_os_error(libc::EMFILE)),
        };
        if let Err(e) = registered {
            eprintln!("registering a connection: {e}");
            // SAFETY: the descriptor was just accepted and is stored nowhere.
            unsafe { libc::close(fd) };
            return None;
        }
        let index = fd as usize;
        if self.conns.len() <= index {
            self.conns.resize_with(index + 1, || None);
            self.generations.resize(index + 1, 0);
        }
        let generation = self.generations[index];
        self.conns[index] = Some(Conn {
            generation,
            echoes: VecDeque::new(),
            sending: false,
            receiving: true,
            ended: false,
        });
        Some(recv(self.plain, fd, generation))
    }

    /// Sends the connection's first echo if it has one and no send is in flight; closes an
    /// ended connection with no send in flight.
    fn send_next(&mut self, fd: RawFd, generation: u32, next: &mut Vec<Entry>) {
        let Some(conn) = self.conn_mut(fd, generation) else {
            return;
        };
        if conn.sending {
            return;
        }
        if conn.ended {
            self.close(fd, next);
            return;
        }
        let Some(&(id, sent, len)) = conn.echoes.front() else {
            return;
        };
        conn.sending = true;
        // The buffer stays out of the kernel's ring until this send completes, and its memory
        // lives as long as the process.
        let data = self.buffers.buffer(id).wrapping_add(sent as usize);
        let send = match self.plain {
            true => opcode::Send::new(types::Fd(fd), data, len - sent),
            false => opcode::Send::new(Fixed(fd as u32), data, len - sent),
        };
        next.push(
            send.flags(libc::MSG_NOSIGNAL)
                .build()
                .user_data(tag(SEND, fd, generation)),
        );
    }

    /// Ends a connection that has no send in flight: its queued buffers go back, its receive is
    /// cancelled if armed, its slot and descriptor are closed.
    fn close(&mut self, fd: RawFd, next: &mut Vec<Entry>) {
        let Some(conn) = self.conns[fd as usize].take() else {
            return;
        };
        self.generations[fd as usize] = (conn.generation + 1) & GENERATIONS;
        for (id, ..) in conn.echoes {
            self.give_back(id, next);
        }
        if conn.receiving {
            let armed = tag(RECV, fd, conn.generation);
            next.push(opcode::AsyncCancel::new(armed).build().user_data(CANCEL));
        }
        if !self.plain {
            // Emptying a slot in range does not fail; if it did, the slot would keep the socket
            // open until the next connection with this descriptor took it over.
            let _ = self.submitter.register_files_update(fd as u32, &[-1]);
        }
        // SAFETY: the descriptor is this connection's, closed once (it is gone from `conns`).
        unsafe { libc::close(fd) };
    }

    fn conn_mut(&mut self, fd: RawFd, generation: u32) -> Option<&mut Conn> {
        self.conns
            .get_mut(fd as usize)?
            .as_mut()
            .filter(|c| c.generation == generation)
    }

    /// Gives a buffer back to the kernel, and lets a connection that ran out receive again.
    fn give_back(&mut self, id: u16, next: &mut Vec<Entry>) {
        self.buffers.give_back(id);
        while let Some((fd, generation)) = self.starved.pop() {
            if let Some(conn) = self.conn_mut(fd, generation) {
                if !conn.receiving && !conn.ended {
                    conn.receiving = true;
                    next.push(recv(self.plain, fd, generation));
                    return;
                }
            }
        }
    }
}

/// The multishot receive of a connection: by descriptor if `plain`, else as a registered file.
fn recv(plain: bool, fd: RawFd, generation: u32) -> Entry {
    let recv = match plain {
        true => opcode::RecvMulti::new(types::Fd(fd), GROUP),
        false => opcode::RecvMulti::new(Fixed(fd as u32), GROUP),
    };
    recv.build().user_data(tag(RECV, fd, generation))
}

fn accept(listener: RawFd) -> Entry {
    opcode::AcceptMulti::new(types::Fd(listener))
        .flags(libc::SOCK_CLOEXEC)
        .build()
        .user_data(tag(ACCEPT, 0, 0))
}

/// User data: the kind in the low two bits, then the descriptor, then the generation.
fn tag(kind: u64, fd: RawFd, generation: u32) -> u64 {
    kind | (fd as u32 as u64) << 2 | (generation as u64) << 34
}

fn untag(user_data: u64) -> (u64, RawFd, u32) {
    (
        user_data & 3,
        ((user_data >> 2) & 0xffff_ffff) as u32 as RawFd,
        (user_data >> 34) as u32,
    )
}

/// Queues an entry, submitting what is queued first if the queue is full.
fn push(submitter: &Submitter<'_>, sq: &mut SubmissionQueue<'_>, entry: Entry) {
    loop {
        // SAFETY: every entry points to memory that outlives its request: the buffers and the
        // ring live as long as the process, and a cancel points to nothing.
        if unsafe { sq.push(&entry) }.is_ok() {
            return;
        }
        sq.sync();
        match submitter.submit() {
            Err(e) if e.raw_os_error() != Some(libc::EBUSY) => fatal("io_uring_enter", e),
            _ => sq.sync(),
        }
    }
}
