//! Privilege separation, attacked from where an attacker stands:
//! - from inside a real lane sandbox, as the lane's identity: the lane can
//!   open no connection at all, its connector hands it only its own writer
//!   role, and the identity alone (if the sandbox were gone) logs in as that
//!   role only;
//! - as an unrelated local user: the database socket refuses `connect()`,
//!   so no connection slot can be taken and no log line written;
//! - as an admitted but hostile producer: a producer id outside its grant,
//!   selftest's round-trip producer included, is refused;
//! - as Core's own OS user: every `core_api` view reads, no base table does.
//!
//! A flood of failed logins against PostgreSQL's log: `tests/dos.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::os::unix::process::CommandExt;
use std::process::{Command, Output};

use applianced::model::matrix::{Module, Role};
use common::{BIN, TestCluster, instance, is_root};

fn probe(cluster: &TestCluster, name: &str, module: Module) -> String {
    let output = Command::new(BIN)
        .args(["sandbox-probe", "--probe", name, "--state-dir", cluster.path(), "--module", module.name()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success(), "{name} on {module:?}: {text}\n{}", String::from_utf8_lossy(&output.stderr));
    text.trim().to_string()
}

#[test]
fn a_lane_reaches_postgresql_only_as_its_own_writer_role() {
    let cluster = TestCluster::start();
    for module in Module::ALL {
        let own = Role::Writer(module).name();
        // Inside the sandbox: not even a socket can be created.
        assert_eq!(probe(&cluster, "pg-socket", module), "probe pg-socket: killed by signal 31 (SIGSYS)");
        // The only way in is the connector, and it gives the writer role only:
        // no SET ROLE and no SET SESSION AUTHORIZATION reaches any other.
        assert_eq!(
            probe(&cluster, "pg-connector", module),
            format!("probe pg-connector: session {own} {own}; other roles reached: none")
        );
        // The lane's OS identity on its own, before the sandbox: with its own
        // identity (root can switch uids) pg_ident.conf maps it to its writer
        // role and nothing else. Without root every lane shares the caller's
        // identity, which may log in as anything; then the sandbox above is
        // the whole protection, and selftest says so.
        let identity = probe(&cluster, "pg-identity", module);
        if is_root() {
            let uid = applianced::base::sys::account_by_name(module.lane_identity()).unwrap().unwrap().uid;
            assert_eq!(identity, format!("probe pg-identity: uid {uid} logs in as [{own}]"));
        } else {
            assert!(identity.contains("ransomeye_admin"), "{identity}");
        }
    }
}

#[test]
fn lanes_run_as_their_own_identities_without_capabilities() {
    let cluster = TestCluster::start();
    let name = instance();
    let mut appliance = cluster.appliance(&name, &["--sandbox", "required"]);
    for module in Module::ALL {
        let pid = cluster.lane_pid(module);
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let field = |key: &str| status.lines().find_map(|l| l.strip_prefix(key)).unwrap().trim().to_string();
        assert_eq!(field("CapEff:"), "0000000000000000", "{module:?}");
        assert_eq!(field("CapPrm:"), "0000000000000000", "{module:?}");
        let uid: u32 = field("Uid:").split_whitespace().next().unwrap().parse().unwrap();
        if is_root() {
            let account = applianced::base::sys::account_by_name(module.lane_identity()).unwrap().unwrap();
            assert_eq!(uid, account.uid, "{module:?}");
            let server =
                applianced::base::sys::account_by_name(applianced::control::cluster::SERVER_USER).unwrap().unwrap();
            assert!(uid != 0 && uid != server.uid, "{module:?} runs as uid {uid}");
        }
    }
    let output = cluster.selftest(&[]);
    let text = common::stdout(&output);
    assert!(output.status.success(), "{text}");
    let expected = if is_root() { "own identity, pg_ident maps it to" } else { "no new connection (seccomp)" };
    assert!(text.contains(&format!("ok   lane identities: core: {expected}")), "{text}");
    appliance.stop().unwrap();
}

/// Run psql as another OS user against the cluster, with that user's
/// supplementary groups (as a login would give them: runuser).
fn psql_as(user: &str, cluster: &TestCluster, role: &str, sql: &str) -> Output {
    Command::new("runuser")
        .args(["-u", user, "--", "/usr/lib/postgresql/15/bin/psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
        .arg("-h")
        .arg(cluster.dir.join("run"))
        .args(["-U", role, "-d", "ransomeye", "-c", sql])
        .env_clear()
        .env("HOME", "/")
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .current_dir("/")
        .output()
        .unwrap()
}

#[test]
fn an_unrelated_local_user_cannot_reach_the_database_socket() {
    if !is_root() {
        eprintln!("skipped: acting as another local user needs root");
        return;
    }
    let cluster = TestCluster::start();
    let before =
        applianced::control::cluster::read_pg_log(&applianced::control::cluster::StateDir::new(&cluster.dir).unwrap())
            .unwrap();
    // Many attempts, as a peer holding slots would make: none gets in.
    for attempt in 0..50 {
        let output = psql_as("nobody", &cluster, "ransomeye_admin", "SELECT 1");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "attempt {attempt} got in");
        assert!(stderr.contains("Permission denied"), "attempt {attempt}: {stderr}");
    }
    // connect() itself is refused: PostgreSQL never saw them (no slot, no log line).
    let after =
        applianced::control::cluster::read_pg_log(&applianced::control::cluster::StateDir::new(&cluster.dir).unwrap())
            .unwrap();
    assert_eq!(after.matches("authentication failed").count(), before.matches("authentication failed").count());
    let metadata = std::fs::metadata(cluster.socket()).unwrap();
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    assert_eq!(metadata.permissions().mode() & 0o777, 0o770);
    let group = applianced::base::sys::spawn::group_by_name(applianced::control::accounts::DB_GROUP).unwrap().unwrap();
    assert_eq!(metadata.gid(), group);
    let output = cluster.selftest(&[]);
    assert!(output.status.success(), "{}", common::stdout(&output));
}

#[test]
fn a_peer_cannot_claim_another_identitys_producer_id_nor_fence_the_round_trip() {
    if !is_root() {
        eprintln!("skipped: acting as other uids needs root");
        return;
    }
    let cluster = TestCluster::start();
    let name = instance();
    let (dpi_uid, other_uid) = (40011, 40012);
    let mut appliance = cluster.appliance(
        &name,
        &["--peer-uid", &format!("dpi={dpi_uid}:1000-1999"), "--peer-uid", &format!("dpi={other_uid}:2000-2999")],
    );
    let load = |producer: u64, epoch: u64, uid: u32| {
        Command::new(common::bin_for_other_users())
            .args(["load", "--module", "dpi", "--events", "20", "--instance", &name, "--server-uid", "0"])
            .args(["--producer-id", &producer.to_string(), "--epoch", &epoch.to_string()])
            .uid(uid)
            .gid(uid)
            .output()
            .unwrap()
    };
    let ok = load(1500, 1, dpi_uid);
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    // Another identity's producer id: ERROR 18, nothing stored.
    let refused = load(2500, 1, dpi_uid);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "uid {dpi_uid} claimed producer 2500");
    assert!(stderr.contains("lane error 18"), "{stderr}");
    assert_eq!(cluster.producer_rows(Module::Dpi, 2500), (0, 0));
    // It cannot fence the other identity's producer either (the HELLO is refused before any epoch is looked at).
    let fence = load(2500, i64::MAX as u64, dpi_uid);
    assert!(!fence.status.success());
    let theirs = load(2500, 1, other_uid);
    assert!(theirs.status.success(), "{}", String::from_utf8_lossy(&theirs.stderr));
    // Selftest's round-trip producer: reserved for the appliance's own uid.
    let reserved = applianced::selftest::lanes::SELFTEST_PRODUCER_ID;
    let fence = load(reserved, i64::MAX as u64, dpi_uid);
    let stderr = String::from_utf8_lossy(&fence.stderr);
    assert!(!fence.status.success() && stderr.contains("lane error 18"), "{stderr}");
    let output = cluster.selftest(&[]);
    let text = common::stdout(&output);
    assert!(output.status.success() && text.contains("ok   lane round trip"), "{text}");
    appliance.stop().unwrap();
}

/// Core's OS user, created the way the package's sysusers.d would (root only).
fn core_account() -> applianced::base::sys::Account {
    let name = Module::Core.os_identity();
    if applianced::base::sys::account_by_name(name).unwrap().is_none() {
        let status = Command::new("useradd")
            .args(["--system", "--user-group", "--no-create-home", "--home-dir", "/nonexistent"])
            .args(["--shell", "/usr/sbin/nologin", name])
            .status()
            .unwrap();
        assert!(status.success() || applianced::base::sys::account_by_name(name).unwrap().is_some());
    }
    applianced::base::sys::account_by_name(name).unwrap().unwrap()
}

#[test]
fn core_reads_every_view_as_its_own_os_user_and_no_base_table() {
    if !is_root() {
        eprintln!("skipped: acting as Core's OS user needs root");
        return;
    }
    let core = core_account();
    // init maps the account it finds (and adds it to the socket's group).
    let cluster = TestCluster::start();
    let reader = Role::CoreReader.name();
    let mut views = 0;
    for table in applianced::model::schema::EVENT_TABLES {
        let view = table.view_name();
        let output = psql_as(&core.name, &cluster, reader, &format!("SELECT count(*) FROM {view}"));
        assert!(output.status.success(), "{view}: {}", String::from_utf8_lossy(&output.stderr));
        views += 1;
        let base = table.qualified_name();
        let output = psql_as(&core.name, &cluster, reader, &format!("SELECT count(*) FROM {base}"));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success() && stderr.contains("permission denied"), "{base}: {stderr}");
    }
    assert_eq!(views, applianced::model::schema::EVENT_TABLES.len());
    // Core's OS user is mapped to the reader role and nothing else.
    for role in [applianced::base::limits::ADMIN_ROLE, Role::Writer(Module::Core).name(), Role::Maintenance.name()] {
        let output = psql_as(&core.name, &cluster, role, "SELECT 1");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success() && stderr.contains("Peer authentication failed"), "{role}: {stderr}");
    }
}
