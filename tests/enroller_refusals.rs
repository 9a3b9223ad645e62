//! Every refusal of the enroller, over real processes (custodians on SoftHSM2 and swtpm,
//! the enroller on its own SoftHSM2 token), each with its own reason, and the success
//! that must follow only when it should.
//!
//! The tests of this file share one cluster (3 custodians, threshold 2) while any of them
//! runs; each uses its own user names. All logins come from 127.0.0.1, one source, so the
//! failures of the whole file stay under the per-source budget (30 in 15 minutes).

use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use base64::Engine;
use serde_json::json;
use testkit::clock::align_to_second;
use testkit::cluster::{user_id, TRUST_DOMAIN};
use testkit::enroller::{EnrollerApi, UserKey, GOOD_PASSWORD};
use testkit::envelope::random_bytes;
use testkit::http::Reply;
use testkit::totp;
use testkit::{Backend, Cluster};

struct Fixture {
    cluster: Cluster,
    enroller: EnrollerApi,
}

/// The shared cluster: made by the first test that needs it, dropped (processes stopped,
/// files removed) with the last one that holds it.
fn fixture() -> Arc<Fixture> {
    static SHARED: Mutex<Weak<Fixture>> = Mutex::new(Weak::new());
    let mut shared = SHARED.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(f) = shared.upgrade() {
        return f;
    }
    let cluster = Cluster::with_enroller(
        &[Backend::SoftHsm, Backend::Tpm, Backend::SoftHsm],
        &[],
        2,
        // The back-off after 3 failures is capped at 1 s so that the lock after 10 is
        // reached in seconds rather than minutes; its shape is tested all the same.
        &[("ENROLLER_LIMITS_BACKOFF_MAX_SECONDS", "1")],
    );
    // The user-CA test opens the enroller's token in this process: SoftHSM reads
    // SOFTHSM2_CONF once, when it is loaded. Set here, while every other test of this
    // file waits on the lock above.
    if let Some(conf) = cluster
        .enroller
        .as_ref()
        .and_then(|n| n.env_var("SOFTHSM2_CONF"))
    {
        std::env::set_var("SOFTHSM2_CONF", conf);
    }
    let enroller = cluster.enroller_api().unwrap();
    let f = Arc::new(Fixture { cluster, enroller });
    *shared = Arc::downgrade(&f);
    f
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

#[test]
fn a_wrong_password_and_an_unknown_user_get_the_same_refusal() {
    let f = fixture();
    let e = &f.enroller;
    e.new_user("bob", GOOD_PASSWORD, false);
    let key = UserKey::new();

    let wrong = e.login("bob", "correct horse battery stapler", None, &key);
    assert_eq!(
        wrong.refusal(),
        (401, "invalid_credentials"),
        "{:?}",
        wrong.body
    );
    let unknown = e.login("nobody", GOOD_PASSWORD, None, &key);
    assert_eq!(unknown.refusal(), (401, "invalid_credentials"));
    assert_eq!(
        wrong.raw, unknown.raw,
        "nothing tells a wrong password from a user that does not exist"
    );
    assert_eq!(wrong.header("retry-after"), None);

    // The right password works after one failure, and the certificate names the user.
    let (tls, r) = e.session("bob", GOOD_PASSWORD, None, &key);
    assert_eq!(r.body["identity"], user_id("bob"));
    let list = e.with(tls).get("/v1/enrollments");
    assert_eq!((list.status, list.body.clone()), (200, json!([])));
}

#[test]
fn totp_codes_are_required_checked_and_single_use() {
    let f = fixture();
    let e = &f.enroller;
    let secret = e
        .new_user("carol", GOOD_PASSWORD, true)
        .expect("TOTP secret");
    let key = UserKey::new();

    let r = e.login("carol", GOOD_PASSWORD, None, &key);
    assert_eq!(r.refusal(), (401, "totp_required"));

    let step = totp::step_now();
    let valid: Vec<String> = (step - 1..=step + 2)
        .map(|s| totp::code(&secret, s))
        .collect();
    let wrong = (0..1_000_000u32)
        .map(|n| format!("{:06}", (n * 7919 + 123_457) % 1_000_000))
        .find(|c| !valid.contains(c))
        .expect("a wrong code");
    let r = e.login("carol", GOOD_PASSWORD, Some(&wrong), &key);
    assert_eq!(r.refusal(), (401, "invalid_totp"));
    let r = e.login("carol", GOOD_PASSWORD, Some("12a456"), &key);
    assert_eq!(r.refusal(), (401, "invalid_totp"), "not six digits");

    let code = totp::code(&secret, step);
    e.session("carol", GOOD_PASSWORD, Some(&code), &key);
    let replay = e.login("carol", GOOD_PASSWORD, Some(&code), &key);
    assert_eq!(replay.refusal(), (401, "totp_replayed"));

    // A code that was never used (the next step, inside the drift window) still works.
    e.session(
        "carol",
        GOOD_PASSWORD,
        Some(&totp::code(&secret, step + 1)),
        &key,
    );
    // A right code with a wrong password is a wrong password.
    let r = e.login(
        "carol",
        "correct horse battery stapler",
        Some(&totp::code(&secret, step + 2)),
        &key,
    );
    assert_eq!(r.refusal(), (401, "invalid_credentials"));
}

#[test]
fn invitations_expire_are_single_use_and_belong_to_one_name() {
    let f = fixture();
    let e = &f.enroller;

    let short = e.invite("dave", Some(1));
    std::thread::sleep(Duration::from_millis(2100));
    let r = e.register("dave", &short, GOOD_PASSWORD, false);
    assert_eq!(r.refusal(), (403, "invitation_expired"), "{:?}", r.body);

    let code = e.invite("dave", None);
    let r = e.register("erin", &code, GOOD_PASSWORD, false);
    assert_eq!(r.refusal(), (403, "invitation_unknown"), "bound to dave");
    let r = e.register("dave", "AAAAAAAAAAAAAAAAAAAAAAAA", GOOD_PASSWORD, false);
    assert_eq!(r.refusal(), (403, "invitation_unknown"));

    let r = e.register("dave", &code, GOOD_PASSWORD, false);
    assert_eq!(r.status, 201, "{:?}", r.body);
    let r = e.register("dave", &code, GOOD_PASSWORD, false);
    assert_eq!(r.refusal(), (403, "invitation_used"));
    let r = e.register("dave", &short, GOOD_PASSWORD, false);
    assert_eq!(r.refusal(), (403, "invitation_expired"), "still expired");

    // A fresh invitation does not take over an existing account.
    let again = e.invite("dave", None);
    let r = e.register("dave", &again, "another fine passphrase", false);
    assert_eq!(r.refusal(), (409, "user_exists"));
    let r = e.login("dave", "another fine passphrase", None, &UserKey::new());
    assert_eq!(r.refusal(), (401, "invalid_credentials"));
    e.session("dave", GOOD_PASSWORD, None, &UserKey::new());
}

#[test]
fn weak_passwords_are_refused_with_their_reason() {
    let f = fixture();
    let e = &f.enroller;
    let code = e.invite("gwen", None);
    let long = "x7".repeat(150);
    for (password, reason) in [
        ("short-pw-1", "password_too_short"),
        ("gwen-likes-long-walks", "password_contains_name"),
        ("GWEN-LIKES-LONG-WALKS", "password_contains_name"),
        ("Password1234", "password_guessable"),
        ("aaaaaaaaaaaaaaaa", "password_guessable"),
        ("abcdefghijklmnop", "password_guessable"),
        ("9876543210987", "password_guessable"),
        ("abcdeabcdeabcde", "password_guessable"),
        (long.as_str(), "password_too_long"),
    ] {
        let r = e.register("gwen", &code, password, false);
        assert_eq!(r.refusal(), (400, reason), "{password:?}");
    }
    // None of that spent the invitation.
    let r = e.register("gwen", &code, "Tr0ub4dor&3-extra", false);
    assert_eq!(r.status, 201, "{:?}", r.body);
    e.session("gwen", "Tr0ub4dor&3-extra", None, &UserKey::new());
}

#[test]
fn failures_back_off_then_lock_until_an_admin_unlocks() {
    let f = fixture();
    let e = &f.enroller;
    e.new_user("henry", GOOD_PASSWORD, false);
    e.new_user("ivy", GOOD_PASSWORD, false);
    let key = UserKey::new();
    let wrong = "not henry's passphrase";

    for n in 1..=3 {
        if n == 3 {
            // The enroller counts whole seconds: keep the third failure and the next
            // attempt inside one second, so that the 1 s wait has not passed yet.
            align_to_second();
        }
        let r = e.login("henry", wrong, None, &key);
        assert_eq!(r.refusal(), (401, "invalid_credentials"));
    }
    // After three failures, even the right password must wait.
    let r = e.login("henry", GOOD_PASSWORD, None, &key);
    assert_eq!(r.refusal(), (429, "retry_later"), "{:?}", r.body);
    let wait: u64 = r
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .expect("seconds");
    assert_eq!(wait, 1, "1 s after the third failure");

    // Wrong passwords, each after waiting as told, up to the tenth failure.
    let attempt = |password: &str| loop {
        let r = e.login("henry", password, None, &key);
        if r.refusal() == (429, "retry_later") {
            let s: u64 = r
                .header("retry-after")
                .expect("Retry-After")
                .parse()
                .unwrap();
            assert!((1..=1).contains(&s), "capped at 1 s here: {s}");
            std::thread::sleep(Duration::from_millis(s * 1000 + 20));
            continue;
        }
        break r;
    };
    for n in 4..=9 {
        let r = attempt(wrong);
        assert_eq!(r.refusal(), (401, "invalid_credentials"), "failure {n}");
    }
    let r = attempt(wrong);
    assert_eq!(
        r.refusal(),
        (401, "account_locked"),
        "the tenth failure locks"
    );
    let r = attempt(GOOD_PASSWORD);
    assert_eq!(
        r.refusal(),
        (403, "account_locked"),
        "locked: the right password too"
    );

    let users = e.admin.get("/v1/admin/users");
    let henry = users
        .body
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["name"] == "henry")
        .cloned();
    assert_eq!(
        henry,
        Some(json!({"name": "henry", "locked": true, "failures": 10, "totp": false}))
    );

    // Only an admin unlocks.
    let (ivy_tls, _) = e.session("ivy", GOOD_PASSWORD, None, &UserKey::new());
    let r = e
        .with(ivy_tls)
        .post("/v1/admin/users/henry/unlock", &json!({}));
    assert_eq!(r.refusal(), (403, "role_not_allowed"));
    let r = e.anon.post("/v1/admin/users/henry/unlock", &json!({}));
    assert_eq!(r.refusal(), (401, "client_certificate_required"));
    let r = e.admin.post("/v1/admin/users/nobody/unlock", &json!({}));
    assert_eq!(r.refusal(), (404, "no_such_user"));
    let r = attempt(GOOD_PASSWORD);
    assert_eq!(r.refusal(), (403, "account_locked"), "still locked");

    let r = e.admin.post("/v1/admin/users/henry/unlock", &json!({}));
    assert_eq!(r.status, 200, "{:?}", r.body);
    let r = attempt(GOOD_PASSWORD);
    assert_eq!(r.status, 200, "unlocked: {:?}", r.body);
    let r = e.login("henry", wrong, None, &key);
    assert_eq!(
        r.refusal(),
        (401, "invalid_credentials"),
        "counting from zero again"
    );
}

