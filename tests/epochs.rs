//! Share checks without recovery over real processes: `shardctl verify` asks every
//! custodian (two SoftHSM2, two swtpm) to check its share of a shard-kind secret or a
//! signing key against the signed manifest, and each answers a verdict, never the share.
//! Refresh, reshare and repair will be tested here too.

use std::collections::BTreeMap;

use base64::Engine;
use mtls::Method;
use serde_json::{json, Value};
use testkit::shardctl::{world, User};
use testkit::signing::{call, clients_of, commit_at, refused, sign_round};
use threshold::{GroupKey, HolderId, Kind, Signature, SignatureShare, SigningPackage};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

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

/// Every row custodian `i` holds of `id`: `(epoch, pending)`, from the admin's listing.
fn rows_of(w: &testkit::shardctl::World, i: usize, id: &str) -> Vec<(u32, bool)> {
    let admin = w.cluster.client(i, w.tls_of("admin", "ops")).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let page = rt.block_on(admin.list(None, 1000)).unwrap();
    page.shards
        .iter()
        .filter(|s| s.secret_id == id)
        .map(|s| (s.epoch, s.pending))
        .collect()
}

/// Waits (up to 30 s) until every custodian holds `id` at `epoch` only, committed.
fn converges(w: &testkit::shardctl::World, id: &str, epoch: u32) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let rows: Vec<_> = (0..4).map(|i| rows_of(w, i, id)).collect();
        if rows.iter().all(|r| r == &[(epoch, false)]) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{id} did not converge to epoch {epoch}: {rows:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
}

/// Restarts the enroller, with `fault` (`ENROLLER_FAULT`) or none.
fn restart_enroller(w: &mut testkit::shardctl::World, fault: Option<&str>) {
    let enroller = w.cluster.enroller.as_mut().unwrap();
    let _ = enroller.stop();
    enroller.set_env("ENROLLER_FAULT", fault);
    enroller.start().unwrap();
    enroller.wait_ready().unwrap();
}

/// Signs `message` with `id` through `shardctl` and checks the signature.
fn signs(user: &User, id: &str, kind: Kind, public: &str, name: &str) {
    let message = user.path("refresh-message.txt");
    std::fs::write(&message, b"after the refresh").unwrap();
    let out = user.path(name);
    let run = user.json(&[
        "sign",
        id,
        "--in",
        message.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--deadline-ms",
        "2000",
    ]);
    let signature = Signature::decode(kind, &std::fs::read(&out).unwrap()).unwrap();
    GroupKey::from_text(kind, public)
        .unwrap()
        .verify(b"after the refresh", &signature)
        .unwrap_or_else(|e| panic!("{run}: {e}"));
}

