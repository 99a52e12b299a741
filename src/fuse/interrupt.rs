//! Requests in flight, so that they can be stopped.
//!
//! The kernel keeps a process that made a FUSE request in an uninterruptible
//! wait once the daemon has read the request, until the daemon answers it.
//! When the process gets a signal the kernel sends `FUSE_INTERRUPT` naming
//! the request; answering the request with `EINTR` then ends the wait. This
//! table is how the adapter finds the request: every spawned operation
//! registers its unique id with a stop channel, and `interrupt` (or a
//! shutdown, which stops them all) sends on it. Dropping the operation's
//! future only stops that reader's wait: downloads run in tasks of their own
//! and go on for other readers and the cache.
//!
//! An interrupt can overtake its request (two threads read the device), so
//! an interrupt for an unknown id is remembered for a while and honoured
//! when the request registers.

use super::lock;
use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::fs;

/// Why an operation was stopped before it finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// The calling process got a signal: answer `EINTR`.
    Interrupted,
    /// The mount is going away: answer `EIO`.
    Shutdown,
}

/// How long an interrupt that arrived before its request is remembered.
const EARLY_KEEP: Duration = Duration::from_secs(10);

#[derive(Default)]
pub struct Requests {
    running: Mutex<HashMap<u64, oneshot::Sender<Stop>>>,
    early: Mutex<HashMap<u64, Instant>>,
    closing: AtomicBool,
}

impl Requests {
    /// Registers request `unique`; the receiver says when to stop. `Err`
    /// when it must not start at all (interrupted already, or shutting down).
    pub fn register(&self, unique: u64) -> Result<oneshot::Receiver<Stop>, Stop> {
        if self.closing.load(Ordering::Acquire) {
            return Err(Stop::Shutdown);
        }
        if lock(&self.early).remove(&unique).is_some() {
            return Err(Stop::Interrupted);
        }
        let (tx, rx) = oneshot::channel();
        lock(&self.running).insert(unique, tx);
        // A shutdown that began while we inserted must still reach us.
        if self.closing.load(Ordering::Acquire) {
            if let Some(tx) = lock(&self.running).remove(&unique) {
                let _ = tx.send(Stop::Shutdown);
            }
        }
        Ok(rx)
    }

    /// Runs `fut`, the work of request `unique` (`stop` from `register`),
    /// with `limit`: its result (running out of time is
    /// `fs::Error::Timeout`), or why it was stopped first. The future is
    /// dropped either way before this returns.
    pub async fn guard<T>(
        &self,
        unique: u64,
        mut stop: oneshot::Receiver<Stop>,
        limit: Duration,
        fut: impl Future<Output = Result<T, fs::Error>>,
    ) -> Result<Result<T, fs::Error>, Stop> {
        let outcome = tokio::select! {
            r = tokio::time::timeout(limit, fut) => {
                Ok(r.unwrap_or(Err(fs::Error::Timeout(limit))))
            }
            // A closed channel means the table was dropped: the session is
            // over, answer as for a shutdown.
            why = &mut stop => Err(why.unwrap_or(Stop::Shutdown)),
        };
        lock(&self.running).remove(&unique);
        outcome
    }

    /// The kernel interrupted request `unique`.
    pub fn interrupt(&self, unique: u64) {
        match lock(&self.running).remove(&unique) {
            Some(tx) => {
                let _ = tx.send(Stop::Interrupted);
            }
            None => {
                let now = Instant::now();
                let mut early = lock(&self.early);
                early.retain(|_, t| now.duration_since(*t) < EARLY_KEEP);
                early.insert(unique, now);
            }
        }
    }

    /// Stops every running request and refuses new ones.
    pub fn shutdown(&self) -> usize {
        self.closing.store(true, Ordering::Release);
        let all: Vec<_> = lock(&self.running).drain().collect();
        let n = all.len();
        for (_, tx) in all {
            let _ = tx.send(Stop::Shutdown);
        }
        n
    }

    /// Requests being answered by the runtime now.
    pub fn in_flight(&self) -> usize {
        lock(&self.running).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_interrupt_reaches_its_running_request() {
        let r = Requests::default();
        let mut rx = r.register(7).unwrap();
        r.interrupt(7);
        assert_eq!(rx.try_recv().unwrap(), Stop::Interrupted);
        assert_eq!(r.in_flight(), 0);
    }

    #[test]
    fn an_interrupt_that_overtakes_its_request_stops_it_at_registration() {
        let r = Requests::default();
        r.interrupt(9);
        assert_eq!(r.register(9).unwrap_err(), Stop::Interrupted);
        // Remembered once only.
        assert!(r.register(9).is_ok());
    }

    #[test]
    fn a_finished_request_ignores_a_late_interrupt_for_another() {
        let r = Requests::default();
        let mut rx = r.register(1).unwrap();
        lock(&r.running).remove(&1);
        r.interrupt(2);
        assert!(rx.try_recv().is_err());
        assert_eq!(r.in_flight(), 0);
    }

    #[test]
    fn shutdown_stops_all_and_refuses_new_requests() {
        let r = Requests::default();
        let mut a = r.register(1).unwrap();
        let mut b = r.register(2).unwrap();
        assert_eq!(r.shutdown(), 2);
        assert_eq!(a.try_recv().unwrap(), Stop::Shutdown);
        assert_eq!(b.try_recv().unwrap(), Stop::Shutdown);
        assert_eq!(r.register(3).unwrap_err(), Stop::Shutdown);
    }
}
