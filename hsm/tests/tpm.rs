//! The TPM 2.0 backend against a real swtpm: one private swtpm per test.

use std::str::FromStr;
use std::sync::Arc;

use hsm::blob::HEADER_LEN;
use hsm::testing::swtpm::{Swtpm, PRIMARY_HANDLE};
use hsm::tpm::{TpmSealer, DIRECT_MAX};
use hsm::{Error, Mechanism, Profile, SealContext, Sealer, MAX_SHARD_LEN};
use shard::SecretId;
use tss_esapi::constants::CapabilityType;
use tss_esapi::handles::{PersistentTpmHandle, TpmHandle};
use tss_esapi::interface_types::dynamic_handles::Persistent;
use tss_esapi::interface_types::resource_handles::Provision;
use tss_esapi::interface_types::session_handles::AuthSession;
use tss_esapi::structures::CapabilityData;
use tss_esapi::tcti_ldr::TctiNameConf;

const KIND_DIRECT: u8 = 1;
const KIND_ENVELOPE: u8 = 2;

fn ctx(index: u8) -> SealContext {
    SealContext {
        custodian_id: "c1".into(),
        secret_id: SecretId::from_bytes([0x42; 16]),
        index,
        epoch: 1,
    }
}

fn shard(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn start() -> (Swtpm, TpmSealer) {
    let tpm = Swtpm::start().expect("swtpm starts");
    let sealer = TpmSealer::open(&tpm.profile()).expect("sealer opens");
    sealer.provision().expect("provision");
    (tpm, sealer)
}

/// A plain ESAPI context on the test's swtpm, for checks from outside the sealer.
fn esapi(tpm: &Swtpm) -> tss_esapi::Context {
    tss_esapi::Context::new(TctiNameConf::from_str(&tpm.tcti()).unwrap()).unwrap()
}

fn handles(tpm: &Swtpm, first: u32) -> Vec<u32> {
    let mut c = esapi(tpm);
    match c
        .get_capability(CapabilityType::Handles, first, 64)
        .unwrap()
        .0
    {
        CapabilityData::Handles(l) => l
            .iter()
            .map(|h| u32::from(*h))
            .filter(|h| h >> 24 == first >> 24)
            .collect(),
        _ => panic!("not a handle list"),
    }
}

fn evict(tpm: &Swtpm, handle: u32) {
    let mut c = esapi(tpm);
    let h = PersistentTpmHandle::new(handle).unwrap();
    let obj = c
        .tr_from_tpm_public(TpmHandle::Persistent(h))
        .expect("persistent primary present before eviction");
    c.execute_with_session(Some(AuthSession::Password), |c| {
        c.evict_control(Provision::Owner, obj, Persistent::Persistent(h))
    })
    .expect("evict");
}

#[test]
fn round_trips_direct_and_envelope_sizes() {
    let (_tpm, s) = start();
    assert_eq!(DIRECT_MAX, 112);
    for (i, len) in [
        1,
        2,
        32,
        DIRECT_MAX - 1,
        DIRECT_MAX,
        DIRECT_MAX + 1,
        96,
        97,
        100,
        128,
        129,
        1000,
        4096,
        65536,
        MAX_SHARD_LEN,
    ]
    .into_iter()
    .enumerate()
    {
        let data = shard(len, i as u8);
        let blob = s.seal(&ctx(1), &data).unwrap();
        let expect_kind = if len <= DIRECT_MAX {
            KIND_DIRECT
        } else {
            KIND_ENVELOPE
        };
        assert_eq!(blob[HEADER_LEN], expect_kind, "kind for {len} bytes");
        let (h, _) = hsm::BlobHeader::decode(&blob).unwrap();
        assert_eq!(h.mechanism, Mechanism::TpmSeal);
        assert_eq!(h.key_version, 1);
        assert_eq!(&s.unseal(&ctx(1), &blob).unwrap()[..], &data[..], "{len}");
        // Fresh salt (and key) per seal.
        assert_ne!(blob, s.seal(&ctx(1), &data).unwrap());
    }
}

#[test]
fn shard_length_limits() {
    let (_tpm, s) = start();
    assert!(matches!(s.seal(&ctx(1), &[]), Err(Error::ShardLength(0))));
    let big = vec![1u8; MAX_SHARD_LEN + 1];
    assert!(matches!(s.seal(&ctx(1), &big), Err(Error::ShardLength(_))));
}

#[test]
fn wrong_context_is_context_mismatch() {
    let (_tpm, s) = start();
    for len in [32, 1000] {
        let blob = s.seal(&ctx(1), &shard(len, 1)).unwrap();
        let others = [
            ctx(2),
            SealContext {
                secret_id: SecretId::from_bytes([0x43; 16]),
                ..ctx(1)
            },
            SealContext {
                custodian_id: "c2".into(),
                ..ctx(1)
            },
            SealContext { epoch: 2, ..ctx(1) },
        ];
        for other in others {
            assert!(
                matches!(s.unseal(&other, &blob), Err(Error::ContextMismatch)),
                "{other:?}"
            );
        }
    }
}

/// Offsets of the areas of a TPM blob body (see hsm/src/tpm/body.rs).
struct Layout {
    salt: usize,
    public: (usize, usize),
    private: (usize, usize),
    ciphertext: Option<(usize, usize)>,
}

fn layout(blob: &[u8]) -> Layout {
    let mut o = HEADER_LEN + 1;
    let salt = o;
    o += 16;
    let area = |o: &mut usize| {
        let len = u16::from_be_bytes([blob[*o], blob[*o + 1]]) as usize;
        let start = *o + 2;
        *o = start + len;
        (start, len)
    };
    let public = area(&mut o);
    let private = area(&mut o);
    let ciphertext = (blob[HEADER_LEN] == KIND_ENVELOPE).then(|| (o + 12 + 4, blob.len() - o - 16));
    Layout {
        salt,
        public,
        private,
        ciphertext,
    }
}

fn flipped(blob: &[u8], at: usize, bit: u8) -> Vec<u8> {
    let mut b = blob.to_vec();
    b[at] ^= 1 << bit;
    b
}

#[test]
fn flipped_bits_give_typed_errors() {
    let (_tpm, s) = start();
    let direct = s.seal(&ctx(1), &shard(64, 3)).unwrap();
    let envelope = s.seal(&ctx(1), &shard(4096, 4)).unwrap();
    for blob in [&direct, &envelope] {
        let l = layout(blob);
        // Header: context digest -> the caller's context does not match.
        assert!(matches!(
            s.unseal(&ctx(1), &flipped(blob, 40, 0)),
            Err(Error::ContextMismatch)
        ));
        // Header: device id -> another device.
        assert!(matches!(
            s.unseal(&ctx(1), &flipped(blob, 12, 3)),
            Err(Error::ForeignDevice)
        ));
        // Header: mechanism TpmSeal (3) -> AesGcm (1) with our device id: altered.
        assert!(matches!(
            s.unseal(&ctx(1), &flipped(blob, 5, 1)),
            Err(Error::Integrity)
        ));
        // Salt -> the auth value changes -> the TPM refuses.
        assert!(matches!(
            s.unseal(&ctx(1), &flipped(blob, l.salt + 5, 2)),
            Err(Error::Integrity)
        ));
        // Public area: attributes, and the last byte of the unique field.
        for at in [l.public.0 + 6, l.public.0 + l.public.1 - 1] {
            let r = s.unseal(&ctx(1), &flipped(blob, at, 0));
            assert!(matches!(r, Err(Error::Integrity)), "public +{at}: {r:?}");
        }
        // Private area: integrity HMAC, and the encrypted sensitive part.
        for at in [l.private.0 + 10, l.private.0 + l.private.1 - 3] {
            let r = s.unseal(&ctx(1), &flipped(blob, at, 7));
            assert!(matches!(r, Err(Error::Integrity)), "private +{at}: {r:?}");
        }
        if let Some((start, len)) = l.ciphertext {
            for at in [start, start + len / 2, start + len - 1] {
                let r = s.unseal(&ctx(1), &flipped(blob, at, 4));
                assert!(
                    matches!(r, Err(Error::Integrity)),
                    "ciphertext +{at}: {r:?}"
                );
            }
        }
        // The original still unseals: nothing above left the TPM or sealer unusable.
        assert!(s.unseal(&ctx(1), blob).is_ok());
    }
}

#[test]
fn every_single_bit_flip_is_refused_without_panic() {
    let (tpm, s) = start();
    let blob = s.seal(&ctx(1), &shard(80, 5)).unwrap();
    for at in 0..blob.len() {
        let r = s.unseal(&ctx(1), &flipped(&blob, at, (at % 8) as u8));
        match r {
            Err(Error::Malformed(_))
            | Err(Error::ContextMismatch)
            | Err(Error::ForeignDevice)
            | Err(Error::UnknownKeyVersion(_))
            | Err(Error::Integrity) => {}
            other => panic!("flip at {at}: {other:?}"),
        }
    }
    assert_eq!(&s.unseal(&ctx(1), &blob).unwrap()[..], &shard(80, 5)[..]);
    // No transient object was left loaded by any of the refused blobs.
    assert!(handles(&tpm, 0x8000_0000).is_empty());
}

#[test]
fn truncated_or_extended_blob_is_malformed() {
    let (_tpm, s) = start();
    for len in [50, 2000] {
        let blob = s.seal(&ctx(1), &shard(len, 6)).unwrap();
        for cut in 0..blob.len() {
            let r = s.unseal(&ctx(1), &blob[..cut]);
            assert!(matches!(r, Err(Error::Malformed(_))), "cut {cut}: {r:?}");
        }
        let mut longer = blob.clone();
        longer.push(0);
        assert!(matches!(
            s.unseal(&ctx(1), &longer),
            Err(Error::Malformed(_))
        ));
    }
}

#[test]
fn blob_from_another_tpm_is_foreign_device() {
    let (_a, sa) = start();
    let (_b, sb) = start();
    let ia = sa.describe().unwrap();
    let ib = sb.describe().unwrap();
    assert_ne!(ia.device_id, ib.device_id);
    for len in [10, 500] {
        let blob = sa.seal(&ctx(1), &shard(len, 7)).unwrap();
        assert!(matches!(
            sb.unseal(&ctx(1), &blob),
            Err(Error::ForeignDevice)
        ));
        // Forcing the other device's id into the header still fails: the TPM
        // refuses an object made under another TPM's primary.
        let mut forged = blob.clone();
        forged[10..26].copy_from_slice(&ib.device_id);
        assert!(matches!(sb.unseal(&ctx(1), &forged), Err(Error::Integrity)));
    }
}

#[test]
fn device_id_is_stable_per_tpm() {
    let (tpm, s) = start();
    let id = s.describe().unwrap().device_id;
    let again = TpmSealer::open(&tpm.profile()).unwrap();
    assert_eq!(again.describe().unwrap().device_id, id);
}

#[test]
fn unknown_key_version() {
    let (_tpm, s) = start();
    let blob = s.seal(&ctx(1), &shard(20, 8)).unwrap();
    for v in [0u32, 2, 77, u32::MAX] {
        let mut b = blob.clone();
        b[6..10].copy_from_slice(&v.to_be_bytes());
        assert!(
            matches!(s.unseal(&ctx(1), &b), Err(Error::UnknownKeyVersion(x)) if x == v),
            "{v}"
        );
    }
}

#[test]
fn device_not_running_is_unavailable() {
    // Nothing listens on a stopped swtpm's port.
    let mut tpm = Swtpm::start().unwrap();
    let profile = tpm.profile();
    tpm.kill9().unwrap();
    assert!(matches!(
        TpmSealer::open(&profile),
        Err(Error::DeviceUnavailable(_))
    ));

    // A sealer whose TPM goes away answers DeviceUnavailable, and works again
    // once the TPM is back.
    tpm.start_again().unwrap();
    let s = TpmSealer::open(&profile).unwrap();
    s.provision().unwrap();
    let blob = s.seal(&ctx(1), b"x").unwrap();
    tpm.kill9().unwrap();
    assert!(matches!(
        s.unseal(&ctx(1), &blob),
        Err(Error::DeviceUnavailable(_))
    ));
    // Checks that need no device still answer precisely: they come first.
    assert!(matches!(
        s.unseal(&ctx(2), &blob),
        Err(Error::ContextMismatch)
    ));
    assert!(matches!(
        s.unseal(&ctx(1), &flipped(&blob, 20, 0)),
        Err(Error::ForeignDevice)
    ));
    assert!(matches!(
        s.unseal(&ctx(1), &blob[..blob.len() - 2]),
        Err(Error::Malformed(_))
    ));
    assert!(matches!(
        s.seal(&ctx(1), b"y"),
        Err(Error::DeviceUnavailable(_))
    ));
    assert!(matches!(s.health(), Err(Error::DeviceUnavailable(_))));
    tpm.start_again().unwrap();
    assert_eq!(&s.unseal(&ctx(1), &blob).unwrap()[..], b"x");
    s.health().unwrap();
}

fn seal_some(s: &TpmSealer) -> Vec<(Vec<u8>, Vec<u8>)> {
    [1usize, DIRECT_MAX, DIRECT_MAX + 1, 3000]
        .into_iter()
        .map(|len| {
            let data = shard(len, len as u8);
            (s.seal(&ctx(3), &data).unwrap(), data)
        })
        .collect()
}

fn check_all(s: &TpmSealer, sealed: &[(Vec<u8>, Vec<u8>)]) {
    for (blob, data) in sealed {
        assert_eq!(&s.unseal(&ctx(3), blob).unwrap()[..], &data[..]);
    }
}

#[test]
fn blobs_survive_graceful_restart() {
    let (mut tpm, s) = start();
    let sealed = seal_some(&s);
    tpm.restart().unwrap();
    // The same sealer (its cached handles are persistent ones) ...
    check_all(&s, &sealed);
    // ... and a new one.
    let s2 = TpmSealer::open(&tpm.profile()).unwrap();
    check_all(&s2, &sealed);
}

#[test]
fn blobs_survive_kill9() {
    let (mut tpm, s) = start();
    let sealed = seal_some(&s);
    tpm.kill9().unwrap();
    tpm.start_again().unwrap();
    check_all(&s, &sealed);
    let s2 = TpmSealer::open(&tpm.profile()).unwrap();
    check_all(&s2, &sealed);
    // And again, with no orderly shutdown in between.
    tpm.kill9().unwrap();
    tpm.start_again().unwrap();
    check_all(&s2, &sealed);
}

#[test]
fn evicted_primary_is_recreated() {
    let (tpm, s) = start();
    let id = s.describe().unwrap().device_id;
    let sealed = seal_some(&s);
    assert_eq!(handles(&tpm, PRIMARY_HANDLE), vec![PRIMARY_HANDLE]);

    // Evicted behind a live sealer's back: its cached handle is stale.
    evict(&tpm, PRIMARY_HANDLE);
    assert!(handles(&tpm, PRIMARY_HANDLE).is_empty());
    check_all(&s, &sealed);
    assert_eq!(handles(&tpm, PRIMARY_HANDLE), vec![PRIMARY_HANDLE]);

    // Evicted before a sealer opens: same device id, old blobs unseal, new ones too.
    evict(&tpm, PRIMARY_HANDLE);
    let s2 = TpmSealer::open(&tpm.profile()).unwrap();
    assert_eq!(s2.describe().unwrap().device_id, id);
    check_all(&s2, &sealed);
    let blob = s2.seal(&ctx(3), b"after").unwrap();
    assert_eq!(&s.unseal(&ctx(3), &blob).unwrap()[..], b"after");

    // Evicted, then a seal (not an unseal) is the first call.
    evict(&tpm, PRIMARY_HANDLE);
    let blob = s.seal(&ctx(3), b"seal first").unwrap();
    assert_eq!(&s2.unseal(&ctx(3), &blob).unwrap()[..], b"seal first");
    assert_eq!(handles(&tpm, PRIMARY_HANDLE), vec![PRIMARY_HANDLE]);
}

#[test]
fn provision_is_idempotent() {
    let tpm = Swtpm::start().unwrap();
    let s = TpmSealer::open(&tpm.profile()).unwrap();
    // open changes nothing on the device.
    assert!(handles(&tpm, PRIMARY_HANDLE).is_empty());
    let first = s.provision().unwrap();
    let after_first = handles(&tpm, PRIMARY_HANDLE);
    assert_eq!(after_first, vec![PRIMARY_HANDLE]);
    let second = s.provision().unwrap();
    assert_eq!(first, second);
    assert_eq!(handles(&tpm, PRIMARY_HANDLE), after_first);
    assert_eq!(s.describe().unwrap(), first);
    assert_eq!(first.backend, "tpm");
    assert_eq!(first.key_version, 1);
    assert_eq!(first.mechanism, Mechanism::TpmSeal);
    assert_eq!(first.key_label, "0x81000100");
    assert!(first.device.starts_with("TPM 2.0"), "{}", first.device);
    // A second sealer on the same TPM provisions nothing new either.
    let s2 = TpmSealer::open(&tpm.profile()).unwrap();
    assert_eq!(s2.provision().unwrap(), first);
    assert_eq!(handles(&tpm, PRIMARY_HANDLE), after_first);
    s.health().unwrap();
}

#[test]
fn rotation_and_reseal() {
    let (tpm, s) = start();
    let old_small = s.seal(&ctx(1), &shard(40, 9)).unwrap();
    let old_big = s.seal(&ctx(2), &shard(5000, 9)).unwrap();
    assert_eq!(s.reseal(&ctx(1), &old_small).unwrap(), None);

    assert_eq!(s.rotate().unwrap(), 2);
    let info = s.describe().unwrap();
    assert_eq!(info.key_version, 2);
    assert_eq!(info.key_label, "0x81000101");
    assert_eq!(
        handles(&tpm, PRIMARY_HANDLE),
        vec![PRIMARY_HANDLE, PRIMARY_HANDLE + 1]
    );

    let new = s.seal(&ctx(1), b"new").unwrap();
    assert_eq!(hsm::BlobHeader::decode(&new).unwrap().0.key_version, 2);
    assert_eq!(&s.unseal(&ctx(1), &new).unwrap()[..], b"new");
    assert_eq!(
        &s.unseal(&ctx(1), &old_small).unwrap()[..],
        &shard(40, 9)[..]
    );

    for (c, old, data) in [
        (ctx(1), &old_small, shard(40, 9)),
        (ctx(2), &old_big, shard(5000, 9)),
    ] {
        let moved = s.reseal(&c, old).unwrap().expect("moved forward");
        assert_eq!(hsm::BlobHeader::decode(&moved).unwrap().0.key_version, 2);
        assert_eq!(&s.unseal(&c, &moved).unwrap()[..], &data[..]);
        assert_eq!(s.reseal(&c, &moved).unwrap(), None);
        // A v1 blob relabelled as v2 does not unseal under the v2 key.
        let mut relabelled = old.clone();
        relabelled[6..10].copy_from_slice(&2u32.to_be_bytes());
        assert!(matches!(s.unseal(&c, &relabelled), Err(Error::Integrity)));
    }

    // A sealer opened later finds version 2, and still unseals version 1.
    let s2 = TpmSealer::open(&tpm.profile()).unwrap();
    assert_eq!(s2.describe().unwrap().key_version, 2);
    assert_eq!(
        &s2.unseal(&ctx(1), &old_small).unwrap()[..],
        &shard(40, 9)[..]
    );
    assert_eq!(s2.describe().unwrap().device_id, info.device_id);

    // Version 3; the v1 primary evicted meanwhile is re-created on use.
    assert_eq!(s2.rotate().unwrap(), 3);
    evict(&tpm, PRIMARY_HANDLE);
    assert_eq!(
        &s2.unseal(&ctx(1), &old_small).unwrap()[..],
        &shard(40, 9)[..]
    );
    let s3 = TpmSealer::open(&tpm.profile()).unwrap();
    assert_eq!(s3.describe().unwrap().key_version, 3);
    // A rotation by another sealer (another process) is seen by the first one
    // when it meets a blob of the new version.
    let v3 = s3.seal(&ctx(1), b"v3").unwrap();
    assert_eq!(hsm::BlobHeader::decode(&v3).unwrap().0.key_version, 3);
    assert_eq!(s.describe().unwrap().key_version, 2);
    assert_eq!(&s.unseal(&ctx(1), &v3).unwrap()[..], b"v3");
    assert_eq!(s.describe().unwrap().key_version, 3);
    // Version 4 is unknown.
    let mut v4 = new.clone();
    v4[6..10].copy_from_slice(&4u32.to_be_bytes());
    assert!(matches!(
        s3.unseal(&ctx(1), &v4),
        Err(Error::UnknownKeyVersion(4))
    ));
}

#[test]
fn parameter_encryption_round_trips() {
    let mut tpm = Swtpm::start().unwrap();
    let mut profile = tpm.profile();
    profile.parameter_encryption = true;
    let s = TpmSealer::open(&profile).unwrap();
    s.provision().unwrap();
    let mut sealed = Vec::new();
    for len in [1, DIRECT_MAX, DIRECT_MAX + 1, 4096] {
        let data = shard(len, 10);
        let blob = s.seal(&ctx(1), &data).unwrap();
        assert_eq!(&s.unseal(&ctx(1), &blob).unwrap()[..], &data[..]);
        sealed.push((blob, data));
    }
    // Blobs are interchangeable with a sealer without parameter encryption.
    let plain = TpmSealer::open(&tpm.profile()).unwrap();
    for (blob, data) in &sealed {
        assert_eq!(&plain.unseal(&ctx(1), blob).unwrap()[..], &data[..]);
    }
    // An auth failure through the HMAC session is Integrity, and the session
    // keeps working afterwards.
    let l = layout(&sealed[0].0);
    assert!(matches!(
        s.unseal(&ctx(1), &flipped(&sealed[0].0, l.salt, 0)),
        Err(Error::Integrity)
    ));
    assert_eq!(
        &s.unseal(&ctx(1), &sealed[0].0).unwrap()[..],
        &sealed[0].1[..]
    );
    // The session dies with a restart; the sealer starts a new one.
    tpm.restart().unwrap();
    for (blob, data) in &sealed {
        assert_eq!(&s.unseal(&ctx(1), blob).unwrap()[..], &data[..]);
    }
    let blob = s.seal(&ctx(1), b"after restart").unwrap();
    assert_eq!(&s.unseal(&ctx(1), &blob).unwrap()[..], b"after restart");
    // One session is kept loaded; no transient object is. Dropping the sealer
    // flushes the session too.
    assert!(handles(&tpm, 0x8000_0000).is_empty());
    assert_eq!(handles(&tpm, 0x0200_0000).len(), 1);
    drop(s);
    drop(plain);
    assert!(handles(&tpm, 0x0200_0000).is_empty());
}

#[test]
fn startup_is_sent_when_the_tpm_needs_it() {
    let mut tpm = Swtpm::start_uninitialized().unwrap();
    let s = TpmSealer::open(&tpm.profile()).unwrap();
    s.provision().unwrap();
    let blob = s.seal(&ctx(1), b"needs startup").unwrap();
    // Power-cycle without firmware: the running sealer sends Startup again.
    tpm.kill9().unwrap();
    tpm.start_again().unwrap();
    assert_eq!(&s.unseal(&ctx(1), &blob).unwrap()[..], b"needs startup");
}

#[test]
fn concurrent_callers_are_serialized() {
    let (tpm, s) = start();
    let s = Arc::new(s);
    let threads: Vec<_> = (0..4u8)
        .map(|t| {
            let s = Arc::clone(&s);
            std::thread::spawn(move || {
                for i in 0..15usize {
                    let data = shard(1 + (i * 37 + t as usize * 11) % 300, t);
                    let c = ctx(t + 1);
                    let blob = s.seal(&c, &data).unwrap();
                    assert_eq!(&s.unseal(&c, &blob).unwrap()[..], &data[..]);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert!(handles(&tpm, 0x8000_0000).is_empty());
}

#[test]
fn open_through_trait_object_and_profile_file() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../hsm-profiles/tpm2.toml");
    let Profile::Tpm(file) = Profile::load(&path).unwrap() else {
        panic!("tpm2.toml is not a TPM profile");
    };
    let tpm = Swtpm::start().unwrap();
    let mut p = file.clone();
    p.tcti = Some(tpm.tcti());
    let s = hsm::open(&Profile::Tpm(p)).unwrap();
    let info = s.provision().unwrap();
    assert_eq!(info.key_label, format!("{:#010x}", file.primary_handle));
    let blob = s.seal(&ctx(1), b"via profile").unwrap();
    assert_eq!(&s.unseal(&ctx(1), &blob).unwrap()[..], b"via profile");
}

#[test]
fn errors_name_no_secret_material() {
    let (_tpm, s) = start();
    let data = b"SECRET-SHARD-BYTES";
    let blob = s.seal(&ctx(1), data).unwrap();
    let l = layout(&blob);
    let errs = [
        s.unseal(&ctx(2), &blob).unwrap_err(),
        s.unseal(&ctx(1), &flipped(&blob, l.salt, 1)).unwrap_err(),
        s.unseal(&ctx(1), &blob[..blob.len() - 1]).unwrap_err(),
    ];
    for e in errs {
        let text = format!("{e} {e:?}");
        assert!(!text.contains("SECRET"), "{text}");
        assert!(!text.contains(&hex::encode(data)), "{text}");
    }
    let dbg = format!("{s:?}");
    assert!(!dbg.contains("SECRET"));
}

/// A loopback TCP relay in front of a swtpm (TPM port and control port) that
/// records every byte in both directions, like a probe on the TPM's bus.
fn tap(tpm: &Swtpm) -> (String, Arc<std::sync::Mutex<Vec<u8>>>) {
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let port = loop {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let p = l.local_addr().unwrap().port();
        if p < u16::MAX && TcpListener::bind(("127.0.0.1", p + 1)).is_ok() {
            break p;
        }
    };
    for (from, to) in [(port, tpm.port()), (port + 1, tpm.port() + 1)] {
        let listener = TcpListener::bind(("127.0.0.1", from)).unwrap();
        let seen = Arc::clone(&seen);
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let Ok(server) = TcpStream::connect(("127.0.0.1", to)) else {
                    return;
                };
                for (mut a, mut b) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    let seen = Arc::clone(&seen);
                    std::thread::spawn(move || {
                        let mut buf = [0u8; 8192];
                        while let Ok(n) = a.read(&mut buf) {
                            if n == 0 || b.write_all(&buf[..n]).is_err() {
                                break;
                            }
                            seen.lock().unwrap().extend_from_slice(&buf[..n]);
                        }
                        let _ = b.shutdown(std::net::Shutdown::Write);
                    });
                }
            }
        });
    }
    (format!("swtpm:host=127.0.0.1,port={port}"), seen)
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn parameter_encryption_keeps_shards_off_the_bus() {
    let tpm = Swtpm::start().unwrap();
    let secret: Vec<u8> = (0..64u8).map(|i| i ^ 0xa5).collect();
    for encrypt in [false, true] {
        let (tcti, seen) = tap(&tpm);
        let mut p = tpm.profile();
        p.tcti = Some(tcti);
        p.parameter_encryption = encrypt;
        let s = TpmSealer::open(&p).unwrap();
        s.provision().unwrap();
        let blob = s.seal(&ctx(1), &secret).unwrap();
        assert_eq!(&s.unseal(&ctx(1), &blob).unwrap()[..], &secret[..]);
        drop(s);
        let wire = seen.lock().unwrap().clone();
        assert!(wire.len() > 1000, "the tap saw the traffic");
        // In the clear without parameter encryption (so this check can see it),
        // never with it: not in TPM2_Create's command, not in TPM2_Unseal's response.
        assert_eq!(contains(&wire, &secret), !encrypt, "encrypt = {encrypt}");
    }
}

#[test]
fn harness_leaves_nothing_behind_when_a_test_panics() {
    let (tx, rx) = std::sync::mpsc::channel();
    let r = std::thread::spawn(move || {
        let tpm = Swtpm::start().unwrap();
        tx.send((tpm.pid().unwrap(), tpm.state_dir().to_path_buf()))
            .unwrap();
        panic!("a failing test (expected panic)");
    })
    .join();
    assert!(r.is_err());
    let (pid, dir) = rx.recv().unwrap();
    assert!(!dir.exists(), "state directory removed");
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "swtpm process gone"
    );
}

#[test]
fn random_bodies_are_refused_without_panic() {
    let (tpm, s) = start();
    let blob = s.seal(&ctx(1), b"template").unwrap();
    let header = &blob[..HEADER_LEN];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for i in 0..400 {
        // Well-framed bodies with random contents, so that the TSS unmarshaller and
        // the TPM see random public and private areas.
        let mut b = header.to_vec();
        b.push(if i % 2 == 0 { 1 } else { 2 });
        b.extend((0..16).map(|_| next() as u8));
        for max in [120u64, 260] {
            let len = 1 + (next() % max) as usize;
            b.extend_from_slice(&(len as u16).to_be_bytes());
            b.extend((0..len).map(|_| next() as u8));
        }
        if i % 2 == 1 {
            b.extend((0..12).map(|_| next() as u8));
            b.extend_from_slice(&40u32.to_be_bytes());
            b.extend((0..40).map(|_| next() as u8));
        }
        match s.unseal(&ctx(1), &b) {
            Err(Error::Integrity) | Err(Error::Malformed(_)) => {}
            other => panic!("random body {i}: {other:?}"),
        }
    }
    // A real public area with a random private one reaches the TPM's checks.
    let l = layout(&blob);
    for _ in 0..50 {
        let mut b = blob.clone();
        for byte in &mut b[l.private.0..l.private.0 + l.private.1] {
            *byte = next() as u8;
        }
        assert!(matches!(s.unseal(&ctx(1), &b), Err(Error::Integrity)));
    }
    assert_eq!(&s.unseal(&ctx(1), &blob).unwrap()[..], b"template");
    assert!(handles(&tpm, 0x8000_0000).is_empty());
}

#[test]
fn cleared_tpm_is_reported_not_silently_rekeyed() {
    let (tpm, s) = start();
    let blob = s.seal(&ctx(1), b"before clear").unwrap();
    let mut c = esapi(&tpm);
    c.execute_with_session(Some(AuthSession::Password), |c| {
        c.clear(tss_esapi::handles::AuthHandle::Lockout)
    })
    .expect("TPM2_Clear");
    // The running sealer knows its key's Name: it refuses to adopt the new one.
    match s.unseal(&ctx(1), &blob) {
        Err(Error::Device(m)) => assert!(m.contains("cleared"), "{m}"),
        other => panic!("{other:?}"),
    }
    // A sealer opened afterwards is a new device: old blobs are foreign.
    let s2 = TpmSealer::open(&tpm.profile()).unwrap();
    assert_ne!(
        s2.describe().unwrap().device_id,
        s.describe().unwrap().device_id
    );
    assert!(matches!(
        s2.unseal(&ctx(1), &blob),
        Err(Error::ForeignDevice)
    ));
}
