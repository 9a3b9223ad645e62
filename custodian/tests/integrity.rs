//! Damage and crashes: edited blobs, an edited or shortened audit log, `kill -9`
//! in the middle of concurrent deposits.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hsm::blob::HEADER_LEN;
use hyper::Method;
use shard::ShardEnvelope;
use testkit::custodian::*;
use testkit::envelope::*;
use testkit::http::*;
use testkit::Backend;

fn blob_of(c: &Custodian, env: &ShardEnvelope) -> Vec<u8> {
    c.db()
        .query_row(
            "SELECT blob FROM shards WHERE secret_id = ?1 AND epoch = ?2",
            rusqlite::params![&env.secret_id.as_bytes()[..], env.epoch],
            |r| r.get(0),
        )
        .unwrap()
}

fn set_blob(c: &Custodian, env: &ShardEnvelope, blob: &[u8]) {
    let n = c
        .db()
        .execute(
            "UPDATE shards SET blob = ?3 WHERE secret_id = ?1 AND epoch = ?2",
            rusqlite::params![&env.secret_id.as_bytes()[..], env.epoch, blob],
        )
        .unwrap();
    assert_eq!(n, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edited_blob_fails_release_cleanly_and_is_audited() {
    let c = Custodian::start(Backend::SoftHsm);
    let enroller = c.client(&c.pki.enroller);
    let alice = c.client(&c.pki.alice);
    let owner = c.pki.alice.id.to_string();
    let envs: Vec<ShardEnvelope> = (0..5).map(|_| c.envelope(32, 1)).collect();
    for e in &envs {
        enroller.deposit(&owner, &e.encode()).await.unwrap();
    }
    let [body, header, short, moved, intact] = &envs[..] else {
        unreachable!()
    };

    // One bit of the ciphertext; one bit of the header's context digest; a blob cut
    // short; and another row's (valid) blob moved into this row.
    let mut b = blob_of(&c, body);
    let at = HEADER_LEN + 12 + 3;
    b[at] ^= 0x01;
    set_blob(&c, body, &b);
    let mut h = blob_of(&c, header);
    h[HEADER_LEN - 5] ^= 0x80;
    set_blob(&c, header, &h);
    let s = blob_of(&c, short);
    set_blob(&c, short, &s[..HEADER_LEN + 8]);
    set_blob(&c, moved, &blob_of(&c, intact));

    let cases = [
        (body, "sealed_blob_integrity"),
        (header, "sealed_blob_context"),
        (short, "sealed_blob_malformed"),
        (moved, "sealed_blob_context"),
    ];
    for (env, reason) in cases {
        let (status, bytes) = alice
            .request(Method::GET, &format!("/v1/shards/{}", env.secret_id), None)
            .await
            .expect("an answer");
        assert_eq!(status.as_u16(), 500, "{reason}");
        let e = error_body(&bytes);
        assert_eq!((e.error.as_str(), e.reason.as_str()), ("internal", reason));
        let a = c.wait_audit(reason, |a| a.event == "release" && a.secret_id == sid(env));
        assert_eq!(
            (
                a.outcome.as_str(),
                a.reason.as_str(),
                a.peer.as_str(),
                a.idx
            ),
            ("failed", reason, owner.as_str(), i64::from(env.index))
        );
    }
    // The service keeps serving: the untouched shard releases, health is fine, and
    // the process is still the same one.
    let got = alice.release(&intact.secret_id, None).await.unwrap();
    assert_eq!(&got.envelope[..], &intact.encode()[..]);
    let other = c.client(&c.pki.alice);
    assert_eq!(other.health().await.unwrap().status, "ok");
    let status = get_plain(c.health, "/health").unwrap().status;
    assert_eq!(status, 200);
    let mut c = c;
    assert!(c.is_running());
    // Blob edits are not audit edits: the chain is intact.
    assert!(c.audit_verify().status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_verify_reports_intact_then_names_edited_and_deleted_rows() {
    let mut c = Custodian::start(Backend::SoftHsm);
    let enroller = c.client(&c.pki.enroller);
    let alice = c.client(&c.pki.alice);
    let owner = c.pki.alice.id.to_string();
    for _ in 0..4 {
        let e = c.envelope(32, 1);
        enroller.deposit(&owner, &e.encode()).await.unwrap();
        alice.release(&e.secret_id, None).await.unwrap();
    }
    assert_refused(
        c.client(&c.pki.bob).list(None, 1).await,
        403,
        "role_not_allowed",
    );
    let rows = c.audit();
    assert_eq!(rows.len(), 9);
    assert_eq!(
        rows.iter().map(|r| r.seq).collect::<Vec<_>>(),
        (1..=9).collect::<Vec<_>>()
    );

    // Intact while the server runs.
    let v = c.audit_verify();
    assert!(v.status.success(), "{v:?}");
    assert_eq!(v.stdout.trim(), "audit log intact: 9 rows");

    // An edited row (a release made to look like Bob's) is named.
    let db = c.db();
    let original: String = db
        .query_row("SELECT peer FROM audit WHERE seq = 4", [], |r| r.get(0))
        .unwrap();
    db.execute(
        "UPDATE audit SET peer = 'spiffe://example.test/user/bob' WHERE seq = 4",
        [],
    )
    .unwrap();
    let v = c.audit_verify();
    assert_eq!(v.status.code(), Some(1), "{v:?}");
    assert_eq!(
        v.stdout.trim(),
        "audit log BROKEN at row 4: contents do not match its hash"
    );
    // An edited outcome, timestamp or reason is named just the same.
    db.execute("UPDATE audit SET peer = ?1 WHERE seq = 4", [&original])
        .unwrap();
    assert!(c.audit_verify().status.success(), "restored row verifies");
    db.execute("UPDATE audit SET at = at + 1 WHERE seq = 7", [])
        .unwrap();
    let v = c.audit_verify();
    assert_eq!(v.status.code(), Some(1));
    assert!(v.stdout.contains("BROKEN at row 7"), "{v:?}");
    db.execute("UPDATE audit SET at = at - 1 WHERE seq = 7", [])
        .unwrap();

    // A deleted row is named, with the server stopped too.
    db.execute("DELETE FROM audit WHERE seq = 6", []).unwrap();
    drop(db);
    assert!(c.stop().unwrap().success());
    let v = c.audit_verify();
    assert_eq!(v.status.code(), Some(1), "{v:?}");
    assert_eq!(
        v.stdout.trim(),
        "audit log BROKEN at row 6: row missing (sequence gap)"
    );
    // A row deleted and the later ones renumbered: the link breaks instead.
    let db = c.db();
    db.execute("UPDATE audit SET seq = seq - 1 WHERE seq > 6", [])
        .unwrap();
    let v = c.audit_verify();
    assert_eq!(v.status.code(), Some(1), "{v:?}");
    assert_eq!(
        v.stdout.trim(),
        "audit log BROKEN at row 6: does not link to the previous row"
    );
}

/// Deposits from several concurrent clients; `kill -9` mid-stream; restart; every
/// acknowledged deposit releases byte-identical, every stored row unseals, the
/// audit chain is intact. Twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_during_concurrent_deposits_loses_no_acknowledged_deposit() {
    const CLIENTS: usize = 8;
    let mut c = Custodian::start(Backend::SoftHsm);
    let owner = c.pki.alice.id.to_string();
    // Every envelope ever sent, by secret id; and those the custodian acknowledged.
    let sent: Arc<Mutex<HashMap<String, ShardEnvelope>>> = Arc::default();
    let acked: Arc<Mutex<HashSet<String>>> = Arc::default();

    for round in 0..2 {
        let before = acked.lock().unwrap().len();
        let mut tasks = Vec::new();
        for _ in 0..CLIENTS {
            let client = c.client(&c.pki.enroller);
            let (sent, acked, owner) = (sent.clone(), acked.clone(), owner.clone());
            let envs: Vec<ShardEnvelope> = (0..200).map(|_| c.envelope(32, 1)).collect();
            tasks.push(tokio::spawn(async move {
                let mut errors = 0;
                for env in envs {
                    let id = sid(&env);
                    let bytes = env.encode();
                    sent.lock().unwrap().insert(id.clone(), env);
                    match client.deposit(&owner, &bytes).await {
                        Ok(r) => {
                            assert!(!r.already_stored);
                            acked.lock().unwrap().insert(id);
                        }
                        Err(_) => {
                            errors += 1;
                            if errors > 3 {
                                break; // the server is gone
                            }
                        }
                    }
                }
                errors
            }));
        }
        // Kill once a good number of deposits is acknowledged and more are in flight.
        let target = before + 150;
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while acked.lock().unwrap().len() < target && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        assert!(acked.lock().unwrap().len() >= target, "deposits too slow");
        tokio::task::block_in_place(|| c.kill9());
        let mut interrupted = 0;
        for t in tasks {
            interrupted += t.await.unwrap();
        }
        assert!(
            interrupted > 0,
            "round {round}: the kill interrupted no client"
        );

        tokio::task::block_in_place(|| c.start().unwrap());
        let v = tokio::task::block_in_place(|| c.audit_verify());
        assert!(v.status.success(), "round {round}: {v:?}");

        let acked_now = acked.lock().unwrap().clone();
        let sent_now = sent.lock().unwrap().clone();
        // Every acknowledged deposit releases byte-identical.
        let alice = c.client(&c.pki.alice);
        for id in &acked_now {
            let env = &sent_now[id];
            let got = alice
                .release(&env.secret_id, Some(1))
                .await
                .unwrap_or_else(|e| panic!("round {round}: acknowledged {id} lost: {e}"));
            assert_eq!(&got.envelope[..], &env.encode()[..], "{id}");
        }
        // Every stored row was sent, and unseals to what was sent (rows whose
        // acknowledgement the kill swallowed included); no half-written row.
        let stored: Vec<Vec<u8>> = {
            let db = c.db();
            let ok: String = db
                .query_row("PRAGMA integrity_check", [], |r| r.get(0))
                .unwrap();
            assert_eq!(ok, "ok");
            let mut st = db.prepare("SELECT secret_id FROM shards").unwrap();
            let rows = st.query_map([], |r| r.get::<_, Vec<u8>>(0)).unwrap();
            rows.collect::<Result<_, _>>().unwrap()
        };
        assert!(stored.len() >= acked_now.len());
        let mut unacked = 0;
        for raw in &stored {
            let id = hex::encode(raw);
            let env = sent_now.get(&id).expect("a stored row that nobody sent");
            if !acked_now.contains(&id) {
                unacked += 1;
                let got = alice.release(&env.secret_id, Some(1)).await.unwrap();
                assert_eq!(&got.envelope[..], &env.encode()[..]);
            }
        }
        assert!(
            unacked <= CLIENTS,
            "more unacknowledged rows than requests in flight"
        );
        // Each stored row and its audit row were one transaction.
        let deposits = c
            .audit()
            .iter()
            .filter(|a| a.event == "deposit" && a.outcome == "ok")
            .count();
        assert_eq!(deposits, stored.len(), "round {round}");
    }
}