/// A certificate for `spiffe://<td>/<role>/<name>` signed by the enroller's user CA key
/// (in its token) with `user_ca_pem` as issuer: what a thief of the user CA could make.
/// Returns the chain (leaf, user CA) and the leaf's key, as PEM.
fn mint_through_user_ca(
    token: &enroller::token::Token,
    user_ca_pem: &str,
    role: &str,
    name: &str,
) -> (String, String) {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = rcgen::CertificateParams::default();
    params.subject_alt_names = vec![rcgen::SanType::URI(
        format!("spiffe://{TRUST_DOMAIN}/{role}/{name}")
            .try_into()
            .unwrap(),
    )];
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
    params.use_authority_key_identifier_extension = true;
    let signer = enroller::token::UserCaKey::new(token);
    let issuer = rcgen::Issuer::from_ca_cert_pem(user_ca_pem, &signer).unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    (format!("{}{user_ca_pem}", cert.pem()), key.serialize_pem())
}

/// The enroller's token, opened in this process (see [`fixture`]), and the user CA
/// certificate.
fn user_ca(cluster: &Cluster) -> (enroller::token::Token, String) {
    let profile = match hsm::Profile::load(&cluster.enroller.as_ref().unwrap().profile).unwrap() {
        hsm::Profile::Pkcs11(p) => p,
        _ => panic!("the enroller's token is PKCS#11"),
    };
    let token = enroller::token::Token::open(&profile).expect("the enroller's token");
    let user_ca = std::fs::read_to_string(cluster.pki.join("user-ca.pem")).unwrap();
    (token, user_ca)
}

