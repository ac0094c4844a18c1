//! One load-generating thread: an epoll loop (level-triggered) over its share of the connections.
//!
//! Unpaced, each connection keeps `depth` messages in flight and sends the next one as soon as an
//! echo completes. Paced, the thread owns `rate × its connections / all connections` messages per
//! second, handed to its connections round-robin at fixed times (slot `j` is due at
//! `start + j / rate`); a message whose connection has a full pipeline waits in that connection's
//! backlog, and its latency still counts from the slot's time, so a stalled server is charged for
//! the whole stall (no coordinated omission). The loop sleeps in `epoll_pwait2` until the next
//! slot or the end of the run, whichever comes first, and never runs past the end.

use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Barrier, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use super::conn::{Conn, ConnError};

/// What the threads share while running: counters the progress display reads, and the first error.
#[derive(Default)]
pub struct Shared {
    pub completed: AtomicU64,
    pub errors: AtomicU64,
    pub first_error: Mutex<Option<String>>,
    /// Set when a thread could not open its connections: everybody stops after the barrier.
    pub aborted: AtomicBool,
}

impl Shared {
    fn error(&self, e: ConnError) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        let mut first = self.first_error.lock().unwrap_or_else(|p| p.into_inner());
        first.get_or_insert(e);
    }
}

/// One thread's part of the run.
pub struct Plan {
    pub addr: SocketAddr,
    /// The connection ids this thread owns.
    pub ids: std::ops::Range<u64>,
    pub size: usize,
    pub depth: usize,
    /// Messages per second for this thread's connections together; `None` for unpaced.
    pub rate: Option<f64>,
    pub warmup: Duration,
    pub duration: Duration,
}

/// What one thread measured inside the measurement window.
pub struct Measured {
    pub messages: u64,
    pub latency_ns: Histogram<u64>,
}

/// Largest latency recorded exactly: a minute, in nanoseconds.
const MAX_LATENCY_NS: u64 = 60_000_000_000;

/// Runs one thread: connects, waits for the others, loads, returns what it measured.
pub fn run(plan: &Plan, barrier: &Barrier, shared: &Shared) -> Result<Measured, String> {
    let conns = plan
        .ids
        .clone()
        .map(|id| open(plan.addr, id, plan.size))
        .collect();
    let conns: Result<Vec<Conn>, String> = conns;
    if conns.is_err() {
        shared.aborted.store(true, Ordering::SeqCst);
    }
    barrier.wait();
    let conns = conns?;
    if shared.aborted.load(Ordering::SeqCst) {
        return Err("another thread could not connect".into());
    }
    Loop::new(plan, conns, shared)?.run()
}

fn open(addr: SocketAddr, id: u64, size: usize) -> Result<Conn, String> {
    let stream = TcpStream::connect(addr).map_err(|e| format!("connecting to {addr}: {e}"))?;
    stream
        .set_nodelay(true)
        .and_then(|()| stream.set_nonblocking(true))
        .map_err(|e| format!("setting up a connection: {e}"))?;
    Ok(Conn::new(id, stream, size))
}

struct Loop<'a> {
    plan: &'a Plan,
    shared: &'a Shared,
    ep: OwnedFd,
    conns: Vec<Option<Conn>>,
    measure_from: Instant,
    end: Instant,
    measured: Measured,
}

