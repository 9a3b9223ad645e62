//! Epoch benchmark over real processes: 4 custodians (2 SoftHSM2, 2 swtpm), `t = 3`, a
//! fifth (SoftHSM2) on standby for reshares, an enroller, threshold-signing keys of each
//! kind.
//!
//! - references in the same run: a trivial echo (`GET /v1/health` at c1 over kept-alive
//!   mutual TLS) and a dealer-mode enrollment (`POST /v1/enroll`) from this process;
//! - one refresh (`POST /v1/enrollments/{id}/refresh`: the refresh DKG's three steps at
//!   every custodian, the peer channel, four pending rows sealed, the manifest of the next
//!   epoch signed and stored, four commits, four deletions) from this process, and from a
//!   fresh `shardctl refresh` process;
//! - one reshare (`POST /v1/enrollments/{id}/reshare`, 3 of 4 to 3 of 4 with one custodian
//!   replaced, back and forth: health checks, three dealers dealing to four new holders
//!   over the peer channel, four pending rows, the manifest, commits, deletions at five);
//! - the rate of refreshing many keys four at a time (what the scheduled refresh does),
//!   with the time 10,000 keys would take at that rate, and the peer-channel payload per
//!   refreshed key.
//!
//! Build the binaries in release first, then run:
//! `cargo build --release --workspace --bins && cargo bench -p shard-custodians-tests --bench epochs`.
//! Every phase is bounded in count and time (`EPOCH_BENCH_N` sets the count of the
//! one-key phases, default 30; `EPOCH_BENCH_KEYS` the keys of the rate phase, default 200).

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use mtls::Client;
use testkit::device::Backend;
use testkit::figures::{measure, ms};
use testkit::shardctl::world_standby;
use testkit::signing::clients_of;
use threshold::{dkg, HolderId, Kind, SeededRng, Threshold, Zeroizing};
use wire::enroller::{Enroll, EnrollResponse, Refresh, Reshare};

/// The peer channel's payload for one reshare of a key of `kind` from three dealers to
/// four new holders: one sub-share in a JSON body per dealer and new holder.
fn reshare_payload(kind: Kind) -> (usize, usize) {
    let mut rng = SeededRng::from_seed(Zeroizing::new([4; 32]));
    let dealt = threshold::deal(kind, Threshold::new(3, 4).unwrap(), &mut rng).unwrap();
    let quorum = HolderId::all(3).collect();
    let one = HolderId::new(1).unwrap();
    let dealing = threshold::reshare::deal(
        &dealt.key_packages[&one],
        &quorum,
        Threshold::new(3, 4).unwrap(),
        &mut rng,
    )
    .unwrap();
    let b64 = base64::engine::general_purpose::STANDARD;
    let body = serde_json::json!({
        "from": 1, "to": 1,
        "share": b64.encode(dealing.shares[&one].expose()),
    })
    .to_string();
    (3 * 4, 3 * 4 * body.len())
}

/// The peer channel's payload for one refresh of a key of `kind`: every holder sends
/// each other holder one round-2 package in a JSON body (TLS and HTTP framing not
/// counted).
fn peer_payload(kind: Kind) -> (usize, usize) {
    let split = Threshold::new(3, 4).unwrap();
    let mut rng = SeededRng::from_seed(Zeroizing::new([3; 32]));
    let mut round1 = std::collections::BTreeMap::new();
    let mut secrets = Vec::new();
    for h in HolderId::all(4) {
        let (s, p) = dkg::refresh_part1(kind, h, split, &mut rng).unwrap();
        round1.insert(h, p);
        secrets.push(s);
    }
    let (_, out) = dkg::refresh_part2(secrets.remove(0), &round1).unwrap();
    let one = out.values().next().unwrap();
    let b64 = base64::engine::general_purpose::STANDARD;
    let body = serde_json::json!({
        "from": 1, "to": 2,
        "transcript": b64.encode([0u8; 32]),
        "package": b64.encode(one.expose()),
    })
    .to_string();
    (4 * 3, 4 * 3 * body.len())
}