const SERVICE_IDENTITIES: [(&str, &str); 3] = [
    ("admin", "mallory"),
    ("custodian", "c1"),
    ("enroller", "main"),
];

fn tls_of(ca: &[u8], (chain, key): (String, String)) -> Arc<certs::rustls::ClientConfig> {
    Arc::new(certs::tls::client_config(ca, chain.as_bytes(), key.as_bytes()).unwrap())
}

#[test]
fn services_cannot_enroll_and_the_user_ca_cannot_make_service_identities_at_the_enroller() {
    let f = fixture();
    let (e, cluster) = (&f.enroller, &f.cluster);
    let kind = json!({"kind": "p256"});

    // Certificates straight from the CA, but not a user's.
    let r = e.admin.post("/v1/enroll", &kind);
    assert_eq!(r.refusal(), (403, "role_not_allowed"), "admin");
    assert_eq!(
        e.admin.get("/v1/enrollments").refusal(),
        (403, "role_not_allowed")
    );
    for (role, name) in [("custodian", "c1"), ("enroller", "main")] {
        let (cert, key) = cluster.issue(role, name).unwrap();
        let c = e.with(cluster.client_tls(&cert, &key).unwrap());
        assert_eq!(
            c.post("/v1/enroll", &kind).refusal(),
            (403, "role_not_allowed"),
            "{role}"
        );
    }
    let r = e.anon.post("/v1/enroll", &kind);
    assert_eq!(r.refusal(), (401, "client_certificate_required"));

    // The user CA is an intermediate of the trust domain's CA whose key is in the
    // enroller's token. Sign with that very key, as a thief of the token could.
    let (token, user_ca_pem) = user_ca(cluster);
    // Control: a user identity made this way is accepted, so the signing itself is sound.
    let user = tls_of(
        &e.ca,
        mint_through_user_ca(&token, &user_ca_pem, "user", "minted"),
    );
    let r = e.with(user).get("/v1/enrollments");
    assert_eq!((r.status, r.body.clone()), (200, json!([])));

    for (role, name) in SERVICE_IDENTITIES {
        let tls = tls_of(
            &e.ca,
            mint_through_user_ca(&token, &user_ca_pem, role, name),
        );
        let at_enroller = e.with(tls).try_call(
            "POST",
            "/v1/admin/invitations",
            Some(&json!({"name": "zoe"})),
        );
        assert!(
            at_enroller.is_err(),
            "{role}/{name} through the user CA reached the enroller: {:?}",
            at_enroller.map(|r| (r.status, r.body))
        );
    }
    let log = cluster.enroller.as_ref().unwrap().log_text();
    assert!(
        log.contains("service_identity_not_from_ca"),
        "the enroller's log names the refusal"
    );
}

