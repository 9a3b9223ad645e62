//! Threshold signing over real processes: keys of the three kinds enrolled through the
//! enroller into custodians on SoftHSM2 and swtpm, signatures coordinated by the real
//! `shardctl` and checked by verifiers no one here wrote (OpenSSL for Ed25519,
//! libsecp256k1 for BIP340); the custodian's side of the protocol (sessions, replays,
//! packages without or with altered commitments, owners, restarts) spoken directly; and
//! signing with custodians down, hung and lying.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use base64::Engine;
use mtls::Method;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use testkit::shardctl::{world, User};
use testkit::signing::{call, clients_of, commit, refused, session, sign_directly, sign_round};
use threshold::{
    deal, GroupKey, HolderId, KeyEnvelope, Kind, SeededRng, Signature, SigningPackage, Threshold,
    Zeroizing,
};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

fn openssl(args: &[&str]) -> std::process::Output {
    Command::new("openssl")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run openssl ({e}); scripts/setup.sh installs it"))
}

/// `openssl pkeyutl -verify -rawin` of an Ed25519 signature file over a message file.
fn openssl_verifies(public_pem: &Path, message: &Path, signature: &Path) -> bool {
    let out = openssl(&[
        "pkeyutl",
        "-verify",
        "-pubin",
        "-inkey",
        public_pem.to_str().unwrap(),
        "-rawin",
        "-in",
        message.to_str().unwrap(),
        "-sigfile",
        signature.to_str().unwrap(),
    ]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() == said.contains("Signature Verified Successfully"),
        "{out:?}"
    );
    out.status.success()
}

/// libsecp256k1's BIP340 verification.
fn libsecp256k1_verifies(x_only_hex: &str, message: &[u8], signature: &[u8]) -> bool {
    let key: [u8; 32] = hex::decode(x_only_hex).unwrap().try_into().unwrap();
    let Ok(key) = secp256k1::XOnlyPublicKey::from_byte_array(key) else {
        return false;
    };
    let signature = secp256k1::schnorr::Signature::from_byte_array(signature.try_into().unwrap());
    secp256k1::schnorr::verify(&signature, message, &key).is_ok()
}

fn outcome<'a>(run: &'a Value, name: &str) -> &'a Value {
    run["custodians"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("{name} not in {run}"))
}

fn signed_by(run: &Value) -> Vec<String> {
    run["custodians"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["result"] == "signed")
        .map(|c| c["name"].as_str().unwrap().to_owned())
        .collect()
}

/// Enrolls a new key of `kind` (or imports `import`) and checks what `pubkey` says.
fn enroll(user: &User, kind: Kind, import: Option<&Path>) -> (String, String) {
    let mut args = vec!["enroll", "--kind", kind.as_str()];
    if let Some(path) = import {
        args.extend(["--import", path.to_str().unwrap()]);
    }
    let e = user.json(&args);
    assert_eq!(e["kind"], kind.as_str(), "{e}");
    let id = e["secret_id"].as_str().unwrap().to_owned();
    let public = e["public_key"].as_str().unwrap().to_owned();
    let p = user.json(&["pubkey", &id]);
    assert_eq!(p["public_key"], public.as_str(), "{p}");
    assert_eq!(p["kind"], kind.as_str());
    // The text form parses as a key of the kind, and `pubkey` prints it alone.
    GroupKey::from_text(kind, &public).unwrap();
    assert_eq!(user.ok(&["pubkey", &id]).trim(), public.trim());
    (id, public)
}

/// `shardctl sign` to a file; answers the run's JSON and the signature bytes.
fn sign(user: &User, id: &str, message: &Path, name: &str) -> (Value, Vec<u8>) {
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
    let signature = std::fs::read(&out).unwrap();
    assert_eq!(hex::encode(&signature), run["signature"].as_str().unwrap());
    assert_eq!(testkit::shardctl::mode(&out), 0o600);
    (run, signature)
}

/// `shardctl --json sign` that must fail for too few signers; answers the JSON error and
/// the stderr line.
fn sign_below_t(user: &User, id: &str, message: &Path) -> (Value, String) {
    let run = user.run(&[
        "--json",
        "sign",
        id,
        "--in",
        message.to_str().unwrap(),
        "--deadline-ms",
        "1500",
    ]);
    assert!(!run.status.success());
    let err: Value = serde_json::from_slice(&run.stdout).unwrap();
    assert_eq!(err["error"], "not_enough_signers", "{err}");
    (err, String::from_utf8_lossy(&run.stderr).into_owned())
}

