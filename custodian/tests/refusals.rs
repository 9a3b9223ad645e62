//! Who may do what: refused handshakes and refused roles, each audited.

use std::time::{Duration, Instant};

use certs::Role;
use hyper::Method;
use testkit::custodian::*;
use testkit::envelope::*;
use testkit::http::*;
use testkit::pki::*;
use testkit::Backend;

/// A client that must not get any HTTP answer: the handshake (or, in TLS 1.3, the
/// first read after it, which carries the server's alert) fails.
async fn assert_no_answer(c: &Custodian, tls: std::sync::Arc<rustls::ClientConfig>, what: &str) {
    let client = c.client_with(tls);
    match client.request(Method::GET, "/v1/health", None).await {
        Err(mtls::Error::Handshake { .. } | mtls::Error::Transport { .. }) => {}
        other => panic!("{what}: expected a failed handshake, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshakes_without_a_valid_client_certificate_are_refused_and_audited() {
    let c = Custodian::start(Backend::SoftHsm);
    // Valid for 1 s (certificates carry whole seconds): expired 2.1 s after issuance,
    // while the other cases run.
    let expired = c.pki.issue(Role::User, "late", Duration::from_secs(1));
    let issued = Instant::now();
    // Other CAs. The client trusts the real CA (so that it goes on to present its
    // certificate) but holds a certificate of another one: of another trust domain
    // (unknown issuer), or a forged CA with the same name (the issuer is found by
    // name, its signature does not verify).
    let foreign = Pki::new("other.test");
    let forged = Pki::new("example.test");
    assert_ne!(forged.ca_pem(), c.pki.ca_pem());

    assert_no_answer(&c, c.pki.anonymous_tls(), "no client certificate").await;
    c.wait_audit("no client certificate", |a| {
        a.event == "handshake" && a.outcome == "refused" && a.reason == "no_client_certificate"
    });

    assert_no_answer(&c, c.pki.client_tls(&foreign.alice), "another CA").await;
    let row = c.wait_audit("another CA", |a| a.reason == "unknown_ca");
    assert_eq!(
        (row.event.as_str(), row.outcome.as_str()),
        ("handshake", "refused")
    );
    assert_eq!(row.peer, "tcp:127.0.0.1");

    assert_no_answer(&c, c.pki.client_tls(&forged.alice), "a forged CA").await;
    c.wait_audit("a forged CA", |a| {
        a.event == "handshake" && a.reason == "invalid_certificate"
    });

    tokio::time::sleep(Duration::from_millis(2100).saturating_sub(issued.elapsed())).await;
    assert_no_answer(&c, c.pki.client_tls(&expired), "expired certificate").await;
    c.wait_audit("expired certificate", |a| {
        a.event == "handshake" && a.reason == "expired_certificate"
    });

    // The refusals are counted in the metrics too, and a valid peer still gets in.
    let metrics = get_plain(c.health, "/metrics").unwrap().text();
    for reason in [
        "no_client_certificate",
        "unknown_ca",
        "invalid_certificate",
        "expired_certificate",
    ] {
        let n = metric(
            &metrics,
            &format!("custodian_handshakes_refused_total{{reason=\"{reason}\"}}"),
        );
        assert!(n >= 1.0, "{reason}: {metrics}");
    }
    assert_eq!(c.client(&c.pki.alice).health().await.unwrap().status, "ok");
    // None of the refused peers caused an API audit row: they never got that far.
    assert!(c.audit().iter().all(|a| a.event == "handshake"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_roles_and_other_users_are_refused_and_audited() {
    let mut c = Custodian::start(Backend::SoftHsm);
    let env = c.envelope(32, 1);
    let alice_id = c.pki.alice.id.to_string();
    c.client(&c.pki.enroller)
        .deposit(&alice_id, &env.encode())
        .await
        .unwrap();
    let other_custodian = c
        .pki
        .issue(Role::Custodian, "c2", Duration::from_secs(3600));
    let sid = sid(&env);

    // Release: only the owning user.
    for who in [&c.pki.admin, &c.pki.enroller, &other_custodian] {
        assert_refused(
            c.client(who).release(&env.secret_id, None).await,
            403,
            "role_not_allowed",
        );
        let a = c.wait_audit("release by a wrong role", |a| {
            a.event == "release" && a.peer == who.id.to_string()
        });
        assert_eq!(
            (a.outcome.as_str(), a.reason.as_str(), a.secret_id.as_str()),
            ("refused", "role_not_allowed", sid.as_str())
        );
    }
    // Another user: answered exactly like a missing shard, audited as not the owner.
    let bob = c.client(&c.pki.bob);
    assert_refused(bob.release(&env.secret_id, None).await, 404, "not_found");
    let missing = shard::SecretId::from_bytes([9; 16]);
    assert_refused(bob.release(&missing, None).await, 404, "not_found");
    let bob_rows: Vec<(String, String)> = c
        .audit()
        .into_iter()
        .filter(|a| a.peer == c.pki.bob.id.to_string())
        .map(|a| (a.secret_id, a.reason))
        .collect();
    assert_eq!(
        bob_rows,
        vec![
            (sid.clone(), "not_owner".to_owned()),
            (missing.to_string(), "not_found".to_owned())
        ]
    );

    // Deposit: only the enroller (a user cannot plant a shard, even for themself).
    let planted = c.envelope(32, 1);
    for who in [&c.pki.alice, &c.pki.admin, &other_custodian] {
        assert_refused(
            c.client(who).deposit(&alice_id, &planted.encode()).await,
            403,
            "role_not_allowed",
        );
        c.wait_audit("deposit by a wrong role", |a| {
            a.event == "deposit" && a.peer == who.id.to_string() && a.reason == "role_not_allowed"
        });
    }
    // Delete: enroller or admin. Listing: admin.
    for who in [&c.pki.alice, &c.pki.bob, &other_custodian] {
        assert_refused(
            c.client(who).delete(&env.secret_id, None).await,
            403,
            "role_not_allowed",
        );
    }
    for who in [&c.pki.alice, &c.pki.enroller] {
        assert_refused(c.client(who).list(None, 10).await, 403, "role_not_allowed");
        c.wait_audit("list by a wrong role", |a| {
            a.event == "list" && a.peer == who.id.to_string() && a.outcome == "refused"
        });
    }
    let refused_deletes = c
        .audit()
        .iter()
        .filter(|a| a.event == "delete" && a.reason == "role_not_allowed")
        .count();
    assert_eq!(refused_deletes, 3);

    // Nothing changed: one shard, still Alice's, still intact.
    let rows: i64 = c
        .db()
        .query_row("SELECT count(*) FROM shards", [], |r| r.get(0))
        .unwrap();
    assert_eq!(rows, 1);
    let got = c
        .client(&c.pki.alice)
        .release(&env.secret_id, None)
        .await
        .unwrap();
    assert_eq!(&got.envelope[..], &env.encode()[..]);
    let v = c.audit_verify();
    assert!(v.status.success(), "{v:?}");
}