impl<'a> Loop<'a> {
    fn new(plan: &'a Plan, conns: Vec<Conn>, shared: &'a Shared) -> Result<Loop<'a>, String> {
        // SAFETY: epoll_create1 takes no pointers.
        let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if ep < 0 {
            return Err(format!(
                "epoll_create1: {}",
                std::io::Error::last_os_error()
            ));
        }
        // SAFETY: `ep` is a new descriptor that nothing else owns.
        let ep = unsafe { OwnedFd::from_raw_fd(ep) };
        let now = Instant::now();
        let lp = Loop {
            plan,
            shared,
            ep,
            conns: conns.into_iter().map(Some).collect(),
            measure_from: now + plan.warmup,
            end: now + plan.warmup + plan.duration,
            measured: Measured {
                messages: 0,
                latency_ns: Histogram::new_with_bounds(1, MAX_LATENCY_NS, 3)
                    .map_err(|e| format!("creating a histogram: {e}"))?,
            },
        };
        for (i, conn) in lp.conns.iter().flatten().enumerate() {
            interest(&lp.ep, libc::EPOLL_CTL_ADD, conn.fd(), false, i)?;
        }
        Ok(lp)
    }

    fn run(mut self) -> Result<Measured, String> {
        if self.plan.rate.is_some() {
            // Paced sends are due every few microseconds; the default 50 µs timer slack would
            // make every wake-up late. Best effort: an error only costs precision.
            // SAFETY: PR_SET_TIMERSLACK takes a plain integer and changes this thread only.
            unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1000 as libc::c_ulong) };
        }
        let start = Instant::now();
        let n = self.conns.len() as u64;
        let mut next_slot = 0u64;
        let slot_time = |j: u64, rate: f64| start + Duration::from_secs_f64(j as f64 / rate);
        if self.plan.rate.is_none() {
            for i in 0..self.conns.len() {
                self.pump(i, start);
            }
        }
        let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 256];
        let mut buf = vec![0u8; 64 * 1024];
        let mut now = Instant::now();
        while now < self.end && n > 0 {
            let mut deadline = self.end;
            if let Some(rate) = self.plan.rate {
                while slot_time(next_slot, rate) <= now {
                    let i = (next_slot % n) as usize;
                    if let Some(conn) = self.conns[i].as_mut() {
                        conn.backlog.push_back(slot_time(next_slot, rate));
                    }
                    next_slot += 1;
                    self.pump(i, now);
                }
                deadline = deadline.min(slot_time(next_slot, rate));
            }
            let ready = self.wait(&mut events, deadline.saturating_duration_since(now))?;
            now = Instant::now();
            let mut completed = 0;
            for ev in &events[..ready] {
                let i = ev.u64 as usize;
                if ev.events & !(libc::EPOLLOUT as u32) != 0 {
                    completed += self.serve(i, &mut buf, now);
                }
                self.pump(i, now);
            }
            self.shared
                .completed
                .fetch_add(completed, Ordering::Relaxed);
        }
        Ok(self.measured)
    }

    /// Reads what connection `i` has, checks it, records completions; returns how many.
    fn serve(&mut self, i: usize, buf: &mut [u8], now: Instant) -> u64 {
        let Some(conn) = self.conns[i].as_mut() else {
            return 0;
        };
        // SAFETY: `buf` is valid for writes of its length for the whole call.
        let n = unsafe { libc::read(conn.fd(), buf.as_mut_ptr().cast(), buf.len()) };
        let mut count = 0;
        let result = match n {
            0 => Err(format!("connection {}: the server closed it", conn.id)),
            n if n < 0 => {
                let e = std::io::Error::last_os_error();
                match e.kind() {
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted => Ok(()),
                    _ => Err(format!("connection {}: read: {e}", conn.id)),
                }
            }
            n => {
                let (from, m) = (self.measure_from, &mut self.measured);
                conn.absorb(&buf[..n as usize], |sent| {
                    count += 1;
                    if now >= from {
                        m.messages += 1;
                        let ns = now.saturating_duration_since(sent).as_nanos() as u64;
                        m.latency_ns.saturating_record(ns.max(1));
                    }
                })
            }
        };
        if let Err(e) = result {
            self.fail(i, e);
        }
        count
    }

    /// Fills connection `i`'s pipeline (from its backlog when paced), writes, and asks for
    /// `EPOLLOUT` exactly while a write is unfinished.
    fn pump(&mut self, i: usize, now: Instant) {
        let Some(conn) = self.conns[i].as_mut() else {
            return;
        };
        while conn.in_flight() < self.plan.depth {
            match self.plan.rate {
                None => conn.queue(now),
                Some(_) => match conn.backlog.pop_front() {
                    Some(due) => conn.queue(due),
                    None => break,
                },
            }
        }
        let result = conn.flush().and_then(|all| {
            let want_out = !all;
            if want_out == conn.wants_out {
                return Ok(());
            }
            conn.wants_out = want_out;
            interest(&self.ep, libc::EPOLL_CTL_MOD, conn.fd(), want_out, i)
        });
        if let Err(e) = result {
            self.fail(i, e);
        }
    }

    fn fail(&mut self, i: usize, e: ConnError) {
        self.shared.error(e);
        // Dropping the connection closes its socket, which also leaves the epoll set.
        self.conns[i] = None;
    }
}

/// Registers (or changes) connection `i`'s socket `fd` for reading, and writing if `out`.
fn interest(ep: &OwnedFd, op: libc::c_int, fd: RawFd, out: bool, i: usize) -> Result<(), String> {
    let mut flags = libc::EPOLLIN | libc::EPOLLRDHUP;
    if out {
        flags |= libc::EPOLLOUT;
    }
    let mut ev = libc::epoll_event {
        events: flags as u32,
        u64: i as u64,
    };
    // SAFETY: `ev` is valid for the call; the kernel copies it.
    if unsafe { libc::epoll_ctl(ep.as_raw_fd(), op, fd, &mut ev) } < 0 {
        return Err(format!("epoll_ctl: {}", std::io::Error::last_os_error()));
    }
    Ok(())
}

impl Loop<'_> {
    /// Waits up to `timeout` for readiness; returns how many entries of `events` are filled.
    fn wait(&self, events: &mut [libc::epoll_event], timeout: Duration) -> Result<usize, String> {
        let ts = libc::timespec {
            tv_sec: timeout.as_secs() as libc::time_t,
            tv_nsec: timeout.subsec_nanos() as libc::c_long,
        };
        // SAFETY: `events` is valid for `events.len()` entries and `ts` for the whole call; a
        // null signal mask means "keep the current one".
        let n = unsafe {
            libc::epoll_pwait2(
                self.ep.as_raw_fd(),
                events.as_mut_ptr(),
                events.len() as libc::c_int,
                &ts,
                std::ptr::null(),
            )
        };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                return Ok(0);
            }
            return Err(format!("epoll_pwait2: {e}"));
        }
        Ok(n as usize)
    }
}
