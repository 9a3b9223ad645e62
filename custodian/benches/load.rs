//! Load benchmark of the real custodian process over real mutual TLS.
//!
//! ```text
//! cargo bench -p custodian --bench load
//! ```
//!
//! Starts `custodian serve` (the release build) on a private SoftHSM2 token with the
//! release rate limit lifted, and drives it from this process over 127.0.0.1 with
//! 1, 16 and 256 concurrent mutual-TLS connections (one `Client` each,
//! sequential requests on it). Reported per measurement: requests/s, p50/p99/max
//! latency, the server's peak RSS (`VmHWM`, reset through `/proc/<pid>/clear_refs`
//! before each measurement), and CPU time per request of the server and of the
//! clients (this process), so that a figure taken on a busy machine can be read.
//!
//! Two servers share the token, each with its own database:
//!
//! - "small" holds exactly 1,000 shards, deposited through the API;
//! - "big" takes the deposit measurements (new shards, each its own durable
//!   transaction) and is then filled to 1,000,000 shards.
//!
//! Filling a million shards through the API would take minutes of deposits; instead
//! the big server is stopped and the rows are sealed in this process, with the same
//! token and the same context the server uses (custodian `c1`, secret id, index,
//! epoch), and inserted in transactions of 20,000 into the schema
//! `custodian::store::Store::open` created, with the column values the deposit path
//! computes. (Bulk-loaded rows have no audit rows: they were not deposits.)
//! Releases on "big" pick uniformly among the bulk-loaded rows, so every one of
//! them unseals a bulk-loaded blob.
//!
//! Releases are then measured on both servers in alternating slices, so that other
//! load on the machine weighs on the 1k and the 1M figure alike. Every released
//! envelope is compared with the one deposited: envelopes are derived from a per-run
//! seed and their number, so nothing needs to be kept in memory. Beside the service
//! figures, the raw device rate: an in-process `Pkcs11Sealer` on the same token
//! unsealing blobs of the same size.
//!
//! Environment: `LOAD_SECS` (seconds per measurement and side, default 3),
//! `LOAD_SHARDS` (size of the big database, default 1,000,000).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hsm::{Mechanism, SealContext, Sealer};
use mtls::Client;
use sha2::{Digest, Sha256};
use shard::{Salt, SecretId, ShardEnvelope, ShareBytes, Threshold};
use testkit::custodian::{Custodian, Options, NAME};
use testkit::pki::Identity;
use testkit::process::Service;
use testkit::Bins;

const OWNER: &str = "spiffe://example.test/user/alice";
const LEVELS: [usize; 3] = [1, 16, 256];
/// Number range of the 1,000 shards deposited through the API first.
const SMALL_SET: u64 = 1_000;
/// First number of the shards deposited during the deposit measurements.
const DEPOSIT_BASE: u64 = 10_000_000;
/// First number of the bulk-loaded shards.
const FILL_BASE: u64 = 20_000_000;
/// Slices the release measurements alternate in.
const SLICES: u32 = 6;

