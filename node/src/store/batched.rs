//! Store calls of many tasks in one hop to a blocking thread.
//!
//! Each [`Store::run`] is a hop: a blocking thread woken, then the task
//! woken again, some context switches each. Where many tasks make the same
//! call (the relay reads every transfer it publishes, and records each
//! publication), [`Batched::call`] makes it once for all the requests that
//! are waiting when its blocking thread starts. A request that finds none
//! waiting starts a hop at once, so none waits for another's hop to end.

use super::Store;
use crate::error::{Error, Result};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::oneshot;

/// Answers a batch of requests, one answer per request and in their order.
type Answer<Req, Resp> = dyn Fn(&Store, Vec<Req>) -> Vec<Result<Resp>> + Send + Sync;

type Queue<Req, Resp> = Mutex<Vec<(Req, oneshot::Sender<Result<Resp>>)>>;

pub struct Batched<Req, Resp> {
    store: Store,
    answer: Arc<Answer<Req, Resp>>,
    queued: Arc<Queue<Req, Resp>>,
}

impl<Req: Send + 'static, Resp: Send + 'static> Batched<Req, Resp> {
    pub fn new(
        store: Store,
        answer: impl Fn(&Store, Vec<Req>) -> Vec<Result<Resp>> + Send + Sync + 'static,
    ) -> Self {
        Self {
            store,
            answer: Arc::new(answer),
            queued: Arc::new(Mutex::new(Vec::new())),
        }
    }

    /// Answers `request`, in one hop with whatever other requests wait.
    pub async fn call(&self, request: Req) -> Result<Resp> {
        let (tell, answered) = oneshot::channel();
        let leads = {
            let mut queue = lock(&self.queued);
            queue.push((request, tell));
            queue.len() == 1
        };
        if leads {
            let (queued, answer) = (self.queued.clone(), self.answer.clone());
            let hop = self.store.run(move |s| {
                // Taken when the blocking thread runs: what came meanwhile
                // goes too.
                let (requests, tells): (Vec<Req>, Vec<_>) =
                    std::mem::take(&mut *lock(&queued)).into_iter().unzip();
                for (tell, answer) in tells.into_iter().zip(answer(s, requests)) {
                    let _ = tell.send(answer);
                }
                Ok(())
            });
            if hop.await.is_err() {
                // The hop did not run, or panicked: what it left is failed
                // (its callers retry), not left without a hop to take it.
                lock(&self.queued).clear();
            }
        }
        answered.await.unwrap_or_else(|_| {
            Err(Error::Io {
                context: "store".into(),
                source: std::io::Error::other("a batched store call was lost"),
            })
        })
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_calls_share_hops_and_each_gets_its_own_answer() {
        let (store, dir) = crate::store::scratch("batched");
        let hops = Arc::new(AtomicUsize::new(0));
        let batched = Arc::new(Batched::new(store, {
            let hops = hops.clone();
            move |_, requests: Vec<u32>| {
                hops.fetch_add(1, Ordering::SeqCst);
                requests
                    .into_iter()
                    .map(|n| {
                        if n % 7 == 0 {
                            Err(Error::NotFound(format!("{n}")))
                        } else {
                            Ok(n * 2)
                        }
                    })
                    .collect()
            }
        }));
        let calls: Vec<_> = (0..400u32)
            .map(|n| {
                let batched = batched.clone();
                tokio::spawn(async move { (n, batched.call(n).await) })
            })
            .collect();
        for call in calls {
            let (n, answer) = call.await.unwrap();
            match answer {
                Ok(doubled) => assert_eq!(doubled, n * 2),
                Err(Error::NotFound(what)) => assert_eq!(what, n.to_string()),
                Err(other) => panic!("{n}: {other}"),
            }
        }
        let hops = hops.load(Ordering::SeqCst);
        assert!((1..400).contains(&hops), "{hops} hops for 400 calls");
        let _ = std::fs::remove_dir_all(dir);
    }
}
