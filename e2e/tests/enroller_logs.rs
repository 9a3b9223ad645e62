//! No secret reaches a service log. The whole journey runs at log level `debug` (the
//! enroller and every custodian), with refusals on the way: weak and wrong passwords,
//! wrong and replayed TOTP codes. Afterwards every log file is scanned for every secret
//! the test handled, in the encodings a careless log line would use (as is, hex, base64,
//! and pieces of long values). The scanner first proves that it finds each of them when
//! one is planted.

mod enroller_support;

use base64::Engine;
use e2e::Backend;
use enroller_support::*;
use serde_json::json;

/// A secret to look for, by label (the label is what a failure prints, never the value).
struct Needle {
    label: String,
    /// Whole-token match only (short numeric codes, which could otherwise occur inside
    /// other numbers).
    token: bool,
    variants: Vec<String>,
}

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// Strings that would betray `bytes`: hex (both cases) and base64 of the whole, and of
/// aligned 16-byte (hex) and 24-byte (base64) pieces, so that a partial dump is caught.
fn byte_variants(bytes: &[u8]) -> Vec<String> {
    let hex = hex_lower(bytes);
    let b64 = B64.encode(bytes);
    let mut v = vec![hex.to_uppercase(), b64.trim_end_matches('=').to_owned()];
    if bytes.len() > 16 {
        v.extend(
            hex.as_bytes()
                .chunks_exact(32)
                .map(|c| String::from_utf8_lossy(c).into_owned()),
        );
    } else {
        v.push(hex.clone());
    }
    if bytes.len() > 24 {
        v.extend(
            b64.as_bytes()
                .chunks_exact(32)
                .map(|c| String::from_utf8_lossy(c).into_owned()),
        );
    }
    v.push(hex);
    v.push(b64);
    v
}