#[test]
fn refresh_renews_every_share_of_the_same_key_and_survives_a_crash_at_every_step() {
    let mut w = world();
    let alice = w.logged_in("alice");
    // Every kind, dealt or born distributed: same key, epoch 2, new shares everywhere.
    let mut keys = Vec::new();
    for (kind, dkg) in [
        (Kind::Ed25519, false),
        (Kind::Secp256k1Tr, true),
        (Kind::P256Schnorr, false),
    ] {
        let mut args = vec!["enroll", "--kind", kind.as_str()];
        if dkg {
            args.push("--dkg");
        }
        let e = alice.json(&args);
        let id = e["secret_id"].as_str().unwrap().to_owned();
        let public = e["public_key"].as_str().unwrap().to_owned();
        let run = alice.run(&["--json", "refresh", &id]);
        if !run.status.success() {
            for (name, log) in w.cluster.logs() {
                eprintln!(
                    "==== {name}\n{}",
                    log.lines()
                        .filter(|l| l.contains("WARN") || l.contains("ERROR"))
                        .collect::<Vec<_>>()
                        .join("\n")
                );
            }
            panic!("{run:?}");
        }
        let r: Value = serde_json::from_slice(&run.stdout).unwrap();
        assert_eq!(
            (&r["epoch"], &r["from_epoch"], &r["complete"]),
            (&json!(2), &json!(1), &json!(true)),
            "{r}"
        );
        let p = alice.json(&["pubkey", &id]);
        assert_eq!(
            (p["public_key"].as_str(), &p["epoch"]),
            (Some(public.as_str()), &json!(2))
        );
        converges(&w, &id, 2);
        signs(&alice, &id, kind, &public, &format!("{kind}-2.sig"));
        assert_eq!(alice.json(&["verify", &id])["ok"], 4);
        keys.push((kind, id, public));
    }
    // A shard-kind secret is refused with its reason (no Feldman commitments over GF(2^8)).
    let (p256, _) = alice.enroll_p256();
    let err = alice.fails(&["refresh", &p256]);
    assert!(
        err.contains("not used to sign") || err.contains("refresh_not_for_kind"),
        "{err}"
    );

    let (kind, id, public) = keys[0].clone();
    // The enroller dies before the custodians are asked, and after they all stored their
    // pending rows but before the new manifest: each time the refresh is aborted after
    // the restart, epoch 2 stays in force, and no pending row is left.
    for fault in ["refresh-after-begin", "refresh-before-manifest"] {
        restart_enroller(&mut w, Some(fault));
        let run = alice.run(&["refresh", &id]);
        assert!(!run.status.success(), "{fault}: {run:?}");
        if fault == "refresh-before-manifest" {
            for i in 0..4 {
                assert_eq!(
                    rows_of(&w, i, &id),
                    [(2, false), (3, true)],
                    "{fault} c{}",
                    i + 1
                );
            }
        }
        restart_enroller(&mut w, None);
        converges(&w, &id, 2);
        assert_eq!(alice.json(&["pubkey", &id])["epoch"], 2, "{fault}");
        signs(&alice, &id, kind, &public, &format!("{fault}.sig"));
    }

    // The enroller dies right after the manifest of epoch 3 is stored: epoch 3 is in force
    // though every custodian still has it pending and epoch 2 committed.
    restart_enroller(&mut w, Some("refresh-after-manifest"));
    assert!(!alice.run(&["refresh", &id]).status.success());
    for i in 0..4 {
        assert_eq!(rows_of(&w, i, &id), [(2, false), (3, true)], "c{}", i + 1);
    }
    // Old and new shares do not combine: two of epoch 2 and one of epoch 3 make no
    // signature, under either epoch's public key package; three of epoch 3 do.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let cs = clients_of(&w, &alice);
    rt.block_on(async {
        let message = b"mixed epochs";
        for (n, epochs) in [[2u32, 2, 3], [3, 3, 3]].iter().enumerate() {
            let s = testkit::signing::session(40 + n as u8);
            let mut commitments = BTreeMap::new();
            let mut publics = Vec::new();
            for (i, epoch) in epochs.iter().enumerate() {
                let (holder, c, p) = commit_at(&cs[i], kind, &id, &s, Some(*epoch)).await;
                commitments.insert(holder, c);
                publics.push(p);
            }
            let package = SigningPackage::new(kind, &commitments, message).unwrap();
            let mut shares = BTreeMap::new();
            for (i, c) in cs.iter().take(3).enumerate() {
                let (st, b) = sign_round(c, &id, &s, &package).await;
                assert_eq!(st, 200, "{b}");
                let bytes = B64.decode(b["share"].as_str().unwrap()).unwrap();
                shares.insert(
                    HolderId::new(i as u16 + 1).unwrap(),
                    SignatureShare::decode(kind, &bytes).unwrap(),
                );
            }
            let made: Vec<bool> = publics
                .iter()
                .map(|p| threshold::aggregate(p, &package, &shares).is_ok())
                .collect();
            if n == 0 {
                assert_eq!(made, [false, false, false], "old and new shares combined");
            } else {
                assert_eq!(made, [true, true, true]);
            }
        }
    });
    // A custodian killed and restarted keeps its pending row; with another one down the
    // enroller cannot finish, and signing still works; once it is back the job converges.
    w.cluster.nodes[1].kill9();
    w.cluster.nodes[1].start().unwrap();
    w.cluster.wait_ready(1).unwrap();
    assert_eq!(rows_of(&w, 1, &id), [(2, false), (3, true)]);
    w.cluster.nodes[3].kill9();
    restart_enroller(&mut w, None);
    signs(&alice, &id, kind, &public, "c4-down.sig");
    w.cluster.nodes[3].start().unwrap();
    w.cluster.wait_ready(3).unwrap();
    converges(&w, &id, 3);
    // alice's cached manifest still names epoch 2, whose shares are gone: shardctl finds
    // the newer manifest at the enroller and signs with epoch 3.
    signs(&alice, &id, kind, &public, "after.sig");
    assert_eq!(alice.json(&["pubkey", &id])["epoch"], 3);
    assert_eq!(alice.json(&["verify", &id])["ok"], 4);

    // The scheduled refresh (every 3 s here; the enroller is stopped right after its first
    // pass) moves every signing key one epoch on, and leaves the shard-kind secret alone.
    let enroller = w.cluster.enroller.as_mut().unwrap();
    let _ = enroller.stop();
    enroller.set_env("ENROLLER_REFRESH_INTERVAL_SECONDS", Some("3"));
    enroller.start().unwrap();
    enroller.wait_ready().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let line = loop {
        let log = w.cluster.enroller.as_ref().unwrap().log_text();
        if let Some(line) = log.lines().find(|l| l.contains("scheduled refresh done")) {
            break line.to_owned();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no scheduled pass:\n{log}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    assert!(
        line.contains("refreshed=3") && line.contains("failed=0"),
        "{line}"
    );
    let enroller = w.cluster.enroller.as_mut().unwrap();
    let _ = enroller.stop();
    enroller.set_env("ENROLLER_REFRESH_INTERVAL_SECONDS", None);
    enroller.start().unwrap();
    enroller.wait_ready().unwrap();
    for (n, (kind, id, public)) in keys.iter().enumerate() {
        let epoch = if n == 0 { 4 } else { 3 };
        converges(&w, id, epoch);
        signs(&alice, id, *kind, public, &format!("scheduled-{n}.sig"));
        assert_eq!(alice.json(&["pubkey", id])["epoch"], epoch);
    }
    assert_eq!(rows_of(&w, 0, &p256), [(1, false)]);
}

#[test]
fn a_cheating_custodian_is_named_and_bad_epoch_steps_change_nothing() {
    let mut w = world();
    let alice = w.logged_in("alice");
    let bob = w.logged_in("bob");
    let e = alice.json(&["enroll", "--kind", "ed25519"]);
    let id = e["secret_id"].as_str().unwrap().to_owned();
    let public = e["public_key"].as_str().unwrap().to_owned();
    let owner = testkit::cluster::user_id("alice");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let stored =
        |w: &testkit::shardctl::World, i: usize| rt.block_on(w.cluster.shards_of(i, &owner));
    let before: Vec<Vec<String>> = (0..4).map(|i| stored(&w, i)).collect();

    // c2 sends every peer a wrong share (a valid encoding, not of its polynomial): the
    // others' checks against c2's commitment fail, the refresh is aborted naming c2, and
    // the key stays at epoch 1 with nothing pending. A new key's DKG fails the same way
    // and leaves nothing anywhere.
    w.cluster.nodes[1].stop().unwrap();
    w.cluster.nodes[1].set_env("CUSTODIAN_FAULT", Some("bad-dkg-share"));
    w.cluster.nodes[1].start().unwrap();
    w.cluster.wait_ready(1).unwrap();
    let run = alice.run(&["--json", "refresh", &id]);
    assert!(!run.status.success());
    let err: Value = serde_json::from_slice(&run.stdout).unwrap();
    assert_eq!(err["error"], "refresh_failed", "{err}");
    assert_eq!(
        err["custodians"],
        json!([{ "name": "c2", "reason": "dkg_cheater" }]),
        "{err}"
    );
    converges(&w, &id, 1);
    let row = w.cluster.nodes[0].wait_audit("dkg_finish", |a| {
        a.event == "dkg_finish" && a.secret_id == id && a.outcome == "refused"
    });
    assert_eq!(
        (row.reason.as_str(), row.detail.as_str()),
        ("dkg_cheater", "culprit=2 peer=c2")
    );
    let run = alice.run(&["--json", "enroll", "--kind", "ed25519", "--dkg"]);
    assert!(!run.status.success());
    let err: Value = serde_json::from_slice(&run.stdout).unwrap();
    assert_eq!(
        err["custodians"],
        json!([{ "name": "c2", "reason": "dkg_cheater" }]),
        "{err}"
    );
    for (i, had) in before.iter().enumerate() {
        assert_eq!(&stored(&w, i), had, "c{}", i + 1);
        assert_eq!(w.metric(i, "custodian_dkgs_open"), 0.0);
    }
    w.cluster.nodes[1].stop().unwrap();
    w.cluster.nodes[1].set_env("CUSTODIAN_FAULT", None);
    w.cluster.nodes[1].start().unwrap();
    w.cluster.wait_ready(1).unwrap();
    signs(&alice, &id, Kind::Ed25519, &public, "after-cheater.sig");

    // Bad epoch steps, spoken as the enroller: each a typed refusal that changes nothing.
    let enroller = w.cluster.clients(&w.tls_of("enroller", "main"));
    let peers: Value = w
        .cluster
        .nodes
        .iter()
        .enumerate()
        .map(|(i, n)| {
            json!({ "holder": i + 1, "name": n.name, "address": n.addr.to_string(), "server_name": n.addr.ip().to_string() })
        })
        .collect();
    rt.block_on(async {
        let commit = format!("/v1/shards/{id}/commit");
        refused(&enroller[0], Method::POST, &commit, json!({ "epoch": 7 }), 404, "not_found").await;
        let (st, b) = call(&enroller[0], Method::POST, &commit, json!({ "epoch": 1 })).await;
        assert_eq!((st, &b["already_committed"]), (200, &json!(true)), "{b}");
        let users = clients_of(&w, &alice);
        refused(&users[0], Method::POST, &commit, json!({ "epoch": 1 }), 403, "role_not_allowed").await;
        let round1 = |owner: &str, epoch: u32, refreshes: u32| {
            json!({ "owner": owner, "kind": "ed25519", "t": 3, "n": 4, "epoch": epoch, "refreshes": refreshes, "peers": peers })
        };
        let r1 = format!("/v1/dkg/{id}/round1");
        // Not the next epoch; another owner's key; an unknown key; a kind the key is not.
        refused(&enroller[0], Method::POST, &r1, round1(&owner, 3, 1), 400, "invalid_dkg").await;
        let bob_id = testkit::cluster::user_id("bob");
        refused(&enroller[0], Method::POST, &r1, round1(&bob_id, 2, 1), 404, "not_found").await;
        let unknown = format!("/v1/dkg/{}/round1", "ab".repeat(16));
        refused(&enroller[0], Method::POST, &unknown, round1(&owner, 2, 1), 404, "not_found").await;
        let mut other_kind = round1(&owner, 2, 1);
        other_kind["kind"] = json!("secp256k1-tr");
        refused(&enroller[0], Method::POST, &r1, other_kind, 404, "not_found").await;
        // A refresh of an epoch the key is not at.
        refused(&enroller[0], Method::POST, &r1, round1(&owner, 6, 5), 404, "not_found").await;
    });
    let _ = bob;
    converges(&w, &id, 1);
    assert_eq!(alice.json(&["verify", &id])["ok"], 4);
}

#[test]
fn a_custodian_killed_at_each_step_of_a_refresh_ends_at_one_epoch() {
    let mut w = world();
    let alice = w.logged_in("alice");
    let e = alice.json(&["enroll", "--kind", "secp256k1-tr", "--dkg"]);
    let id = e["secret_id"].as_str().unwrap().to_owned();
    let public = e["public_key"].as_str().unwrap().to_owned();
    // (fault at c3, the epoch the key ends at once c3 is back)
    for (fault, ends_at) in [
        // c3 dies right after storing its pending row: its finish is never answered, the
        // refresh is aborted, and the abort completes once c3 is back.
        ("exit-after-pending-store", 1),
        // c3 dies right after committing epoch 2: the manifest of epoch 2 is in force, and
        // the enroller finishes the job once c3 is back.
        ("exit-after-commit-epoch", 2),
    ] {
        w.cluster.nodes[2].stop().unwrap();
        w.cluster.nodes[2].set_env("CUSTODIAN_FAULT", Some(fault));
        w.cluster.nodes[2].start().unwrap();
        w.cluster.wait_ready(2).unwrap();
        let run = alice.run(&["--json", "refresh", &id]);
        // The custodian is gone (it exited as under kill -9).
        let status = w.cluster.nodes[2]
            .wait_exit(std::time::Duration::from_secs(5))
            .unwrap_or_else(|| panic!("{fault}: c3 still runs"));
        assert_eq!(status.code(), Some(137), "{fault}");
        if ends_at == 1 {
            assert!(!run.status.success(), "{fault}: {run:?}");
        } else {
            let r: Value = serde_json::from_slice(&run.stdout).unwrap();
            assert_eq!(
                (&r["epoch"], &r["complete"]),
                (&json!(2), &json!(false)),
                "{r}"
            );
        }
        // Signing works meanwhile, with three custodians.
        signs(
            &alice,
            &id,
            Kind::Secp256k1Tr,
            &public,
            &format!("{fault}-down.sig"),
        );
        w.cluster.nodes[2].set_env("CUSTODIAN_FAULT", None);
        w.cluster.nodes[2].start().unwrap();
        w.cluster.wait_ready(2).unwrap();
        converges(&w, &id, ends_at);
        signs(
            &alice,
            &id,
            Kind::Secp256k1Tr,
            &public,
            &format!("{fault}-up.sig"),
        );
        assert_eq!(alice.json(&["verify", &id])["ok"], 4, "{fault}");
    }
}

#[test]
fn an_enroller_killed_before_storing_an_enrollment_leaves_nothing_behind() {
    let mut w = world();
    let alice = w.logged_in("alice");
    let owner = testkit::cluster::user_id("alice");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let held = |w: &testkit::shardctl::World| -> Vec<usize> {
        (0..4)
            .map(|i| rt.block_on(w.cluster.shards_of(i, &owner)).len())
            .collect()
    };
    let (kept, _) = alice.enroll_p256();
    for (fault, args) in [
        ("enroll-after-deposit", vec!["enroll"]),
        ("enroll-after-deposit", vec!["enroll", "--kind", "ed25519"]),
        (
            "enroll-after-dkg",
            vec!["enroll", "--kind", "ed25519", "--dkg"],
        ),
    ] {
        restart_enroller(&mut w, Some(fault));
        assert!(!alice.run(&args).status.success(), "{fault} {args:?}");
        // Every custodian took its part of a secret no enrollment names.
        assert_eq!(held(&w), [2, 2, 2, 2], "{fault} {args:?}");
        restart_enroller(&mut w, None);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while held(&w) != [1, 1, 1, 1] {
            assert!(
                std::time::Instant::now() < deadline,
                "{fault}: {:?}",
                held(&w)
            );
            std::thread::sleep(std::time::Duration::from_millis(250));
        }
    }
    // What was enrolled before is untouched, and enrolling works again.
    assert_eq!(rows_of(&w, 0, &kept), [(1, false)]);
    alice.enroll_p256();
    assert_eq!(held(&w), [2, 2, 2, 2]);
}

/// Five custodians (c5 on standby at the enroller: in no new enrollment) and alice.
fn five() -> (testkit::shardctl::World, User) {
    use testkit::device::Backend;
    let w = testkit::shardctl::world_standby(
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
    (w, alice)
}

/// Waits (up to 30 s) until custodians `holders` (indices) hold `id` at `epoch` only,
/// committed, and every other custodian holds nothing of it.
fn held_by(w: &testkit::shardctl::World, id: &str, epoch: u32, holders: &[usize]) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let rows: Vec<_> = (0..w.cluster.nodes.len())
            .map(|i| rows_of(w, i, id))
            .collect();
        let fits = rows.iter().enumerate().all(|(i, r)| {
            if holders.contains(&i) {
                r == &[(epoch, false)]
            } else {
                r.is_empty()
            }
        });
        if fits {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{id} is not at epoch {epoch} at {holders:?} only: {rows:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
}

/// Waits (up to 30 s) until the enroller's log says `count` epoch changes of `id` ended
/// aborted (the re-driver finishes an abort a custodian was down for).
fn aborted(w: &testkit::shardctl::World, id: &str, count: usize) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let log = w.cluster.enroller.as_ref().unwrap().log_text();
        let n = log
            .lines()
            .filter(|l| l.contains("epoch change aborted") && l.contains(id))
            .count();
        if n >= count {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{id}: {n} of {count} aborts:\n{log}"
        );
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
}

/// `shardctl --json reshare` that must fail; answers the JSON error.
fn reshare_fails(user: &User, id: &str, custodians: &str, t: &str) -> Value {
    let run = user.run(&[
        "--json",
        "reshare",
        id,
        "--custodians",
        custodians,
        "--threshold",
        t,
    ]);
    assert!(!run.status.success(), "{run:?}");
    serde_json::from_slice(&run.stdout).unwrap_or_else(|e| panic!("{e}: {run:?}"))
}

fn reshares(user: &User, id: &str, custodians: &str, t: &str) -> Value {
    user.json(&["reshare", id, "--custodians", custodians, "--threshold", t])
}

/// Signs through `shardctl` and has libsecp256k1 check the BIP340 signature.
fn libsecp256k1_signs(user: &User, id: &str, x_only: &str, name: &str) {
    let message = user.path("reshare-message.txt");
    std::fs::write(&message, b"after the reshare").unwrap();
    let out = user.path(name);
    user.json(&[
        "sign",
        id,
        "--in",
        message.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    let signature: [u8; 64] = std::fs::read(&out).unwrap().try_into().unwrap();
    let key: [u8; 32] = hex::decode(x_only).unwrap().try_into().unwrap();
    let key = secp256k1::XOnlyPublicKey::from_byte_array(key).unwrap();
    let signature = secp256k1::schnorr::Signature::from_byte_array(signature);
    secp256k1::schnorr::verify(&signature, b"after the reshare", &key)
        .unwrap_or_else(|e| panic!("libsecp256k1 refuses the signature: {e}"));
}

#[test]
fn reshare_moves_a_key_to_other_custodians_and_thresholds_with_the_same_public_key() {
    let (mut w, alice) = five();
    let e = alice.json(&["enroll", "--kind", "ed25519", "--dkg"]);
    let born = e["secret_id"].as_str().unwrap().to_owned();
    let born_public = e["public_key"].as_str().unwrap().to_owned();
    let e = alice.json(&["enroll", "--kind", "secp256k1-tr"]);
    let dealt = e["secret_id"].as_str().unwrap().to_owned();
    let dealt_public = e["public_key"].as_str().unwrap().to_owned();
    held_by(&w, &born, 1, &[0, 1, 2, 3]);

    // c4's device is lost: c1, c2 and c3 deal to c1, c2, c3 and c5, still 3 of 4.
    w.cluster.nodes[3].kill9();
    let r = reshares(&alice, &born, "c1,c2,c3,c5", "3");
    assert_eq!(
        (&r["epoch"], &r["threshold"], &r["custodians"]),
        (&json!(2), &json!(3), &json!(["c1", "c2", "c3", "c5"])),
        "{r}"
    );
    assert_eq!(r["complete"], false, "c4 still holds epoch 1: {r}");
    let p = alice.json(&["pubkey", &born]);
    assert_eq!(
        (p["public_key"].as_str(), &p["epoch"]),
        (Some(born_public.as_str()), &json!(2))
    );
    signs(&alice, &born, Kind::Ed25519, &born_public, "born-2.sig");
    let v = alice.json(&["verify", &born]);
    assert_eq!(v["ok"], 4, "{v}");
    assert_eq!(result_of(&v, "c5")["result"], "ok", "{v}");
    // c4 comes back: the enroller deletes its share of epoch 1, and the job ends.
    w.cluster.nodes[3].start().unwrap();
    w.cluster.wait_ready(3).unwrap();
    held_by(&w, &born, 2, &[0, 1, 2, 4]);

    // Fewer custodians and another threshold: 2 of c1, c2, c5; libsecp256k1 accepts.
    let r = reshares(&alice, &dealt, "c1,c2,c5", "2");
    assert_eq!(
        (&r["epoch"], &r["complete"]),
        (&json!(2), &json!(true)),
        "{r}"
    );
    held_by(&w, &dealt, 2, &[0, 1, 4]);
    assert_eq!(
        alice.json(&["pubkey", &dealt])["public_key"].as_str(),
        Some(dealt_public.as_str())
    );
    libsecp256k1_signs(&alice, &dealt, &dealt_public, "dealt-2.sig");
    // Two of the three sign: with c5 down as well as c3 and c4 out of the set.
    w.cluster.nodes[4].kill9();
    libsecp256k1_signs(&alice, &dealt, &dealt_public, "dealt-2-two.sig");
    w.cluster.nodes[4].start().unwrap();
    w.cluster.wait_ready(4).unwrap();

    // Bad requests change nothing and say why.
    let secret = alice.path("opaque.bin");
    std::fs::write(&secret, b"an opaque secret").unwrap();
    let e = alice.json(&["enroll", "--secret-file", secret.to_str().unwrap()]);
    let opaque = e["secret_id"].as_str().unwrap().to_owned();
    let err = reshare_fails(&alice, &opaque, "c1,c2,c5", "2");
    assert!(err.to_string().contains("not used to sign"), "{err}");
    for (set, t) in [
        ("c1,c2,c9", "2"),
        ("c1,c1,c2", "2"),
        ("c1,c2", "3"),
        ("c1,c2", "1"),
    ] {
        let err = reshare_fails(&alice, &dealt, set, t);
        assert_eq!(err["reason"], "invalid_reshare", "{set} {t}: {err}");
    }
    // A new holder that cannot take part: refused before anything is dealt.
    w.cluster.nodes[2].kill9();
    let err = reshare_fails(&alice, &dealt, "c1,c2,c3", "2");
    assert_eq!(err["error"], "reshare_failed", "{err}");
    assert_eq!(err["custodians"][0]["name"], "c3", "{err}");
    w.cluster.nodes[2].start().unwrap();
    w.cluster.wait_ready(2).unwrap();
    held_by(&w, &dealt, 2, &[0, 1, 4]);
    // The abort reached c3 only once it was back: the re-driver finished it.
    aborted(&w, &dealt, 1);
    // Fewer than t of the current holders answer: nobody can deal.
    w.cluster.nodes[0].kill9();
    w.cluster.nodes[1].kill9();
    let err = reshare_fails(&alice, &dealt, "c3,c4,c5", "2");
    assert_eq!(err["error"], "reshare_failed", "{err}");
    let named: Vec<_> = err["custodians"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(named, ["c1", "c2"], "{err}");
    for i in [0, 1] {
        w.cluster.nodes[i].start().unwrap();
        w.cluster.wait_ready(i).unwrap();
    }
    held_by(&w, &dealt, 2, &[0, 1, 4]);
    // A dealer that deals a wrong sub-share is named by the new holders; the reshare is
    // aborted everywhere and epoch 2 stays in force.
    w.cluster.nodes[0].stop().unwrap();
    w.cluster.nodes[0].set_env("CUSTODIAN_FAULT", Some("bad-reshare-share"));
    w.cluster.nodes[0].start().unwrap();
    w.cluster.wait_ready(0).unwrap();
    let err = reshare_fails(&alice, &dealt, "c1,c2,c3,c4", "3");
    assert_eq!(
        (
            &err["error"],
            &err["custodians"][0]["name"],
            &err["custodians"][0]["reason"]
        ),
        (
            &json!("reshare_failed"),
            &json!("c1"),
            &json!("dkg_cheater")
        ),
        "{err}"
    );
    held_by(&w, &dealt, 2, &[0, 1, 4]);
    w.cluster.nodes[0].stop().unwrap();
    w.cluster.nodes[0].set_env("CUSTODIAN_FAULT", None);
    w.cluster.nodes[0].start().unwrap();
    w.cluster.wait_ready(0).unwrap();

    // The enroller dies at each step before the new manifest: after its restart the
    // reshare is aborted at both sets, and epoch 2 stays at c1, c2, c5.
    for fault in [
        "reshare-after-begin",
        "reshare-after-deal",
        "reshare-before-manifest",
    ] {
        restart_enroller(&mut w, Some(fault));
        reshare_fails(&alice, &dealt, "c2,c3,c4", "2");
        restart_enroller(&mut w, None);
        held_by(&w, &dealt, 2, &[0, 1, 4]);
        libsecp256k1_signs(&alice, &dealt, &dealt_public, &format!("{fault}.sig"));
    }
    // Right after the manifest of epoch 3 is stored: epoch 3 is in force at c2, c3, c4,
    // and the restarted enroller commits it there and deletes epoch 2 at c1 and c5.
    restart_enroller(&mut w, Some("reshare-after-manifest"));
    reshare_fails(&alice, &dealt, "c2,c3,c4", "2");
    restart_enroller(&mut w, None);
    held_by(&w, &dealt, 3, &[1, 2, 3]);
    libsecp256k1_signs(&alice, &dealt, &dealt_public, "after-manifest.sig");
    let p = alice.json(&["pubkey", &dealt]);
    assert_eq!(
        (p["public_key"].as_str(), &p["epoch"]),
        (Some(dealt_public.as_str()), &json!(3))
    );
    assert_eq!(alice.json(&["verify", &dealt])["ok"], 3);
    // The key moved by a reshare refreshes at its new custodians.
    let r = alice.json(&["refresh", &born]);
    assert_eq!(r["epoch"], 3, "{r}");
    held_by(&w, &born, 3, &[0, 1, 2, 4]);
    signs(&alice, &born, Kind::Ed25519, &born_public, "born-3.sig");
}

#[test]
fn a_custodian_killed_at_each_step_of_a_reshare_ends_at_one_epoch() {
    let (mut w, alice) = five();
    let e = alice.json(&["enroll", "--kind", "p256-schnorr", "--dkg"]);
    let id = e["secret_id"].as_str().unwrap().to_owned();
    let public = e["public_key"].as_str().unwrap().to_owned();
    reshare_steps_refuse_bad_input_and_strangers(&w, &alice, &id);
    held_by(&w, &id, 1, &[0, 1, 2, 3]);
    let mut epoch = 1;
    let mut holders = vec![0, 1, 2, 3];
    // (fault at c5, a new holder; whether the reshare is in force once c5 is back)
    for (fault, moves) in [
        // c5 dies right after storing its pending row: the reshare is aborted, and the
        // abort completes once c5 is back.
        ("exit-after-pending-store", false),
        // c5 dies right after committing the new epoch: the new manifest is in force,
        // and the enroller finishes the job once c5 is back.
        ("exit-after-commit-epoch", true),
    ] {
        w.cluster.nodes[4].stop().unwrap();
        w.cluster.nodes[4].set_env("CUSTODIAN_FAULT", Some(fault));
        w.cluster.nodes[4].start().unwrap();
        w.cluster.wait_ready(4).unwrap();
        let run = alice.run(&[
            "--json",
            "reshare",
            &id,
            "--custodians",
            "c1,c2,c5",
            "--threshold",
            "2",
        ]);
        let status = w.cluster.nodes[4]
            .wait_exit(std::time::Duration::from_secs(5))
            .unwrap_or_else(|| panic!("{fault}: c5 still runs"));
        assert_eq!(status.code(), Some(137), "{fault}");
        assert_eq!(run.status.success(), moves, "{fault}: {run:?}");
        // Signing works meanwhile, at whichever epoch is in force.
        signs(
            &alice,
            &id,
            Kind::P256Schnorr,
            &public,
            &format!("{fault}-down.sig"),
        );
        w.cluster.nodes[4].set_env("CUSTODIAN_FAULT", None);
        w.cluster.nodes[4].start().unwrap();
        w.cluster.wait_ready(4).unwrap();
        if moves {
            epoch += 1;
            holders = vec![0, 1, 4];
        }
        held_by(&w, &id, epoch, &holders);
        signs(
            &alice,
            &id,
            Kind::P256Schnorr,
            &public,
            &format!("{fault}-up.sig"),
        );
        assert_eq!(alice.json(&["verify", &id])["ok"], holders.len(), "{fault}");
    }
}

/// A custodian's entry for the peer channel, under holder number `holder`.
fn entry(w: &testkit::shardctl::World, i: usize, holder: usize) -> Value {
    let n = &w.cluster.nodes[i];
    json!({
        "holder": holder,
        "name": n.name,
        "address": n.addr.to_string(),
        "server_name": n.addr.ip().to_string(),
    })
}

/// The reshare steps, driven by hand as the enroller would: bad parameters, callers that
/// are not the enroller or not the dealer named, sub-shares that do not decode, steps out
/// of order and an unknown key each get their typed refusal, and an abort leaves nothing.
fn reshare_steps_refuse_bad_input_and_strangers(
    w: &testkit::shardctl::World,
    alice: &User,
    id: &str,
) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let enroller: Vec<_> = (0..5)
        .map(|i| w.cluster.client(i, w.tls_of("enroller", "main")).unwrap())
        .collect();
    let user = clients_of(w, alice);
    let body = json!({
        "owner": testkit::cluster::user_id("alice"),
        "kind": "p256-schnorr",
        "t": 2,
        "n": 2,
        "epoch": 2,
        "from_epoch": 1,
        // c1 and c5 are the new holders; c1 and c2 (holders 1 and 2 of epoch 1) deal.
        "peers": [entry(w, 0, 1), entry(w, 4, 2)],
        "dealers": [entry(w, 0, 1), entry(w, 1, 2)],
    });
    let open = format!("/v1/reshare/{id}/open");
    let (deal, finish) = (
        format!("/v1/reshare/{id}/deal"),
        format!("/v1/reshare/{id}/finish"),
    );
    let peer = format!("/v1/peer/reshare/{id}");
    rt.block_on(async {
        for (field, value) in [
            ("t", json!(3)),
            ("epoch", json!(3)),
            ("kind", json!("p256")),
            ("dealers", json!([entry(w, 0, 2), entry(w, 1, 1)])),
            ("peers", json!([entry(w, 0, 1), entry(w, 0, 2)])),
        ] {
            let mut bad = body.clone();
            bad[field] = value;
            refused(
                &enroller[4],
                Method::POST,
                &open,
                bad,
                400,
                "invalid_reshare",
            )
            .await;
        }
        // c3 is neither a new holder nor a dealer here.
        refused(
            &enroller[2],
            Method::POST,
            &open,
            body.clone(),
            400,
            "invalid_reshare",
        )
        .await;
        refused(
            &user[4],
            Method::POST,
            &open,
            body.clone(),
            403,
            "role_not_allowed",
        )
        .await;
        // c5 named as a dealer: it holds nothing of epoch 1.
        let mut stranger = body.clone();
        stranger["dealers"] = json!([entry(w, 0, 1), entry(w, 4, 2)]);
        refused(
            &enroller[4],
            Method::POST,
            &open,
            stranger,
            404,
            "not_found",
        )
        .await;
        // Open at the new holder c5; repeated it answers the same, changed it is refused.
        for _ in 0..2 {
            let (st, b) = call(&enroller[4], Method::POST, &open, body.clone()).await;
            assert_eq!(
                (st, &b["holder"], &b["dealer"]),
                (200, &json!(2), &Value::Null),
                "{b}"
            );
        }
        let mut changed = body.clone();
        changed["t"] = json!(1);
        changed["n"] = json!(1);
        refused(
            &enroller[4],
            Method::POST,
            &open,
            changed,
            400,
            "invalid_reshare",
        )
        .await;
        let mut changed = body.clone();
        changed["peers"] = json!([entry(w, 4, 1), entry(w, 0, 2)]);
        refused(
            &enroller[4],
            Method::POST,
            &open,
            changed,
            409,
            "dkg_exists",
        )
        .await;
        refused(
            &enroller[4],
            Method::POST,
            &deal,
            json!({}),
            409,
            "dkg_out_of_order",
        )
        .await;
        refused(
            &enroller[4],
            Method::POST,
            &finish,
            json!({ "public": "", "dealings": [] }),
            409,
            "dkg_incomplete",
        )
        .await;
        assert_eq!(w.metric(4, "custodian_reshares_open"), 1.0);
        // The peer route: only the custodian named for the dealer, with a sub-share.
        let share = json!({ "from": 2, "to": 2, "share": "AAAA" });
        for (who, status, reason) in [
            (w.tls_of("enroller", "main"), 403, "role_not_allowed"),
            (w.tls_of("custodian", "c3"), 403, "not_the_peer"),
            (w.tls_of("custodian", "c2"), 400, "invalid_round2_package"),
        ] {
            let c = w.cluster.client(4, who).unwrap();
            refused(&c, Method::PUT, &peer, share.clone(), status, reason).await;
        }
        let c2 = w.cluster.client(4, w.tls_of("custodian", "c2")).unwrap();
        let mut wrong = share.clone();
        wrong["to"] = json!(1);
        refused(
            &c2,
            Method::PUT,
            &peer,
            wrong,
            400,
            "invalid_round2_package",
        )
        .await;
        let unknown = format!("/v1/peer/reshare/{}", "e".repeat(32));
        refused(
            &c2,
            Method::PUT,
            &unknown,
            share.clone(),
            404,
            "dkg_unknown",
        )
        .await;
        // The coordinator's abort drops the reshare: the next step knows nothing of it.
        let (st, _) = call(
            &enroller[4],
            Method::DELETE,
            &format!("/v1/shards/{id}?epoch=2"),
            Value::Null,
        )
        .await;
        assert_eq!(st, 404, "nothing was stored");
        refused(
            &enroller[4],
            Method::POST,
            &finish,
            json!({ "public": "", "dealings": [] }),
            404,
            "dkg_unknown",
        )
        .await;
        assert_eq!(w.metric(4, "custodian_reshares_open"), 0.0);
    });
}

/// Secrets made by release 1 (before `p256` keys were shared as scalars): their custodian
/// databases and SoftHSM2 tokens, signed manifests and the manifest key, kept as files.
const RELEASE_1: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/release-1");

/// The token directory a SoftHSM2 configuration names.
fn token_dir(conf: &std::path::Path) -> std::path::PathBuf {
    let text = std::fs::read_to_string(conf).unwrap();
    let line = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("directories.tokendir"))
        .unwrap_or_else(|| panic!("{}: no tokendir", conf.display()));
    std::path::PathBuf::from(line.trim_start_matches([' ', '=']).trim())
}

fn copy_tree(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// `openssl pkey -pubout` of a private key file: its public key as OpenSSL writes it.
fn openssl_public(key: &std::path::Path) -> String {
    let out = std::process::Command::new("openssl")
        .args(["pkey", "-in", key.to_str().unwrap(), "-pubout"])
        .output()
        .expect("run openssl; scripts/setup.sh installs it");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap()
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// Writes the release-1 fixture (run once, with that release, never after): four
/// SoftHSM2 custodians, a `p256` key and an opaque secret of alice's.
/// `SHARD_WRITE_FIXTURE=DIR cargo test --all-features -p shard-custodians-tests --test epochs -- --ignored write_release_fixture`
#[test]
#[ignore = "writes the fixture of a release; run by hand with SHARD_WRITE_FIXTURE"]
fn write_release_fixture() {
    use testkit::device::Backend;
    let out = std::path::PathBuf::from(std::env::var("SHARD_WRITE_FIXTURE").unwrap());
    let mut w = testkit::shardctl::world_with(&[Backend::SoftHsm; 4]);
    let alice = w.logged_in("alice");
    let (p256, _) = alice.enroll_p256();
    let secret = alice.path("secret.bin");
    std::fs::write(&secret, b"an opaque secret of release 1").unwrap();
    let e = alice.json(&["enroll", "--secret-file", secret.to_str().unwrap()]);
    let opaque = e["secret_id"].as_str().unwrap().to_owned();
    let key = alice.path("p256.pem");
    alice.ok(&["recover", &p256, "--out", key.to_str().unwrap()]);
    std::fs::create_dir_all(out.join("manifests")).unwrap();
    for id in [&p256, &opaque] {
        std::fs::copy(
            alice
                .home
                .join("state/shardctl/manifests/demo.test")
                .join(id),
            out.join("manifests").join(id),
        )
        .unwrap();
    }
    std::fs::copy(
        w.cluster.pki.join("enroller-manifest.pub.pem"),
        out.join("manifest-key.pem"),
    )
    .unwrap();
    let facts = json!({
        "owner": testkit::cluster::user_id("alice"),
        "p256": { "secret_id": p256, "public_key_pem": openssl_public(&key) },
        "opaque": { "secret_id": opaque, "sha256": sha256_hex(b"an opaque secret of release 1") },
    });
    std::fs::write(out.join("secrets.json"), facts.to_string()).unwrap();
    for node in w.cluster.nodes.iter_mut() {
        node.stop().unwrap();
        let dir = out.join(&node.name);
        std::fs::create_dir_all(&dir).unwrap();
        // The database with its write-ahead log, as the stopped custodian left them.
        for suffix in ["", "-wal"] {
            let from = format!("{}{suffix}", node.db_path().display());
            if std::path::Path::new(&from).exists() {
                std::fs::copy(&from, dir.join(format!("custodian.db{suffix}"))).unwrap();
            }
        }
        let token = node.device().token().unwrap();
        copy_tree(&token_dir(token.conf_path()), &dir.join("tokens"));
        std::fs::copy(token.pin_file(), dir.join("pin")).unwrap();
    }
}

#[test]
fn secrets_enrolled_by_release_1_still_recover() {
    use testkit::device::Backend;
    let fixture = std::path::Path::new(RELEASE_1);
    let facts: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture.join("secrets.json")).unwrap())
            .unwrap();
    let mut w = testkit::shardctl::world_with(&[Backend::SoftHsm; 4]);
    // Each custodian gets release 1's database and token (its sealing key) in place of
    // its own: what an upgrade in place leaves it with.
    for node in w.cluster.nodes.iter_mut() {
        node.stop().unwrap();
        let from = fixture.join(&node.name);
        let db = node.db_path();
        for suffix in ["", "-wal"] {
            let target = format!("{}{suffix}", db.display());
            let _ = std::fs::remove_file(&target);
            let saved = from.join(format!("custodian.db{suffix}"));
            if saved.exists() {
                std::fs::copy(saved, &target).unwrap();
            }
        }
        let tokens = token_dir(node.device().token().unwrap().conf_path());
        std::fs::remove_dir_all(&tokens).unwrap();
        copy_tree(&from.join("tokens"), &tokens);
        let pin = std::fs::read_to_string(from.join("pin")).unwrap();
        node.set_env("SHARD_HSM_PIN", Some(pin.trim()));
        node.start().unwrap();
    }
    for i in 0..4 {
        w.cluster.wait_ready(i).unwrap();
    }
    // alice of this trust domain, with release 1's manifests and manifest key pinned.
    assert_eq!(facts["owner"], testkit::cluster::user_id("alice"));
    let alice = w.logged_in("alice");
    let cache = alice.home.join("state/shardctl/manifests/demo.test");
    std::fs::create_dir_all(&cache).unwrap();
    copy_tree(&fixture.join("manifests"), &cache);
    let config = alice.home.join("config/shardctl/config.toml");
    let text: String = std::fs::read_to_string(&config)
        .unwrap()
        .lines()
        .map(|l| {
            if l.starts_with("manifest_key") {
                format!(
                    "manifest_key = \"{}\"\n",
                    fixture.join("manifest-key.pem").display()
                )
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    std::fs::write(&config, text).unwrap();

    let p256 = facts["p256"]["secret_id"].as_str().unwrap();
    let key = alice.path("p256.pem");
    alice.ok(&["recover", p256, "--out", key.to_str().unwrap()]);
    assert_eq!(
        openssl_public(&key),
        facts["p256"]["public_key_pem"].as_str().unwrap(),
        "the recovered key is release 1's"
    );
    let opaque = facts["opaque"]["secret_id"].as_str().unwrap();
    let out = alice.path("opaque.bin");
    alice.ok(&["recover", opaque, "--out", out.to_str().unwrap()]);
    assert_eq!(
        sha256_hex(&std::fs::read(&out).unwrap()),
        facts["opaque"]["sha256"].as_str().unwrap()
    );
    // Every share still checks where it is.
    assert_eq!(alice.json(&["verify", p256])["ok"], 4);
}
