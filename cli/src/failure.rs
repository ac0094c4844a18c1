//! The command's error: one message that says what the program was doing and why it failed.
//!
//! The library's [`overlapped::Error`] says *what* went wrong (a Win32 code and the errno); a
//! user running `overlapped demo` also needs to know *which step* it was. [`Context::context`]
//! joins the two, so every failure the command reports reads "doing X: WSAE... (code): why".

use std::fmt;

/// A failure of the command, ready to print.
#[derive(Debug)]
pub struct Failure {
    message: String,
}

/// The result type of the command's steps.
pub type Outcome<T> = Result<T, Failure>;

impl Failure {
    /// A failure with its full message.
    pub fn new(message: impl Into<String>) -> Failure {
        Failure {
            message: message.into(),
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Failure {}

/// Adds what the program was doing to an error.
pub trait Context<T> {
    /// The error, prefixed with `what` ("receiving on the server side: ...").
    fn context(self, what: impl fmt::Display) -> Outcome<T>;
}

impl<T, E: fmt::Display> Context<T> for Result<T, E> {
    fn context(self, what: impl fmt::Display) -> Outcome<T> {
        self.map_err(|e| Failure::new(format!("{what}: {e}")))
    }
}
