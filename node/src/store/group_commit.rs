//! Group commit for the store's one writer connection.
//!
//! With `synchronous=FULL` every SQLite commit waits for an fsync of the WAL.
//! Writers that arrive while a commit is under way wait for the connection;
//! when they get it, each runs its effect inside the transaction the first of
//! them opened, in a savepoint of its own, and the last of them commits for
//! all. So N concurrent writers pay one fsync, not N, and each still gets
//! what a transaction of its own would give it:
//!
//! - its effect is all or nothing: an effect that fails (or panics) is rolled
//!   back to its savepoint and leaves the others' effects alone;
//! - [`Writer::write`] returns only once the transaction holding its effect
//!   has committed; if that commit fails, every writer in it gets the error.
//!
//! A transaction is committed when no other writer is waiting for the
//! connection, or when it holds [`MAX_MEMBERS`] effects, or when it has been
//! open for [`MAX_OPEN`], so a steady stream of writers cannot hold it open.

use super::control;
use crate::error::{Error, Result};
use rusqlite::Connection;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

/// Effects in one transaction at most.
pub const MAX_MEMBERS: usize = 256;
/// How long one transaction may stay open for writers still arriving.
pub const MAX_OPEN: Duration = Duration::from_millis(10);
/// How often a writer waiting for a commit looks whether it must commit
/// itself (the writer that should have did not get to it).
const RECHECK: Duration = Duration::from_millis(5);

pub struct Writer {
    state: Mutex<State>,
    /// How the transactions ended, under a lock of its own: the writers
    /// waiting for their commit, all woken at once when it ends, take this
    /// one for a moment, not the connection's (held through effects and
    /// commits), so they do not queue behind each other and the next
    /// writers to wake.
    outcome: Mutex<Outcome>,
    ended: Condvar,
    /// Writers waiting for the connection: while any wait, the open
    /// transaction is left for one of them to commit.
    arriving: AtomicUsize,
    /// Told how long each commit took (its WAL write, sync and any
    /// checkpoint): what every durable answer waits for.
    observer: OnceLock<Box<dyn Fn(Duration) + Send + Sync>>,
}

struct State {
    conn: Connection,
    /// A transaction is open with `members` effects in it.
    open: bool,
    members: usize,
    opened_at: Instant,
    /// The number of the open (or next) transaction.
    epoch: u64,
    /// Transactions committed and effects in them, since the start.
    commits: u64,
    effects: u64,
}

/// The number of the last transaction ended; `failed` holds the error of the
/// last one whose commit failed.
#[derive(Default)]
struct Outcome {
    ended: u64,
    failed: Option<(u64, String)>,
}

impl Writer {
    pub fn new(conn: Connection) -> Self {
        Self {
            state: Mutex::new(State {
                conn,
                open: false,
                members: 0,
                opened_at: Instant::now(),
                epoch: 1,
                commits: 0,
                effects: 0,
            }),
            outcome: Mutex::new(Outcome::default()),
            ended: Condvar::new(),
            arriving: AtomicUsize::new(0),
            observer: OnceLock::new(),
        }
    }

