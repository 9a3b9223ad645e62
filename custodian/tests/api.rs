//! The custodian API end to end on SoftHSM2: the real binary, real mutual TLS.

use std::time::{Duration, Instant};

use base64::Engine;
use hyper::{Method, StatusCode};
use testkit::custodian::*;
use testkit::envelope::*;
use testkit::http::*;
use testkit::scan::*;
use testkit::Backend;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deposit_then_release_round_trip_softhsm() {
    let mut c = Custodian::start(Backend::SoftHsm);
    let enroller = c.client(&c.pki.enroller);
    let alice = c.client(&c.pki.alice);

    // A P-256-sized secret, a larger one (the envelope is not one AES block), and a
    // second epoch of the same secret id.
    let small = c.envelope(32, 1);
    let large = c.envelope(4096, 7);
    for env in [&small, &large] {
        let r = enroller
            .deposit(&c.pki.alice.id.to_string(), &env.encode())
            .await
            .expect("deposit");
        assert_eq!(
            (r.secret_id.as_str(), r.epoch, r.index, r.already_stored),
            (sid(env).as_str(), env.epoch, env.index, false)
        );
        assert_eq!(r.key_version, 1);
    }
    let mut next = small.clone();
    next.epoch = 2;
    next.salt.0[0] ^= 1;
    c.forbid(needles_for_envelope(&next));
    enroller
        .deposit(&c.pki.alice.id.to_string(), &next.encode())
        .await
        .expect("deposit epoch 2");

    for env in [&small, &large] {
        let got = alice
            .release(&env.secret_id, Some(env.epoch))
            .await
            .expect("release");
        assert_eq!((got.epoch, got.index), (env.epoch, env.index));
        assert_eq!(
            &got.envelope[..],
            &env.encode()[..],
            "byte-identical envelope"
        );
    }
    // Without an epoch the newest one is released.
    let newest = alice
        .release(&small.secret_id, None)
        .await
        .expect("release");
    assert_eq!(newest.epoch, 2);
    assert_eq!(&newest.envelope[..], &next.encode()[..]);
    let old = alice
        .release(&small.secret_id, Some(1))
        .await
        .expect("release");
    assert_eq!(&old.envelope[..], &small.encode()[..]);
    assert_refused(
        alice.release(&small.secret_id, Some(3)).await,
        404,
        "not_found",
    );

    // The database holds sealed blobs only: no envelope, salt or share bytes.
    drop(enroller);
    let db = std::fs::read(c.db_path()).unwrap();
    let wal = std::fs::read(c.db_path().with_extension("db-wal")).unwrap_or_default();
    for env in [&small, &large, &next] {
        for secret in [&env.salt.0[..], env.share.expose(), &env.encode()[..]] {
            assert!(!contains_bytes(&db, secret) && !contains_bytes(&wal, secret));
        }
    }
    let rows: i64 = c
        .db()
        .query_row("SELECT count(*) FROM shards", [], |r| r.get(0))
        .unwrap();
    assert_eq!(rows, 3);

    // Each deposit and release is in the audit log with the peer's identity.
    let audit = c.audit();
    let deposits: Vec<_> = audit
        .iter()
        .filter(|a| a.event == "deposit" && a.outcome == "ok")
        .collect();
    assert_eq!(deposits.len(), 3);
    assert!(deposits
        .iter()
        .all(|a| a.peer == c.pki.enroller.id.to_string()));
    let releases = audit
        .iter()
        .filter(|a| a.event == "release" && a.outcome == "ok")
        .count();
    assert_eq!(releases, 4);
    assert!(audit
        .iter()
        .any(|a| a.event == "release" && a.reason == "not_found" && a.secret_id == sid(&small)));
    let v = c.run(&["audit", "verify"]).unwrap();
    assert!(v.status.success(), "{v:?}");
    assert_eq!(
        v.stdout.trim(),
        format!("audit log intact: {} rows", audit.len())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deposit_is_idempotent_and_a_different_shard_conflicts() {
    let c = Custodian::start(Backend::SoftHsm);
    let enroller = c.client(&c.pki.enroller);
    let owner = c.pki.alice.id.to_string();
    let env = c.envelope(32, 1);

    let first = enroller.deposit(&owner, &env.encode()).await.unwrap();
    assert!(!first.already_stored);
    let (status, body) = enroller
        .request(
            Method::PUT,
            "/v1/shards",
            Some(deposit_body(&owner, &env.encode())),
        )
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK, "repeat deposit is 200");
    let again: wire::custodian::DepositResponse = serde_json::from_slice(&body).unwrap();
    assert!(again.already_stored);
    assert_eq!(again.secret_id, first.secret_id);

    // Another shard for the same (secret, epoch): another salt, another index, another owner.
    let mut other_salt = env.clone();
    other_salt.salt.0[5] ^= 0x40;
    let mut other_index = env.clone();
    other_index.index = 3;
    c.forbid(needles_for_envelope(&other_salt));
    c.forbid(needles_for_envelope(&other_index));
    for (o, e) in [
        (&owner, &other_salt),
        (&owner, &other_index),
        (&c.pki.bob.id.to_string(), &env),
    ] {
        assert_refused(
            enroller.deposit(o, &e.encode()).await,
            409,
            "different_shard_stored",
        );
    }
    // The stored shard is untouched.
    let got = c
        .client(&c.pki.alice)
        .release(&env.secret_id, Some(1))
        .await
        .unwrap();
    assert_eq!(&got.envelope[..], &env.encode()[..]);
    let rows: i64 = c
        .db()
        .query_row("SELECT count(*) FROM shards", [], |r| r.get(0))
        .unwrap();
    assert_eq!(rows, 1);
    let audit = c.audit();
    let deposit_rows: Vec<(&str, &str)> = audit
        .iter()
        .filter(|a| a.event == "deposit")
        .map(|a| (a.outcome.as_str(), a.reason.as_str()))
        .collect();
    assert_eq!(
        deposit_rows,
        vec![
            ("ok", ""),
            ("ok", ""),
            ("refused", "conflict"),
            ("refused", "conflict"),
            ("refused", "conflict")
        ]
    );
}

fn deposit_body(owner: &str, envelope: &[u8]) -> Vec<u8> {
    serde_json::to_vec(&wire::custodian::Deposit {
        owner: owner.to_owned(),
        envelope: B64.encode(envelope).into(),
    })
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_by_enroller_or_admin_only() {
    let c = Custodian::start(Backend::SoftHsm);
    let enroller = c.client(&c.pki.enroller);
    let admin = c.client(&c.pki.admin);
    let alice = c.client(&c.pki.alice);
    let owner = c.pki.alice.id.to_string();
    let a = c.envelope(32, 1);
    let b = c.envelope(32, 1);
    let mut b2 = b.clone();
    b2.epoch = 2;
    c.forbid(needles_for_envelope(&b2));
    for e in [&a, &b, &b2] {
        enroller.deposit(&owner, &e.encode()).await.unwrap();
    }

    // The owner cannot delete; a refused delete leaves the shard.
    assert_refused(
        alice.delete(&a.secret_id, None).await,
        403,
        "role_not_allowed",
    );
    alice.release(&a.secret_id, None).await.unwrap();

    assert_eq!(
        enroller.delete(&a.secret_id, None).await.unwrap().deleted,
        1
    );
    assert_refused(alice.release(&a.secret_id, None).await, 404, "not_found");
    assert_refused(enroller.delete(&a.secret_id, None).await, 404, "not_found");

    // Admin deletes one epoch; the other stays.
    assert_eq!(
        admin.delete(&b.secret_id, Some(1)).await.unwrap().deleted,
        1
    );
    assert_refused(alice.release(&b.secret_id, Some(1)).await, 404, "not_found");
    let left = alice.release(&b.secret_id, None).await.unwrap();
    assert_eq!(&left.envelope[..], &b2.encode()[..]);

    let deletes: Vec<(String, String, String)> = c
        .audit()
        .into_iter()
        .filter(|r| r.event == "delete")
        .map(|r| (r.peer, r.outcome, r.reason))
        .collect();
    let (en, ad, al) = (
        c.pki.enroller.id.to_string(),
        c.pki.admin.id.to_string(),
        c.pki.alice.id.to_string(),
    );
    assert_eq!(
        deletes,
        vec![
            (al, "refused".into(), "role_not_allowed".into()),
            (en.clone(), "ok".into(), "".into()),
            (en, "refused".into(), "not_found".into()),
            (ad, "ok".into(), "".into()),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_listing_pages_metadata_and_never_bytes() {
    let c = Custodian::start(Backend::SoftHsm);
    let enroller = c.client(&c.pki.enroller);
    let admin = c.client(&c.pki.admin);
    let mut envs = Vec::new();
    for i in 0..5 {
        let e = c.envelope(32 + i * 10, 1);
        let owner = if i % 2 == 0 { &c.pki.alice } else { &c.pki.bob };
        enroller
            .deposit(&owner.id.to_string(), &e.encode())
            .await
            .unwrap();
        envs.push((e, owner.id.to_string()));
    }
    // Every stored blob, to be sure the listing does not carry it either.
    let mut needles = Vec::new();
    {
        let db = c.db();
        let mut st = db.prepare("SELECT blob FROM shards").unwrap();
        for blob in st.query_map([], |r| r.get::<_, Vec<u8>>(0)).unwrap() {
            needles.extend(needles_for_bytes("sealed blob", &blob.unwrap()[58..]));
        }
    }
    for (e, _) in &envs {
        needles.extend(needles_for_envelope(e));
    }

    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &after {
            Some(a) => format!("/v1/shards?after={a}&limit=2"),
            None => "/v1/shards?limit=2".to_owned(),
        };
        let (status, body) = admin.request(Method::GET, &path, None).await.unwrap();
        assert_eq!(status, StatusCode::OK);
        let text = String::from_utf8(body.to_vec()).unwrap();
        let hits = scan(&text, &needles);
        assert!(hits.is_empty(), "listing carries bytes: {hits:?}");
        let page: wire::custodian::ListResponse = serde_json::from_str(&text).unwrap();
        // Metadata only: exactly these keys per shard.
        let raw: serde_json::Value = serde_json::from_str(&text).unwrap();
        for s in raw["shards"].as_array().unwrap() {
            let mut keys: Vec<&str> = s.as_object().unwrap().keys().map(String::as_str).collect();
            keys.sort();
            assert_eq!(
                keys,
                [
                    "created_at",
                    "epoch",
                    "index",
                    "key_version",
                    "kind",
                    "owner",
                    "pending",
                    "sealed_size",
                    "secret_id",
                    "size"
                ]
            );
        }
        pages += 1;
        seen.extend(page.shards);
        match page.next_after {
            Some(a) => after = Some(a),
            None => break,
        }
        assert!(pages < 10, "pagination does not end");
    }
    assert_eq!(pages, 3);
    assert_eq!(seen.len(), 5);
    for (e, owner) in &envs {
        let s = seen.iter().find(|s| s.secret_id == sid(e)).expect("listed");
        assert_eq!(&s.owner, owner);
        assert_eq!(s.size as usize, e.encode().len());
        assert!(
            s.sealed_size > s.size,
            "sealed blob is larger than the envelope"
        );
        assert_eq!((s.epoch, s.index, s.key_version), (1, e.index, 1));
    }
    // The listing is audited; a bad cursor is a 400.
    assert_eq!(
        c.audit()
            .iter()
            .filter(|a| a.event == "list" && a.outcome == "ok")
            .count(),
        3
    );
    assert_refused(admin.list(Some("zz"), 2).await, 400, "invalid_secret_id");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_json_errors() {
    let c = Custodian::start(Backend::SoftHsm);
    let enroller = c.client(&c.pki.enroller);
    let alice = c.client(&c.pki.alice);
    let owner = c.pki.alice.id.to_string();

    // Oversized body: 413 with a JSON error, and the connection is still usable after.
    let big = vec![b'A'; 200 * 1024];
    let mut body = deposit_body(&owner, b"x");
    body.truncate(body.len() - 2);
    body.extend_from_slice(&big);
    body.extend_from_slice(b"\"}");
    let (status, bytes) = enroller
        .request(Method::PUT, "/v1/shards", Some(body))
        .await
        .expect("an answer, not a broken connection");
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    let e = error_body(&bytes);
    assert_eq!(
        (e.error.as_str(), e.reason.as_str()),
        ("payload_too_large", "body_too_large")
    );

    // Malformed secret ids.
    for bad in [
        "nothex",
        "0123456789abcdef0123456789abcde",   // 31 digits
        "0123456789ABCDEF0123456789ABCDEF",  // upper case
        "0123456789abcdef0123456789abcdef0", // 33 digits
        "..%2F..%2Fetc",
    ] {
        let (status, bytes) = alice
            .request(Method::GET, &format!("/v1/shards/{bad}"), None)
            .await
            .unwrap();
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
        let e = error_body(&bytes);
        assert_eq!(
            (e.error.as_str(), e.reason.as_str()),
            ("bad_request", "invalid_secret_id")
        );
        let (status, _) = enroller
            .request(Method::DELETE, &format!("/v1/shards/{bad}"), None)
            .await
            .unwrap();
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
    }
    let id = shard::SecretId::from_bytes([7; 16]);
    for q in ["epoch=abc", "epoch=-1", "bogus=1"] {
        let (status, bytes) = alice
            .request(Method::GET, &format!("/v1/shards/{id}?{q}"), None)
            .await
            .unwrap();
        assert_eq!(status, StatusCode::BAD_REQUEST, "{q}");
        assert_eq!(error_body(&bytes).reason.as_str(), "invalid_query");
    }

    // Bodies that are not deposits.
    let env = c.envelope(32, 1);
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"{not json".to_vec(), "invalid_body"),
        (b"{\"owner\":1}".to_vec(), "invalid_body"),
        (
            deposit_body("spiffe://example.test/admin/ops", &env.encode()),
            "invalid_owner",
        ),
        (
            deposit_body("spiffe://other.test/user/alice", &env.encode()),
            "invalid_owner",
        ),
        (
            br#"{"owner":"spiffe://example.test/user/alice","envelope":"!!!"}"#.to_vec(),
            "invalid_envelope",
        ),
        (
            deposit_body(&owner, &env.encode()[..40]),
            "invalid_envelope",
        ),
    ];
    for (body, reason) in cases {
        let (status, bytes) = enroller
            .request(Method::PUT, "/v1/shards", Some(body))
            .await
            .unwrap();
        assert_eq!(status, StatusCode::BAD_REQUEST, "{reason}");
        assert_eq!(error_body(&bytes).reason.as_str(), reason);
    }

    // Unknown routes and methods answer JSON too.
    let (status, bytes) = alice
        .request(Method::GET, "/v2/anything", None)
        .await
        .unwrap();
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(error_body(&bytes).error.as_str(), "not_found");

    // None of it stored anything; each refusal with a reason is audited.
    let rows: i64 = c
        .db()
        .query_row("SELECT count(*) FROM shards", [], |r| r.get(0))
        .unwrap();
    assert_eq!(rows, 0);
    let audit = c.audit();
    for reason in [
        "invalid_secret_id",
        "invalid_query",
        "invalid_body",
        "invalid_owner",
        "invalid_envelope",
    ] {
        assert!(
            audit
                .iter()
                .any(|a| a.reason == reason && a.outcome == "refused"),
            "{reason} not audited"
        );
    }
    assert!(
        audit.iter().any(|a| a.reason == "body_too_large"),
        "413 not audited"
    );
    // And the service still serves.
    enroller.deposit(&owner, &env.encode()).await.unwrap();
    alice.release(&env.secret_id, None).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn release_rate_limit_is_per_peer_and_audited() {
    let c = Custodian::start_with(Options {
        release_per_second: 1.0,
        release_burst: 3.0,
        ..Options::default()
    });
    let env = c.envelope(32, 1);
    c.client(&c.pki.enroller)
        .deposit(&c.pki.alice.id.to_string(), &env.encode())
        .await
        .unwrap();
    let alice = c.client(&c.pki.alice);
    for _ in 0..3 {
        alice.release(&env.secret_id, None).await.unwrap();
    }
    let path = format!("/v1/shards/{}", env.secret_id);
    let (status, body) = alice.request(Method::GET, &path, None).await.unwrap();
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(error_body(&body).reason.as_str(), "rate_limited");
    // Bob's bucket is his own (he gets the answer for a shard he does not own).
    assert_refused(
        c.client(&c.pki.bob).release(&env.secret_id, None).await,
        404,
        "not_found",
    );
    assert!(c
        .audit()
        .iter()
        .any(|a| a.reason == "rate_limited" && a.peer == c.pki.alice.id.to_string()));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    alice.release(&env.secret_id, None).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_on_the_loopback_port_and_over_mtls_only() {
    let mut c = Custodian::start(Backend::SoftHsm);
    let env = c.envelope(32, 1);
    c.client(&c.pki.enroller)
        .deposit(&c.pki.alice.id.to_string(), &env.encode())
        .await
        .unwrap();

    let r = get_plain(c.health, "/health").unwrap();
    let (status, body) = (r.status, r.text());
    assert_eq!(status, 200, "{body}");
    let h: wire::custodian::HealthResponse = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (h.status.as_str(), h.device.as_str(), h.database.as_str()),
        ("ok", "ok", "ok")
    );
    assert_eq!(h.custodian, "spiffe://example.test/custodian/c1");
    let info = h.device_info.unwrap();
    assert!(
        info.contains("pkcs11") && info.contains("aes-gcm"),
        "{info}"
    );

    let r = get_plain(c.health, "/metrics").unwrap();
    let (status, metrics) = (r.status, r.text());
    assert_eq!(status, 200);
    assert!(metrics.contains("custodian_shards_stored 1"), "{metrics}");
    assert!(
        metrics.contains("route=\"deposit\",status=\"201\""),
        "{metrics}"
    );

    // Over mutual TLS any identity of the trust domain may ask for health;
    // metrics are for admins.
    let h = c.client(&c.pki.alice).health().await.unwrap();
    assert_eq!(h.status, "ok");
    let (status, _) = c
        .client(&c.pki.admin)
        .request(Method::GET, "/v1/metrics", None)
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK);
    let (status, body) = c
        .client(&c.pki.alice)
        .request(Method::GET, "/v1/metrics", None)
        .await
        .unwrap();
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(error_body(&body).reason.as_str(), "role_not_allowed");
    c.wait_audit("metrics refused", |a| {
        a.event == "metrics" && a.outcome == "refused" && a.peer == c.pki.alice.id.to_string()
    });

    // The health port speaks no API, and the API port speaks no plaintext.
    let status = get_plain(c.health, &format!("/v1/shards/{}", env.secret_id))
        .unwrap()
        .status;
    assert_eq!(status, 404);
    assert!(
        get_plain(c.addr, "/v1/health").is_err(),
        "plaintext on the mTLS port"
    );

    // A plain-HTTP port anywhere but on loopback is refused at start-up.
    let port = testkit::net::free_addr(testkit::net::LOCALHOST)
        .unwrap()
        .port()
        .to_string();
    let out = tokio::task::block_in_place(|| {
        c.run_with_env(
            &["serve"],
            &[("CUSTODIAN_HEALTH_LISTEN", &format!("0.0.0.0:{port}"))],
        )
        .unwrap()
    });
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        out.stderr.contains("health_listen") && out.stderr.contains("loopback"),
        "{out:?}"
    );
}

/// SIGTERM while a deposit is half-sent: the listener closes at once, the in-flight
/// request completes (and is durable), idle keep-alive connections do not hold the
/// process up, and it exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_in_flight_requests_and_exits_zero() {
    let mut c = Custodian::start(Backend::SoftHsm);
    let env = c.envelope(32, 1);
    let body = deposit_body(&c.pki.alice.id.to_string(), &env.encode());

    // An idle keep-alive connection.
    let idle = c.client(&c.pki.alice);
    idle.health().await.unwrap();

    // A deposit whose body is only half sent.
    let mut tls = (*c.pki.client_tls(&c.pki.enroller)).clone();
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(tls));
    let tcp = tokio::net::TcpStream::connect(c.addr).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let mut stream = connector.connect(name, tcp).await.unwrap();
    let head = format!(
        "PUT /v1/shards HTTP/1.1\r\nHost: custodian\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let half = body.len() / 2;
    stream.write_all(&body[..half]).await.unwrap();
    stream.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;

    c.sigterm().unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(c.is_running(), "exited with a request in flight");
    // No new connections once shutdown started.
    assert!(
        tokio::net::TcpStream::connect(c.addr).await.is_err(),
        "listener still accepting after SIGTERM"
    );

    let sent = Instant::now();
    stream.write_all(&body[half..]).await.unwrap();
    stream.flush().await.unwrap();
    let mut raw = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut raw)).await;
    let r = parse(&raw).expect("an HTTP answer to the in-flight deposit");
    let (status, answer) = (r.status, r.text());
    assert_eq!(status, 201, "{answer}");

    let code = tokio::task::block_in_place(|| c.wait_exit(Duration::from_secs(10)))
        .expect("exits after draining");
    assert!(code.success(), "exit status {code}");
    assert!(
        sent.elapsed() < Duration::from_secs(5),
        "the idle keep-alive connection delayed shutdown"
    );
    let log = c
        .logs()
        .into_iter()
        .filter(|(p, _)| p.to_string_lossy().ends_with("serve.stderr"))
        .map(|(_, t)| t)
        .collect::<String>();
    assert!(log.contains("all connections drained"), "{log}");

    // Durable: after a restart the shard releases intact.
    tokio::task::block_in_place(|| c.start().unwrap());
    let got = c
        .client(&c.pki.alice)
        .release(&env.secret_id, None)
        .await
        .unwrap();
    assert_eq!(&got.envelope[..], &env.encode()[..]);
    drop(idle);
}
