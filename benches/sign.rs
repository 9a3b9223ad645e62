//! Threshold-signing benchmark over real processes: 4 custodians (2 SoftHSM2, 2 swtpm),
//! `t = 3`, keys enrolled through the enroller, for each kind:
//!
//! - FROST compute alone (three commitments, the package, three shares, aggregation and
//!   verification, in this process): what the protocol costs without any I/O;
//! - a trivial echo (`GET /v1/health` over a kept-alive mutual-TLS connection) and one
//!   custodian's round 1 alone (which unseals the key package with its device), as the
//!   references for the network and the device, measured in the same run;
//! - a whole signing from this process (both rounds, each sent to three custodians at
//!   once on kept-alive connections);
//! - a whole signing by a fresh `shardctl sign` process (TLS handshakes, manifest, both
//!   rounds, verification, the signature written);
//! - a key born distributed by a fresh `shardctl enroll --dkg` process (the enroller
//!   coordinating the custodians' three DKG steps, the peer channel carrying round 2, four
//!   key packages sealed), beside the DKG's computation alone (four holders in this
//!   process) and a dealer-mode `shardctl enroll` in the same run.
//!
//! Build the binaries in release first, then run:
//! `cargo build --release --workspace --bins && cargo bench -p shard-custodians-tests --bench sign`.
//! Every phase is bounded in count and time (`SIGN_BENCH_N` sets the in-process count,
//! default 200; a tenth of it, at least 10, fresh processes).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use mtls::Client;
use testkit::figures::{measure, ms};
use testkit::shardctl::world;
use testkit::signing::{clients_of, commit, sign_round};
use threshold::{
    aggregate, deal, HolderId, Kind, SeededRng, SignatureShare, SigningPackage, Threshold,
    Zeroizing,
};

/// The DKG's computation alone: four holders' three parts, in this process.
fn dkg_alone(kind: Kind, n: usize) -> Duration {
    let split = Threshold::new(3, 4).unwrap();
    measure(
        "DKG computation alone (4 holders, in this process)",
        n,
        Duration::from_secs(20),
        |k| {
            let mut rng = SeededRng::from_seed(Zeroizing::new([k as u8; 32]));
            let mut secrets = BTreeMap::new();
            let mut round1 = BTreeMap::new();
            for h in HolderId::all(4) {
                let (s, p) = threshold::dkg::part1(kind, h, split, &mut rng).unwrap();
                secrets.insert(h, s);
                round1.insert(h, p);
            }
            let mut seconds = BTreeMap::new();
            let mut inbox: BTreeMap<HolderId, BTreeMap<HolderId, _>> = BTreeMap::new();
            for (h, s) in secrets {
                let (s2, out) = threshold::dkg::part2(s, &round1).unwrap();
                seconds.insert(h, s2);
                for (to, p) in out {
                    inbox.entry(to).or_default().insert(h, p);
                }
            }
            for (h, s2) in seconds {
                threshold::dkg::part3(s2, &round1, &inbox[&h]).unwrap();
            }
        },
    )
}

/// FROST alone: a dealt key, then three commitments, the package, three shares,
/// aggregation and verification.
fn frost_alone(kind: Kind, n: usize) -> Duration {
    let mut rng = SeededRng::from_seed(Zeroizing::new([7; 32]));
    let dealt = deal(kind, Threshold::new(3, 4).unwrap(), &mut rng).unwrap();
    let signers: Vec<HolderId> = HolderId::all(3).collect();
    measure("FROST compute alone", n, Duration::from_secs(20), |i| {
        let message = format!("message {i}");
        let mut nonces = BTreeMap::new();
        let mut commitments = BTreeMap::new();
        for h in &signers {
            let (nonce, commitment) = threshold::commit(&dealt.key_packages[h], &mut rng).unwrap();
            nonces.insert(*h, nonce);
            commitments.insert(*h, commitment);
        }
        let package = SigningPackage::new(kind, &commitments, message.as_bytes()).unwrap();
        let shares: BTreeMap<HolderId, SignatureShare> = nonces
            .into_iter()
            .map(|(h, nonce)| {
                (
                    h,
                    threshold::sign(&dealt.key_packages[&h], nonce, &package).unwrap(),
                )
            })
            .collect();
        let signature = aggregate(&dealt.public, &package, &shares).unwrap();
        dealt
            .public
            .group_key()
            .verify(message.as_bytes(), &signature)
            .unwrap();
    })
}

/// A whole signing from this process with custodians `chosen`, both rounds to all of them
/// at once.
async fn sign_in_process(cs: &[Client], chosen: &[usize], kind: Kind, id: &str, k: usize) {
    let session = format!("{:032x}", (k as u128) << 64 | 0x5167);
    let message = format!("bench message {k}");
    let answers = join_all(chosen.iter().map(|&i| commit(&cs[i], kind, id, &session))).await;
    let public = answers[0].2.clone();
    let commitments: BTreeMap<_, _> = answers.into_iter().map(|(h, c, _)| (h, c)).collect();
    let package = SigningPackage::new(kind, &commitments, message.as_bytes()).unwrap();
    let shares = join_all(
        chosen
            .iter()
            .map(|&i| sign_round(&cs[i], id, &session, &package)),
    )
    .await;
    let shares: BTreeMap<HolderId, SignatureShare> = shares
        .into_iter()
        .zip(chosen)
        .map(|((st, body), &i)| {
            assert_eq!(st, 200, "{body}");
            let bytes = base64::Engine::decode(
                &base64::engine::general_purpose::STANDARD,
                body["share"].as_str().unwrap(),
            )
            .unwrap();
            (
                HolderId::new(i as u16 + 1).unwrap(),
                SignatureShare::decode(kind, &bytes).unwrap(),
            )
        })
        .collect();
    let signature = aggregate(&public, &package, &shares).unwrap();
    public
        .group_key()
        .verify(message.as_bytes(), &signature)
        .unwrap();
}

