//! The time as certificates count it: Unix seconds, and waiting for the next one.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Unix seconds, with the fraction.
pub fn unix_f64() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Unix seconds.
pub fn unix() -> i64 {
    unix_f64() as i64
}

/// Sleeps until just after the start of the next whole second, so that a short-lived
/// certificate issued now gets all of its last second.
pub fn align_to_second() {
    let rest = 1.0 - unix_f64().fract();
    std::thread::sleep(Duration::from_secs_f64(rest + 0.005));
}
