//! The TPM 2.0 backend against a real swtpm, one private swtpm per test: the sealer
//! conformance suite, then what only a TPM has (the body's areas, restarts, evicted
//! primaries, parameter encryption, TPM2_Startup, TPM2_Clear).

mod conformance;

use std::str::FromStr;
use std::sync::Arc;

use conformance::{ctx, flipped, shard};
use hsm::blob::HEADER_LEN;
use hsm::testing::swtpm::{Swtpm, PRIMARY_HANDLE};
use hsm::tpm::{TpmSealer, DIRECT_MAX};
use hsm::{Error, Mechanism, Profile, Sealer};
use tss_esapi::constants::CapabilityType;
use tss_esapi::handles::{PersistentTpmHandle, TpmHandle};
use tss_esapi::interface_types::dynamic_handles::Persistent;
use tss_esapi::interface_types::resource_handles::Provision;
use tss_esapi::interface_types::session_handles::AuthSession;
use tss_esapi::structures::CapabilityData;
use tss_esapi::tcti_ldr::TctiNameConf;

const KIND_DIRECT: u8 = 1;
const KIND_ENVELOPE: u8 = 2;

// A P-256 share envelope (97 bytes) is sealed directly.
const _: () = assert!(DIRECT_MAX == 112);

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

/// A fresh swtpm.
struct Tpm;

impl conformance::Fixture for Tpm {
    type Device = Swtpm;
    type Sealer = TpmSealer;

    const BACKEND: &'static str = "tpm";
    const MECHANISM: Mechanism = Mechanism::TpmSeal;
    const KEYS_PER_VERSION: usize = 1;
    /// Around the largest shard sealed directly rather than in an envelope.
    const EDGE_SIZES: &'static [usize] = &[DIRECT_MAX - 1, DIRECT_MAX, DIRECT_MAX + 1];

    fn device() -> Swtpm {
        Swtpm::start().expect("swtpm starts")
    }

    fn profile(tpm: &Swtpm) -> Profile {
        Profile::Tpm(tpm.profile())
    }

    fn open(tpm: &Swtpm) -> TpmSealer {
        TpmSealer::open(&tpm.profile()).expect("sealer opens")
    }

    fn key_count(tpm: &Swtpm) -> usize {
        handles(tpm, PRIMARY_HANDLE).len()
    }

    fn key_label(version: u32) -> String {
        format!("{:#010x}", PRIMARY_HANDLE + version - 1)
    }

    fn describes(_tpm: &Swtpm, description: &str) -> bool {
        description.starts_with("TPM 2.0")
    }

    fn check_body(len: usize, body: &[u8]) {
        let kind = if len <= DIRECT_MAX {
            KIND_DIRECT
        } else {
            KIND_ENVELOPE
        };
        assert_eq!(body[0], kind, "kind for {len} bytes");
    }

    /// Every length in the body is explicit: any other length is malformed.
    fn malformed_body_len(original: usize, len: usize) -> bool {
        len != original
    }

    /// A flipped length field is malformed; anything else the TPM or the envelope's
    /// tag refuses.
    fn is_altered_body_error(e: &Error) -> bool {
        matches!(e, Error::Integrity | Error::Malformed(_))
    }

    /// No transient object stays loaded.
    fn check_clean(tpm: &Swtpm) {
        assert!(handles(tpm, 0x8000_0000).is_empty());
    }
}

conformance::conformance_tests!(tpm_seal, Tpm);

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
fn old_version_primary_evicted_after_rotations_is_recreated() {
    let (tpm, s) = start();
    let v1 = s.seal(&ctx(1), &shard(40, 9)).unwrap();
    assert_eq!(s.rotate().unwrap(), 2);
    assert_eq!(s.rotate().unwrap(), 3);
    evict(&tpm, PRIMARY_HANDLE);
    assert_eq!(
        handles(&tpm, PRIMARY_HANDLE),
        vec![PRIMARY_HANDLE + 1, PRIMARY_HANDLE + 2]
    );
    assert_eq!(&s.unseal(&ctx(1), &v1).unwrap()[..], &shard(40, 9)[..]);
    assert_eq!(
        handles(&tpm, PRIMARY_HANDLE),
        vec![PRIMARY_HANDLE, PRIMARY_HANDLE + 1, PRIMARY_HANDLE + 2]
    );
    assert_eq!(s.describe().unwrap().key_version, 3);
}

#[test]
fn shipped_tpm2_profile_works_against_a_real_tpm() {
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
