//! Failures around the enroller, over real processes: a login certificate that expires
//! is refused by the custodians at the TLS handshake; a custodian that is down or hung
//! fails the enrollment clearly (502, the custodian named with its reason), within the
//! deposit deadline, and no shard of it stays anywhere.

use std::sync::Arc;
use std::time::{Duration, Instant};

use certs::rustls::ClientConfig;
use mtls::{Client, Method};
use p256::pkcs8::DecodePublicKey;
use serde_json::{json, Value};
use testkit::clock::{align_to_second, unix, unix_f64};
use testkit::cluster::user_id;
use testkit::enroller::{EnrollerApi, UserKey, GOOD_PASSWORD};
use testkit::http::{Http, Reply};
use testkit::{Backend, Cluster};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// Logs in at the start of a second (the certificate lives about one second) and runs
/// `f` with it at once; tries again when `f` failed and the certificate had already
/// expired (a very slow machine), so the test fails only when a valid one is refused.
/// Returns what `f` returned and the login answer.
fn with_fresh_short_certificate<T>(
    e: &EnrollerApi,
    name: &str,
    key: &UserKey,
    f: impl Fn(&Arc<ClientConfig>) -> Result<T, String>,
) -> (T, Reply) {
    let mut last = String::new();
    for _ in 0..3 {
        align_to_second();
        let (tls, login) = e.session(name, GOOD_PASSWORD, None, key);
        let not_after = login.body["not_after"].as_i64().expect("not_after");
        assert!(
            not_after - unix() <= 1,
            "validity 61 s counted from 60 s back: lives about a second, not until {not_after}"
        );
        match f(&tls) {
            Ok(v) => return (v, login),
            Err(e) if unix_f64() >= not_after as f64 => last = e,
            Err(e) => panic!("refused while still valid: {e}"),
        }
    }
    panic!("the certificate expired before it could be used, three times: {last}");
}

fn short_lived_cluster() -> (Cluster, EnrollerApi) {
    let cluster = Cluster::with_enroller(
        &[Backend::SoftHsm, Backend::Tpm],
        &[],
        2,
        &[("ENROLLER_LIMITS_LOGIN_VALIDITY_SECONDS", "61")],
    );
    let e = cluster.enroller_api().unwrap();
    (cluster, e)
}