    /// Has `observer` told the duration of every commit from now on (the
    /// first observer set stays).
    pub fn observe_commits(&self, observer: impl Fn(Duration) + Send + Sync + 'static) {
        let _ = self.observer.set(Box::new(observer));
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// Runs `effect` in the shared transaction and returns once that
    /// transaction is durable. Blocking.
    pub fn write<T>(&self, effect: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        self.arriving.fetch_add(1, Ordering::SeqCst);
        let mut state = self.lock();
        self.arriving.fetch_sub(1, Ordering::SeqCst);
        if !state.open {
            control(&state.conn, "BEGIN IMMEDIATE").map_err(Error::store("cannot begin"))?;
            state.open = true;
            state.members = 0;
            state.opened_at = Instant::now();
        }
        if let Err(e) = control(&state.conn, "SAVEPOINT effect") {
            self.end_if_due(&mut state);
            return Err(Error::store("cannot begin")(e));
        }
        let outcome = catch_unwind(AssertUnwindSafe(|| effect(&state.conn)));
        let kept = matches!(outcome, Ok(Ok(_)));
        let resolved = if kept {
            control(&state.conn, "RELEASE effect")
        } else {
            state
                .conn
                .execute_batch("ROLLBACK TO effect; RELEASE effect")
        };
        if let Err(e) = resolved {
            // The transaction is in an unknown state: end it, effects and all.
            let _ = state.conn.execute_batch("ROLLBACK");
            let message = format!("cannot end a savepoint: {e}");
            self.ended_with(&mut state, Some(message.clone()));
            return Err(Error::Store {
                context: message,
                source: e,
            });
        }
        let value = match outcome {
            Err(panic) => {
                self.end_if_due(&mut state);
                drop(state);
                resume_unwind(panic);
            }
            Ok(Err(error)) => {
                self.end_if_due(&mut state);
                return Err(error);
            }
            Ok(Ok(value)) => value,
        };
        state.members += 1;
        let epoch = state.epoch;
        self.end_if_due(&mut state);
        drop(state);
        let mut outcome = lock(&self.outcome);
        loop {
            if outcome.ended >= epoch {
                return match &outcome.failed {
                    Some((failed, message)) if *failed == epoch => Err(Error::Io {
                        context: "store: cannot commit".into(),
                        source: std::io::Error::other(message.clone()),
                    }),
                    _ => Ok(value),
                };
            }
            let (waited, timeout) = self
                .ended
                .wait_timeout(outcome, RECHECK)
                .unwrap_or_else(|e| e.into_inner());
            outcome = waited;
            if timeout.timed_out() && outcome.ended < epoch {
                // Never under the outcome's lock: a commit takes it.
                drop(outcome);
                self.end_if_due(&mut self.lock());
                outcome = lock(&self.outcome);
            }
        }
    }

    /// Commits the open transaction if no writer is about to join it, or if
    /// it is full or old enough.
    fn end_if_due(&self, state: &mut State) {
        if !state.open {
            return;
        }
        let due = self.arriving.load(Ordering::SeqCst) == 0
            || state.members >= MAX_MEMBERS
            || state.opened_at.elapsed() >= MAX_OPEN;
        if !due {
            return;
        }
        let started = Instant::now();
        let failure = match control(&state.conn, "COMMIT") {
            Ok(()) => {
                if state.members > 0
                    && let Some(observe) = self.observer.get()
                {
                    observe(started.elapsed());
                }
                None
            }
            Err(e) => {
                let _ = state.conn.execute_batch("ROLLBACK");
                tracing::error!(error = %e, effects = state.members, "Store commit failed.");
                Some(e.to_string())
            }
        };
        self.ended_with(state, failure);
    }

    fn ended_with(&self, state: &mut State, failure: Option<String>) {
        if failure.is_none() && state.members > 0 {
            state.commits += 1;
            state.effects += state.members as u64;
        }
        let mut outcome = lock(&self.outcome);
        if let Some(message) = failure {
            outcome.failed = Some((state.epoch, message));
        }
        outcome.ended = state.epoch;
        drop(outcome);
        state.open = false;
        state.members = 0;
        state.epoch += 1;
        self.ended.notify_all();
    }

    /// Transactions committed and the effects they held, since the start.
    pub fn commits(&self) -> (u64, u64) {
        let state = self.lock();
        (state.commits, state.effects)
    }

    /// Runs `f` on the connection outside any transaction (schema set-up).
    pub fn with_connection<T>(&self, f: impl FnOnce(&Connection) -> T) -> T {
        let state = self.lock();
        f(&state.conn)
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn writer() -> Arc<Writer> {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE t (v INTEGER PRIMARY KEY)")
            .unwrap();
        Arc::new(Writer::new(conn))
    }

    fn count(w: &Writer) -> i64 {
        w.with_connection(|c| c.query_row("SELECT COUNT(*) FROM t", [], |r| r.get(0)))
            .unwrap()
    }

    #[test]
    fn concurrent_writers_share_commits_and_each_sees_its_effect_durable() {
        let w = writer();
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let w = w.clone();
                std::thread::spawn(move || {
                    for i in 0..200 {
                        w.write(|c| {
                            c.execute("INSERT INTO t (v) VALUES (?1)", [t * 1000 + i])
                                .map_err(Error::store("insert"))
                        })
                        .unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(count(&w), 1600);
        let (commits, effects) = w.commits();
        assert_eq!(effects, 1600);
        assert!(commits <= effects);
    }

    #[test]
    fn every_commit_is_timed_for_the_observer() {
        let w = writer();
        let timed = Arc::new(Mutex::new(Vec::new()));
        w.observe_commits({
            let timed = timed.clone();
            move |took| timed.lock().unwrap().push(took)
        });
        for v in 0..3 {
            w.write(|c| {
                c.execute("INSERT INTO t (v) VALUES (?1)", [v])
                    .map_err(Error::store("insert"))
            })
            .unwrap();
        }
        let timed = timed.lock().unwrap();
        assert_eq!(timed.len() as u64, w.commits().0, "{timed:?}");
        assert_eq!(timed.len(), 3);
    }

    #[test]
    fn a_failing_or_panicking_effect_leaves_the_others_alone() {
        let w = writer();
        let threads: Vec<_> = (0..6)
            .map(|t| {
                let w = w.clone();
                std::thread::spawn(move || {
                    for i in 0..100i64 {
                        let v = t * 1000 + i;
                        let result = std::panic::catch_unwind(AssertUnwindSafe(|| {
                            w.write(|c| {
                                c.execute("INSERT INTO t (v) VALUES (?1)", [v])
                                    .map_err(Error::store("insert"))?;
                                match v % 3 {
                                    0 => Ok(()),
                                    1 => Err(Error::NotFound("on purpose".into())),
                                    _ => panic!("on purpose"),
                                }
                            })
                        }));
                        match v % 3 {
                            0 => assert!(matches!(result, Ok(Ok(())))),
                            1 => assert!(matches!(result, Ok(Err(_)))),
                            _ => assert!(result.is_err()),
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let kept: i64 = w
            .with_connection(|c| {
                c.query_row("SELECT COUNT(*) FROM t WHERE v % 3 = 0", [], |r| r.get(0))
            })
            .unwrap();
        assert_eq!(kept, count(&w), "only the effects that succeeded stay");
        assert_eq!(
            kept,
            (0..6i64)
                .flat_map(|t| (0..100).map(move |i| t * 1000 + i))
                .filter(|v| v % 3 == 0)
                .count() as i64
        );
    }
}
