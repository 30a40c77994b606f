//! Upgrades: a node refuses a store that a newer release migrated further,
//! and says so before it touches Kafka.

use ecointegra_broker::envelope::Sealer;
use ecointegra_node::store::Store;
use ecointegra_node::store::migrations::LATEST;
use ecointegra_tests::*;
use std::process::Stdio;
use std::time::{Duration, Instant};

#[test]
fn a_store_of_a_newer_release_stops_the_node_naming_both_versions() {
    let federation = Federation::new("newer-store", &["oefa"]);
    let newer = LATEST + 1;
    // A store as this release makes it, then migrated further by a newer one.
    std::fs::create_dir_all(federation.data_dir("oefa")).unwrap();
    let sealer = Sealer::new("oefa", federation.identity("oefa"));
    drop(Store::open(&federation.store_path("oefa"), sealer, "tracking".into()).unwrap());
    rusqlite::Connection::open(federation.store_path("oefa"))
        .unwrap()
        .pragma_update(None, "user_version", newer)
        .unwrap();

    let mut node = std::process::Command::new(binary())
        .args(["node", "run", "--config"])
        .arg(federation.config_path("oefa"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A node that wrongly accepts the store would run on: stop it.
    let deadline = Instant::now() + Duration::from_secs(30);
    while node.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            node.kill().unwrap();
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let output = node.wait_with_output().unwrap();

    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("schema version is {newer}, newer than {LATEST}")),
        "{stderr}"
    );
}