#[test]
fn every_kind_signs_and_outside_verifiers_accept_the_signatures() {
    let w = world();
    let alice = w.logged_in("alice");
    let message = alice.path("message.txt");
    std::fs::write(&message, b"pay 1 BTC to the bearer of this note\n").unwrap();
    let text = std::fs::read(&message).unwrap();
    let digest = hex::encode(Sha256::digest(&text));

    for kind in Kind::ALL {
        let (id, public) = enroll(&alice, kind, None);
        let (run, signature) = sign(&alice, &id, &message, &format!("{kind}.sig"));
        assert_eq!(signed_by(&run).len(), 3, "{run}");
        let group_key = GroupKey::from_text(kind, &public).unwrap();
        match kind {
            Kind::Ed25519 => {
                assert_eq!(signature.len(), 64);
                let pem = alice.path("ed25519.pub.pem");
                std::fs::write(&pem, &public).unwrap();
                let sig = alice.path(&format!("{kind}.sig"));
                assert!(openssl_verifies(&pem, &message, &sig));
                let other = alice.path("other.txt");
                std::fs::write(&other, b"pay 2 BTC to the bearer of this note\n").unwrap();
                assert!(!openssl_verifies(&pem, &other, &sig));
            }
            Kind::Secp256k1Tr => {
                assert_eq!(signature.len(), 64);
                assert!(libsecp256k1_verifies(&public, &text, &signature));
                assert!(!libsecp256k1_verifies(
                    &public,
                    b"another message",
                    &signature
                ));
            }
            Kind::P256Schnorr => {
                // No outside verifier implements FROST(P-256, SHA-256); the RFC 9591 vectors
                // check this ciphersuite in threshold/tests/vectors.rs.
                assert_eq!(signature.len(), 65);
            }
        }
        let parsed = Signature::decode(kind, &signature).unwrap();
        group_key.verify(&text, &parsed).unwrap();
        assert!(group_key.verify(b"another message", &parsed).is_err());

        // Every signer wrote an audit row naming the session and the message digest.
        let session = run["session"].as_str().unwrap();
        for name in signed_by(&run) {
            let node = w.cluster.nodes.iter().find(|n| n.name == name).unwrap();
            let row = node.wait_audit("sign", |a| a.event == "sign" && a.secret_id == id);
            assert_eq!(row.outcome, "ok");
            assert_eq!(
                row.detail,
                format!("session={session} message_sha256={digest}")
            );
        }

        // The key never leaves: recovery is refused by shardctl, and by every custodian.
        let err = alice.fails(&["recover", &id, "--out", alice.path("k").to_str().unwrap()]);
        assert!(err.contains("never leaves its custodians"), "{err}");
        let rt = tokio::runtime::Runtime::new().unwrap();
        for c in clients_of(&w, &alice) {
            let (st, body) = rt.block_on(async {
                let (st, bytes) = c
                    .request(Method::GET, &format!("/v1/shards/{id}"), None)
                    .await
                    .unwrap();
                (
                    st.as_u16(),
                    serde_json::from_slice::<Value>(&bytes).unwrap(),
                )
            });
            assert_eq!(
                (st, body["reason"].as_str()),
                (409, Some("signing_key_not_releasable"))
            );
        }
        // Signing needs a signing key.
        if kind == Kind::Ed25519 {
            let (shard_id, _) = alice.enroll_p256();
            let err = alice.fails(&["sign", &shard_id, "--in", message.to_str().unwrap()]);
            assert!(err.contains("not used to sign"), "{err}");
        }
    }

    // An Ed25519 key made by OpenSSL, imported: its public key stays OpenSSL's, and OpenSSL
    // accepts what the custodians sign with it.
    let key = alice.path("openssl-ed25519.pem");
    let made = openssl(&[
        "genpkey",
        "-algorithm",
        "ed25519",
        "-out",
        key.to_str().unwrap(),
    ]);
    assert!(made.status.success(), "{made:?}");
    let pem = alice.path("openssl-ed25519.pub.pem");
    let out = openssl(&[
        "pkey",
        "-in",
        key.to_str().unwrap(),
        "-pubout",
        "-out",
        pem.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{out:?}");
    let (id, public) = enroll(&alice, Kind::Ed25519, Some(&key));
    assert_eq!(public.trim(), std::fs::read_to_string(&pem).unwrap().trim());
    sign(&alice, &id, &message, "imported.sig");
    assert!(openssl_verifies(
        &pem,
        &message,
        &alice.path("imported.sig")
    ));

    // A P-256 key made by OpenSSL, imported as p256-schnorr, keeps its public key too.
    let key = alice.path("openssl-p256.pem");
    let made = openssl(&[
        "genpkey",
        "-algorithm",
        "EC",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-out",
        key.to_str().unwrap(),
    ]);
    assert!(made.status.success(), "{made:?}");
    let sec1 = openssl(&[
        "pkey",
        "-in",
        key.to_str().unwrap(),
        "-pubout",
        "-outform",
        "DER",
        "-ec_conv_form",
        "compressed",
    ]);
    assert!(sec1.status.success(), "{sec1:?}");
    let (id, public) = enroll(&alice, Kind::P256Schnorr, Some(&key));
    assert!(
        hex::encode(&sec1.stdout).ends_with(public.trim()),
        "{public}"
    );
    sign(&alice, &id, &message, "imported-p256.sig");

    // Bad imports are refused before anything is sent.
    let junk = alice.path("junk.pem");
    std::fs::write(
        &junk,
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    let err = alice.fails(&[
        "enroll",
        "--kind",
        "ed25519",
        "--import",
        junk.to_str().unwrap(),
    ]);
    assert!(err.contains("holds no ed25519 private key"), "{err}");
    let err = alice.fails(&["enroll", "--kind", "ed448"]);
    assert!(err.contains("is not a kind"), "{err}");
    // A secp256k1 secret of zero is no key: shardctl refuses it before sending anything.
    let zero = alice.path("zero.hex");
    std::fs::write(&zero, "00".repeat(32)).unwrap();
    let err = alice.fails(&[
        "enroll",
        "--kind",
        "secp256k1-tr",
        "--import",
        zero.to_str().unwrap(),
    ]);
    assert!(err.contains("holds no secp256k1-tr private key"), "{err}");
}

#[test]
fn custodians_guard_their_nonces_sessions_and_owners() {
    let mut w = world();
    let alice = w.logged_in("alice");
    let bob = w.logged_in("bob");
    let kind = Kind::Ed25519;
    let (id, public) = enroll(&alice, kind, None);
    let group_key = GroupKey::from_text(kind, &public).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let message = b"the custodians' side".to_vec();

    rt.block_on(async {
        let cs = clients_of(&w, &alice);
        // A whole signing spoken directly: commit at c1..c3, sign, aggregate, verify.
        let s = session(1);
        let (signature, commitments, package) =
            sign_directly(&cs, &[0, 1, 2], kind, &id, &s, &message).await;
        group_key.verify(&message, &signature).unwrap();

        // A replayed round 2 is refused with its own reason and signs nothing.
        let (st, body) = sign_round(&cs[0], &id, &s, &package).await;
        assert_eq!(
            (st, body["reason"].as_str()),
            (409, Some("session_spent")),
            "{body}"
        );
        // A spent session id cannot be opened again, and a round 2 without a round 1 is
        // an unknown session.
        refused(
            &cs[0],
            Method::POST,
            &format!("/v1/keys/{id}/commit"),
            json!({ "session": s }),
            409,
            "session_exists",
        )
        .await;
        let (st, body) = sign_round(&cs[0], &id, &session(9), &package).await;
        assert_eq!(
            (st, body["reason"].as_str()),
            (404, Some("session_unknown"))
        );

        // A package that omits c1's commitment, or carries another one, is refused; the
        // session is spent either way.
        let s2 = session(2);
        let mut fresh = BTreeMap::new();
        for c in &cs[..4] {
            let (holder, commitment, _) = commit(c, kind, &id, &s2).await;
            fresh.insert(holder, commitment);
        }
        let one = HolderId::new(1).unwrap();
        let without: BTreeMap<_, _> = fresh
            .iter()
            .filter(|(h, _)| **h != one)
            .map(|(h, c)| (*h, c.clone()))
            .collect();
        let package = SigningPackage::new(kind, &without, &message).unwrap();
        let (st, body) = sign_round(&cs[0], &id, &s2, &package).await;
        assert_eq!(
            (st, body["reason"].as_str()),
            (400, Some("commitment_missing")),
            "{body}"
        );
        let (st, body) = sign_round(&cs[0], &id, &s2, &package).await;
        assert_eq!((st, body["reason"].as_str()), (409, Some("session_spent")));
        // c2 gets a package with c2's commitment of session 1 (an old one) in place of its own.
        let mut altered = fresh.clone();
        altered.insert(
            HolderId::new(2).unwrap(),
            commitments[&HolderId::new(2).unwrap()].clone(),
        );
        let package = SigningPackage::new(kind, &altered, &message).unwrap();
        let (st, body) = sign_round(&cs[1], &id, &s2, &package).await;
        assert_eq!(
            (st, body["reason"].as_str()),
            (400, Some("commitment_altered")),
            "{body}"
        );
        // Garbage is a typed refusal, not a crash.
        refused(
            &cs[2],
            Method::POST,
            &format!("/v1/keys/{id}/sign"),
            json!({ "session": s2, "package": "AAAA" }),
            400,
            "invalid_signing_package",
        )
        .await;
        refused(
            &cs[3],
            Method::POST,
            &format!("/v1/keys/{id}/commit"),
            json!({ "session": "not hex" }),
            400,
            "invalid_session",
        )
        .await;
        refused(
            &cs[3],
            Method::POST,
            &format!("/v1/keys/{id}/commit"),
            json!({ "session": s2, "extra": 1 }),
            400,
            "invalid_body",
        )
        .await;

        // Another user's key is answered like a missing one (the audit tells them apart).
        let bobs = clients_of(&w, &bob);
        refused(
            &bobs[0],
            Method::POST,
            &format!("/v1/keys/{id}/commit"),
            json!({ "session": session(3) }),
            404,
            "not_found",
        )
        .await;
        let missing = "0".repeat(32);
        refused(
            &bobs[0],
            Method::POST,
            &format!("/v1/keys/{missing}/commit"),
            json!({ "session": session(3) }),
            404,
            "not_found",
        )
        .await;
        // Deposits of key envelopes (as the enroller makes them): the same one twice is one
        // row, and a key package of another dealing fails the Feldman check, unsealed and
        // unstored.
        let (cert, key) = w.cluster.issue("enroller", "test-dealer").unwrap();
        let dealer = w
            .cluster
            .client(0, w.cluster.client_tls(&cert, &key).unwrap())
            .unwrap();
        let mut rng = SeededRng::from_seed(Zeroizing::new([9; 32]));
        let split = Threshold::new(3, 4).unwrap();
        let mut ours = deal(kind, split, &mut rng).unwrap();
        let mut theirs = deal(kind, split, &mut rng).unwrap();
        let one = HolderId::new(1).unwrap();
        let owner = testkit::cluster::user_id("alice");
        let good = KeyEnvelope::new(
            [0x42; 16],
            1,
            ours.key_packages.remove(&one).unwrap(),
            ours.public.clone(),
            ours.commitment.clone(),
        )
        .unwrap();
        let deposit = |envelope: &[u8]| json!({ "owner": owner, "envelope": B64.encode(envelope) });
        let (st, body) = call(&dealer, Method::PUT, "/v1/shards", deposit(&good.encode())).await;
        assert_eq!(
            (st, body["already_stored"].as_bool()),
            (201, Some(false)),
            "{body}"
        );
        let (st, body) = call(&dealer, Method::PUT, "/v1/shards", deposit(&good.encode())).await;
        assert_eq!(
            (st, body["already_stored"].as_bool()),
            (200, Some(true)),
            "{body}"
        );
        let mixed = KeyEnvelope {
            secret_id: [0x43; 16],
            key_package: theirs.key_packages.remove(&one).unwrap(),
            ..good
        };
        let (st, body) = call(&dealer, Method::PUT, "/v1/shards", deposit(&mixed.encode())).await;
        assert_eq!(
            (st, body["reason"].as_str()),
            (400, Some("key_package_mismatch")),
            "{body}"
        );

        // Only a user may sign: an admin's certificate is refused before anything else.
        let (cert, key) = w.cluster.issue("admin", "signing-ops").unwrap();
        let admin = w
            .cluster
            .client(0, w.cluster.client_tls(&cert, &key).unwrap())
            .unwrap();
        refused(
            &admin,
            Method::POST,
            &format!("/v1/keys/{id}/commit"),
            json!({ "session": session(5) }),
            403,
            "role_not_allowed",
        )
        .await;
        // The admin's listing tells a signing key's package from a shard, without bytes.
        let listed = admin.list(None, 100).await.unwrap();
        let row = listed.shards.iter().find(|r| r.secret_id == id).unwrap();
        assert_eq!((row.kind.as_str(), row.index), ("ed25519", 1));
    });
    w.cluster.nodes[0].wait_audit("not_owner", |a| {
        a.event == "commit" && a.reason == "not_owner" && a.secret_id == id
    });
    let replay = w.cluster.nodes[0].wait_audit("replay", |a| {
        a.event == "sign" && a.reason == "session_spent"
    });
    assert_eq!(replay.outcome, "refused");

    // A restart between the rounds aborts the session: its nonces were in memory only.
    let s3 = session(4);
    let cs = clients_of(&w, &alice);
    let (commitments, package) = rt.block_on(async {
        let mut commitments = BTreeMap::new();
        for c in &cs[..3] {
            let (holder, commitment, _) = commit(c, kind, &id, &s3).await;
            commitments.insert(holder, commitment);
        }
        let package = SigningPackage::new(kind, &commitments, &message).unwrap();
        (commitments, package)
    });
    assert_eq!(commitments.len(), 3);
    w.cluster.nodes[0].stop().unwrap();
    w.cluster.nodes[0].start().unwrap();
    w.cluster.wait_ready(0).unwrap();
    let cs = clients_of(&w, &alice);
    rt.block_on(async {
        let (st, body) = sign_round(&cs[0], &id, &s3, &package).await;
        assert_eq!(
            (st, body["reason"].as_str()),
            (404, Some("session_unknown")),
            "{body}"
        );
        // The others still sign their part; the session simply cannot complete.
        let (st, _) = sign_round(&cs[1], &id, &s3, &package).await;
        assert_eq!(st, 200);
    });
    // Nothing of a session reached the database: no table or row holds nonces, only the
    // audit's digest and session id.
    let db = w.cluster.nodes[1].db();
    let tables: Vec<String> = db
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(tables, ["audit", "device", "shards"]);
}

#[test]
fn signing_with_custodians_down_hung_and_lying() {
    let mut w = world();
    let alice = w.logged_in("alice");
    let (id, public) = enroll(&alice, Kind::Ed25519, None);
    let pem = alice.path("pub.pem");
    std::fs::write(&pem, &public).unwrap();
    let message = alice.path("m.txt");
    std::fs::write(&message, b"threshold").unwrap();

    // One hung custodian (n - t = 1): the others sign; it is not waited for.
    w.cluster.nodes[3].pause().unwrap();
    let (run, _) = sign(&alice, &id, &message, "hung.sig");
    assert!(openssl_verifies(&pem, &message, &alice.path("hung.sig")));
    assert_eq!(signed_by(&run), ["c1", "c2", "c3"], "{run}");

    // Two gone (one killed, one hung): below t, a clear error naming both.
    w.cluster.nodes[1].kill9();
    let (err, line) = sign_below_t(&alice, &id, &message);
    assert_eq!(outcome(&err, "c2")["result"], "unreachable", "{err}");
    assert_eq!(outcome(&err, "c4")["result"], "timeout", "{err}");
    assert!(
        line.contains("c2:") && line.contains("c4:") && line.contains("nothing was signed"),
        "{line}"
    );
    w.cluster.nodes[3].resume().unwrap();

    // c2 comes back lying: every signature share it answers is wrong. Whenever it is
    // among the first three to commit, its share is named and the signing starts again
    // without it; every signature verifies.
    w.cluster.nodes[1].set_env("CUSTODIAN_FAULT", Some("bad-signature-share"));
    w.cluster.nodes[1].start().unwrap();
    w.cluster.wait_ready(1).unwrap();
    let mut named = false;
    for attempt in 0..12 {
        let (run, _) = sign(&alice, &id, &message, &format!("liar-{attempt}.sig"));
        assert!(openssl_verifies(
            &pem,
            &message,
            &alice.path(&format!("liar-{attempt}.sig"))
        ));
        assert!(!signed_by(&run).contains(&"c2".to_owned()), "{run}");
        if outcome(&run, "c2")["result"] == "bad_share" {
            named = true;
            assert_eq!(signed_by(&run), ["c1", "c3", "c4"], "{run}");
            break;
        }
    }
    assert!(named, "c2 was never among the first three in 12 signings");
    // With the liar and one more down, no subset of honest signers is left: the error
    // names the liar as such.
    w.cluster.nodes[3].pause().unwrap();
    let (err, _) = sign_below_t(&alice, &id, &message);
    assert_eq!(outcome(&err, "c2")["result"], "bad_share", "{err}");
    w.cluster.nodes[3].resume().unwrap();
    w.cluster.nodes[1].stop().unwrap();
    w.cluster.nodes[1].set_env("CUSTODIAN_FAULT", None);
    w.cluster.nodes[1].start().unwrap();
    w.cluster.wait_ready(1).unwrap();

    // 100 concurrent sessions on one key, spoken directly: every signature verifies and no
    // two sessions share a nonce commitment.
    let cs = Arc::new(clients_of(&w, &alice));
    let group_key = GroupKey::from_text(Kind::Ed25519, &public).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let results = rt.block_on(async {
        let tasks: Vec<_> = (0..100u32)
            .map(|k| {
                let cs = cs.clone();
                let id = id.clone();
                tokio::spawn(async move {
                    let s = hex::encode(Sha256::digest(k.to_be_bytes()))[..32].to_owned();
                    let message = format!("message {k}").into_bytes();
                    // Each session picks its own three of the four custodians.
                    let chosen: Vec<usize> = (0..4).filter(|i| *i != (k as usize) % 4).collect();
                    let (signature, commitments, _) =
                        sign_directly(&cs, &chosen, Kind::Ed25519, &id, &s, &message).await;
                    let bytes: Vec<Vec<u8>> = commitments
                        .values()
                        .map(|c| c.as_bytes().to_vec())
                        .collect();
                    (message, signature, bytes)
                })
            })
            .collect();
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.unwrap());
        }
        out
    });
    let mut seen = BTreeSet::new();
    for (message, signature, commitments) in &results {
        group_key.verify(message, signature).unwrap();
        for c in commitments {
            assert!(seen.insert(c.clone()), "a nonce commitment was used twice");
        }
    }
    assert_eq!(seen.len(), 300);
}

/// Enrolls a key of `kind` born distributed (`--dkg`) and checks what `pubkey` says.
fn enroll_dkg(user: &User, kind: Kind) -> (String, String) {
    let e = user.json(&["enroll", "--kind", kind.as_str(), "--dkg"]);
    assert_eq!(e["kind"], kind.as_str(), "{e}");
    let id = e["secret_id"].as_str().unwrap().to_owned();
    let public = e["public_key"].as_str().unwrap().to_owned();
    let p = user.json(&["pubkey", &id]);
    assert_eq!(p["public_key"], public.as_str(), "{p}");
    GroupKey::from_text(kind, &public).unwrap();
    (id, public)
}

/// The DKG's peer list as a coordinator sends it: holder `i + 1` is custodian `i`, at
/// `addresses[i]`.
fn peers_json(w: &testkit::shardctl::World, addresses: &[std::net::SocketAddr]) -> Value {
    w.cluster
        .nodes
        .iter()
        .zip(addresses)
        .enumerate()
        .map(|(i, (n, addr))| {
            json!({
                "holder": i + 1,
                "name": n.name,
                "address": addr.to_string(),
                "server_name": addr.ip().to_string(),
            })
        })
        .collect()
}

/// DKG round 1 with `body` at every custodian; answers the packages to relay.
async fn round1_everywhere(coordinator: &[mtls::Client], id: &str, body: &Value) -> Vec<Value> {
    let mut packages = Vec::new();
    for (i, c) in coordinator.iter().enumerate() {
        let (st, b) = call(
            c,
            Method::POST,
            &format!("/v1/dkg/{id}/round1"),
            body.clone(),
        )
        .await;
        assert_eq!((st, &b["holder"]), (200, &json!(i + 1)), "{b}");
        packages.push(json!({ "holder": i + 1, "package": b["package"] }));
    }
    packages
}

#[test]
fn keys_born_distributed_sign_and_no_coordinator_sees_or_misroutes_a_share() {
    let mut w = world();
    let alice = w.logged_in("alice");
    let owner = testkit::cluster::user_id("alice");
    let message = alice.path("message.txt");
    std::fs::write(&message, b"born distributed\n").unwrap();
    let text = std::fs::read(&message).unwrap();

    // Every kind: the custodians make the key, each seals its package, and the key signs;
    // the outside verifiers accept the signatures.
    for kind in Kind::ALL {
        let (id, public) = enroll_dkg(&alice, kind);
        let (run, signature) = sign(&alice, &id, &message, &format!("dkg-{kind}.sig"));
        assert_eq!(signed_by(&run).len(), 3, "{run}");
        let group_key = GroupKey::from_text(kind, &public).unwrap();
        group_key
            .verify(&text, &Signature::decode(kind, &signature).unwrap())
            .unwrap();
        match kind {
            Kind::Ed25519 => {
                let pem = alice.path("dkg-ed25519.pub.pem");
                std::fs::write(&pem, &public).unwrap();
                assert!(openssl_verifies(
                    &pem,
                    &message,
                    &alice.path("dkg-ed25519.sig")
                ));
            }
            Kind::Secp256k1Tr => assert!(libsecp256k1_verifies(&public, &text, &signature)),
            Kind::P256Schnorr => assert_eq!(signature.len(), 65),
        }
        // Every custodian stored its package under an audit row of the DKG, and refuses to
        // release it.
        for (i, node) in w.cluster.nodes.iter().enumerate() {
            let row = node.wait_audit("dkg_finish", |a| {
                a.event == "dkg_finish" && a.secret_id == id
            });
            assert_eq!(row.outcome, "ok");
            assert_eq!(row.idx, i as i64 + 1);
            assert!(
                row.detail.starts_with(&format!("kind={kind} transcript=")),
                "{}",
                row.detail
            );
        }
        let err = alice.fails(&["recover", &id, "--out", alice.path("k").to_str().unwrap()]);
        assert!(err.contains("never leaves its custodians"), "{err}");
    }
    // Nothing of the DKGs is left in memory anywhere.
    for i in 0..4 {
        assert_eq!(w.metric(i, "custodian_dkgs_open"), 0.0);
    }
    // --dkg is for signing kinds only, and not with --import.
    let err = alice.fails(&["enroll", "--dkg", "--kind", "p256"]);
    assert!(err.contains("--dkg needs a signing --kind"), "{err}");

    // The test is now a coordinator (the enroller's certificate), speaking the DKG itself.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let coordinator = w.cluster.clients(&w.tls_of("enroller", "main"));
    let addresses: Vec<_> = w.cluster.nodes.iter().map(|n| n.addr).collect();
    rt.block_on(async {
        let id = "0123456789abcdef0123456789abcdef";
        let r1 = format!("/v1/dkg/{id}/round1");
        let r2 = format!("/v1/dkg/{id}/round2");
        let fin = format!("/v1/dkg/{id}/finish");
        let good = peers_json(&w, &addresses);
        let body =
            json!({ "owner": owner, "kind": "ed25519", "t": 3, "n": 4, "epoch": 1, "peers": good });

        // Steps out of order, bad parameters and other callers are typed refusals.
        refused(
            &coordinator[0],
            Method::POST,
            &r2,
            json!({ "round1": [] }),
            404,
            "dkg_unknown",
        )
        .await;
        refused(
            &coordinator[0],
            Method::POST,
            &fin,
            json!({}),
            404,
            "dkg_unknown",
        )
        .await;
        let mut bad = body.clone();
        bad["t"] = json!(5);
        refused(&coordinator[0], Method::POST, &r1, bad, 400, "invalid_dkg").await;
        let mut bad = body.clone();
        bad["kind"] = json!("p256");
        refused(&coordinator[0], Method::POST, &r1, bad, 400, "invalid_dkg").await;
        let user = clients_of(&w, &alice);
        refused(
            &user[0],
            Method::POST,
            &r1,
            body.clone(),
            403,
            "role_not_allowed",
        )
        .await;

        // Round 1 everywhere; repeated, it answers the same package; changed, it is refused.
        let mut packages = Vec::new();
        for (i, c) in coordinator.iter().enumerate() {
            let (st, b) = call(c, Method::POST, &r1, body.clone()).await;
            assert_eq!(st, 200, "{b}");
            assert_eq!(b["holder"], i + 1);
            let (_, again) = call(c, Method::POST, &r1, body.clone()).await;
            assert_eq!(again["package"], b["package"]);
            packages.push(json!({ "holder": i + 1, "package": b["package"] }));
        }
        let mut changed = body.clone();
        changed["epoch"] = json!(2);
        refused(
            &coordinator[0],
            Method::POST,
            &r1,
            changed,
            409,
            "dkg_exists",
        )
        .await;
        refused(
            &coordinator[0],
            Method::POST,
            &fin,
            json!({}),
            409,
            "dkg_out_of_order",
        )
        .await;

        // The peer channel takes only the custodian named for the sending holder.
        let peer_path = format!("/v1/peer/dkg/{id}");
        let package =
            json!({ "from": 2, "to": 1, "transcript": B64.encode([0u8; 32]), "package": "AAAA" });
        for (who, reason) in [
            (w.tls_of("enroller", "main"), "role_not_allowed"),
            (w.tls_of("custodian", "c3"), "not_the_peer"),
        ] {
            let c = w.cluster.client(0, who).unwrap();
            let (st, b) = call(&c, Method::PUT, &peer_path, package.clone()).await;
            assert_eq!((st / 100, b["reason"].as_str()), (4, Some(reason)), "{b}");
        }
        let c2_at_c1 = w.cluster.client(0, w.tls_of("custodian", "c2")).unwrap();
        refused(
            &c2_at_c1,
            Method::PUT,
            &peer_path,
            package.clone(),
            400,
            "invalid_round2_package",
        )
        .await;
        let other = format!("/v1/peer/dkg/{}", "f".repeat(32));
        refused(
            &c2_at_c1,
            Method::PUT,
            &other,
            package.clone(),
            404,
            "dkg_unknown",
        )
        .await;

        // A relayed set that alters c1's own round-1 package ends the DKG at c1.
        let mut altered = packages.clone();
        altered[0]["package"] = packages[1]["package"].clone();
        refused(
            &coordinator[0],
            Method::POST,
            &r2,
            json!({ "round1": altered }),
            400,
            "invalid_round1_package",
        )
        .await;
        refused(
            &coordinator[0],
            Method::POST,
            &fin,
            json!({}),
            404,
            "dkg_unknown",
        )
        .await;
        for c in &coordinator {
            c.delete(&id.parse().unwrap(), None).await.ok();
        }

        // A misrouting coordinator: c1 is told holder 2 (c2) is at c3's address. c1's peer
        // channel sees c3's certificate, not c2's, and sends nothing there.
        let id = "fedcba9876543210fedcba9876543210";
        let mut misrouted = addresses.clone();
        misrouted[1] = addresses[2];
        let body = json!({
            "owner": owner, "kind": "ed25519", "t": 3, "n": 4, "epoch": 1,
            "peers": peers_json(&w, &misrouted),
        });
        let packages = round1_everywhere(&coordinator, id, &body).await;
        let peer_dkg_at_c3 = |status: u16| {
            w.metric(
                2,
                &format!("custodian_requests_total{{route=\"peer_dkg\",status=\"{status}\"}}"),
            )
        };
        let before = peer_dkg_at_c3(201);
        refused(
            &coordinator[0],
            Method::POST,
            &format!("/v1/dkg/{id}/round2"),
            json!({ "round1": packages }),
            502,
            "peer_wrong_identity",
        )
        .await;
        // c3 took exactly the one package meant for it (holder 3), not holder 2's.
        assert_eq!(peer_dkg_at_c3(201) - before, 1.0);
        assert_eq!(
            peer_dkg_at_c3(400) + peer_dkg_at_c3(403) + peer_dkg_at_c3(409),
            0.0
        );
        let audit = w.cluster.nodes[0].wait_audit("dkg_round2", |a| {
            a.event == "dkg_round2" && a.secret_id == id
        });
        assert_eq!(
            (audit.reason.as_str(), audit.detail.as_str()),
            ("peer_wrong_identity", "peer=c2")
        );
        // Deleting aborts the DKG everywhere; nothing is left in memory or on disk.
        for c in &coordinator {
            c.delete(&id.parse().unwrap(), None).await.ok();
        }
    });
    for i in 0..4 {
        assert_eq!(w.metric(i, "custodian_dkgs_open"), 0.0, "c{}", i + 1);
    }

    // kill -9 of a custodian between round 2 and finish: the others store their packages
    // (a repeated finish answers the same), the restarted one has forgotten the DKG, and
    // the coordinator's abort takes back every package.
    let id = "00112233445566778899aabbccddeeff";
    let body = json!({
        "owner": owner, "kind": "secp256k1-tr", "t": 3, "n": 4, "epoch": 1,
        "peers": peers_json(&w, &addresses),
    });
    let packages: Vec<Value> = rt.block_on(async {
        let packages = round1_everywhere(&coordinator, id, &body).await;
        for c in &coordinator {
            let (st, b) = call(
                c,
                Method::POST,
                &format!("/v1/dkg/{id}/round2"),
                json!({ "round1": packages }),
            )
            .await;
            assert_eq!(st, 200, "{b}");
        }
        packages
    });
    w.cluster.nodes[1].kill9();
    w.cluster.nodes[1].start().unwrap();
    w.cluster.wait_ready(1).unwrap();
    let coordinator = w.cluster.clients(&w.tls_of("enroller", "main"));
    rt.block_on(async {
        let fin = format!("/v1/dkg/{id}/finish");
        let mut public = None;
        for i in [0, 2, 3] {
            let (st, b) = call(&coordinator[i], Method::POST, &fin, json!({})).await;
            assert_eq!(st, 201, "{b}");
            let (st, again) = call(&coordinator[i], Method::POST, &fin, json!({})).await;
            assert_eq!(
                (st, &again["public"], &again["already_stored"]),
                (200, &b["public"], &json!(true))
            );
            assert!(public.get_or_insert(b["public"].clone()) == &b["public"]);
        }
        refused(
            &coordinator[1],
            Method::POST,
            &fin,
            json!({}),
            404,
            "dkg_unknown",
        )
        .await;
        // A repeated round 2 at the restarted custodian cannot revive it either.
        refused(
            &coordinator[1],
            Method::POST,
            &format!("/v1/dkg/{id}/round2"),
            json!({ "round1": packages }),
            404,
            "dkg_unknown",
        )
        .await;
        for c in &coordinator {
            c.delete(&id.parse().unwrap(), None).await.ok();
        }
        for i in 0..4 {
            assert!(
                !w.cluster
                    .shards_of(i, &owner)
                    .await
                    .contains(&id.to_owned()),
                "c{}",
                i + 1
            );
        }
    });

    // A DKG with one custodian down fails cleanly, naming it, and leaves no key package
    // (and no DKG state) behind anywhere.
    let stored_before: Vec<Vec<String>> = (0..3)
        .map(|i| rt.block_on(w.cluster.shards_of(i, &owner)))
        .collect();
    w.cluster.nodes[3].kill9();
    let run = alice.run(&["--json", "enroll", "--kind", "ed25519", "--dkg"]);
    assert!(!run.status.success());
    let err: Value = serde_json::from_slice(&run.stdout).unwrap();
    assert_eq!(err["error"], "enroll_failed", "{err}");
    assert_eq!(
        err["custodians"],
        json!([{ "name": "c4", "reason": "unreachable" }]),
        "{err}"
    );
    for (i, before) in stored_before.iter().enumerate() {
        assert_eq!(
            &rt.block_on(w.cluster.shards_of(i, &owner)),
            before,
            "c{}",
            i + 1
        );
        assert_eq!(w.metric(i, "custodian_dkgs_open"), 0.0, "c{}", i + 1);
    }
    w.cluster.nodes[3].start().unwrap();
    w.cluster.wait_ready(3).unwrap();
}
