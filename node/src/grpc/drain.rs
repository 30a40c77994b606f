//! What a shutdown waits for: the calls being served, their response bodies
//! included, and not the connections that merely stay open.
//!
//! On shutdown the server stops accepting and hyper drains its connections
//! gracefully; an idle HTTP/2 connection from a client that keeps it open
//! (a document system's channel, between calls) held that drain until the
//! node's 30 s cap, so every restart took 30 s and a pod with Kubernetes'
//! default grace period was killed before its producer flushed (hyper waits
//! for the client to answer its GOAWAY's PING, and a client that is not
//! polled never does). The server is now stopped once no call is in flight
//! (or after [`DRAIN_MAX`]) and its connections closed (or after
//! [`CLOSE_MAX`]): a call's body ends when its last bytes are handed to its
//! connection, which may still hold them until the client's HTTP/2 window
//! lets them go, and the process exiting then cut the download short.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::Notify;

/// The longest a shutdown waits for calls in flight.
pub const DRAIN_MAX: Duration = Duration::from_secs(20);

/// The longest a shutdown then waits for the connections to send what their
/// ended calls left in their buffers and close.
pub const CLOSE_MAX: Duration = Duration::from_secs(2);

/// Calls being served.
#[derive(Clone, Default)]
pub struct InFlight(Arc<(AtomicUsize, Notify)>);

impl InFlight {
    fn start(&self) -> Call {
        self.0.0.fetch_add(1, Ordering::SeqCst);
        Call(self.clone())
    }

    /// Returns once no call is in flight.
    pub async fn none(&self) {
        loop {
            let notified = self.0.1.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.0.0.load(Ordering::SeqCst) == 0 {
                return;
            }
            notified.await;
        }
    }
}

/// One call in flight, until dropped (with its response body).
struct Call(InFlight);

impl Drop for Call {
    fn drop(&mut self) {
        if self.0.0.0.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.0.1.notify_waiters();
        }
    }
}

/// A tower layer counting every call in `in_flight`, until its response
/// body is dropped (a stream's last message).
pub fn counted<Fut, E>(
    in_flight: InFlight,
) -> tower::util::MapFutureLayer<impl FnMut(Fut) -> Counted<E> + Clone>
where
    Fut:
        std::future::Future<Output = Result<http::Response<tonic::body::Body>, E>> + Send + 'static,
{
    tower::util::MapFutureLayer::new(move |response: Fut| -> Counted<E> {
        let call = in_flight.start();
        Box::pin(async move {
            use http_body_util::BodyExt;
            Ok(response.await?.map(|body| {
                tonic::body::Body::new(body.map_frame(move |frame| {
                    let _in_flight = &call;
                    frame
                }))
            }))
        })
    })
}

/// A counted call's response.
pub type Counted<E> = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<http::Response<tonic::body::Body>, E>> + Send>,
>;

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn none_waits_for_the_last_call_to_end() {
        let in_flight = InFlight::default();
        in_flight.none().await;
        let (first, second) = (in_flight.start(), in_flight.start());
        let waiting = tokio::spawn({
            let in_flight = in_flight.clone();
            async move { in_flight.none().await }
        });
        drop(first);
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "one call is still in flight");
        drop(second);
        waiting.await.unwrap();
    }
}