fn wait_past(not_after: i64) {
    while unix_f64() < not_after as f64 + 1.2 {
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn refused_at_handshake(r: Result<mtls::Released, mtls::Error>, who: &str) {
    match r {
        Err(mtls::Error::Handshake { .. } | mtls::Error::Transport { .. }) => {}
        Err(other) => panic!("{who}: not refused at the handshake: {other}"),
        Ok(_) => panic!("{who} released a shard for an expired certificate"),
    }
}

#[test]
fn an_expired_login_certificate_is_refused_by_the_custodians_and_the_enroller() {
    let (cluster, e) = short_lived_cluster();
    e.new_user("olga", GOOD_PASSWORD, false);
    let key = UserKey::new();
    let rt = rt();

    // Enroll while the certificate is valid; keep a connection to the enroller open and
    // a TLS session with it that a client could try to resume later.
    let ((enr, resumable, kept), login) = with_fresh_short_certificate(&e, "olga", &key, |tls| {
        let r =
            e.with(tls.clone())
                .try_call("POST", "/v1/enroll", Some(&json!({"kind": "p256"})))?;
        assert_eq!(r.status, 201, "{:?}", r.body);
        let kept = Client::new(e.addr, &e.addr.ip().to_string(), tls.clone()).unwrap();
        let (st, _) = rt
            .block_on(kept.request(Method::GET, "/v1/enrollments", None))
            .map_err(|e| e.to_string())?;
        assert_eq!(st.as_u16(), 200);
        Ok((r.body, tls.clone(), kept))
    });
    let secret_id: shard::SecretId = enr["secret_id"].as_str().unwrap().parse().unwrap();
    let not_after = login.body["not_after"].as_i64().unwrap();
    wait_past(not_after);

    // Expired: a new handshake with it fails at every custodian ...
    let expired = key.tls(&e.ca, &login);
    for (i, node) in cluster.nodes.iter().enumerate() {
        let c = cluster.client(i, expired.clone()).unwrap();
        refused_at_handshake(rt.block_on(c.release(&secret_id, None)), &node.name);
        // TLS 1.3: the client finishes first, then reads the server's alert.
        let raw = Http::new(node.addr, &node.addr.ip().to_string(), expired.clone()).try_call(
            "GET",
            &format!("/v1/shards/{secret_id}"),
            None,
        );
        let err = raw.expect_err("refused");
        assert!(err.contains("CertificateExpired"), "{}: {err}", node.name);
    }
    // ... and at the enroller, also when resuming the session of the valid certificate,
    // and on the connection opened while it was valid.
    for (what, tls) in [("new", &expired), ("resumed", &resumable)] {
        let err = e
            .with(tls.clone())
            .try_call("GET", "/v1/enrollments", None)
            .map(|r| (r.status, r.body))
            .expect_err(what);
        assert!(err.contains("CertificateExpired"), "{what}: {err}");
    }
    let (st, body) = rt
        .block_on(kept.request(Method::GET, "/v1/enrollments", None))
        .expect("an answer on the kept connection");
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        (st.as_u16(), body["reason"].as_str()),
        (401, Some("certificate_expired"))
    );
    for (name, log) in cluster.logs() {
        assert!(
            log.contains("expired_certificate"),
            "{name} does not name the refusal"
        );
    }

    // A fresh certificate recovers the key that was enrolled.
    let mk = e.manifest_key();
    let (recovered, _) = with_fresh_short_certificate(&e, "olga", &key, |tls| {
        Ok(rt.block_on(cluster.recover(tls, &[0, 1], &enr, &mk)))
    });
    let pk = p256::SecretKey::from_slice(&recovered)
        .unwrap()
        .public_key();
    let enrolled = p256::PublicKey::from_public_key_pem(enr["public_key"].as_str().unwrap());
    assert_eq!(Some(pk), enrolled.ok());
}

#[test]
fn an_expired_login_certificate_cannot_resume_or_keep_a_session_at_the_custodians() {
    let (cluster, e) = short_lived_cluster();
    e.new_user("oscar", GOOD_PASSWORD, false);
    let key = UserKey::new();
    let rt = rt();
    let ((enr, resumable, kept), login) = with_fresh_short_certificate(&e, "oscar", &key, |tls| {
        let r =
            e.with(tls.clone())
                .try_call("POST", "/v1/enroll", Some(&json!({"kind": "p256"})))?;
        assert_eq!(r.status, 201, "{:?}", r.body);
        let id: shard::SecretId = r.body["secret_id"].as_str().unwrap().parse().unwrap();
        let kept = cluster.clients(tls);
        for c in &kept {
            rt.block_on(c.release(&id, None))
                .map_err(|e| e.to_string())?;
        }
        Ok((r.body, tls.clone(), kept))
    });
    let secret_id: shard::SecretId = enr["secret_id"].as_str().unwrap().parse().unwrap();
    wait_past(login.body["not_after"].as_i64().unwrap());
    for (i, node) in cluster.nodes.iter().enumerate() {
        let c = cluster.client(i, resumable.clone()).unwrap();
        refused_at_handshake(
            rt.block_on(c.release(&secret_id, None)),
            &format!("{} (resumed session)", node.name),
        );
        assert!(
            rt.block_on(kept[i].release(&secret_id, None)).is_err(),
            "{} released on a connection whose certificate has expired",
            node.name
        );
    }
}

/// The secret ids of `owner` at every custodian.
fn held(rt: &tokio::runtime::Runtime, cluster: &Cluster, owner: &str) -> Vec<Vec<String>> {
    (0..cluster.nodes.len())
        .map(|i| rt.block_on(cluster.shards_of(i, owner)))
        .collect()
}

fn ids(list: &Reply) -> Vec<String> {
    assert_eq!(list.status, 200);
    list.body
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["secret_id"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn a_custodian_down_or_hung_fails_the_enrollment_and_leaves_no_shard() {
    let mut cluster = Cluster::with_enroller(
        &[Backend::SoftHsm, Backend::Tpm, Backend::SoftHsm],
        &[],
        2,
        &[("ENROLLER_LIMITS_DEPOSIT_TIMEOUT_MS", "500")],
    );
    let e = cluster.enroller_api().unwrap();
    e.new_user("pete", GOOD_PASSWORD, false);
    let (tls, _) = e.session("pete", GOOD_PASSWORD, None, &UserKey::new());
    let user = e.with(tls);
    let owner = user_id("pete");
    let rt = rt();
    let enroll = || user.post("/v1/enroll", &json!({"kind": "p256"}));

    // One enrollment while all are up: the enroller now holds open connections to each.
    let r = enroll();
    assert_eq!(r.status, 201, "{:?}", r.body);
    let mut mine = vec![r.body["secret_id"].as_str().unwrap().to_owned()];
    assert_eq!(held(&rt, &cluster, &owner), vec![mine.clone(); 3]);

    // c2 down.
    cluster.nodes[1].stop().unwrap();
    let r = enroll();
    assert_eq!(r.refusal(), (502, "custodians_failed"), "{:?}", r.body);
    assert_eq!(
        r.body["custodians"],
        json!([{"name": "c2", "reason": "unreachable"}])
    );
    for i in [0, 2] {
        assert_eq!(
            rt.block_on(cluster.shards_of(i, &owner)),
            mine,
            "c{}",
            i + 1
        );
    }
    assert_eq!(ids(&user.get("/v1/enrollments")), mine);

    // Back up: enrollment works again.
    cluster.nodes[1].start().unwrap();
    let r = enroll();
    assert_eq!(r.status, 201, "{:?}", r.body);
    mine.push(r.body["secret_id"].as_str().unwrap().to_owned());
    assert_eq!(held(&rt, &cluster, &owner), vec![mine.clone(); 3]);

    // c2 hung (SIGSTOP: its sockets stay open, nothing answers).
    cluster.nodes[1].pause().unwrap();
    let started = Instant::now();
    let r = enroll();
    let took = started.elapsed();
    cluster.nodes[1].resume().unwrap();
    assert_eq!(r.refusal(), (502, "custodians_failed"), "{:?}", r.body);
    assert_eq!(
        r.body["custodians"],
        json!([{"name": "c2", "reason": "timeout"}])
    );
    // Three attempts of 500 ms with 100 + 200 ms between them, and the clean-up.
    assert!(
        took < Duration::from_secs(4),
        "the enrollment took {took:?} with a 500 ms deposit deadline"
    );
    for i in [0, 2] {
        assert_eq!(
            rt.block_on(cluster.shards_of(i, &owner)),
            mine,
            "c{}",
            i + 1
        );
    }

    // Whatever reached c2 before it hung is gone too once it runs again.
    cluster.wait_ready(1).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut at_c2 = Vec::new();
    while Instant::now() < deadline {
        at_c2 = rt.block_on(cluster.shards_of(1, &owner));
        if at_c2 == mine {
            // ... and stays gone.
            std::thread::sleep(Duration::from_secs(2));
            at_c2 = rt.block_on(cluster.shards_of(1, &owner));
            if at_c2 == mine {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(at_c2, mine, "c2 keeps a shard of the failed enrollment");
    assert_eq!(ids(&user.get("/v1/enrollments")), mine);

    // And the cluster still enrolls.
    let r = enroll();
    assert_eq!(r.status, 201, "{:?}", r.body);
    let _: &Value = &r.body;
}
