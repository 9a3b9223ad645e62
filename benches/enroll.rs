//! Enroller benchmark over real processes: 4 custodians (2 SoftHSM2, 2 swtpm) and the
//! enroller on its SoftHSM2 token, all on 127.0.0.x.
//!
//! - login throughput, sequential and with a few concurrent clients (each login a new
//!   TLS connection, a peppered Argon2id check at 19 MiB, a certificate signed by the
//!   token), beside the raw Argon2id rate of this machine measured in the same run;
//! - enrollment latency (p50/p90/p99/max) of P-256 enrollments with 4 custodians, one
//!   client on one kept-alive connection, then a few clients at once.
//!
//! Build the binaries in release first, then run:
//! `cargo build --release --workspace --bins && cargo bench -p shard-custodians-tests --bench enroll`.
//! Every phase is bounded in count and time. `ENROLL_BENCH_N` sets the number of
//! enrollments (default 100).

use std::sync::Arc;
use std::time::{Duration, Instant};

use mtls::{Client, Method};
use testkit::enroller::{UserKey, GOOD_PASSWORD};
use testkit::figures::{ms, percentile};
use testkit::{Backend, Cluster};

struct FixedPepper;

impl enroller::password::Pepper for FixedPepper {
    fn pepper(&self, data: &[u8]) -> Result<[u8; 32], String> {
        // The token's HMAC is measured in the logins; here only Argon2id counts.
        let mut out = [0u8; 32];
        for (i, b) in data.iter().enumerate() {
            out[i % 32] ^= *b;
        }
        Ok(out)
    }
}

/// Runs `f` on `threads` threads until `count` calls are done or `budget` has passed;
/// returns (calls, elapsed).
fn run_for(
    threads: usize,
    count: usize,
    budget: Duration,
    f: impl Fn(usize) + Sync,
) -> (usize, Duration) {
    let done = std::sync::atomic::AtomicUsize::new(0);
    let start = Instant::now();
    std::thread::scope(|s| {
        for thread in 0..threads {
            let (f, done) = (&f, &done);
            s.spawn(move || {
                while start.elapsed() < budget
                    && done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < count
                {
                    f(thread);
                }
            });
        }
    });
    let n = done.load(std::sync::atomic::Ordering::Relaxed).min(count);
    (n, start.elapsed())
}

fn report_latencies(what: &str, mut lat: Vec<Duration>, wall: Duration) {
    lat.sort();
    println!(
        "{what}: {} in {:.2} s ({:.1}/s)  p50 {:.1} ms  p90 {:.1} ms  p99 {:.1} ms  max {:.1} ms",
        lat.len(),
        wall.as_secs_f64(),
        lat.len() as f64 / wall.as_secs_f64(),
        ms(percentile(&lat, 0.50)),
        ms(percentile(&lat, 0.90)),
        ms(percentile(&lat, 0.99)),
        ms(lat.last().copied().unwrap_or_default()),
    );
}

