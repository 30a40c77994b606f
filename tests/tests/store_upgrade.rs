//! Upgrades: a node refuses a store that a newer release migrated further,
//! and says so before it serves or touches Kafka.

use ecointegra_broker::envelope::Sealer;
use ecointegra_node::store::Store;
use ecointegra_node::store::migrations::LATEST;
use ecointegra_tests::*;

/// Kills the node if the test ends while it still runs.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn a_store_of_a_newer_release_stops_the_node_naming_both_versions() {
    let federation = Federation::new("newer-store", &["oefa"]);
    // A store as this release makes it, then migrated further by a newer one.
    std::fs::create_dir_all(federation.data_dir("oefa")).unwrap();
    let sealer = Sealer::new("oefa", federation.identity("oefa"));
    drop(Store::open(&federation.store_path("oefa"), sealer, "tracking".into()).unwrap());
    let newer = LATEST + 1;
    rusqlite::Connection::open(federation.store_path("oefa"))
        .unwrap()
        .pragma_update(None, "user_version", newer)
        .unwrap();

    let stderr = federation.root.join("newer-store.log");
    let listening = federation.data_dir("oefa").join("grpc.addr");
    let mut node = KillOnDrop(
        std::process::Command::new(binary())
            .args(["node", "run", "--config"])
            .arg(federation.config_path("oefa"))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .unwrap(),
    );
    let status = eventually("the node to exit, refusing the store", async || {
        assert!(!listening.exists(), "the node started on a newer store");
        node.0.try_wait().unwrap().ok_or("still running")
    })
    .await;

    let stderr = std::fs::read_to_string(&stderr).unwrap();
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("schema version is {newer}, newer than {LATEST}")),
        "{stderr}"
    );
}
