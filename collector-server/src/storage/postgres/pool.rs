//! The connections, each on an OS thread of its own: no call of the blocking client ever runs
//! on a thread inside a tokio runtime (where it would panic). A caller sends its work over a
//! channel and waits on a reply channel; any free connection takes it.
//!
//! A connection is opened when first needed, checked with a round trip when it has been idle
//! (a restarted server closes every connection while the collector waits), and dropped when a
//! call finds it closed, so the next call opens a new one.

use super::super::{Result, StorageError};
use postgres::{Client, Config, NoTls};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::str::FromStr;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Connections per store.
pub const POOL_SIZE: usize = 4;
/// A connection idle this long is checked before it is used.
const IDLE_CHECK: Duration = Duration::from_secs(2);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

type Job = Box<dyn FnOnce(&mut Conn) + Send>;

pub(super) struct Pool {
    jobs: Mutex<Option<Sender<Job>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

/// One connection, opened on demand.
struct Conn {
    config: Config,
    client: Option<Client>,
    used: Instant,
}

impl Pool {
    pub fn start(url: &str) -> Result<Pool> {
        let mut config = Config::from_str(url).map_err(|e| StorageError::Backend {
            what: "PostgreSQL URL",
            source: Box::new(e),
        })?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        if config.get_application_name().is_none() {
            config.application_name("cairn-collector");
        }
        if config.get_options().is_none() {
            // The staging table's `CREATE … IF NOT EXISTS` notice would be logged on every
            // timeline batch: notices are not the collector's log.
            config.options("-c client_min_messages=warning");
        }
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        let mut threads = Vec::new();
        for i in 0..POOL_SIZE {
            let rx = Arc::clone(&rx);
            let conn = Conn {
                config: config.clone(),
                client: None,
                used: Instant::now(),
            };
            let t = std::thread::Builder::new()
                .name(format!("cairn-pg-{i}"))
                .spawn(move || serve(&rx, conn))
                .map_err(|e| StorageError::Backend {
                    what: "starting a PostgreSQL connection thread",
                    source: Box::new(e),
                })?;
            threads.push(t);
        }
        Ok(Pool {
            jobs: Mutex::new(Some(tx)),
            threads,
        })
    }

    /// Run `f` on a connection and wait for its answer.
    pub fn run<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Client) -> Result<R> + Send + 'static,
    ) -> Result<R> {
        let (reply, answer) = mpsc::sync_channel(1);
        let job: Job = Box::new(move |conn: &mut Conn| {
            // The caller may have gone (it never does: it waits); nothing to do then.
            let _ = reply.send(conn.call(f));
        });
        let sent = self
            .jobs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|tx| tx.send(job).is_ok())
            .unwrap_or(false);
        if !sent {
            return Err(stopped());
        }
        answer.recv().map_err(|_| stopped())?
    }
}

fn stopped() -> StorageError {
    StorageError::Backend {
        what: "PostgreSQL",
        source: "the connection threads stopped".into(),
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        // Closing the channel ends every thread once its current call is done.
        self.jobs.lock().unwrap_or_else(|p| p.into_inner()).take();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn serve(rx: &Mutex<Receiver<Job>>, mut conn: Conn) {
    loop {
        let job = {
            let rx = rx.lock().unwrap_or_else(|p| p.into_inner());
            match rx.recv() {
                Ok(job) => job,
                Err(_) => return,
            }
        };
        job(&mut conn);
    }
}

impl Conn {
    fn client(&mut self) -> Result<&mut Client> {
        let stale = match &mut self.client {
            Some(c) if c.is_closed() => true,
            Some(c) if self.used.elapsed() >= IDLE_CHECK => c.is_valid(CONNECT_TIMEOUT).is_err(),
            Some(_) => false,
            None => true,
        };
        if stale {
            self.client = None;
            let client = self
                .config
                .connect(NoTls)
                .map_err(|e| StorageError::Backend {
                    what: "connecting to PostgreSQL",
                    source: Box::new(e),
                })?;
            self.client = Some(client);
        }
        self.client.as_mut().ok_or_else(|| StorageError::Backend {
            what: "PostgreSQL",
            source: "no connection".into(),
        })
    }

    fn call<R>(&mut self, f: impl FnOnce(&mut Client) -> Result<R>) -> Result<R> {
        let client = self.client()?;
        let out = catch_unwind(AssertUnwindSafe(|| f(client)));
        self.used = Instant::now();
        match out {
            Ok(r) => {
                if self.client.as_ref().is_some_and(|c| c.is_closed()) {
                    self.client = None;
                }
                r
            }
            Err(_) => {
                // Whatever state the client was left in, it is not used again.
                self.client = None;
                Err(StorageError::Backend {
                    what: "PostgreSQL",
                    source: "the call panicked; its connection was dropped".into(),
                })
            }
        }
    }
}
