//! Seal/unseal rate of the PKCS#11 backend beside the raw SoftHSM rate, same run.
//!
//! ```text
//! cargo bench -p hsm --bench pkcs11_seal --features testing
//! ```
//!
//! Starts its own SoftHSM token. "Raw" is the device doing the same cryptographic
//! work on one open, logged-in session with a session key and nothing around it:
//! `C_EncryptInit`+`C_Encrypt` (AES-GCM, 12-byte IV, 58-byte AAD like a blob header)
//! and `C_DecryptInit`+`C_Decrypt`; for CBC+HMAC, AES-CBC encryption of the padded
//! shard plus an HMAC `C_Sign`, and `C_Verify` plus AES-CBC decryption. "Backend" is
//! [`Pkcs11Sealer::seal`] / [`Sealer::unseal`] with everything they do (header,
//! context digest, random IV, pool, checks). Raw and backend alternate in 20 short
//! slices so that other load on the machine hits both alike; `BENCH_SECS` sets the
//! time per side and measurement (default 2 s). The two-thread row runs each side
//! once for the whole period.

use std::hint::black_box;
use std::time::{Duration, Instant};

use cryptoki::mechanism::aead::GcmParams;
use cryptoki::mechanism::Mechanism as Ck;
use cryptoki::object::{Attribute, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use cryptoki::types::Ulong;
use hsm::pkcs11::Pkcs11Sealer;
use hsm::testing::softhsm::SoftHsm;
use hsm::{Mechanism, SealContext, Sealer};
use shard::SecretId;

struct Settings {
    /// Time each side gets per measurement.
    total: Duration,
    /// Number of alternating slices the time is cut into.
    slices: u32,
}

/// Runs `f` for about `time`; returns (operations, seconds).
fn run_for(time: Duration, f: &mut impl FnMut()) -> (u64, f64) {
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < time {
        for _ in 0..8 {
            f();
        }
        n += 8;
    }
    (n, start.elapsed().as_secs_f64())
}

/// Operations per second of `f` over `time`, after a warm-up.
fn rate(time: Duration, mut f: impl FnMut()) -> f64 {
    for _ in 0..20 {
        f();
    }
    let (n, secs) = run_for(time, &mut f);
    n as f64 / secs
}

/// The row `name`: raw and backend rates, measured in alternating short slices so that
/// load from elsewhere on the machine hits both sides alike.
fn compare(s: &Settings, name: String, mut raw: impl FnMut(), mut backend: impl FnMut()) -> Row {
    for _ in 0..20 {
        raw();
        backend();
    }
    let slice = s.total / s.slices;
    let (mut raw_n, mut raw_t, mut be_n, mut be_t) = (0u64, 0f64, 0u64, 0f64);
    for _ in 0..s.slices {
        let (n, t) = run_for(slice, &mut raw);
        raw_n += n;
        raw_t += t;
        let (n, t) = run_for(slice, &mut backend);
        be_n += n;
        be_t += t;
    }
    Row {
        name,
        raw: raw_n as f64 / raw_t,
        backend: be_n as f64 / be_t,
    }
}

fn session_key(session: &Session, mechanism: Ck<'_>, key_type: KeyType, mac: bool) -> ObjectHandle {
    session
        .generate_key(
            &mechanism,
            &[
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::KeyType(key_type),
                Attribute::ValueLen(Ulong::new(32)),
                Attribute::Token(false),
                Attribute::Private(true),
                Attribute::Sensitive(true),
                Attribute::Extractable(false),
                Attribute::Encrypt(!mac),
                Attribute::Decrypt(!mac),
                Attribute::Sign(mac),
                Attribute::Verify(mac),
            ],
        )
        .expect("session key")
}

fn ctx() -> SealContext {
    SealContext {
        custodian_id: "bench-custodian".into(),
        secret_id: SecretId::from_bytes([7; 16]),
        index: 1,
        epoch: 1,
    }
}

struct Row {
    name: String,
    raw: f64,
    backend: f64,
}

fn main() {
    let settings = Settings {
        total: Duration::from_secs_f64(
            std::env::var("BENCH_SECS")
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(2.0),
        ),
        slices: 20,
    };
    let token = SoftHsm::start().expect("start SoftHSM");
    let gcm = Pkcs11Sealer::open(&token.profile(Mechanism::AesGcm)).expect("open");
    gcm.provision().expect("provision");
    let mut cbc_profile = token.profile(Mechanism::AesCbcPadHmac);
    cbc_profile.key_label = "bench-cbc".into();
    let cbc = Pkcs11Sealer::open(&cbc_profile).expect("open");
    cbc.provision().expect("provision");

    let raw = token.user_session().expect("raw session");
    let aes = session_key(&raw, Ck::AesKeyGen, KeyType::AES, false);
    let hmac = session_key(&raw, Ck::GenericSecretKeyGen, KeyType::GENERIC_SECRET, true);
    let aad = [0x33u8; 58];

    let mut rows = Vec::new();
    for size in [100usize, 4096] {
        let data: Vec<u8> = (0..size).map(|i| i as u8).collect();
        let c = ctx();

        // --- AES-GCM ---
        let mut counter = 0u64;
        let mut gcm_iv = move || {
            counter += 1;
            let mut iv = [0u8; 12];
            iv[4..].copy_from_slice(&counter.to_be_bytes());
            iv
        };
        rows.push(compare(
            &settings,
            format!("aes-gcm          seal   {size:>5} B"),
            || {
                let mut iv = gcm_iv();
                let p = GcmParams::new(&mut iv, &aad, Ulong::new(128)).unwrap();
                black_box(raw.encrypt(&Ck::AesGcm(p), aes, &data).unwrap());
            },
            || {
                black_box(gcm.seal(&c, &data).unwrap());
            },
        ));
        let mut iv0 = [9u8; 12];
        let ct = raw
            .encrypt(
                &Ck::AesGcm(GcmParams::new(&mut iv0, &aad, Ulong::new(128)).unwrap()),
                aes,
                &data,
            )
            .unwrap();
        let blob = gcm.seal(&c, &data).unwrap();
        rows.push(compare(
            &settings,
            format!("aes-gcm          unseal {size:>5} B"),
            || {
                let mut iv = [9u8; 12];
                let p = GcmParams::new(&mut iv, &aad, Ulong::new(128)).unwrap();
                black_box(raw.decrypt(&Ck::AesGcm(p), aes, &ct).unwrap());
            },
            || {
                black_box(gcm.unseal(&c, &blob).unwrap());
            },
        ));

        // --- AES-CBC (PKCS#7 padding, as the backend pads) + HMAC-SHA-256 ---
        let mut padded = data.clone();
        let pad = 16 - data.len() % 16;
        padded.resize(data.len() + pad, pad as u8);
        rows.push(compare(
            &settings,
            format!("aes-cbc-pad-hmac seal   {size:>5} B"),
            || {
                let ct = raw.encrypt(&Ck::AesCbc([5; 16]), aes, &padded).unwrap();
                black_box(raw.sign(&Ck::Sha256Hmac, hmac, &ct).unwrap());
            },
            || {
                black_box(cbc.seal(&c, &data).unwrap());
            },
        ));
        let ct = raw.encrypt(&Ck::AesCbc([5; 16]), aes, &padded).unwrap();
        let tag = raw.sign(&Ck::Sha256Hmac, hmac, &ct).unwrap();
        let blob = cbc.seal(&c, &data).unwrap();
        rows.push(compare(
            &settings,
            format!("aes-cbc-pad-hmac unseal {size:>5} B"),
            || {
                raw.verify(&Ck::Sha256Hmac, hmac, &ct, &tag).unwrap();
                black_box(raw.decrypt(&Ck::AesCbc([5; 16]), aes, &ct).unwrap());
            },
            || {
                black_box(cbc.unseal(&c, &blob).unwrap());
            },
        ));
    }

    // Two threads: the backend's pool against one raw session per thread.
    let data = vec![1u8; 100];
    let threads = 2;
    // Whole-period runs here (threads make slicing awkward); raw first, then backend.
    let raw_total: f64 = std::thread::scope(|sc| {
        let hs: Vec<_> = (0..threads)
            .map(|_| {
                let (token, data, time) = (&token, &data, settings.total);
                sc.spawn(move || {
                    // Sessions are Send, not Sync: each thread opens its own.
                    let s = token.user_session().expect("raw session");
                    let k = session_key(&s, Ck::AesKeyGen, KeyType::AES, false);
                    let mut n = 0u64;
                    rate(time, || {
                        n += 1;
                        let mut iv = [0u8; 12];
                        iv[4..].copy_from_slice(&n.to_be_bytes());
                        let p = GcmParams::new(&mut iv, &aad, Ulong::new(128)).unwrap();
                        black_box(s.encrypt(&Ck::AesGcm(p), k, data).unwrap());
                    })
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).sum()
    });
    let backend_total: f64 = std::thread::scope(|sc| {
        let hs: Vec<_> = (0..threads)
            .map(|_| {
                let (gcm, data, time) = (&gcm, &data, settings.total);
                sc.spawn(move || {
                    let c = ctx();
                    rate(time, || {
                        black_box(gcm.seal(&c, data).unwrap());
                    })
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).sum()
    });
    rows.push(Row {
        name: format!("aes-gcm          seal     100 B, {threads} threads"),
        raw: raw_total,
        backend: backend_total,
    });

    println!(
        "PKCS#11 backend vs raw SoftHSM ({}), {:.1} s per side in {} alternating slices",
        gcm.describe().map(|d| d.device).unwrap_or_default(),
        settings.total.as_secs_f64(),
        settings.slices
    );
    println!(
        "{:<42} {:>12} {:>14} {:>9}",
        "operation", "raw ops/s", "backend ops/s", "ratio"
    );
    for row in &rows {
        println!(
            "{:<42} {:>12.0} {:>14.0} {:>8.1}%",
            row.name,
            row.raw,
            row.backend,
            100.0 * row.backend / row.raw
        );
    }
    let worst = rows
        .iter()
        .map(|r| r.backend / r.raw)
        .fold(f64::INFINITY, f64::min);
    println!(
        "lowest ratio {:.1}% (target >= 70%): {}",
        100.0 * worst,
        if worst >= 0.7 { "met" } else { "NOT met" }
    );
}