fn main() {
    let n: usize = std::env::var("EPOCH_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30)
        .clamp(5, 500);
    let keys: usize = std::env::var("EPOCH_BENCH_KEYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200)
        .clamp(10, 10_000);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "epoch bench: {cores} cores, load {}; 4 custodians (c1, c2 SoftHSM2; c3, c4 swtpm), threshold 3, c5 (SoftHSM2) on standby",
        load.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
    );
    let w = world_standby(
        &[
            Backend::SoftHsm,
            Backend::SoftHsm,
            Backend::Tpm,
            Backend::Tpm,
            Backend::SoftHsm,
        ],
        1,
    );
    let alice = w.logged_in("alice");
    let cs = clients_of(&w, &alice);
    let login = alice.path(&format!(
        "config/shardctl/login/{}.pem",
        testkit::cluster::TRUST_DOMAIN
    ));
    let tls = w.cluster.client_tls(&login, &login).unwrap();
    let enroller_addr = w.cluster.enroller.as_ref().unwrap().addr;
    let connect = || {
        Arc::new(
            Client::new(enroller_addr, &enroller_addr.ip().to_string(), tls.clone())
                .unwrap()
                .with_deadline(Duration::from_secs(30)),
        )
    };
    let enroller = connect();
    // One connection each: a client sends one request at a time.
    let four: Vec<Arc<Client>> = (0..4).map(|_| connect()).collect();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let enroll = |kind: Kind| -> String {
        let answer: EnrollResponse = rt
            .block_on(enroller.call(&Enroll {
                kind: kind.as_str().into(),
                secret: None,
                dkg: false,
            }))
            .unwrap();
        answer.secret_id
    };
    let refresh = |id: &str| {
        let answer = rt
            .block_on(enroller.call(&Refresh {
                secret_id: id.to_owned(),
            }))
            .unwrap();
        assert!(answer.complete, "refresh of {id} incomplete");
    };

    println!("references, this run:");
    let echo = measure(
        "echo: GET /v1/health at c1, kept-alive mTLS",
        n * 4,
        Duration::from_secs(20),
        |_| {
            rt.block_on(cs[0].health()).unwrap();
        },
    );
    for kind in Kind::ALL {
        println!("{kind}:");
        let dealt = measure(
            "dealer-mode enroll from this process",
            n,
            Duration::from_secs(30),
            |_| {
                enroll(kind);
            },
        );
        let id = enroll(kind);
        let one = measure(
            "one refresh from this process",
            n,
            Duration::from_secs(60),
            |_| refresh(&id),
        );
        let cli = measure(
            "one refresh by a fresh shardctl process",
            (n / 3).max(5),
            Duration::from_secs(60),
            |_| {
                alice.ok(&["refresh", &id]);
            },
        );
        let (messages, bytes) = peer_payload(kind);
        println!(
            "  => refresh {:.2} ms (target p50 <= 50 ms in process) = {:.1} x a dealer-mode enroll, {:.0} x the echo; \
             shardctl {:.2} ms; peer channel per refresh: {messages} messages, {bytes} bytes of JSON",
            ms(one),
            one.as_secs_f64() / dealt.as_secs_f64().max(1e-9),
            one.as_secs_f64() / echo.as_secs_f64().max(1e-9),
            ms(cli),
        );
        let sets = ["c1,c2,c3,c5", "c1,c2,c3,c4"];
        let moved = measure(
            "one reshare from this process (c4 <-> c5)",
            n,
            Duration::from_secs(60),
            |i| {
                let custodians = sets[i % 2].split(',').map(str::to_owned).collect();
                let answer = rt
                    .block_on(enroller.call(&Reshare {
                        secret_id: id.clone(),
                        custodians,
                        threshold: 3,
                    }))
                    .unwrap();
                assert!(answer.complete, "reshare of {id} incomplete");
            },
        );
        let (messages, bytes) = reshare_payload(kind);
        println!(
            "  => reshare {:.2} ms = {:.1} x a refresh, {:.0} x the echo; peer channel per reshare: {messages} messages, {bytes} bytes of JSON",
            ms(moved),
            moved.as_secs_f64() / one.as_secs_f64().max(1e-9),
            moved.as_secs_f64() / echo.as_secs_f64().max(1e-9),
        );
    }
    println!("many keys, four at a time (as the scheduled refresh does):");
    let ids: Vec<String> = (0..keys).map(|_| enroll(Kind::Ed25519)).collect();
    let start = Instant::now();
    let budget = Duration::from_secs(120);
    let mut done = 0usize;
    for batch in ids.chunks(4) {
        if start.elapsed() > budget {
            break;
        }
        let calls = batch.iter().zip(&four).map(|(id, enroller)| async move {
            let answer = enroller
                .call(&Refresh {
                    secret_id: id.clone(),
                })
                .await
                .unwrap();
            assert!(answer.complete, "refresh of {id} incomplete");
        });
        rt.block_on(futures_util::future::join_all(calls));
        done += batch.len();
    }
    let took = start.elapsed();
    let rate = done as f64 / took.as_secs_f64().max(1e-9);
    println!(
        "  {done} ed25519 keys in {:.1} s: {rate:.1} keys/s => 10,000 keys in {:.0} s (target < 300 s)",
        took.as_secs_f64(),
        10_000.0 / rate.max(1e-9),
    );
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "load at the end {}",
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
}
