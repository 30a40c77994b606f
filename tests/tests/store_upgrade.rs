//! Upgrades: a node refuses a store that a newer release migrated further,
//! and says so before it touches Kafka.

use ecointegra_node::store::migrations::LATEST;
use ecointegra_tests::*;

#[test]
fn a_store_of_a_newer_release_stops_the_node_naming_both_versions() {
    let federation = Federation::new("newer-store", &["oefa"]);
    let newer = LATEST + 1;
    std::fs::create_dir_all(federation.data_dir("oefa")).unwrap();
    rusqlite::Connection::open(federation.store_path("oefa"))
        .unwrap()
        .pragma_update(None, "user_version", newer)
        .unwrap();

    let output = std::process::Command::new(binary())
        .args(["node", "run", "--config"])
        .arg(federation.config_path("oefa"))
        .output()
        .unwrap();

    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("schema version is {newer}, newer than {LATEST}")),
        "{stderr}"
    );
}