fn main() {
    // `cargo bench` passes `--bench`; a filter argument is accepted and ignored.
    let secs: u64 = env_num("LOAD_SECS", 3);
    let big_shards: u64 = env_num("LOAD_SHARDS", 1_000_000);
    let measure_time = Duration::from_secs(secs);
    let run = Run::setup();
    println!(
        "custodian load benchmark: {} cores, {secs} s per measurement, server {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        Bins::locate().expect("binaries").custodian().display()
    );
    // The figures depend on what else runs on the machine; say how busy it was.
    println!("load average at start: {}", loadavg());

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let gen = Arc::new(Gen::new());
    let mut table = Vec::new();

    // Two databases on the same token: "small" keeps exactly 1,000 shards; "big"
    // takes the deposit measurements and is then filled to a million.
    let mut small = Server::start(&run, "small.db");
    let t = Instant::now();
    rt.block_on(fill_via_api(&run, &small, &gen, 0..SMALL_SET));
    println!(
        "stored {SMALL_SET} shards through the API in {:.2} s",
        t.elapsed().as_secs_f64()
    );

    let mut big = Server::start(&run, "big.db");
    println!("\n== deposits (new shards, one durable transaction each) ==");
    let next = Arc::new(AtomicU64::new(DEPOSIT_BASE));
    for conns in LEVELS {
        let s = rt.block_on(measure(
            &run,
            &gen,
            &[(&big, Op::Deposit(next.clone()))],
            conns,
            measure_time,
            1,
        ));
        s[0].print("deposit", conns);
        table.push(("deposit", conns, s[0].clone()));
    }
    big.stop();

    // Raw device rate, same token (the small server is idle).
    println!("\n== raw device (in-process Pkcs11Sealer, same token, same blob size) ==");
    let sealer = run.sealer();
    let raw1 = raw_unseal_rate(&sealer, &gen, 1, measure_time);
    let raw2 = raw_unseal_rate(&sealer, &gen, 2, measure_time);
    println!("unseal/s: {raw1:>9.0} (1 thread) {raw2:>9.0} (2 threads)");

    // Top the big database up.
    let big_db = run.db("big.db");
    let n_fill = big_shards.saturating_sub(count_rows(&big_db));
    let t = Instant::now();
    let seal_rate = fill_direct(&big_db, &sealer, &gen, FILL_BASE..FILL_BASE + n_fill);
    drop(sealer);
    let total = count_rows(&big_db);
    let size = std::fs::metadata(&big_db).map_or(0, |m| m.len());
    println!(
        "bulk-loaded {n_fill} sealed shards in {:.1} s (sealing {seal_rate:.0}/s on 2 threads); \
         {total} shards stored, database {:.0} MB",
        t.elapsed().as_secs_f64(),
        size as f64 / 1e6
    );
    // Releases at "big" pick among the bulk-loaded shards (or, when nothing needed
    // loading, among all of its shards' numbers that are known).
    let fill = if n_fill == 0 {
        DEPOSIT_BASE..next.load(Ordering::Relaxed)
    } else {
        FILL_BASE..FILL_BASE + n_fill
    };
    let mut big = Server::start(&run, "big.db");

    // Releases on both, in alternating slices, so that any other load on the
    // machine weighs on both alike.
    println!(
        "\n== releases: {SMALL_SET} shards stored vs {total} stored (alternating {SLICES} slices) =="
    );
    rt.block_on(warm_up(&run, &gen, &small, 0..SMALL_SET));
    rt.block_on(warm_up(&run, &gen, &big, fill.clone()));
    for conns in LEVELS {
        let s = rt.block_on(measure(
            &run,
            &gen,
            &[
                (&small, Op::Release(0..SMALL_SET)),
                (&big, Op::Release(fill.clone())),
            ],
            conns,
            measure_time,
            SLICES,
        ));
        s[0].print("@1k", conns);
        s[1].print("@big", conns);
        table.push(("release @1k", conns, s[0].clone()));
        table.push(("release @big", conns, s[1].clone()));
    }
    small.stop();
    big.stop();

    // Summary against the targets.
    let get = |what: &str, conns: usize| {
        table
            .iter()
            .find(|(w, c, _)| *w == what && *c == conns)
            .map(|(_, _, s)| s.clone())
            .expect("measured")
    };
    let r1k = get("release @1k", 16);
    let rbig = get("release @big", 16);
    let peak = table
        .iter()
        .map(|(_, _, s)| s.peak_rss_kb)
        .max()
        .unwrap_or(0);
    println!(
        "\n== summary (targets on this 2-core machine; load average now {}) ==",
        loadavg()
    );
    println!(
        "releases/s at 16 connections ({SMALL_SET} shards): {:.0}  (target >= 5000) {}",
        r1k.rate,
        verdict(r1k.rate >= 5000.0)
    );
    println!(
        "p99 at 16 connections: {:.2} ms  (target < 10 ms) {}",
        r1k.p99_ms,
        verdict(r1k.p99_ms < 10.0)
    );
    let ratio = rbig.rate / r1k.rate;
    println!(
        "releases/s at {total} shards: {:.0} = {:.0}% of the rate at {SMALL_SET}  (target >= 80%) {}",
        rbig.rate,
        ratio * 100.0,
        verdict(ratio >= 0.8)
    );
    println!(
        "server peak RSS: {:.1} MB  (target < 100 MB) {}",
        peak as f64 / 1024.0,
        verdict((peak as f64) < 100.0 * 1024.0)
    );
    println!("raw device unseal/s: {raw1:.0} (1 thread), {raw2:.0} (2 threads)");
    let errors: u64 = table.iter().map(|(_, _, s)| s.errors).sum();
    println!("request errors: {errors}");
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "MISSED"
    }
}