fn hex_lower(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Needle {
    fn text(label: impl Into<String>, value: &str) -> Needle {
        let mut variants = vec![value.to_owned()];
        variants.extend(byte_variants(value.as_bytes()));
        Needle {
            label: label.into(),
            token: false,
            variants,
        }
    }

    fn bytes(label: impl Into<String>, value: &[u8]) -> Needle {
        Needle {
            label: label.into(),
            token: false,
            variants: byte_variants(value),
        }
    }

    fn code(label: impl Into<String>, value: &str) -> Needle {
        Needle {
            label: label.into(),
            token: true,
            variants: vec![value.to_owned()],
        }
    }

    /// The body lines of a PEM block (each is a piece of the key).
    fn pem(label: impl Into<String>, pem: &str) -> Needle {
        Needle {
            label: label.into(),
            token: false,
            variants: pem
                .lines()
                .filter(|l| !l.starts_with("-----") && l.len() >= 16)
                .map(str::to_owned)
                .collect(),
        }
    }

    fn found_in(&self, text: &str) -> bool {
        self.variants.iter().any(|v| {
            if !self.token {
                return text.contains(v.as_str());
            }
            text.match_indices(v.as_str()).any(|(i, m)| {
                let before = text[..i].chars().next_back();
                let after = text[i + m.len()..].chars().next();
                !before.is_some_and(char::is_alphanumeric)
                    && !after.is_some_and(char::is_alphanumeric)
            })
        })
    }
}

/// `(file, label)` of every needle found in every file.
fn scan(files: &[std::path::PathBuf], needles: &[Needle]) -> Vec<(String, String)> {
    let mut hits = Vec::new();
    for f in files {
        let text = read_text(f);
        for n in needles {
            if n.found_in(&text) {
                hits.push((f.display().to_string(), n.label.clone()));
            }
        }
    }
    hits
}

/// The PIN files named by the profiles in `dir` (`pin_file = "..."`).
fn pins(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    for entry in walk(dir) {
        if entry.extension().is_some_and(|e| e == "toml") {
            let text = read_text(&entry);
            for line in text.lines() {
                if let Some(rest) = line.trim().strip_prefix("pin_file = \"") {
                    let path = rest.trim_end_matches('"');
                    let pin = read_text(std::path::Path::new(path)).trim().to_owned();
                    if !pin.is_empty() {
                        out.push(pin);
                    }
                }
            }
        }
    }
    out
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

#[test]
fn no_password_code_key_or_shard_reaches_any_log() {
    let mut cluster = cluster(
        &[Backend::SoftHsm, Backend::Tpm],
        &[("CUSTODIAN_LOG_LEVEL", "debug")],
        2,
        &[("ENROLLER_LOG_LEVEL", "debug")],
    );
    let e = Enroller::of(&cluster);
    let mut needles = Vec::new();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();

    // Invitations, one of them never used.
    let code = e.invite("nina", None);
    needles.push(Needle::text("invitation code", &code));
    needles.push(Needle::text(
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
        needles.push(Needle::text(format!("weak password {i}"), weak));
    }
    let password = "quartz lantern meadow 4417";
    needles.push(Needle::text("password", password));
    let r = e.register("nina", &code, password, true);
    assert_eq!(r.status, 201, "{:?}", r.body);
    let uri = r.body["totp_uri"].as_str().unwrap();
    let totp = totp_secret_of(uri);
    needles.push(Needle::bytes("TOTP secret", &totp));
    needles.push(Needle::text(
        "TOTP secret (base32)",
        uri.split("secret=")
            .nth(1)
            .unwrap()
            .split('&')
            .next()
            .unwrap(),
    ));

    // Logins: a wrong password, a wrong code, a good one, a replay.
    let key = UserKey::new();
    needles.push(Needle::pem("user private key", &key.key.serialize_pem()));
    let wrong_password = "quartz lantern meadow 4418";
    needles.push(Needle::text("wrong password", wrong_password));
    let step = totp_step();
    let good = totp_code(&totp, step);
    let wrong_code = (0..1_000_000u32)
        .map(|n| format!("{:06}", (n * 7919 + 345_679) % 1_000_000))
        .find(|c| (step - 1..=step + 1).all(|s| *c != totp_code(&totp, s)))
        .unwrap();
    needles.push(Needle::code("TOTP code", &good));
    needles.push(Needle::code("wrong TOTP code", &wrong_code));
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
    needles.push(Needle::bytes("escrowed secret", &escrowed));
    let opaque = user.post(
        "/v1/enroll",
        &json!({"kind": "secret", "secret": B64.encode(&escrowed)}),
    );
    assert_eq!(opaque.status, 201, "{:?}", opaque.body);
    let mk = e.manifest_key();
    let scalar = rt.block_on(recover(&cluster, &tls, &[0, 1], &p256.body, &mk));
    needles.push(Needle::bytes("enrolled private key", &scalar));
    assert_eq!(
        rt.block_on(recover(&cluster, &tls, &[1, 0], &opaque.body, &mk)),
        escrowed
    );
    let mut ids = Vec::new();
    for enr in [&p256.body, &opaque.body] {
        let id: shard::SecretId = enr["secret_id"].as_str().unwrap().parse().unwrap();
        ids.push(id.to_string());
        for (i, c) in custodians(&cluster, &tls).iter().enumerate() {
            let r = rt.block_on(c.release(&id, None)).unwrap();
            needles.push(Needle::bytes(
                format!("shard {} of {id}", i + 1),
                &r.envelope,
            ));
        }
    }

    // What the services themselves hold: token PINs and TLS private keys.
    for (i, pin) in pins(&cluster.dir).into_iter().enumerate() {
        needles.push(Needle::text(format!("token PIN {i}"), &pin));
    }
    for f in walk(&cluster.pki) {
        if f.extension().is_some_and(|x| x == "key") {
            needles.push(Needle::pem(
                format!("TLS key {}", f.file_name().unwrap().to_string_lossy()),
                &read_text(&f),
            ));
        }
    }

    // Stop everything so that every line is on disk.
    if let Some(n) = cluster.enroller.as_mut() {
        n.stop().unwrap();
    }
    for n in &mut cluster.nodes {
        n.stop().unwrap();
    }
    let logs = log_files(&cluster);

    // The scanner sees these logs: they are at debug level and name the user and the
    // enrollments.
    let enroller_log = read_text(&logs[logs.len() - 1]);
    assert!(
        enroller_log.contains(" DEBUG "),
        "the enroller logs at debug level"
    );
    assert!(enroller_log.contains("nina"));
    for f in &logs {
        let text = read_text(f);
        for id in &ids {
            assert!(
                text.contains(id.as_str()),
                "{} does not mention {id}",
                f.display()
            );
        }
    }
    // And it finds every needle that is planted in one, by its label only.
    let planted = cluster.dir.join("planted.log");
    for n in &needles {
        let v = &n.variants[n.variants.len() / 2];
        std::fs::write(
            &planted,
            format!("{enroller_log}2026-01-01T00:00:00Z  INFO leak: value={v} done\n"),
        )
        .unwrap();
        let hits = scan(std::slice::from_ref(&planted), &needles);
        assert!(
            hits.iter().any(|(_, l)| *l == n.label),
            "the scanner misses a planted {}",
            n.label
        );
    }
    std::fs::remove_file(&planted).unwrap();

    let hits = scan(&logs, &needles);
    assert!(hits.is_empty(), "secrets in logs: {hits:#?}");
    eprintln!(
        "scanned {} log files ({} bytes) for {} secrets ({} strings): none found",
        logs.len(),
        logs.iter().map(|f| read_text(f).len()).sum::<usize>(),
        needles.len(),
        needles.iter().map(|n| n.variants.len()).sum::<usize>()
    );
}
