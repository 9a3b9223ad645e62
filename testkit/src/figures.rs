//! What the benchmarks print: percentiles of latencies, in milliseconds.

use std::time::Duration;

/// The `p` quantile (0 to 1) of `sorted` latencies; zero when there are none.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// A duration in milliseconds.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Runs `f` until `count` runs or `budget` passed, prints `what` with p50, p90, p99 and
/// max, and answers the p50.
pub fn measure(what: &str, count: usize, budget: Duration, mut f: impl FnMut(usize)) -> Duration {
    let start = std::time::Instant::now();
    let mut lat = Vec::with_capacity(count);
    for i in 0..count {
        if start.elapsed() > budget {
            break;
        }
        let t = std::time::Instant::now();
        f(i);
        lat.push(t.elapsed());
    }
    lat.sort();
    let p50 = percentile(&lat, 0.50);
    println!(
        "  {what}: {} runs  p50 {:.2} ms  p90 {:.2} ms  p99 {:.2} ms  max {:.2} ms",
        lat.len(),
        ms(p50),
        ms(percentile(&lat, 0.90)),
        ms(percentile(&lat, 0.99)),
        ms(lat.last().copied().unwrap_or_default()),
    );
    p50
}