#[test]
fn the_user_ca_cannot_make_service_identities_at_the_custodians() {
    let f = fixture();
    let (e, cluster) = (&f.enroller, &f.cluster);
    let (token, user_ca_pem) = user_ca(cluster);
    let rt = rt();
    for (role, name) in SERVICE_IDENTITIES {
        let tls = tls_of(
            &e.ca,
            mint_through_user_ca(&token, &user_ca_pem, role, name),
        );
        for (i, node) in cluster.nodes.iter().enumerate() {
            let c = cluster.client(i, tls.clone()).unwrap();
            let listed = rt.block_on(c.list(None, 10));
            assert!(
                listed.is_err(),
                "{role}/{name} through the user CA listed shards at {}",
                node.name
            );
            let deposited = rt.block_on(c.deposit(&user_id("zoe"), b"not an envelope"));
            assert!(
                matches!(
                    deposited,
                    Err(mtls::Error::Handshake { .. } | mtls::Error::Transport { .. })
                ),
                "{role}/{name} at {}: the connection must be refused, got {:?}",
                node.name,
                deposited.map(|_| ()).map_err(|e| e.to_string())
            );
        }
    }
    std::thread::sleep(Duration::from_millis(200));
    for node in &cluster.nodes {
        assert!(
            node.log_text().contains("service_identity_not_from_ca"),
            "{}'s log does not name the refusal",
            node.name
        );
    }
}

