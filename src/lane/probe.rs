//! Sandbox probes: a real lane process (started like every lane, as the
//! lane's identity, with its spool, connector and sandbox) that tries one
//! thing an attacker inside it would try, prints `probe <name>: <outcome>`
//! and exits (`applianced sandbox-probe`, `tests/sandbox.rs`,
//! `tests/privilege_separation.rs`). A probe the sandbox forbids kills the
//! process by SIGSYS before it prints anything.

use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use super::connector::{self, ConnectorReply};
use super::links::Links;
use super::runtime::LaneArgs;
use crate::base::limits::{ADMIN_ROLE, DATABASE_NAME};
use crate::base::sys::uring::Ring;
use crate::model::matrix::Role;
use crate::pg::{ConnectParams, Connection};
use crate::sandbox::SandboxReport;

/// Probes run in the sandbox.
pub const IN_SANDBOX: &[&str] = &[
    "status",
    "open-outside",
    "uring-openat",
    "new-ring",
    "forbidden-syscall",
    "tcp-socket",
    "pg-socket",
    "pg-connector",
    "alloc-fail",
    "panic",
];
/// Probes run as the lane's identity just before the sandbox: what the
/// identity alone would allow if the sandbox were not there.
pub const BEFORE_SANDBOX: &[&str] = &["pg-identity"];

/// Every role a session could ask for, the superuser first.
fn every_role() -> Vec<&'static str> {
    std::iter::once(ADMIN_ROLE).chain(Role::ALL.into_iter().map(Role::name)).collect()
}

/// `pg-identity`: log in as every role directly (socket, connect, peer
/// authentication), as this process's OS identity. Prints the roles that
/// let it in.
pub fn before_sandbox(probe: &str, args: &LaneArgs) -> String {
    match probe {
        "pg-identity" => {
            let admitted: Vec<&str> = every_role()
                .into_iter()
                .filter(|role| {
                    let params = ConnectParams {
                        socket_path: args.pg_socket.clone(),
                        user: role.to_string(),
                        database: DATABASE_NAME.to_string(),
                        password: None,
                        application_name: "applianced-probe".into(),
                    };
                    Connection::connect(&params).is_ok()
                })
                .collect();
            format!("uid {} logs in as [{}]", crate::base::sys::real_uid(), admitted.join(", "))
        }
        other => format!("unknown probe {other}"),
    }
}

/// Run a probe inside the entered sandbox.
pub fn in_sandbox(
    probe: &str,
    report: &SandboxReport,
    ring: Option<&mut Ring>,
    links: &Links,
    args: &LaneArgs,
) -> String {
    match probe {
        "status" => format!("{report:?}"),
        "open-outside" => match std::fs::File::open("/etc/hostname") {
            Ok(_) => "opened".to_string(),
            Err(e) => format!("errno {}", e.raw_os_error().unwrap_or(0)),
        },
        "uring-openat" => match ring {
            Some(ring) => match ring.probe_openat("/etc/hostname") {
                Ok(code) => format!("cqe {code}"),
                Err(e) => format!("submit failed: {e}"),
            },
            None => "no io_uring".to_string(),
        },
        "new-ring" => format!("created: {:?}", super::uring::create_ring().map(|_| ())),
        "forbidden-syscall" => format!("getppid returned {}", crate::base::sys::parent_pid()),
        "tcp-socket" => format!("socket: {:?}", std::net::TcpStream::connect("127.0.0.1:9")),
        "pg-socket" => format!("connect: {:?}", UnixStream::connect(&args.pg_socket).map(|_| ())),
        // What a failed allocation does (the lane's address space is
        // bounded): abort(3), SIGABRT, which the sandbox must let through.
        "alloc-fail" => {
            let layout = std::alloc::Layout::from_size_align(1 << 40, 8).unwrap_or(std::alloc::Layout::new::<u64>());
            std::alloc::handle_alloc_error(layout)
        }
        "panic" => panic!("probe panic inside the sandbox"),
        "pg-connector" => match connection_from_connector(links) {
            Ok(conn) => roles_of(conn, args),
            Err(why) => format!("no connection: {why}"),
        },
        other => format!("unknown probe {other}"),
    }
}

/// Ask the connector for a connection, the way the event loop does, and wait for it.
fn connection_from_connector(links: &Links) -> Result<Connection, String> {
    connector::request_connection(links.connector.as_fd()).map_err(|e| e.to_string())?;
    for _ in 0..600 {
        match connector::receive_reply(links.connector.as_fd()).map_err(|e| e.to_string())? {
            Some(ConnectorReply::Connected(stream, leftover)) => {
                return Connection::from_stream(stream, leftover).map_err(|e| e.to_string());
            }
            Some(ConnectorReply::Failed(why)) => return Err(why),
            Some(ConnectorReply::Gone) => return Err("connector gone".into()),
            None => {
                let mut fds = [libc::pollfd {
                    fd: std::os::fd::AsRawFd::as_raw_fd(&links.connector),
                    events: libc::POLLIN,
                    revents: 0,
                }];
                crate::base::sys::poll(&mut fds, Duration::from_millis(100).as_millis() as i32)
                    .map_err(|e| e.to_string())?;
            }
        }
    }
    Err("no reply from the connector within 60 s".into())
}

/// Who a handed connection is, and whether it can become anyone else.
fn roles_of(mut conn: Connection, args: &LaneArgs) -> String {
    let who = conn.query_value("SELECT current_user || ' ' || session_user").unwrap_or_else(|e| format!("error {e}"));
    let own = Role::Writer(args.module).name();
    let mut became = Vec::new();
    for role in every_role().into_iter().filter(|r| *r != own) {
        for statement in [format!("SET ROLE {role}"), format!("SET SESSION AUTHORIZATION {role}")] {
            if conn.execute(&statement).is_ok() {
                became.push(statement);
            }
        }
    }
    let became = if became.is_empty() { "none".to_string() } else { became.join(", ") };
    format!("session {who}; other roles reached: {became}")
}
