//! No secret reaches a service log. The whole journey runs at log level `debug` (the
//! enroller and every custodian), with refusals on the way: weak and wrong passwords,
//! wrong and replayed TOTP codes. Afterwards every log file is scanned for every secret
//! the test handled, in the encodings a careless log line would use (as is, hex, base64,
//! and pieces of long values). The scanner first proves that it finds each of them when
//! one is planted.

use base64::Engine;
use serde_json::json;
use testkit::enroller::UserKey;
use testkit::envelope::random_bytes;
use testkit::scan::{
    needles_for_bytes, needles_for_code, needles_for_pem, needles_for_text, scan, Needle,
};
use testkit::{totp, Backend, Cluster};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

#[test]
fn no_password_code_key_or_shard_reaches_any_log() {
    let mut cluster = Cluster::with_enroller(
        &[Backend::SoftHsm, Backend::Tpm],
        &[("CUSTODIAN_LOG_LEVEL", "debug")],
        2,
        &[("ENROLLER_LOG_LEVEL", "debug")],
    );
    let e = cluster.enroller_api().unwrap();
    // One entry per secret: the needles of its encodings.
    let mut secrets: Vec<Vec<Needle>> = Vec::new();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();

    // Invitations, one of them never used.
    let code = e.invite("nina", None);
    secrets.push(needles_for_text("invitation code", &code));
    secrets.push(needles_for_text(
        "unused invitation code",
        &e.invite("otto", None),
    ));

    // Registration: refused weak passwords first, then a good one with TOTP.
    for (i, weak) in ["Password1234", "nina-has-a-long-password"]
        .into_iter()
        .enumerate()
    {
        let r = e.register("nina", &code, weak, true);
        assert_eq!(r.status, 400);
        secrets.push(needles_for_text(&format!("weak password {i}"), weak));
    }
    let password = "quartz lantern meadow 4417";
    secrets.push(needles_for_text("password", password));
    let r = e.register("nina", &code, password, true);
    assert_eq!(r.status, 201, "{:?}", r.body);
    let uri = r.body["totp_uri"].as_str().unwrap();
    let totp_secret = totp::secret_of(uri);
    secrets.push(needles_for_bytes("TOTP secret", &totp_secret));
    secrets.push(needles_for_text(
        "TOTP secret (base32)",
        totp::secret_text_of(uri),
    ));

    // Logins: a wrong password, a wrong code, a good one, a replay.
    let key = UserKey::new();
    secrets.push(needles_for_pem(
        "user private key",
        &key.key.serialize_pem(),
    ));
    let wrong_password = "quartz lantern meadow 4418";
    secrets.push(needles_for_text("wrong password", wrong_password));
    let step = totp::step_now();
    let good = totp::code(&totp_secret, step);
    let wrong_code = (0..1_000_000u32)
        .map(|n| format!("{:06}", (n * 7919 + 345_679) % 1_000_000))
        .find(|c| (step - 1..=step + 1).all(|s| *c != totp::code(&totp_secret, s)))
        .unwrap();
    secrets.push(needles_for_code("TOTP code", &good));
    secrets.push(needles_for_code("wrong TOTP code", &wrong_code));
    let r = e.login("nina", wrong_password, Some(&good), &key);
    assert_eq!(r.refusal(), (401, "invalid_credentials"));
    let r = e.login("nina", password, Some(&wrong_code), &key);
    assert_eq!(r.refusal(), (401, "invalid_totp"));
    let (tls, _) = e.session("nina", password, Some(&good), &key);
    let r = e.login("nina", password, Some(&good), &key);
    assert_eq!(r.refusal(), (401, "totp_replayed"));

    // Enrollments: a generated key and an escrowed secret; both recovered.
    let user = e.with(tls.clone());
    let p256 = user.post("/v1/enroll", &json!({"kind": "p256"}));
    assert_eq!(p256.status, 201, "{:?}", p256.body);
    let escrowed = random_bytes(64);
    secrets.push(needles_for_bytes("escrowed secret", &escrowed));
    let opaque = user.post(
        "/v1/enroll",
        &json!({"kind": "secret", "secret": B64.encode(&escrowed)}),
    );
    assert_eq!(opaque.status, 201, "{:?}", opaque.body);
    let mk = e.manifest_key();
    let scalar = rt.block_on(cluster.recover(&tls, &[0, 1], &p256.body, &mk));
    secrets.push(needles_for_bytes("enrolled private key", &scalar));
    assert_eq!(
        rt.block_on(cluster.recover(&tls, &[1, 0], &opaque.body, &mk)),
        escrowed
    );
    let mut ids = Vec::new();
    for enr in [&p256.body, &opaque.body] {
        let id: shard::SecretId = enr["secret_id"].as_str().unwrap().parse().unwrap();
        ids.push(id.to_string());
        for (i, c) in cluster.clients(&tls).iter().enumerate() {
            let r = rt.block_on(c.release(&id, None)).unwrap();
            secrets.push(needles_for_bytes(
                &format!("shard {} of {id}", i + 1),
                &r.envelope,
            ));
        }
    }

    // What the services themselves hold: token PINs and TLS private keys.
    let mut held: std::collections::BTreeMap<String, Vec<Needle>> = Default::default();
    for n in cluster.secrets() {
        let of = n.what.split(" (").next().unwrap_or_default().to_owned();
        held.entry(of).or_default().push(n);
    }
    secrets.extend(held.into_values());

    // Stop everything so that every line is on disk.
    if let Some(n) = cluster.enroller.as_mut() {
        n.stop().unwrap();
    }
    for n in &mut cluster.nodes {
        n.stop().unwrap();
    }
    let logs = cluster.logs();
    let needles: Vec<Needle> = secrets.iter().flatten().cloned().collect();

    // The scanner sees these logs: they are at debug level and name the user and the
    // enrollments.
    let enroller_log = &logs[logs.len() - 1].1;
    assert!(
        enroller_log.contains(" DEBUG "),
        "the enroller logs at debug level"
    );
    assert!(enroller_log.contains("nina"));
    for (name, text) in &logs {
        for id in &ids {
            assert!(text.contains(id.as_str()), "{name} does not mention {id}");
        }
    }
    // And it finds every secret that is planted in one, by what it is only.
    for group in &secrets {
        let n = &group[group.len() / 2];
        let planted = format!(
            "{enroller_log}2026-01-01T00:00:00Z  INFO leak: value={} done\n",
            n.text
        );
        assert!(
            scan(&planted, &needles).contains(&n.what),
            "the scanner misses a planted {}",
            n.what
        );
    }

    let hits: Vec<(String, String)> = logs
        .iter()
        .flat_map(|(name, text)| {
            scan(text, &needles)
                .into_iter()
                .map(move |w| (name.clone(), w))
        })
        .collect();
    assert!(hits.is_empty(), "secrets in logs: {hits:#?}");
    eprintln!(
        "scanned the logs of {} services ({} bytes) for {} secrets ({} strings): none found",
        logs.len(),
        logs.iter().map(|(_, t)| t.len()).sum::<usize>(),
        secrets.len(),
        needles.len()
    );
}
