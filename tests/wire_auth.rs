//! The wire client's authentication against a real server: SCRAM-SHA-256
//! with the right password, the wrong one, and none; peer is covered by
//! every other test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use applianced::pg::{Connection, PgError};
use common::TestCluster;

#[test]
fn scram_sha_256_authentication() {
    let cluster = TestCluster::start();
    let mut admin = cluster.admin();
    admin.execute("CREATE ROLE scram_probe LOGIN PASSWORD 'correct horse 1'").unwrap();
    admin.execute("GRANT CONNECT ON DATABASE ransomeye TO scram_probe").unwrap();
    let hba = cluster.dir.join("pgdata/pg_hba.conf");
    let text = std::fs::read_to_string(&hba).unwrap();
    std::fs::write(&hba, format!("local all scram_probe scram-sha-256\n{text}")).unwrap();
    admin.execute("SELECT pg_reload_conf()").unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));

    let mut params = cluster.params("scram_probe");
    params.password = Some("correct horse 1".into());
    let mut conn = Connection::connect(&params).unwrap();
    assert_eq!(conn.query_value("SELECT current_user").unwrap(), "scram_probe");

    params.password = Some("wrong".into());
    let wrong = Connection::connect(&params).err().expect("a wrong password must fail");
    assert_eq!(wrong.sqlstate(), Some("28P01"), "{wrong}");

    params.password = None;
    let none = Connection::connect(&params).err().expect("no password must fail");
    assert!(matches!(none, PgError::UnsupportedAuth(_)), "{none}");
}
