//! The Debian package, as an institution's administrator uses it: built
//! (deploy/debian/build.sh, around the binary under test), installed on this
//! machine, configured in /etc/ecointegra, started as its own system user,
//! a filing filed through it and delivered, then purged cleanly. Needs root
//! and dpkg (tests/run.sh runs as root on the CI machine).

use ecointegra_proto::v1::FilingStatus;
use ecointegra_tests::*;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

fn run(program: &str, args: &[&str]) -> String {
    let output = Command::new(program).args(args).output().unwrap();
    assert!(output.status.success(), "{program} {args:?}: {output:?}");
    String::from_utf8(output.stdout).unwrap()
}

fn id_of(flag: &str) -> u32 {
    run("id", &[flag, "ecointegra"]).trim().parse().unwrap()
}

/// The installed config, edited as an administrator edits it: each key's line
/// replaced by this institution's value.
fn configure(path: &Path, settings: &[(&str, String)]) {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    for (key, value) in settings {
        let at = lines
            .iter()
            .position(|l| l.starts_with(&format!("{key} = ")))
            .unwrap_or_else(|| panic!("the installed config has no {key} line"));
        lines[at] = format!("{key} = {value}");
    }
    std::fs::write(path, lines.join("\n") + "\n").unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_debian_package_installs_runs_a_node_as_its_own_user_and_purges_cleanly() {
    assert_eq!(
        run("id", &["-u"]).trim(),
        "0",
        "installing a package needs root (the CI machine runs tests as root)"
    );
    let federation = Federation::new("package", &["senamhi", "oefa"]);
    let out = federation.root.join("deb");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/debian/build.sh");
    let deb = run(
        "bash",
        &[
            script.to_str().unwrap(),
            "--binary",
            binary().to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ],
    );
    let deb = deb.trim();
    let contents = run("dpkg-deb", &["--contents", deb]);
    for file in [
        "./usr/bin/ecointegra",
        "./lib/systemd/system/ecointegra.service",
        "./etc/ecointegra/node.toml",
    ] {
        assert!(contents.contains(file), "{file} missing: {contents}");
    }
    let _ = std::fs::remove_dir_all("/var/lib/ecointegra");
    run("dpkg", &["-i", deb]);

    // Installed: the binary, the user, its state directory, a private config.
    assert!(run("/usr/bin/ecointegra", &["--version"]).starts_with("ecointegra "));
    let (uid, gid) = (id_of("-u"), id_of("-g"));
    let state = std::fs::metadata("/var/lib/ecointegra").unwrap();
    assert_eq!((state.uid(), state.mode() & 0o777), (uid, 0o700));
    let config = Path::new("/etc/ecointegra/node.toml");
    let meta = std::fs::metadata(config).unwrap();
    assert_eq!(
        (meta.uid(), meta.gid(), meta.mode() & 0o777),
        (0, gid, 0o640)
    );
    let unit = std::fs::read_to_string("/lib/systemd/system/ecointegra.service").unwrap();
    for line in [
        "User=ecointegra",
        "ProtectSystem=strict",
        "StateDirectory=ecointegra",
        "NoNewPrivileges=yes",
        "ExecStart=/usr/bin/ecointegra node run --config /etc/ecointegra/node.toml",
    ] {
        assert!(
            unit.lines().any(|l| l == line),
            "{line} missing from the unit"
        );
    }
    // systemd's own checks of the unit, where systemd is installed (it need
    // not run): it parses cleanly, and its sandbox rates "OK" or better.
    if Path::new("/usr/bin/systemd-analyze").exists() {
        let unit = "/lib/systemd/system/ecointegra.service";
        let verify = Command::new("systemd-analyze")
            .args(["verify", unit])
            .output()
            .unwrap();
        assert!(
            verify.status.success() && verify.stderr.is_empty(),
            "systemd-analyze verify: {verify:?}"
        );
        let security = run("systemd-analyze", &["security", "--offline=true", unit]);
        let exposure: f64 = security
            .lines()
            .find_map(|l| l.split("ecointegra.service: ").nth(1))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no exposure level in {security}"));
        assert!(exposure <= 2.0, "exposure {exposure}: {security}");
    }

    // The administrator's part: the institution's key and the signed
    // directory beside the config, the config's values for this site.
    for (from, to) in [
        (federation.key_path("senamhi"), "/etc/ecointegra/node.key"),
        (
            federation.root.join("directory.toml"),
            "/etc/ecointegra/directory.toml",
        ),
    ] {
        std::fs::copy(&from, to).unwrap();
        std::os::unix::fs::chown(to, Some(0), Some(gid)).unwrap();
        std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o640)).unwrap();
    }
    configure(
        config,
        &[
            ("institution", "\"senamhi\"".into()),
            ("development", "true".into()),
            ("listen", "\"127.0.0.1:0\"".into()),
            ("bootstrap_servers", format!("\"{}\"", bootstrap())),
            ("topic_prefix", format!("\"{}\"", federation.prefix)),
            ("replication_factor", "1".into()),
            (
                "authority_public_key",
                format!("\"{}\"", federation.authority_public_key),
            ),
            ("anonymous_role", "\"system\"".into()),
        ],
    );

    // The installed binary, as the ecointegra user, on the installed config.
    let mut node = Command::new("/usr/bin/ecointegra")
        .args(["node", "run", "--config", "/etc/ecointegra/node.toml"])
        .env_clear()
        .uid(uid)
        .gid(gid)
        .stderr(std::fs::File::create(federation.root.join("installed.log")).unwrap())
        .spawn()
        .unwrap();
    let addr_file = Path::new("/var/lib/ecointegra/grpc.addr");
    let addr = eventually(
        "the installed node to listen",
        async || match std::fs::read_to_string(addr_file) {
            Ok(text) if !text.trim().is_empty() => Ok(text.trim().parse().unwrap()),
            other => Err(other.map_err(|e| e.to_string())),
        },
    )
    .await;
    let oefa = federation.start("oefa").await;
    let mut installed = client(addr).await;
    let filed = deliver_sample(&mut installed, "oefa").await;
    let mut at_oefa = oefa.client.clone();
    let held = wait_for_status(
        &mut at_oefa,
        &filed.tracking_code,
        FilingStatus::Delivered,
        PATIENCE,
    )
    .await;
    assert_eq!(held.documents[0].sha256, sample_doc().sha256_hex());
    // What the node wrote is its user's, and its user's only.
    let store = std::fs::metadata("/var/lib/ecointegra/node.sqlite3").unwrap();
    assert_eq!((store.uid(), store.mode() & 0o777), (uid, 0o600));

    run("kill", &["-TERM", &node.id().to_string()]);
    assert!(node.wait().unwrap().success());
    oefa.shutdown().await;

    // Purged: binary, unit, config and user gone; the state stays, as the
    // institution's record.
    run("dpkg", &["--purge", "ecointegra"]);
    for gone in [
        "/usr/bin/ecointegra",
        "/lib/systemd/system/ecointegra.service",
        "/etc/ecointegra",
    ] {
        assert!(!Path::new(gone).exists(), "{gone} is still there");
    }
    assert!(
        !Command::new("id")
            .arg("ecointegra")
            .output()
            .unwrap()
            .status
            .success()
    );
    assert!(Path::new("/var/lib/ecointegra/node.sqlite3").exists());
    std::fs::remove_dir_all("/var/lib/ecointegra").unwrap();
}
