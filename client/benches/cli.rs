//! Latency of `shardctl enroll` and `shardctl recover` from a fresh process, against four
//! custodians (two SoftHSM2, two swtpm) and an enroller on loopback, next to the same calls
//! made in-process through the API (the floor the CLI adds process start, configuration,
//! login file and TLS handshakes to).
//!
//! Run with release services: `cargo build --release --workspace --bins && cargo bench -p
//! shardctl --bench cli`. `SHARDCTL_BENCH_RUNS` changes the number of runs (default 50).

use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use futures_util::stream::{FuturesUnordered, StreamExt};
use mtls::{Client, Method};
use p256::pkcs8::{DecodePublicKey, EncodePrivateKey, LineEnding};
use serde_json::{json, Value};

fn main() {
    let runs: usize = std::env::var("SHARDCTL_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    let w = testkit::shardctl::world();
    let user = w.logged_in("bench");
    println!(
        "shardctl latency, {runs} runs, 4 custodians (2 SoftHSM2, 2 swtpm), threshold 3, loopback"
    );
    println!(
        "{:<44} {:>9} {:>9} {:>9}",
        "what", "p50 ms", "p99 ms", "max ms"
    );

    // The floor of any fresh process of this binary.
    let floor = measure(runs, |_| {
        let s = user
            .cmd(&["--version"])
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(s.success());
    });
    report("shardctl --version (process start)", &floor);

    let mut ids = Vec::with_capacity(runs);
    let enroll = measure(runs, |_| {
        let out = user.cmd(&["--json", "enroll"]).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        ids.push(v["secret_id"].as_str().unwrap().to_owned());
    });
    report("CLI: shardctl enroll (P-256)", &enroll);

    let recover = measure(runs, |i| {
        let out = user.path(&format!("k{i}.pem"));
        let s = user
            .cmd(&["recover", &ids[i], "--out", out.to_str().unwrap()])
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(s.success());
    });
    report("CLI: shardctl recover (3 of 4)", &recover);

    // The same work in-process: the login file's certificate, the pinned manifest key.
    let pem = std::fs::read(user.path("config/shardctl/login/demo.test.pem")).unwrap();
    let ca = std::fs::read(w.cluster.pki.join("ca.pem")).unwrap();
    let tls = Arc::new(certs::tls::client_config(&ca, &pem, &pem).unwrap());
    let mkey = p256::ecdsa::VerifyingKey::from_public_key_pem(
        &std::fs::read_to_string(w.cluster.pki.join("enroller-manifest.pub.pem")).unwrap(),
    )
    .unwrap();
    let enroller_node = w.cluster.enroller.as_ref().unwrap();
    let enroller = |tls: &Arc<certs::rustls::ClientConfig>| {
        Client::new(enroller_node.addr, "127.0.0.10", tls.clone()).unwrap()
    };
    let custodians = |tls: &Arc<certs::rustls::ClientConfig>| -> Vec<(String, Client)> {
        (0..w.cluster.nodes.len())
            .map(|i| {
                (
                    w.cluster.nodes[i].name.clone(),
                    w.cluster.client(i, tls.clone()).unwrap(),
                )
            })
            .collect()
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();

    for (label, warm) in [("kept-alive connections", true), ("new connections", false)] {
        let mut e = enroller(&tls);
        let mut manifests = Vec::with_capacity(runs);
        let api_enroll = measure(runs, |_| {
            if !warm {
                e = enroller(&tls);
            }
            manifests.push(rt.block_on(enroll_in_process(&e, &mkey)));
        });
        report(&format!("API: enroll, {label}"), &api_enroll);
        let mut cs = custodians(&tls);
        let api_recover = measure(runs, |i| {
            if !warm {
                cs = custodians(&tls);
            }
            rt.block_on(recover_in_process(&cs, &manifests[i]));
        });
        report(&format!("API: recover, {label}"), &api_recover);
    }
}

/// POST /v1/enroll and verify the manifest, as `shardctl enroll` does.
async fn enroll_in_process(enroller: &Client, key: &p256::ecdsa::VerifyingKey) -> shard::Manifest {
    let body = serde_json::to_vec(&json!({"kind": "p256"})).unwrap();
    let (status, bytes) = enroller
        .request(Method::POST, "/v1/enroll", Some(body))
        .await
        .unwrap();
    assert_eq!(status.as_u16(), 201);
    let v: Value = serde_json::from_slice(&bytes).unwrap();
    let raw = base64::engine::general_purpose::STANDARD
        .decode(v["manifest"].as_str().unwrap())
        .unwrap();
    let signed = shard::SignedManifest::decode(&raw).unwrap();
    signed.verify(key).unwrap().clone()
}

/// Ask all custodians at once, stop at `t` good shards, combine, encode the key.
async fn recover_in_process(custodians: &[(String, Client)], manifest: &shard::Manifest) {
    let mut pending: FuturesUnordered<_> = custodians
        .iter()
        .map(|(name, c)| async move {
            (
                name,
                c.release(&manifest.secret_id, Some(manifest.epoch)).await,
            )
        })
        .collect();
    let mut got = Vec::new();
    while got.len() < usize::from(manifest.threshold.t()) {
        let (name, r) = pending.next().await.unwrap();
        if let Ok(r) = r {
            got.push(shard::Returned {
                custodian: shard::CustodianId::new(name).unwrap(),
                envelope: r.envelope,
            });
        }
    }
    let rec = shard::combine_verified(manifest, got).unwrap();
    let key = p256::SecretKey::from_slice(rec.secret.expose()).unwrap();
    let _ = key.to_pkcs8_pem(LineEnding::LF).unwrap();
}

fn measure(runs: usize, mut f: impl FnMut(usize)) -> Vec<Duration> {
    let mut times = Vec::with_capacity(runs);
    for i in 0..runs {
        let start = Instant::now();
        f(i);
        times.push(start.elapsed());
    }
    times.sort();
    times
}

fn report(what: &str, sorted: &[Duration]) {
    let pct = |p: f64| {
        let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
        sorted[i].as_secs_f64() * 1000.0
    };
    println!(
        "{what:<44} {:>9.2} {:>9.2} {:>9.2}",
        pct(0.50),
        pct(0.99),
        pct(1.0)
    );
}
