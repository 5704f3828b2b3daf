//! Wall-clock time: the lanes' ingest_time and the supervisor's partition
//! maintenance (which day it is, and when maintenance is due) read it here
//! and nowhere else.
//!
//! Test builds (`failpoints` feature) can run a simulated clock, so the
//! partition lifecycle can roll through days in seconds:
//! `APPLIANCED_TEST_CLOCK=<simulated start, Unix s>:<real start, Unix s>:<speed>`
//! makes the wall clock `simulated start + speed × (real now − real start)`.
//! Every process (supervisor, lanes, selftest) computes the same time from
//! the same variable; the supervisor passes it to its lanes. Monotonic time
//! (deadlines, backoff) is never simulated.

use std::time::{SystemTime, UNIX_EPOCH};

/// The environment variable of the simulated clock (test builds only).
pub const TEST_CLOCK_ENV: &str = "APPLIANCED_TEST_CLOCK";

/// Real (never simulated) microseconds since 1970-01-01 UTC: for ages
/// compared across processes, such as how long ago maintenance last ran.
pub fn real_us() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as i64)
}

#[cfg(feature = "failpoints")]
fn simulated() -> Option<(i64, i64, i64)> {
    static CLOCK: std::sync::OnceLock<Option<(i64, i64, i64)>> = std::sync::OnceLock::new();
    *CLOCK.get_or_init(|| {
        let text = std::env::var(TEST_CLOCK_ENV).ok()?;
        let mut parts = text.split(':').map(|p| p.parse::<i64>().ok());
        Some((parts.next()??, parts.next()??, parts.next()??))
    })
}

/// Read the environment now (lanes call this before their sandbox).
pub fn init() {
    #[cfg(feature = "failpoints")]
    let _ = simulated();
}

/// Microseconds since 1970-01-01 UTC.
pub fn wall_us() -> i64 {
    #[cfg(feature = "failpoints")]
    if let Some((sim_start_s, real_start_s, speed)) = simulated() {
        return sim_start_s * 1_000_000 + speed * (real_us() - real_start_s * 1_000_000);
    }
    real_us()
}

/// Today (UTC) as days since 1970-01-01.
pub fn today_days() -> i64 {
    wall_us().div_euclid(86_400 * 1_000_000)
}

/// `YYYY-MM-DD` of a day count since 1970-01-01.
pub fn date_text(days: i64) -> String {
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02}")
}

/// Proleptic Gregorian (year, month, day) of a day count since 1970-01-01
/// (H. Hinnant, "chrono-Compatible Low-Level Date Algorithms", civil_from_days).
pub fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 { month_from_march + 3 } else { month_from_march - 9 };
    (year_of_era + era * 400 + i64::from(month <= 2), month, day)
}
