//! Exit codes, one per kind of outcome a script can act on, and the error that carries one.

/// What `cairn` exits with. Documented in `cairn --help` and the README; scripts rely on them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Ok = 0,
    /// Anything not listed below.
    Error = 1,
    /// Bad arguments, or a request the collector refused as invalid (HTTP 400).
    Usage = 2,
    /// The collection finished without all of its evidence (partial or failed).
    Partial = 3,
    /// No such host, collection, item or token (HTTP 404).
    NotFound = 4,
    /// No token, or one the collector refuses (HTTP 401/403).
    Auth = 5,
    /// The collector cannot be reached (refused, timed out, TLS).
    Network = 6,
    /// A name or prefix matches several, or the state forbids it (HTTP 409).
    Conflict = 7,
    /// Custody or a hash does not verify.
    Verify = 8,
    /// A containment action was not confirmed: the agent could not enforce it, rolled it
    /// back, or did not answer in time.
    Contain = 9,
}

impl Exit {
    pub fn code(self) -> i32 {
        self as i32
    }
}

/// The table `cairn --help` ends with.
pub const HELP: &str = "Exit codes:
  0  ok
  1  error (anything not below)
  2  usage: bad arguments, or a request the collector refused as invalid
  3  partial: the collection finished without all of its evidence (partial or failed)
  4  not found: no such host, collection, item or token
  5  auth: no API token (set CAIRN_TOKEN), or the collector refused it
  6  network: the collector's API cannot be reached
  7  conflict: a name or prefix matches several, the state forbids it, or -o names an existing file (use --force)
  8  verification failed: custody or a hash does not match
  9  containment not confirmed: the agent could not enforce it, rolled it back, or did not answer in time";

/// An error with the exit code it should end `cairn` with.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Failure {
    pub exit: Exit,
    pub message: String,
}

impl Failure {
    pub fn new(exit: Exit, message: impl Into<String>) -> Failure {
        Failure {
            exit,
            message: message.into(),
        }
    }
}

/// Fail with an exit code: `return fail(Exit::Usage, "…")`.
pub fn fail<T>(exit: Exit, message: impl Into<String>) -> anyhow::Result<T> {
    Err(Failure::new(exit, message).into())
}

/// The exit code for an error: the first [`Failure`] in its chain, else a network error
/// from the HTTP client, else 1.
pub fn code_of(e: &anyhow::Error) -> i32 {
    for cause in e.chain() {
        if let Some(f) = cause.downcast_ref::<Failure>() {
            return f.exit.code();
        }
        if let Some(r) = cause.downcast_ref::<reqwest::Error>() {
            if r.is_connect() || r.is_timeout() {
                return Exit::Network.code();
            }
        }
    }
    Exit::Error.code()
}