/// The 1, 5 and 15 minute load averages.
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

// ---------------------------------------------------------------------------
// Set-up: PKI, token, configuration (the custodian harness), two servers

/// One custodian's trust domain, token and configuration; its own process is stopped at
/// once, the servers measured run on databases of their own.
struct Run {
    custodian: Custodian,
}

impl Run {
    fn setup() -> Run {
        let mut custodian = Custodian::start_with(Options {
            log_level: "info".into(),
            release_per_second: 1e9,
            release_burst: 1e9,
            env: vec![("CUSTODIAN_LIMITS_MAX_CONNECTIONS".into(), "1024".into())],
            ..Options::default()
        });
        assert_eq!(custodian.pki.alice.id.to_string(), OWNER);
        custodian.stop().expect("stop");
        // This process opens the same token for the bulk load and the raw device
        // rate; SoftHSM reads the variable when the module is first loaded (below).
        let token = custodian.device().token().expect("a SoftHSM2 token");
        std::env::set_var("SOFTHSM2_CONF", token.conf_path());
        Run { custodian }
    }

    /// A database file of this run.
    fn db(&self, name: &str) -> PathBuf {
        self.custodian.dir().join(name)
    }

    fn client(&self, server: &Server, who: &Identity) -> Client {
        self.custodian
            .client_of(&server.service, self.custodian.pki.client_tls(who))
            .with_deadline(Duration::from_secs(60))
    }

    /// The server's sealer, opened in this process on the same token.
    fn sealer(&self) -> hsm::pkcs11::Pkcs11Sealer {
        let token = self.custodian.device().token().expect("a SoftHSM2 token");
        let profile = token.profile(Mechanism::AesGcm);
        assert_eq!(profile.token_label, "custodian");
        hsm::pkcs11::Pkcs11Sealer::open(&profile).expect("open the token in-process")
    }
}

struct Server {
    service: Service,
}

impl Server {
    /// `custodian serve` on database `db` (a file name in the run's directory).
    fn start(run: &Run, db: &str) -> Server {
        let path = run.db(db).to_string_lossy().into_owned();
        let service = run
            .custodian
            .serve_another(db, &[("CUSTODIAN_DATABASE", &path)])
            .unwrap_or_else(|e| panic!("{e}"));
        Server { service }
    }

    fn pid(&self) -> u32 {
        self.service.pid().expect("running")
    }

    /// Resets the peak RSS so that the next reading covers only what follows.
    fn reset_peak(&self) {
        let _ = std::fs::write(format!("/proc/{}/clear_refs", self.pid()), "5");
    }

    /// CPU time (user + system) the server used so far.
    fn cpu(&self) -> Duration {
        cpu_of(&format!("/proc/{}/stat", self.pid()))
    }

    /// `VmHWM` in kB.
    fn peak_rss_kb(&self) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }

    fn stop(&mut self) {
        self.service.stop().expect("stop");
    }
}

/// User + system CPU time of a process from its `/proc/<pid>/stat`.
fn cpu_of(stat: &str) -> Duration {
    let text = std::fs::read_to_string(stat).unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are 14 and 15.
    let rest = text.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|v| v.parse().unwrap_or(0))
        .collect();
    let ticks = f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0);
    // USER_HZ is 100 on Linux.
    Duration::from_millis(ticks * 10)
}

fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

// ---------------------------------------------------------------------------
// Envelopes derived from (seed, number)

struct Gen {
    seed: [u8; 32],
    base_millis: u64,
}

impl Gen {
    fn new() -> Gen {
        Gen {
            seed: testkit::envelope::os_seed(),
            base_millis: now_millis() - 100_000_000,
        }
    }

    fn hash(&self, tag: &[u8], i: u64) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(self.seed);
        h.update(tag);
        h.update(i.to_be_bytes());
        h.finalize().into()
    }

    /// Shard number `i`: a time-ordered id (like real ones), a 32-byte share.
    fn envelope(&self, i: u64) -> ShardEnvelope {
        let r = self.hash(b"id", i);
        let mut random = [0u8; 10];
        random.copy_from_slice(&r[..10]);
        ShardEnvelope {
            secret_id: SecretId::new_v7(self.base_millis + i, random),
            index: 1 + (i % 4) as u8,
            threshold: Threshold::new(3, 4).expect("threshold"),
            epoch: 1,
            salt: Salt(self.hash(b"salt", i)),
            share: ShareBytes::new(self.hash(b"share", i).to_vec()),
        }
    }

    fn context(&self, env: &ShardEnvelope) -> SealContext {
        SealContext {
            custodian_id: NAME.into(),
            secret_id: env.secret_id,
            index: env.index,
            epoch: env.epoch,
        }
    }
}

// ---------------------------------------------------------------------------
// Measurements

#[derive(Clone)]
enum Op {
    /// Releases of shards picked uniformly from this number range.
    Release(std::ops::Range<u64>),
    /// Deposits of new shards numbered from this counter.
    Deposit(Arc<AtomicU64>),
}

#[derive(Clone, Debug)]
struct Stats {
    ops: u64,
    errors: u64,
    rate: f64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    peak_rss_kb: u64,
    /// Server CPU per successful request, microseconds.
    server_cpu_us: f64,
    /// This process's (the clients') CPU per successful request, microseconds.
    client_cpu_us: f64,
}

impl Stats {
    fn print(&self, what: &str, conns: usize) {
        println!(
            "{what:>8} {conns:>4} conn: {:>8.0}/s  p50 {:>6.2} ms  p99 {:>6.2} ms  max {:>7.2} ms  \
             ({} ok, {} errors)  server peak RSS {:.1} MB  CPU/op server {:.0} us, clients {:.0} us",
            self.rate,
            self.p50_ms,
            self.p99_ms,
            self.max_ms,
            self.ops,
            self.errors,
            self.peak_rss_kb as f64 / 1024.0,
            self.server_cpu_us,
            self.client_cpu_us
        );
    }
}

/// A small generator for picking shard numbers (not for secrets).
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

async fn connect(run: &Run, server: &Server, who: &Identity, n: usize) -> Vec<Arc<Client>> {
    let mut clients = Vec::with_capacity(n);
    for _ in 0..n {
        let c = Arc::new(run.client(server, who));
        // Handshake outside the measurement.
        c.health().await.expect("health over mTLS");
        clients.push(c);
    }
    clients
}

/// One request; true when it succeeded and (for a release) returned exactly the
/// envelope that was deposited.
async fn one(client: &Client, gen: &Gen, op: &Op, rng: &mut XorShift) -> bool {
    match op {
        Op::Release(range) => {
            let i = range.start + rng.next() % (range.end - range.start);
            let env = gen.envelope(i);
            match client.release(&env.secret_id, Some(env.epoch)).await {
                Ok(got) => got.envelope[..] == env.encode()[..],
                Err(_) => false,
            }
        }
        Op::Deposit(next) => {
            let env = gen.envelope(next.fetch_add(1, Ordering::Relaxed));
            matches!(client.deposit(OWNER, &env.encode()).await, Ok(r) if !r.already_stored)
        }
    }
}

