//! The lane sandbox, each probe in a lane process of its own (`applianced
//! sandbox-probe` starts a lane exactly as `run` does, which then tries one
//! thing instead of serving), and the sandbox of real lane processes under
//! the supervisor.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;
use std::time::Duration;

use applianced::model::matrix::Module;
use common::{BIN, TestCluster, instance};

fn probe(cluster: &TestCluster, name: &str) -> (Option<i32>, String) {
    let output =
        Command::new(BIN).args(["sandbox-probe", "--probe", name, "--state-dir", cluster.path()]).output().unwrap();
    (output.status.code(), String::from_utf8_lossy(&output.stdout).into_owned())
}

#[test]
fn the_sandbox_is_fully_enforced_and_denies_what_it_must() {
    let cluster = TestCluster::start();
    let (code, out) = probe(&cluster, "status");
    assert_eq!(code, Some(0), "{out}");
    for expected in ["uring_restricted: true", "no_new_privs: true", "landlock: \"fully enforced", "seccomp: true"] {
        assert!(out.contains(expected), "{expected} missing: {out}");
    }
    // Landlock: a file outside the lane's spool directory, directly.
    let (code, out) = probe(&cluster, "open-outside");
    assert_eq!((code, out.trim()), (Some(0), "probe open-outside: errno 13"));
    // The same through the ring: OPENAT is not an allowed opcode.
    let (code, out) = probe(&cluster, "uring-openat");
    assert_eq!((code, out.trim()), (Some(0), "probe uring-openat: cqe -13"));
    // seccomp kills on a new ring, a forbidden syscall, a TCP socket, and
    // any socket at all (the lane cannot open a connection to PostgreSQL).
    for name in ["new-ring", "forbidden-syscall", "tcp-socket", "pg-socket"] {
        let (code, out) = probe(&cluster, name);
        assert_eq!((code, out.trim()), (Some(0), format!("probe {name}: killed by signal 31 (SIGSYS)").as_str()));
    }
    // A failed allocation ends the lane by abort(3), SIGABRT, which the
    // supervisor logs as a crash; the sandbox does not turn it into SIGSYS.
    let (code, out) = probe(&cluster, "alloc-fail");
    assert_eq!((code, out.trim()), (Some(0), "probe alloc-fail: killed by signal 6 (SIGABRT)"));
    // A panic unwinds and exits with status 101, also inside the sandbox.
    let output =
        Command::new(BIN).args(["sandbox-probe", "--probe", "panic", "--state-dir", cluster.path()]).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success() && stderr.contains("exit status: 101"), "{stderr}");
    assert!(!String::from_utf8_lossy(&output.stdout).contains("SIGSYS"));
}

fn proc_field(pid: i32, key: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status.lines().find_map(|l| l.strip_prefix(key)).unwrap().trim().to_string()
}

#[test]
fn every_lane_is_sandboxed_and_a_dead_lane_is_restarted_while_others_serve() {
    let cluster = TestCluster::start();
    let name = instance();
    let mut appliance = cluster.appliance(&name, &["--sandbox", "required"]);
    for module in Module::ALL {
        let pid = cluster.lane_pid(module);
        assert!(pid > 0, "{module:?} has no status file");
        assert_eq!(proc_field(pid, "Seccomp:"), "2", "{module:?}");
        assert_eq!(proc_field(pid, "NoNewPrivs:"), "1", "{module:?}");
        let expected = applianced::sandbox::colocate::default_placement(applianced::base::sys::cpu_count()).lane_cpus;
        assert_eq!(proc_field(pid, "Cpus_allowed_list:"), applianced::sandbox::colocate::render_cpu_list(&expected));
        let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
        let address = limits.lines().find(|l| l.starts_with("Max address space")).unwrap();
        assert!(address.contains(&applianced::base::limits::LANE_ADDRESS_SPACE_BYTES_MAX.to_string()), "{address}");
    }
    let output = cluster.selftest(&[]);
    let text = common::stdout(&output);
    assert!(output.status.success(), "{text}");
    assert!(text.contains("ok   lane sandbox: Landlock ABI"), "{text}");
    // The DPI lane dies by SIGSYS (what a seccomp violation delivers).
    let dpi = cluster.lane_pid(Module::Dpi);
    applianced::base::sys::send_signal(dpi, libc::SIGSYS).unwrap();
    // Meanwhile the other lanes keep acknowledging.
    let others = std::thread::spawn({
        let name = name.clone();
        move || {
            [Module::Core, Module::LinuxAgent, Module::WindowsAgent].map(|module| {
                applianced::producer::load::run_load(&applianced::producer::load::LoadOptions::new(
                    &name, module, 31, 1, 2_000,
                ))
                .acked
            })
        }
    });
    assert_eq!(others.join().unwrap(), [2_000; 3]);
    // The supervisor restarts the DPI lane, which then serves again.
    let mut restarted = 0;
    for _ in 0..100 {
        std::thread::sleep(Duration::from_millis(100));
        restarted = cluster.lane_pid(Module::Dpi);
        if restarted != dpi {
            break;
        }
    }
    assert_ne!(restarted, dpi, "the DPI lane was not restarted");
    let options = applianced::producer::load::LoadOptions::new(&name, Module::Dpi, 31, 1, 2_000);
    assert_eq!(applianced::producer::load::run_load(&options).acked, 2_000);
    assert_eq!(proc_field(restarted, "Seccomp:"), "2");
    appliance.stop().unwrap();
}
