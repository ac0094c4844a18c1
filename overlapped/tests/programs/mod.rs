//! Running the book's example programs from a test: finding the built binary, a child process
//! that is killed when the test lets go of it, its output line by line, and a bounded wait for
//! it to end. Each test file that runs programs uses a part of this.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::thread;
use std::time::{Duration, Instant};

/// How long any one program, read or connection may take before the test fails.
pub const LIMIT: Duration = Duration::from_secs(20);

/// `…/<profile>/examples/<name>`, from this test binary's `…/<profile>/deps/`.
pub fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("the test binary lives in <target>/<profile>/deps");
    let path = profile_dir.join("examples").join(name);
    assert!(
        path.is_file(),
        "{} is missing: build the examples (`cargo test -p overlapped` does)",
        path.display()
    );
    path
}

/// A running example, killed when the test lets go of it.
pub struct Program {
    child: Option<Child>,
}

impl Program {
    pub fn start(name: &str, args: &[&str]) -> Program {
        let child = Command::new(example(name))
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Program { child: Some(child) }
    }

    pub fn child(&mut self) -> &mut Child {
        self.child.as_mut().expect("still running")
    }

    pub fn stdin(&mut self) -> ChildStdin {
        self.child().stdin.take().expect("stdin is piped")
    }

    /// Lines of stdout (or stderr), read on a thread of their own so the program never blocks
    /// on a full pipe, until the program closes it.
    pub fn lines(&mut self, stderr: bool) -> Receiver<String> {
        let child = self.child();
        let reader: Box<dyn Read + Send> = match stderr {
            false => Box::new(child.stdout.take().expect("stdout is piped")),
            true => Box::new(child.stderr.take().expect("stderr is piped")),
        };
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            // Reads to the end even when nobody listens any more, so the program's writes never
            // fail for a closed pipe.
            for line in BufReader::new(reader).lines() {
                let Ok(line) = line else { return };
                let _ = tx.send(line);
            }
        });
        rx
    }

    /// Waits for the program to exit, at most [`LIMIT`]; after that kills it and fails.
    pub fn finish(mut self) -> Output {
        let mut child = self.child.take().expect("not finished yet");
        let deadline = Instant::now() + LIMIT;
        while child.try_wait().expect("try_wait").is_none() {
            if Instant::now() >= deadline {
                let _ = child.kill();
                let out = child.wait_with_output().expect("collect output");
                panic!("killed after {LIMIT:?}: {}", describe(&out));
            }
            thread::sleep(Duration::from_millis(10));
        }
        child.wait_with_output().expect("collect output")
    }

    pub fn assert_running(&mut self) {
        let status = self.child().try_wait().expect("try_wait");
        assert!(status.is_none(), "the program exited: {status:?}");
    }
}

impl Drop for Program {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

pub fn describe(out: &Output) -> String {
    format!(
        "{}, stdout {:?}, stderr {:?}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A TCP port that was free a moment ago.
pub fn free_port() -> u16 {
    let probe = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    probe.local_addr().expect("local address").port()
}

/// Connects to `port` on loopback, retrying (bounded) while the server is not listening yet.
pub fn connect_when_listening(port: u16) -> TcpStream {
    let deadline = Instant::now() + LIMIT;
    loop {
        match TcpStream::connect(("127.0.0.1", port)) {
            Ok(s) => {
                s.set_read_timeout(Some(LIMIT)).expect("read timeout");
                s.set_write_timeout(Some(LIMIT)).expect("write timeout");
                return s;
            }
            Err(e) => {
                assert!(Instant::now() < deadline, "the server never listened: {e}");
                thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

/// Runs a program to its end (bounded by [`LIMIT`]) and returns what it printed.
pub fn run(name: &str, args: &[&str]) -> Output {
    Program::start(name, args).finish()
}