/// Measures `conns` connections per target, each target getting `total` time cut
/// into `slices` that alternate between the targets.
async fn measure(
    run: &Run,
    gen: &Arc<Gen>,
    targets: &[(&Server, Op)],
    conns: usize,
    total: Duration,
    slices: u32,
) -> Vec<Stats> {
    struct Acc {
        lat: Vec<u32>,
        errors: u64,
        elapsed: f64,
        server_cpu: Duration,
        client_cpu: Duration,
    }
    let mut clients = Vec::new();
    let mut acc = Vec::new();
    for (server, op) in targets {
        let who = match op {
            Op::Release(_) => &run.custodian.pki.alice,
            Op::Deposit(_) => &run.custodian.pki.enroller,
        };
        clients.push(connect(run, server, who, conns).await);
        server.reset_peak();
        acc.push(Acc {
            lat: Vec::new(),
            errors: 0,
            elapsed: 0.0,
            server_cpu: Duration::ZERO,
            client_cpu: Duration::ZERO,
        });
    }
    let slice = total / slices;
    for _ in 0..slices {
        for (t, (server, op)) in targets.iter().enumerate() {
            let (server_cpu0, client_cpu0) = (server.cpu(), cpu_of("/proc/self/stat"));
            let start = Instant::now();
            let deadline = start + slice;
            let mut tasks = Vec::new();
            for (k, client) in clients[t].iter().enumerate() {
                let (client, gen, op) = (client.clone(), gen.clone(), op.clone());
                let seed = now_millis() ^ (k as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
                tasks.push(tokio::spawn(async move {
                    let mut rng = XorShift(seed | 1);
                    let mut lat = Vec::with_capacity(4096);
                    let mut errors = 0u64;
                    while Instant::now() < deadline {
                        let t = Instant::now();
                        if one(&client, &gen, &op, &mut rng).await {
                            lat.push(t.elapsed().as_micros() as u32);
                        } else {
                            errors += 1;
                        }
                    }
                    (lat, errors)
                }));
            }
            let a = &mut acc[t];
            for task in tasks {
                let (l, e) = task.await.expect("task");
                a.lat.extend(l);
                a.errors += e;
            }
            a.elapsed += start.elapsed().as_secs_f64();
            a.server_cpu += server.cpu().saturating_sub(server_cpu0);
            a.client_cpu += cpu_of("/proc/self/stat").saturating_sub(client_cpu0);
        }
    }
    drop(clients);
    targets
        .iter()
        .zip(acc)
        .map(|((server, _), mut a)| {
            a.lat.sort_unstable();
            let n = a.lat.len();
            let pct = |p: f64| {
                a.lat
                    .get(((n as f64 * p) as usize).min(n.saturating_sub(1)))
                    .map_or(0.0, |us| f64::from(*us) / 1000.0)
            };
            let per_op = |d: Duration| d.as_secs_f64() * 1e6 / (n.max(1) as f64);
            Stats {
                ops: n as u64,
                errors: a.errors,
                rate: n as f64 / a.elapsed,
                p50_ms: pct(0.50),
                p99_ms: pct(0.99),
                max_ms: a.lat.last().map_or(0.0, |us| f64::from(*us) / 1000.0),
                peak_rss_kb: server.peak_rss_kb(),
                server_cpu_us: per_op(a.server_cpu),
                client_cpu_us: per_op(a.client_cpu),
            }
        })
        .collect()
}

/// One second of releases at 16 connections, not reported: fills the server's
/// caches the same way before each release series.
async fn warm_up(run: &Run, gen: &Arc<Gen>, server: &Server, range: std::ops::Range<u64>) {
    let s = measure(
        run,
        gen,
        &[(server, Op::Release(range))],
        16,
        Duration::from_secs(1),
        1,
    )
    .await;
    assert_eq!(s[0].errors, 0, "warm-up releases failed");
}

async fn fill_via_api(run: &Run, server: &Server, gen: &Arc<Gen>, range: std::ops::Range<u64>) {
    let clients = connect(run, server, &run.custodian.pki.enroller, 16).await;
    let next = Arc::new(AtomicU64::new(range.start));
    let mut tasks = Vec::new();
    for client in clients {
        let (gen, next, end) = (gen.clone(), next.clone(), range.end);
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= end {
                    break;
                }
                let env = gen.envelope(i);
                client.deposit(OWNER, &env.encode()).await.expect("deposit");
            }
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
}

// ---------------------------------------------------------------------------
// The device and the database, directly

fn raw_unseal_rate(
    sealer: &hsm::pkcs11::Pkcs11Sealer,
    gen: &Gen,
    threads: usize,
    time: Duration,
) -> f64 {
    let env = gen.envelope(1);
    let ctx = gen.context(&env);
    let blob = sealer.seal(&ctx, &env.encode()).expect("seal");
    let start = Instant::now();
    let total: u64 = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    let mut n = 0u64;
                    while start.elapsed() < time {
                        let out = sealer.unseal(&ctx, &blob).expect("unseal");
                        assert_eq!(out.len(), env.encode().len());
                        n += 1;
                    }
                    n
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("thread")).sum()
    });
    total as f64 / start.elapsed().as_secs_f64()
}

