//! External PostgreSQL mode: `init --config` migrates a database the
//! appliance did not create, and `selftest --config` checks it. A second
//! database of a throwaway cluster stands in for the external server.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{TestCluster, applianced, stdout};

#[test]
fn init_and_selftest_against_an_external_database() {
    let cluster = TestCluster::start();
    cluster.admin().execute("CREATE DATABASE external_ransomeye TEMPLATE template0 ENCODING 'UTF8'").unwrap();
    let config = cluster.dir.join("external.toml");
    std::fs::write(
        &config,
        format!(
            "# external mode\npostgres_socket = \"{}\"\npostgres_database = \"external_ransomeye\"\n",
            cluster.socket().display()
        ),
    )
    .unwrap();
    let config = config.to_str().unwrap();
    let init = applianced(&["init", "--config", config, "--partition-days-ahead", "2"]);
    assert!(init.status.success(), "{}\n{}", stdout(&init), String::from_utf8_lossy(&init.stderr));
    let applied = format!("({} migration(s) applied now)", applianced::control::migrate::MIGRATIONS.len());
    assert!(stdout(&init).contains(&applied), "{}", stdout(&init));
    let check = applianced(&["selftest", "--config", config]);
    let text = stdout(&check);
    assert!(check.status.success(), "{text}");
    assert_eq!(text.lines().last(), Some("Data-plane hardened. Ready to proceed to Phase B."));
}
