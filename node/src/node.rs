//! Starting and stopping a node: the store, the Kafka clients, the relay, the
//! inbox consumer, health checking and the gRPC server.

use crate::blobs::Blobs;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::store::Store;
use ecointegra_broker::directory::Directory;
use ecointegra_broker::envelope::Sealer;
use ecointegra_broker::kafka::Publisher;
use ecointegra_broker::keys::SigningIdentity;
use ecointegra_broker::topics::{TopicSpec, Topics};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// State every part of a running node shares.
pub struct Shared {
    pub config: Config,
    /// Trace export, when configured.
    pub otlp: Option<crate::otlp::Exporter>,
    pub store: Store,
    pub blobs: Blobs,
    pub sealer: Sealer,
    pub topics: Topics,
    pub publisher: Publisher,
    directory: std::sync::RwLock<Arc<Directory>>,
    /// The sector authority's key: directory entries must be signed by it.
    pub anchor: ed25519_dalek::VerifyingKey,
    /// This institution's keys, current first, then those kept from before a
    /// rotation (for decrypting what is still in flight).
    pub keyring: Vec<SigningIdentity>,
    /// Wakes the outbox relay when something was queued.
    pub relay_wake: Notify,
    /// The id of the newest inbound filing, for inbox streams.
    pub inbox_head: watch::Sender<i64>,
    /// Whether Kafka answered the last probe.
    pub kafka_up: watch::Sender<bool>,
    /// Failed tracking look-ups per client.
    pub limiter: crate::tracking::Limiter,
    /// Counters for `/metrics` and the operations service.
    pub metrics: crate::metrics::Metrics,
}

impl Shared {
    pub fn institution(&self) -> &str {
        &self.config.institution
    }

