//! No secret material in logs. Every custodian the suite starts has its logs
//! scanned when it is dropped (see `common`); this file proves that the scanner
//! would catch a leak, and drives one custodian through every route and failure
//! at trace level, in JSON, and scans that too.

use base64::Engine;
use hyper::Method;
use testkit::custodian::*;
use testkit::envelope::*;
use testkit::http::*;
use testkit::pki::*;
use testkit::scan::*;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;
const B64URL: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// A harmless log line in both formats, with ids that must not raise alarms.
fn clean_log(env: &shard::ShardEnvelope) -> String {
    format!(
        "2025-01-01T00:00:00Z  INFO custodian::routes::shards: released peer=spiffe://example.test/user/alice secret_id={} index={} epoch=1\n\
         {{\"level\":\"INFO\",\"fields\":{{\"message\":\"deposit stored\",\"secret_id\":\"{}\",\"size\":{}}}}}\n",
        env.secret_id,
        env.index,
        env.secret_id,
        env.encode().len()
    )
}

#[test]
fn the_scanner_finds_every_planted_secret_and_nothing_else() {
    let env = dealt_envelope(32, 1, 2);
    let pki = Pki::new("example.test");
    let key = pki.alice.key_pem.as_str().to_owned();
    let pin = "0badc0ffee00112233445566";
    let mut needles = needles_for_envelope(&env);
    needles.extend(needles_for_pem("alice key", &key));
    needles.extend(needles_for_text("user PIN", pin));

    let clean = clean_log(&env);
    assert_eq!(scan(&clean, &needles), Vec::<String>::new(), "false alarm");

    let enc = env.encode();
    let der = B64
        .decode(
            key.lines()
                .filter(|l| !l.starts_with("-----"))
                .collect::<String>(),
        )
        .unwrap();
    let key_line = key.lines().nth(1).unwrap().to_owned();
    let mut padded = vec![0x55u8; 1];
    padded.extend_from_slice(&enc);
    let mut padded2 = vec![1u8, 2];
    padded2.extend_from_slice(env.share.expose());
    padded2.push(3);
    let plants: Vec<(&str, String)> = vec![
        ("envelope (hex)", format!("body={}", hex::encode(&enc[..]))),
        (
            "envelope (hex)",
            format!("BODY={}", hex::encode_upper(&enc[..])),
        ),
        (
            "envelope (base64, offset 0)",
            format!("{{\"envelope\":\"{}\"}}", B64.encode(&enc[..])),
        ),
        // The same bytes after one and two leading bytes: other alignments.
        (
            "envelope (base64, offset 2)",
            format!("x={}", B64.encode(&padded)),
        ),
        (
            "share (base64url, offset 1)",
            format!("x={}", B64URL.encode(&padded2)),
        ),
        (
            "share (hex)",
            format!("share={}", hex::encode(env.share.expose())),
        ),
        ("salt (Debug byte list)", format!("salt: {:?}", env.salt.0)),
        (
            "share (Debug byte list)",
            format!("ShareBytes({:?})", env.share.expose()),
        ),
        ("user PIN", format!("login pin={}", pin.to_uppercase())),
        ("alice key (PEM line)", format!("key: {key_line}")),
        ("alice key (PEM body)", key.replace('\n', "")),
        ("alice key (DER) (hex)", hex::encode(&der)),
    ];
    for (expected, plant) in plants {
        let log = format!("{clean}{plant}\n{clean}");
        let hits = scan(&log, &needles);
        assert!(
            hits.iter().any(|h| h == expected),
            "planted {expected} not found; found {hits:?}"
        );
    }
    // Raw bytes, e.g. in a database file.
    let mut file = vec![0u8; 100];
    file.extend_from_slice(&env.salt.0);
    assert!(contains_bytes(&file, &env.salt.0));
    assert!(!contains_bytes(&file[..120], &env.salt.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_level_json_logs_of_every_route_and_failure_hold_no_secret() {
    let mut c = Custodian::start_with(Options {
        log_level: "trace".into(),
        log_format: "json".into(),
        release_per_second: 0.1,
        release_burst: 5.0,
        ..Options::default()
    });
    let owner = c.pki.alice.id.to_string();
    let enroller = c.client(&c.pki.enroller);
    let alice = c.client(&c.pki.alice);
    let envs: Vec<_> = [16usize, 32, 33, 300, 5000]
        .iter()
        .map(|n| c.envelope(*n, 1))
        .collect();
    for e in &envs {
        enroller.deposit(&owner, &e.encode()).await.unwrap();
    }
    // Repeat and conflict.
    enroller.deposit(&owner, &envs[0].encode()).await.unwrap();
    let mut conflicting = envs[1].clone();
    conflicting.salt.0[0] ^= 1;
    c.forbid(needles_for_envelope(&conflicting));
    assert_refused(
        enroller.deposit(&owner, &conflicting.encode()).await,
        409,
        "different_shard_stored",
    );
    // A tampered blob.
    let db = c.db();
    let id = &envs[2].secret_id.as_bytes()[..];
    let mut blob: Vec<u8> = db
        .query_row("SELECT blob FROM shards WHERE secret_id = ?1", [id], |r| {
            r.get(0)
        })
        .unwrap();
    blob[70] ^= 0x20;
    db.execute(
        "UPDATE shards SET blob = ?2 WHERE secret_id = ?1",
        rusqlite::params![id, blob],
    )
    .unwrap();
    drop(db);
    // Releases (five: the burst), a failing one among them, then the rate limit;
    // not-owner and wrong roles.
    for e in [&envs[0], &envs[1], &envs[3]] {
        alice.release(&e.secret_id, None).await.unwrap();
    }
    let (status, _) = alice
        .request(
            Method::GET,
            &format!("/v1/shards/{}", envs[2].secret_id),
            None,
        )
        .await
        .unwrap();
    assert_eq!(status.as_u16(), 500);
    alice.release(&envs[4].secret_id, None).await.unwrap();
    assert_refused(
        alice.release(&envs[4].secret_id, None).await,
        429,
        "rate_limited",
    );
    let bob = c.client(&c.pki.bob);
    assert_refused(
        bob.release(&envs[0].secret_id, None).await,
        404,
        "not_found",
    );
    assert_refused(
        c.client(&c.pki.admin)
            .release(&envs[0].secret_id, None)
            .await,
        403,
        "role_not_allowed",
    );
    assert_refused(
        c.client(&c.pki.alice)
            .deposit(&owner, &envs[0].encode())
            .await,
        403,
        "role_not_allowed",
    );
    // Bad bodies that carry a real envelope.
    let b64 = B64.encode(&envs[4].encode()[..]);
    for body in [
        format!("{{\"owner\":\"{owner}\",\"envelope\":\"{b64}\",\"extra\":1}}"),
        format!("{{\"owner\":\"spiffe://example.test/admin/x\",\"envelope\":\"{b64}\"}}"),
        format!("{{\"owner\":\"{owner}\",\"envelope\":\"{b64}!\"}}"),
        format!("{{\"owner\":\"{owner}\",\"envelope\":\"{b64}\""),
        format!(
            "{{\"owner\":\"{owner}\",\"envelope\":\"{}\"}}",
            &b64[..b64.len() - 8]
        ),
    ] {
        let (status, bytes) = enroller
            .request(Method::PUT, "/v1/shards", Some(body.into_bytes()))
            .await
            .unwrap();
        assert_eq!(status.as_u16(), 400);
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let hits = scan(&text, &needles_for_envelope(&envs[4]));
        assert!(hits.is_empty(), "error body carries the envelope: {hits:?}");
    }
    // Oversized body made of an envelope repeated.
    let big = format!(
        "{{\"owner\":\"{owner}\",\"envelope\":\"{}\"}}",
        b64.repeat(40)
    );
    let (status, _) = enroller
        .request(Method::PUT, "/v1/shards", Some(big.into_bytes()))
        .await
        .unwrap();
    assert_eq!(status.as_u16(), 413);
    // Handshake refusals.
    let other = Pki::new("example.test");
    let _ = c
        .client_with(c.pki.client_tls(&other.alice))
        .health()
        .await
        .unwrap_err();
    let _ = c
        .client_with(c.pki.anonymous_tls())
        .health()
        .await
        .unwrap_err();
    // Listing, delete, health, metrics.
    let admin = c.client(&c.pki.admin);
    admin.list(None, 100).await.unwrap();
    admin.delete(&envs[1].secret_id, None).await.unwrap();
    admin.health().await.unwrap();
    admin
        .request(Method::GET, "/v1/metrics", None)
        .await
        .unwrap();
    get_plain(c.health, "/health").unwrap();
    get_plain(c.health, "/metrics").unwrap();
    // Graceful stop, then the offline commands.
    drop((enroller, alice, bob, admin));
    tokio::task::block_in_place(|| {
        assert!(c.stop().unwrap().success());
        assert!(c.audit_verify().status.success());
        assert!(c.run(&["rotate"]).unwrap().status.success());
        c.start().unwrap();
    });
    let got = c
        .client(&c.pki.alice)
        .release(&envs[0].secret_id, None)
        .await
        .unwrap();
    assert_eq!(&got.envelope[..], &envs[0].encode()[..]);

    // The logs are real and detailed: every kind of event is there.
    let all: String = c.logs().into_iter().map(|(_, t)| t).collect();
    for event in [
        "deposit stored",
        "released",
        "refused",
        "TLS handshake refused",
        "unseal failed",
        "deleted",
        "all connections drained",
        "audit log intact",
    ] {
        assert!(all.contains(event), "no {event:?} in the logs");
    }
    // ... and none of them, nor the audit table, holds a secret.
    let hits = c.scan_logs();
    assert!(
        hits.is_empty(),
        "secret material in the logs:\n{}",
        describe(&hits)
    );
    let audit = format!("{:?}", c.audit());
    let hits = scan(&audit, &c.all_needles());
    assert!(
        hits.is_empty(),
        "secret material in the audit table:\n{}",
        describe(&hits)
    );
    c.finish();
}