fn main() {
    let n_enroll: usize = std::env::var("ENROLL_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100)
        .clamp(1, 1000);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("enroller bench: {cores} cores; 4 custodians (2 SoftHSM2, 2 swtpm), threshold 3");
    let t0 = Instant::now();
    let cluster = Cluster::with_enroller(
        &[
            Backend::SoftHsm,
            Backend::SoftHsm,
            Backend::Tpm,
            Backend::Tpm,
        ],
        &[],
        3,
        &[],
    );
    println!(
        "cluster and enroller up in {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    let e = cluster.enroller_api().unwrap();
    // One user per concurrent client: the enroller charges each login attempt to its user
    // before checking it, so concurrent logins as one user are refused by design.
    for client in 0..8 {
        e.new_user(&format!("bench-{client}"), GOOD_PASSWORD, false);
    }
    let key = UserKey::new();

    // Raw Argon2id (m=19 MiB, t=2, p=1) in this process: a login verifies one hash.
    let stored = enroller::password::hash(&FixedPepper, "bench", GOOD_PASSWORD, &[7; 16]).unwrap();
    let verify = |_| {
        assert!(enroller::password::verify(&FixedPepper, "bench", GOOD_PASSWORD, &stored).unwrap());
    };
    let (n, d) = run_for(1, 40, Duration::from_secs(4), verify);
    let argon_1 = n as f64 / d.as_secs_f64();
    let (n, d) = run_for(cores, 80, Duration::from_secs(4), verify);
    let argon_all = n as f64 / d.as_secs_f64();
    println!(
        "raw Argon2id verify: {argon_1:.1}/s on 1 thread ({:.1} ms each), {argon_all:.1}/s on {cores} threads",
        1000.0 / argon_1
    );

    // The enroller locks its memory (mlockall, MCL_FUTURE): every 19 MiB Argon2 buffer
    // is then faulted in locked and unlocked again when freed. The same, here.
    // SAFETY: a plain system call with constant arguments; it touches no Rust memory.
    let locked =
        unsafe { libc::mlockall(libc::MCL_CURRENT | libc::MCL_FUTURE | libc::MCL_ONFAULT) == 0 };
    if locked {
        let (n, d) = run_for(1, 40, Duration::from_secs(4), verify);
        let l1 = n as f64 / d.as_secs_f64();
        let (n, d) = run_for(cores, 80, Duration::from_secs(4), verify);
        println!(
            "raw Argon2id verify with memory locked (as the enroller runs): {l1:.1}/s on 1 thread ({:.1} ms each), {:.1}/s on {cores} threads",
            1000.0 / l1,
            n as f64 / d.as_secs_f64()
        );
        // SAFETY: as above.
        unsafe { libc::munlockall() };
    }

    // Logins: a new TLS connection each (as `shardctl login` makes), no TOTP.
    let login = |client: usize| {
        let r = e.login(&format!("bench-{client}"), GOOD_PASSWORD, None, &key);
        assert_eq!(r.status, 200, "{:?}", r.body);
    };
    let (n, d) = run_for(1, 60, Duration::from_secs(8), login);
    let seq = n as f64 / d.as_secs_f64();
    println!(
        "login, 1 client: {n} in {:.2} s = {seq:.1} logins/s ({:.1} ms each; Argon2id alone {:.1} ms)",
        d.as_secs_f64(),
        1000.0 / seq,
        1000.0 / argon_1
    );
    for clients in [2, 4, 8] {
        let (n, d) = run_for(clients, 30 * clients, Duration::from_secs(8), login);
        println!(
            "login, {clients} clients: {n} in {:.2} s = {:.1} logins/s (raw Argon2id on {cores} threads: {argon_all:.1}/s)",
            d.as_secs_f64(),
            n as f64 / d.as_secs_f64()
        );
    }

    // Enrollments: P-256 keys split 3-of-4, deposited at all four custodians.
    let (tls, _) = e.session("bench-0", GOOD_PASSWORD, None, &key);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let body = serde_json::to_vec(&serde_json::json!({"kind": "p256"})).unwrap();
    let client = |tls: &Arc<certs::rustls::ClientConfig>| {
        Client::new(e.addr, &e.addr.ip().to_string(), tls.clone())
            .unwrap()
            .with_deadline(Duration::from_secs(30))
    };
    let one = client(&tls);
    // Warm-up (connection, first-use costs), not counted.
    for _ in 0..3 {
        let (st, b) = rt
            .block_on(one.request(Method::POST, "/v1/enroll", Some(body.clone())))
            .unwrap();
        assert_eq!(st.as_u16(), 201, "{}", String::from_utf8_lossy(&b));
    }
    let budget = Duration::from_secs(60);
    let start = Instant::now();
    let mut lat = Vec::with_capacity(n_enroll);
    while lat.len() < n_enroll && start.elapsed() < budget {
        let t = Instant::now();
        let (st, b) = rt
            .block_on(one.request(Method::POST, "/v1/enroll", Some(body.clone())))
            .unwrap();
        lat.push(t.elapsed());
        assert_eq!(st.as_u16(), 201, "{}", String::from_utf8_lossy(&b));
    }
    report_latencies("enroll, 1 client, 4 custodians", lat, start.elapsed());

    let clients = 4;
    let per = n_enroll.div_ceil(clients);
    let conns: Vec<Client> = (0..clients).map(|_| client(&tls)).collect();
    let start = Instant::now();
    let lat: Vec<Duration> = rt.block_on(async {
        let tasks = conns.iter().map(|c| {
            let body = body.clone();
            async move {
                let mut lat = Vec::new();
                while lat.len() < per && start.elapsed() < budget {
                    let t = Instant::now();
                    let (st, b) = c
                        .request(Method::POST, "/v1/enroll", Some(body.clone()))
                        .await
                        .unwrap();
                    lat.push(t.elapsed());
                    assert_eq!(st.as_u16(), 201, "{}", String::from_utf8_lossy(&b));
                }
                lat
            }
        });
        futures_util::future::join_all(tasks)
            .await
            .into_iter()
            .flatten()
            .collect()
    });
    report_latencies(
        &format!("enroll, {clients} clients, 4 custodians"),
        lat,
        start.elapsed(),
    );
    println!("total {:.1} s", t0.elapsed().as_secs_f64());
}