    pub fn directory(&self) -> Arc<Directory> {
        self.directory
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Replaces the directory (a newer signed entry arrived).
    pub fn set_directory(&self, directory: Directory) {
        *self.directory.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(directory);
    }

    pub fn inbox_topic(&self) -> String {
        self.topics.inbox(self.institution())
    }

    pub fn dlq_topic(&self) -> String {
        self.topics.dlq(self.institution())
    }

    /// The consumer group under which this institution's offsets are committed.
    pub fn group_id(&self) -> String {
        format!("{}.node.{}", self.topics.prefix(), self.institution())
    }

    pub fn topic_spec(&self) -> TopicSpec {
        TopicSpec {
            partitions: self.config.kafka.partitions,
            replication_factor: self.config.kafka.replication_factor,
        }
    }
}

/// A running node.
pub struct Node {
    shared: Arc<Shared>,
    cancel: CancellationToken,
    tracker: TaskTracker,
    grpc_addr: SocketAddr,
}

impl Node {
    /// Opens the store, connects the Kafka clients and starts every task. Kafka
    /// need not be reachable: the node serves (NOT_SERVING) and catches up.
    pub async fn start(config: Config) -> Result<Node> {
        std::fs::create_dir_all(&config.data_dir).map_err(Error::io(format!(
            "cannot create {}",
            config.data_dir.display()
        )))?;
        let identity = SigningIdentity::load(&config.keys.signing_key_file)?;
        let sealer = Sealer::new(config.institution.clone(), identity.clone());
        let topics = Topics::new(config.kafka.topic_prefix.clone());
        let store = Store::open(
            &config.data_dir.join("node.sqlite3"),
            sealer.clone(),
            topics.tracking(),
        )?;
        let blobs = Blobs::open(&config.data_dir)?;
        let anchor = ecointegra_broker::keys::parse_public_key(&config.keys.authority_public_key)
            .map_err(|e| {
            Error::FailedPrecondition(format!("keys.authority_public_key: {e}"))
        })?;
        let mut directory = Directory::load(&config.keys.directory_file, &anchor)?;
        // Entries learnt from the directory topic before a restart.
        for entry in store.directory_entries()? {
            if let Ok(entry) = ecointegra_broker::directory::verify_entry(&entry, &anchor) {
                let _ = directory.insert(&entry);
            }
        }
        match directory.get(&config.institution) {
            Some(me) if me.signing_key == identity.public_key() => {}
            Some(_) => tracing::warn!(
                institution = %config.institution,
                "The directory lists another signing key for this institution; until an entry with this key arrives, other institutions refuse its messages."
            ),
            None => tracing::warn!(
                institution = %config.institution,
                "The directory does not list this institution yet; other institutions refuse its messages until it does."
            ),
        }
        let mut keyring = vec![identity.clone()];
        for path in &config.keys.previous_signing_key_files {
            keyring.push(SigningIdentity::load(path)?);
        }
        let publisher = Publisher::new(
            &config.kafka_settings(),
            Duration::from_millis(config.kafka.message_timeout_ms),
        )?;
        let listener = tokio::net::TcpListener::bind(config.grpc.listen)
            .await
            .map_err(Error::io(format!(
                "cannot listen on {}",
                config.grpc.listen
            )))?;
        let grpc_addr = listener
            .local_addr()
            .map_err(Error::io("no local address"))?;
        let http_listener = crate::http::bind(&config.http).await?;
        let web_listener = crate::web::bind(&config.web).await?;
        let latest_inbound = store.inbox_page(None, 1)?.first().map_or(0, |f| f.id);
        let cancel = CancellationToken::new();
        let otlp = crate::otlp::start(&config.telemetry, &config.institution, cancel.clone());
        let shared = Arc::new(Shared {
            otlp,
            sealer,
            topics,
            limiter: crate::tracking::Limiter::default(),
            directory: std::sync::RwLock::new(Arc::new(directory)),
            anchor,
            keyring,
            config,
            store,
            blobs,
            publisher,
            relay_wake: Notify::new(),
            inbox_head: watch::Sender::new(latest_inbound),
            kafka_up: watch::Sender::new(false),
            metrics: crate::metrics::Metrics::default(),
        });
        // Tools and scripts find the node by this file when it listens on port 0.
        let addr_file = shared.config.data_dir.join("grpc.addr");
        std::fs::write(&addr_file, grpc_addr.to_string())
            .map_err(Error::io(format!("cannot write {}", addr_file.display())))?;

        let tracker = TaskTracker::new();
        crate::http::spawn(shared.clone(), http_listener, &tracker, cancel.clone())?;
        crate::web::spawn(shared.clone(), web_listener, &tracker, cancel.clone())?;
        let (reporter, health_service) = tonic_health::server::health_reporter();
        tracker.spawn(crate::health::run(shared.clone(), reporter, cancel.clone()));
        tracker.spawn(crate::relay::run(shared.clone(), cancel.clone()));
        tracker.spawn(crate::inbox::run(shared.clone(), cancel.clone()));
        tracker.spawn(crate::inbox::run_tracking(shared.clone(), cancel.clone()));
        tracker.spawn(crate::inbox::run_directory(shared.clone(), cancel.clone()));
        tracker.spawn(crate::service::serve(
            shared.clone(),
            listener,
            health_service,
            cancel.clone(),
        ));
        tracker.close();
        tracing::info!(
            institution = %shared.institution(),
            grpc = %grpc_addr,
            kafka = %shared.config.kafka.bootstrap_servers,
            "Node started."
        );
        Ok(Node {
            shared,
            cancel,
            tracker,
            grpc_addr,
        })
    }

    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_addr
    }

    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// A token that stops the node when cancelled.
    pub fn cancel_token(&self) -> CancellationToken {
        self.cancel.clone()
    }

    /// Stops the node: health NOT_SERVING, gRPC drains, the tasks end, the
    /// producer flushes and consumed offsets are committed.
    pub async fn shutdown(self) {
        self.cancel.cancel();
        self.wait().await;
    }

    /// Waits until the node has been stopped through its cancel token.
    pub async fn wait(self) {
        self.cancel.cancelled().await;
        if tokio::time::timeout(Duration::from_secs(30), self.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!("Node tasks did not stop within 30 s.");
        }
        let shared = self.shared.clone();
        let flushed =
            tokio::task::spawn_blocking(move || shared.publisher.flush(Duration::from_secs(10)))
                .await;
        if let Ok(Err(error)) = flushed {
            tracing::warn!(%error, "Producer did not flush; the outbox re-sends what was not acknowledged.");
        }
        tracing::info!(institution = %self.shared.institution(), "Node stopped.");
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("a SIGTERM handler can be installed");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
