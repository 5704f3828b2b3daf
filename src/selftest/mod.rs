//! `applianced selftest`: the health check of a live installation.
//!
//! Connects to the cluster as the bootstrap superuser (read-only catalog
//! queries), runs every check, prints one line per check and, on success,
//! the exact closing line [`READY_LINE`]. Runs in its own short-lived
//! process. Every expected value comes from the ownership matrix and the
//! table layouts in code; nothing is hard-coded here.

pub mod access;
mod catalog;
pub mod lanes;
mod privileges;

use serde_json::{Value, json};

use crate::pg::Connection;

/// The last line of a passing selftest, exactly.
pub const READY_LINE: &str = "Data-plane hardened. Ready to proceed to Phase B.";
/// Failing cells printed per check before the rest is summarised.
const FAILURES_SHOWN_MAX: usize = 25;

/// The outcome of one check.
#[derive(Debug)]
pub struct Check {
    pub name: &'static str,
    pub detail: String,
    /// Empty when the check passed.
    pub failures: Vec<String>,
}

impl Check {
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }

    fn from_failures(name: &'static str, detail: String, failures: Vec<String>) -> Check {
        Check { name, detail, failures }
    }

    fn failed(name: &'static str, why: String) -> Check {
        Check { name, detail: String::new(), failures: vec![why] }
    }
}

/// Run every check against an open admin connection to the database.
pub fn run_checks(conn: &mut Connection) -> Vec<Check> {
    let checks: [fn(&mut Connection) -> Check; 16] = [
        catalog::schema_version,
        catalog::durability,
        catalog::table_layouts,
        catalog::persistence,
        catalog::partitions_ahead,
        catalog::no_default_partition,
        catalog::no_pending_detach,
        catalog::xid_age,
        catalog::bloat,
        privileges::role_attributes,
        privileges::ownership,
        privileges::table_privileges,
        privileges::column_privileges,
        privileges::schema_privileges,
        privileges::function_privileges,
        privileges::database_privileges,
    ];
    checks.iter().map(|check| check(conn)).collect()
}

/// A check for something that could not be reached at all.
pub fn unreachable(name: &'static str, why: String) -> Check {
    Check::failed(name, why)
}

/// Render the report as text; returns whether every check passed.
pub fn render_text(checks: &[Check]) -> (String, bool) {
    let mut out = String::new();
    for check in checks {
        if check.passed() {
            out.push_str(&format!("ok   {}: {}\n", check.name, check.detail));
            continue;
        }
        out.push_str(&format!("FAIL {}: {} problem(s)\n", check.name, check.failures.len()));
        for failure in check.failures.iter().take(FAILURES_SHOWN_MAX) {
            out.push_str(&format!("       - {failure}\n"));
        }
        if check.failures.len() > FAILURES_SHOWN_MAX {
            out.push_str(&format!("       ... and {} more\n", check.failures.len() - FAILURES_SHOWN_MAX));
        }
    }
    let failing: Vec<&str> = checks.iter().filter(|c| !c.passed()).map(|c| c.name).collect();
    if failing.is_empty() {
        out.push_str(READY_LINE);
        out.push('\n');
        (out, true)
    } else {
        out.push_str(&format!("selftest failed: {}\n", failing.join(", ")));
        (out, false)
    }
}

/// Render the report as JSON; returns whether every check passed.
pub fn render_json(checks: &[Check]) -> (Value, bool) {
    let ok = checks.iter().all(Check::passed);
    let items: Vec<Value> = checks
        .iter()
        .map(|c| json!({"name": c.name, "ok": c.passed(), "detail": c.detail, "failures": c.failures}))
        .collect();
    let failing: Vec<&str> = checks.iter().filter(|c| !c.passed()).map(|c| c.name).collect();
    (
        json!({"ok": ok, "checks": items, "failing": failing, "result": if ok { READY_LINE } else { "selftest failed" }}),
        ok,
    )
}
