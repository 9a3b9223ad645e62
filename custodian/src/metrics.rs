//! Prometheus metrics: request counts by route and status, latency histograms by
//! route, and gauges the exporter reads at scrape time.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

const BUCKETS_MS: &[f64] = &[0.5, 1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 1000.0];

#[derive(Default)]
struct Histogram {
    counts: [u64; 11],
    sum_ms: f64,
    total: u64,
}

/// A poisoned counter lock is still usable: a panic cannot leave a count half-written.
fn locked<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// In-process metrics.
#[derive(Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(&'static str, u16), u64>>,
    latency: Mutex<BTreeMap<&'static str, Histogram>>,
    handshakes_refused: Mutex<BTreeMap<&'static str, u64>>,
    shares_verified: Mutex<BTreeMap<&'static str, u64>>,
}

impl Metrics {
    /// Counts one request.
    pub fn observe(&self, route: &'static str, status: u16, took: Duration) {
        *locked(&self.requests).entry((route, status)).or_default() += 1;
        let ms = took.as_secs_f64() * 1000.0;
        let mut lat = locked(&self.latency);
        let h = lat.entry(route).or_default();
        let i = BUCKETS_MS
            .iter()
            .position(|b| ms <= *b)
            .unwrap_or(BUCKETS_MS.len());
        h.counts[i] += 1;
        h.sum_ms += ms;
        h.total += 1;
    }

    /// Counts one refused handshake.
    pub fn handshake_refused(&self, reason: &'static str) {
        *locked(&self.handshakes_refused).entry(reason).or_default() += 1;
    }

    /// Counts one share check's verdict (`ok` or `bad`).
    pub fn share_verified(&self, verdict: &'static str) {
        *locked(&self.shares_verified).entry(verdict).or_default() += 1;
    }

    /// Prometheus text exposition, with `shards_stored` as a gauge.
    pub fn render(&self, shards_stored: Option<u64>) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "# TYPE custodian_requests_total counter");
        for ((route, status), n) in locked(&self.requests).iter() {
            let _ = writeln!(
                out,
                "custodian_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}"
            );
        }
        let _ = writeln!(out, "# TYPE custodian_request_duration_ms histogram");
        for (route, h) in locked(&self.latency).iter() {
            let mut cum = 0;
            for (i, b) in BUCKETS_MS.iter().enumerate() {
                cum += h.counts[i];
                let _ = writeln!(
                    out,
                    "custodian_request_duration_ms_bucket{{route=\"{route}\",le=\"{b}\"}} {cum}"
                );
            }
            let _ = writeln!(
                out,
                "custodian_request_duration_ms_bucket{{route=\"{route}\",le=\"+Inf\"}} {}",
                h.total
            );
            let _ = writeln!(
                out,
                "custodian_request_duration_ms_sum{{route=\"{route}\"}} {}",
                h.sum_ms
            );
            let _ = writeln!(
                out,
                "custodian_request_duration_ms_count{{route=\"{route}\"}} {}",
                h.total
            );
        }
        let _ = writeln!(out, "# TYPE custodian_handshakes_refused_total counter");
        for (reason, n) in locked(&self.handshakes_refused).iter() {
            let _ = writeln!(
                out,
                "custodian_handshakes_refused_total{{reason=\"{reason}\"}} {n}"
            );
        }
        let _ = writeln!(out, "# TYPE custodian_shares_verified_total counter");
        for (verdict, n) in locked(&self.shares_verified).iter() {
            let _ = writeln!(
                out,
                "custodian_shares_verified_total{{verdict=\"{verdict}\"}} {n}"
            );
        }
        if let Some(n) = shards_stored {
            let _ = writeln!(
                out,
                "# TYPE custodian_shards_stored gauge\ncustodian_shards_stored {n}"
            );
        }
        out
    }
}
