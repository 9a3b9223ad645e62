//! Share checks without recovery over real processes: `shardctl verify` asks every
//! custodian (two SoftHSM2, two swtpm) to check its share of a shard-kind secret or a
//! signing key against the signed manifest, and each answers a verdict, never the share.
//! Refresh, reshare and repair will be tested here too.

use mtls::Method;
use serde_json::{json, Value};
use testkit::shardctl::{world, User};
use testkit::signing::{call, clients_of, refused};

/// `shardctl --json verify` that must fail; answers the JSON error.
fn verify_fails(user: &User, id: &str) -> Value {
    let run = user.run(&["--json", "verify", id, "--deadline-ms", "1500"]);
    assert!(!run.status.success(), "{run:?}");
    serde_json::from_slice(&run.stdout).unwrap()
}

fn result_of<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["custodians"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("{name} not in {report}"))
}

#[test]
fn every_share_checks_without_leaving_its_custodian_and_a_bad_one_is_named() {
    let mut w = world();
    let alice = w.logged_in("alice");
    let bob = w.logged_in("bob");
    let (p256, _) = alice.enroll_p256();
    let secret = alice.path("secret.bin");
    std::fs::write(&secret, b"an opaque secret").unwrap();
    let e = alice.json(&["enroll", "--secret-file", secret.to_str().unwrap()]);
    let opaque = e["secret_id"].as_str().unwrap().to_owned();
    let e = alice.json(&["enroll", "--kind", "ed25519"]);
    let dealt = e["secret_id"].as_str().unwrap().to_owned();
    let e = alice.json(&["enroll", "--kind", "secp256k1-tr", "--dkg"]);
    let born = e["secret_id"].as_str().unwrap().to_owned();

    // Every kind: all four custodians check their share, and say so.
    let ok_before: Vec<f64> = (0..4)
        .map(|i| w.metric(i, "custodian_shares_verified_total{verdict=\"ok\"}"))
        .collect();
    for id in [&p256, &opaque, &dealt, &born] {
        let report = alice.json(&["verify", id]);
        assert_eq!(report["ok"], 4, "{report}");
        for name in ["c1", "c2", "c3", "c4"] {
            assert_eq!(result_of(&report, name)["result"], "ok", "{report}");
        }
        assert!(alice
            .ok(&["verify", id])
            .contains("every custodian's share checks"));
    }
    for (i, before) in ok_before.iter().enumerate() {
        let now = w.metric(i, "custodian_shares_verified_total{verdict=\"ok\"}");
        assert_eq!(now - before, 8.0, "c{}", i + 1);
    }
    // Nothing secret came back: the answer is a verdict.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let cs = clients_of(&w, &alice);
    rt.block_on(async {
        let path = format!("/v1/shards/{p256}/verify");
        // A wrong commitment is a bad verdict (the share never leaves either way).
        let (st, b) = call(
            &cs[0],
            Method::POST,
            &path,
            json!({ "commitment": "00".repeat(32) }),
        )
        .await;
        assert_eq!(st, 200, "{b}");
        assert_eq!(
            (b["verdict"].as_str(), b["reason"].as_str()),
            (Some("bad"), Some("commitment_mismatch")),
            "{b}"
        );
        assert_eq!(
            b.as_object().unwrap().keys().collect::<Vec<_>>(),
            ["epoch", "index", "kind", "reason", "secret_id", "verdict"]
        );
        let key_path = format!("/v1/shards/{born}/verify");
        let (_, b) = call(
            &cs[1],
            Method::POST,
            &key_path,
            json!({ "commitment": "11".repeat(32) }),
        )
        .await;
        assert_eq!(
            (b["verdict"].as_str(), b["kind"].as_str()),
            (Some("bad"), Some("secp256k1-tr")),
            "{b}"
        );
        // Typed refusals: a malformed commitment, another user's secret (like a missing
        // one), an admin.
        refused(
            &cs[0],
            Method::POST,
            &path,
            json!({ "commitment": "zz" }),
            400,
            "invalid_commitment",
        )
        .await;
        let bobs = clients_of(&w, &bob);
        refused(
            &bobs[0],
            Method::POST,
            &path,
            json!({ "commitment": "00".repeat(32) }),
            404,
            "not_found",
        )
        .await;
        let admin = w.cluster.client(0, w.tls_of("admin", "ops")).unwrap();
        refused(
            &admin,
            Method::POST,
            &path,
            json!({ "commitment": "00".repeat(32) }),
            403,
            "role_not_allowed",
        )
        .await;
        // The enroller (its scheduled checks) may check any owner's share.
        let enroller = w.cluster.client(0, w.tls_of("enroller", "main")).unwrap();
        let (st, b) = call(
            &enroller,
            Method::POST,
            &path,
            json!({ "commitment": "00".repeat(32) }),
        )
        .await;
        assert_eq!((st, b["verdict"].as_str()), (200, Some("bad")), "{b}");
    });

    // A corrupted blob at c2: verify names c2 and its reason, the others still check, and
    // c2 audits and counts the bad verdict.
    let bad_before = w.metric(1, "custodian_shares_verified_total{verdict=\"bad\"}");
    w.cluster.nodes[1].corrupt_blob(&p256);
    let err = verify_fails(&alice, &p256);
    assert_eq!(err["error"], "shares_bad", "{err}");
    assert_eq!(err["ok"], 3, "{err}");
    assert_eq!(result_of(&err, "c2")["result"], "bad", "{err}");
    assert!(
        result_of(&err, "c2")["detail"]
            .as_str()
            .unwrap()
            .contains("sealed_blob_integrity"),
        "{err}"
    );
    assert_eq!(
        w.metric(1, "custodian_shares_verified_total{verdict=\"bad\"}") - bad_before,
        1.0
    );
    let row = w.cluster.nodes[1].wait_audit("verify", |a| {
        a.event == "verify" && a.secret_id == p256 && a.outcome == "bad"
    });
    assert_eq!(row.reason, "sealed_blob_integrity");
    let line = alice.fails(&["verify", &p256]);
    assert!(line.contains("3 of 4") && line.contains("c2:"), "{line}");

    // The enroller's scheduled checks (every second here) find the same bad share and name
    // it, and check every other share of every owner.
    let enroller = w.cluster.enroller.as_mut().unwrap();
    enroller.stop().unwrap();
    enroller.set_env("ENROLLER_CHECKS_INTERVAL_SECONDS", Some("1"));
    enroller.start().unwrap();
    enroller.wait_ready().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let summary = loop {
        let log = w.cluster.enroller.as_ref().unwrap().log_text();
        if let Some(line) = log
            .lines()
            .find(|l| l.contains("scheduled share checks done"))
        {
            break (line.to_owned(), log);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no pass in 20 s:\n{log}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    let (line, log) = summary;
    assert!(
        line.contains("secrets=4") && line.contains("ok=15") && line.contains("bad=1"),
        "{line}"
    );
    let warned = log
        .lines()
        .find(|l| l.contains("scheduled share check: bad share"))
        .unwrap_or_else(|| panic!("no warning:\n{log}"));
    assert!(
        warned.contains(&p256) && warned.contains("c2") && warned.contains("sealed_blob_integrity"),
        "{warned}"
    );
    let row = w.cluster.nodes[0].wait_audit("verify", |a| {
        a.event == "verify" && a.peer.ends_with("/enroller/main") && a.secret_id == born
    });
    assert_eq!(row.outcome, "ok");

    // A custodian down is named too, and the check is not called good.
    w.cluster.nodes[3].kill9();
    let err = verify_fails(&alice, &opaque);
    assert_eq!(err["error"], "not_verified", "{err}");
    assert_eq!(result_of(&err, "c4")["result"], "unreachable", "{err}");
    assert_eq!(result_of(&err, "c1")["result"], "ok", "{err}");
    w.cluster.nodes[3].start().unwrap();
    w.cluster.wait_ready(3).unwrap();
}