fn main() {
    let n: usize = std::env::var("SIGN_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200)
        .clamp(10, 2000);
    let n_cli = (n / 10).max(10);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "signing bench: {cores} cores; 4 custodians (c1, c2 SoftHSM2; c3, c4 swtpm), threshold 3"
    );
    let t0 = Instant::now();
    let w = world();
    let alice = w.logged_in("alice");
    println!(
        "cluster and enroller up, alice logged in, in {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    let cs = clients_of(&w, &alice);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();

    println!("references, this run:");
    let echo = measure(
        "echo: GET /v1/health at c1, kept-alive mTLS",
        n,
        Duration::from_secs(20),
        |_| {
            rt.block_on(cs[0].health()).unwrap();
        },
    );
    // Round 2 answers only after its audit row is durable: one fsync of the custodian's
    // disk is on every signature's path.
    let probe = w.cluster.nodes[0].dir().join("fsync-probe");
    let file = std::fs::File::create(&probe).unwrap();
    let fsync = measure(
        "fsync: 200 bytes written and synced in c1's directory",
        n,
        Duration::from_secs(20),
        |_| {
            use std::io::Write;
            (&file).write_all(&[0u8; 200]).unwrap();
            file.sync_data().unwrap();
        },
    );
    drop(file);
    let _ = std::fs::remove_file(&probe);
    let message = alice.path("message.txt");
    std::fs::write(&message, b"bench message").unwrap();
    for kind in Kind::ALL {
        println!("{kind}:");
        let made = alice.json(&["enroll", "--kind", kind.as_str()]);
        let id = made["secret_id"].as_str().unwrap().to_owned();
        let frost = frost_alone(kind, n);
        // Round 1 alone leaves its sessions open until their deadline; a user may have 256
        // open at one custodian, so this phase stays well below that over the three kinds.
        let n_round1 = (n / 4).clamp(5, 60);
        let round1_soft = measure(
            "round 1 alone at c1 (SoftHSM2 unseal)",
            n_round1,
            Duration::from_secs(15),
            |k| {
                rt.block_on(commit(
                    &cs[0],
                    kind,
                    &id,
                    &format!("{:032x}", (k as u128) << 64 | 0xa1),
                ));
            },
        );
        let round1_tpm = measure(
            "round 1 alone at c3 (swtpm unseal)",
            n_round1,
            Duration::from_secs(30),
            |k| {
                rt.block_on(commit(
                    &cs[2],
                    kind,
                    &id,
                    &format!("{:032x}", (k as u128) << 64 | 0xa3),
                ));
            },
        );
        let chosen = [0, 1, 2];
        let whole = measure(
            "whole signing in process (c1, c2, c3)",
            n,
            Duration::from_secs(60),
            |k| {
                rt.block_on(sign_in_process(&cs, &chosen, kind, &id, k));
            },
        );
        let cli = measure(
            "whole signing by a fresh shardctl process",
            n_cli,
            Duration::from_secs(60),
            |k| {
                let out = alice.path(&format!("{kind}-{k}.sig"));
                alice.ok(&[
                    "sign",
                    &id,
                    "--in",
                    message.to_str().unwrap(),
                    "--out",
                    out.to_str().unwrap(),
                ]);
            },
        );
        // What no signing by these three can beat: round 1 waits for the slowest device
        // (c3's swtpm), round 2 for one durable audit row.
        let floor = round1_tpm + fsync + echo;
        println!(
            "  => in process {:.2} ms (target p50 <= 3 ms) = {:.1} x the echo, {:.1} x FROST alone, \
             {:.2} x the floor {:.2} ms (slowest device round 1 {:.2} ms, SoftHSM2 {:.2} ms, + one fsync \
             + one echo); shardctl {:.2} ms (target p50 <= 30 ms)",
            ms(whole),
            whole.as_secs_f64() / echo.as_secs_f64().max(1e-9),
            whole.as_secs_f64() / frost.as_secs_f64().max(1e-9),
            whole.as_secs_f64() / floor.as_secs_f64().max(1e-9),
            ms(floor),
            ms(round1_tpm),
            ms(round1_soft),
            ms(cli),
        );
    }
    println!("keys born distributed:");
    let n_dkg = (n / 10).clamp(5, 20);
    for kind in Kind::ALL {
        println!("{kind}:");
        let alone = dkg_alone(kind, n_dkg);
        let dealt = measure(
            "dealer-mode enroll by a fresh shardctl process",
            n_dkg,
            Duration::from_secs(30),
            |_| {
                alice.ok(&["enroll", "--kind", kind.as_str()]);
            },
        );
        let dkg = measure(
            "DKG enroll by a fresh shardctl process (enroll --dkg)",
            n_dkg,
            Duration::from_secs(60),
            |_| {
                alice.ok(&["enroll", "--kind", kind.as_str(), "--dkg"]);
            },
        );
        println!(
            "  => DKG of one key {:.2} ms (target p50 <= 100 ms) = {:.1} x a dealer-mode enroll, \
             {:.1} x the DKG computation alone",
            ms(dkg),
            dkg.as_secs_f64() / dealt.as_secs_f64().max(1e-9),
            dkg.as_secs_f64() / alone.as_secs_f64().max(1e-9),
        );
    }
}
