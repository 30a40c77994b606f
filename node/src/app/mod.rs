//! Starting and stopping a node: opens the store, loads the keys and the
//! directory, connects the producer, and starts every task (relay, the three
//! consumers, health checking, the gRPC server, the web console and the HTTP
//! endpoints), handing each the narrow handles it needs. Stopping drains
//! them, flushes the producer and commits consumed offsets.
//!
//! The top of the crate: it may use every other module; none uses it.

use crate::config::Config;
use crate::consume::Consumers;
use crate::error::{Error, Result};
use crate::kafka::Kafka;
use crate::lifecycle::Desk;
use crate::relay::Relay;
use crate::store::Store;
use crate::store::blobs::Blobs;
use crate::telemetry::Watch;
use crate::telemetry::metrics::Metrics;
use crate::trust::Trust;
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

/// A running node.
pub struct Node {
    services: Arc<crate::grpc::Services>,
    cancel: CancellationToken,
    tracker: TaskTracker,
    grpc_addr: SocketAddr,
    /// The data directory's lock, held until the node is dropped.
    _lock: std::fs::File,
}

impl Node {
    /// Opens the store, connects the Kafka clients and starts every task. Kafka
    /// need not be reachable: the node serves (NOT_SERVING) and catches up.
    pub async fn start(mut config: Config) -> Result<Node> {
        let lock = lock_data_dir(&config.data_dir)?;
        let identity = SigningIdentity::load(&config.keys.signing_key_file)?;
        let sealer = Sealer::new(config.institution.clone(), identity.clone());
        let topics = Topics::new(config.kafka.topic_prefix.clone());
        let store = Store::open(
            &config.data_dir.join("node.sqlite3"),
            sealer.clone(),
            topics.tracking(),
        )?
        .with_utc_offset(config.deadlines.utc_offset_minutes)
        .with_notifications(crate::notify::rules(&config));
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
        let http_listener = crate::telemetry::http::bind(&config.http).await?;
        let web_listener = crate::web::bind(&config.web).await?;
        let pide_listener = crate::pide::bind(&config).await?;
        // Links given to the SGD name the address bound (port 0 picks one).
        if let (Some(pide), Some(listener)) = (config.pide.as_mut(), &pide_listener) {
            pide.listen = listener
                .local_addr()
                .map_err(Error::io("no local address"))?;
        }
        let latest_inbound = store.inbox_page(None, 1)?.first().map_or(0, |f| f.id);
        let cancel = CancellationToken::new();
        let otlp =
            crate::telemetry::otlp::start(&config.telemetry, &config.institution).map(Arc::new);
        let config = Arc::new(config);
        let trust = Arc::new(Trust::new(sealer, anchor, keyring, directory));
        let notifier =
            crate::notify::Notifier::new(&config, store.clone(), blobs.clone(), trust.clone())?;
        let kafka = Arc::new(Kafka::new(
            config.institution.clone(),
            publisher,
            config.kafka_settings(),
            topics,
            TopicSpec {
                partitions: config.kafka.partitions,
                replication_factor: config.kafka.replication_factor,
                max_message_bytes: config.kafka.max_record_bytes,
            },
        ));
        let metrics = Arc::new(Metrics::new(&config.institution));
        store.observe_commits({
            let metrics = metrics.clone();
            move |took| metrics.store_committed(took)
        });
        let stalls = Arc::new(crate::telemetry::Stalls::default());
        let relay_wake = Arc::new(Notify::new());
        let inbox_head = Arc::new(watch::Sender::new(latest_inbound));
        let desk = Desk {
            config: config.clone(),
            store: store.clone(),
            blobs: blobs.clone(),
            trust: trust.clone(),
            kafka: kafka.clone(),
            relay_wake: relay_wake.clone(),
            metrics: metrics.clone(),
            limiter: Default::default(),
            registrations: Arc::new(crate::lifecycle::registration::registrations(
                store.clone(),
                blobs.clone(),
            )),
        };
        let relay = Arc::new(Relay {
            config: config.clone(),
            store: store.clone(),
            blobs: blobs.clone(),
            trust: trust.clone(),
            kafka: kafka.clone(),
            metrics: metrics.clone(),
            otlp: otlp.clone(),
            relay_wake: relay_wake.clone(),
        });
        let consumers = Arc::new(Consumers {
            config: config.clone(),
            store: store.clone(),
            blobs,
            trust: trust.clone(),
            kafka: kafka.clone(),
            metrics: metrics.clone(),
            otlp: otlp.clone(),
            relay_wake,
            inbox_head: inbox_head.clone(),
            stalls: stalls.clone(),
            running: Default::default(),
        });
        let watch = Arc::new(Watch {
            config: config.clone(),
            store,
            trust,
            kafka: kafka.clone(),
            metrics,
            stalls,
        });
        let services = Arc::new(crate::grpc::Services {
            desk,
            consumers: consumers.clone(),
            watch: watch.clone(),
            inbox_head,
            otlp,
        });
        // Tools and scripts find the node by this file when it listens on port 0.
        let addr_file = config.data_dir.join("grpc.addr");
        crate::store::blobs::write_private(&addr_file, grpc_addr.to_string().as_bytes())
            .map_err(Error::io(format!("cannot write {}", addr_file.display())))?;

        let tracker = TaskTracker::new();
        crate::telemetry::http::spawn(watch.clone(), http_listener, &tracker, cancel.clone())?;
        crate::web::spawn(services.clone(), web_listener, &tracker, cancel.clone())?;
        crate::pide::spawn(
            services.desk.clone(),
            pide_listener,
            &tracker,
            cancel.clone(),
        )?;
        let (reporter, health_service) = tonic_health::server::health_reporter();
        tracker.spawn(crate::telemetry::health::run(
            config.clone(),
            kafka.clone(),
            reporter,
            cancel.clone(),
        ));
        tracker.spawn(crate::relay::run(relay, cancel.clone()));
        if let Some(notifier) = notifier {
            tracker.spawn(crate::notify::run(notifier, cancel.clone()));
        }
        tracker.spawn(crate::consume::inbox::run(
            consumers.clone(),
            cancel.clone(),
        ));
        tracker.spawn(crate::consume::tracking::run(
            consumers.clone(),
            cancel.clone(),
        ));
        tracker.spawn(crate::consume::directory::run(consumers, cancel.clone()));
        tracker.spawn(crate::grpc::serve(
            services.clone(),
            listener,
            health_service,
            cancel.clone(),
        ));
        tracker.close();
        tracing::info!(
            institution = %config.institution,
            grpc = %grpc_addr,
            kafka = %config.kafka.bootstrap_servers,
            "Node started."
        );
        Ok(Node {
            services,
            cancel,
            tracker,
            grpc_addr,
            _lock: lock,
        })
    }

    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_addr
    }

    /// The handles the node's interfaces use (for tests that drive a node
    /// in-process).
    pub fn services(&self) -> &Arc<crate::grpc::Services> {
        &self.services
    }

    /// A token that stops the node when cancelled.
    pub fn cancel_token(&self) -> CancellationToken {
        self.cancel.clone()
    }

    /// Stops the node: health NOT_SERVING, gRPC drains, the tasks end, the
    /// producer flushes, consumed offsets are committed and queued trace
    /// spans are exported.
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
        let kafka = self.services.watch.kafka.clone();
        let flushed =
            tokio::task::spawn_blocking(move || kafka.publisher.flush(Duration::from_secs(10)))
                .await;
        if let Ok(Err(error)) = flushed {
            tracing::warn!(%error, "Producer did not flush; the outbox re-sends what was not acknowledged.");
        }
        if let Some(otlp) = &self.services.otlp {
            otlp.shutdown().await;
        }
        tracing::info!(institution = %self.services.desk.config.institution, "Node stopped.");
    }
}

/// Creates the data directory, readable by the node's user only, and takes
/// its exclusive lock (`node.lock`): two processes on one data directory
/// would corrupt each other's work, so a second one stops here.
fn lock_data_dir(dir: &std::path::Path) -> Result<std::fs::File> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(Error::io(format!("cannot create {}", dir.display())))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .map_err(Error::io(format!("cannot restrict {}", dir.display())))?;
    let path = dir.join("node.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&path)
        .map_err(Error::io(format!("cannot open {}", path.display())))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(Error::DataDirInUse {
            path: dir.to_owned(),
        }),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(Error::io(format!("cannot lock {}", path.display()))(e))
        }
    }
}

/// Resolves on SIGINT or SIGTERM. The handlers are installed when this is
/// called, not when it is first awaited: call it before starting the node,
/// so a signal that comes while the node starts is not lost (nor kills the
/// process without its shutdown).
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("a SIGTERM handler can be installed");
    let mut interrupt = signal(SignalKind::interrupt()).expect("a SIGINT handler can be installed");
    async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = interrupt.recv() => {}
        }
    }
}