fn count_rows(db: &Path) -> u64 {
    let c = rusqlite::Connection::open(db).expect("db");
    c.query_row("SELECT count(*) FROM shards", [], |r| r.get::<_, i64>(0))
        .expect("count") as u64
}

/// Seals shards `range` on two threads and inserts them in big transactions.
/// Returns the sealing rate.
fn fill_direct(
    db: &Path,
    sealer: &hsm::pkcs11::Pkcs11Sealer,
    gen: &Gen,
    range: std::ops::Range<u64>,
) -> f64 {
    const BATCH: u64 = 20_000;
    // The schema, exactly as the server made it.
    drop(custodian::store::Store::open(db).expect("store"));
    let mut conn = rusqlite::Connection::open(db).expect("db");
    conn.pragma_update(None, "synchronous", "NORMAL")
        .expect("pragma");
    let created_at = (now_millis() / 1000) as i64;
    let mut sealing = Duration::ZERO;
    let mut start = range.start;
    while start < range.end {
        let end = (start + BATCH).min(range.end);
        let t = Instant::now();
        // Seal the batch on two threads (the machine's cores).
        let rows: Vec<(ShardEnvelope, Vec<u8>)> = std::thread::scope(|s| {
            let mid = start + (end - start) / 2;
            let halves: Vec<_> = [start..mid, mid..end]
                .into_iter()
                .map(|part| {
                    s.spawn(move || {
                        part.map(|i| {
                            let env = gen.envelope(i);
                            let blob = sealer
                                .seal(&gen.context(&env), &env.encode())
                                .expect("seal");
                            (env, blob)
                        })
                        .collect::<Vec<_>>()
                    })
                })
                .collect();
            halves
                .into_iter()
                .flat_map(|h| h.join().expect("sealing thread"))
                .collect()
        });
        sealing += t.elapsed();
        let tx = conn.transaction().expect("tx");
        {
            let mut st = tx
                .prepare(
                    "INSERT INTO shards (secret_id, epoch, idx, owner, blob, digest, key_version, size, created_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                )
                .expect("prepare");
            for (env, blob) in &rows {
                let encoded = env.encode();
                let digest: [u8; 32] = Sha256::digest(&encoded[..]).into();
                st.execute(rusqlite::params![
                    &env.secret_id.as_bytes()[..],
                    env.epoch,
                    env.index,
                    OWNER,
                    blob,
                    &digest[..],
                    1u32,
                    encoded.len() as u32,
                    created_at
                ])
                .expect("insert");
            }
        }
        tx.commit().expect("commit");
        start = end;
    }
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        .expect("checkpoint");
    (range.end - range.start) as f64 / sealing.as_secs_f64().max(1e-9)
}