#[test]
fn a_10_kib_secret_comes_back_byte_for_byte_and_users_see_only_their_own() {
    let f = fixture();
    let (e, cluster) = (&f.enroller, &f.cluster);
    e.new_user("kate", GOOD_PASSWORD, false);
    e.new_user("liam", GOOD_PASSWORD, false);
    let (kate_tls, _) = e.session("kate", GOOD_PASSWORD, None, &UserKey::new());
    let (liam_tls, _) = e.session("liam", GOOD_PASSWORD, None, &UserKey::new());
    let (kate, liam) = (e.with(kate_tls.clone()), e.with(liam_tls.clone()));
    let b64 = base64::engine::general_purpose::STANDARD;

    let r = kate.post("/v1/enroll", &json!({"kind": "secret", "secret": ""}));
    assert_eq!(r.refusal(), (400, "invalid_secret_length"));
    let r = kate.post(
        "/v1/enroll",
        &json!({"kind": "secret", "secret": "not base64!"}),
    );
    assert_eq!(r.refusal(), (400, "invalid_secret_encoding"));

    let secret = random_bytes(10 * 1024);
    let enr = kate.post(
        "/v1/enroll",
        &json!({"kind": "secret", "secret": b64.encode(&secret)}),
    );
    assert_eq!(enr.status, 201, "{:?}", enr.body);
    assert_eq!(enr.body["public_key"], json!(null));
    let kate_id = enr.body["secret_id"].as_str().unwrap().to_owned();
    let mk = e.manifest_key();
    let rt = rt();
    // Any two of the three (SoftHSM2 and swtpm custodians both take part), and all three.
    for which in [&[0, 1][..], &[1, 2], &[0, 2], &[0, 1, 2]] {
        let back = rt.block_on(cluster.recover(&kate_tls, which, &enr.body, &mk));
        assert!(back == secret, "recovered from {which:?} differs");
    }

    let enr2 = liam.post("/v1/enroll", &json!({"kind": "p256"}));
    assert_eq!(enr2.status, 201, "{:?}", enr2.body);
    let liam_id = enr2.body["secret_id"].as_str().unwrap().to_owned();

    let ids = |r: Reply| -> Vec<String> {
        assert_eq!(r.status, 200);
        r.body
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x["secret_id"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(ids(kate.get("/v1/enrollments")), vec![kate_id.clone()]);
    assert_eq!(ids(liam.get("/v1/enrollments")), vec![liam_id.clone()]);
    let r = kate.get(&format!("/v1/enrollments/{liam_id}"));
    assert_eq!(r.refusal(), (404, "not_found"), "another user's enrollment");
    let r = liam.get(&format!("/v1/enrollments/{liam_id}"));
    assert_eq!((r.status, r.body["kind"].as_str()), (200, Some("p256")));

    // Exactly one shard per custodian each, and another user's shard is not released.
    let liam_sid: shard::SecretId = liam_id.parse().unwrap();
    for (i, node) in cluster.nodes.iter().enumerate() {
        assert_eq!(
            rt.block_on(cluster.shards_of(i, &user_id("kate"))),
            vec![kate_id.clone()],
            "{}",
            node.name
        );
        let c = cluster.client(i, kate_tls.clone()).unwrap();
        match rt.block_on(c.release(&liam_sid, None)) {
            Err(mtls::Error::Refused { status, .. }) => {
                assert!(status.as_u16() == 403 || status.as_u16() == 404, "{status}")
            }
            Err(other) => panic!("{}: {other}", node.name),
            Ok(_) => panic!("{} released liam's shard to kate", node.name),
        }
    }
}
