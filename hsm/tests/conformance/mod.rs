//! The behaviour every sealer backend shares, written once.
//!
//! Each function here is one behaviour of the [`Sealer`] contract, generic over a
//! [`Fixture`] that starts a fresh real device of one backend (SoftHSM2, swtpm) and
//! opens sealers on it. A backend's test file implements [`Fixture`] and runs the
//! whole suite with [`conformance_tests!`], which declares one `#[test]` per behaviour
//! in a module of its own; behaviour that only one backend has stays in that file.

use std::fmt::Debug;

use hsm::blob::HEADER_LEN;
use hsm::{BlobHeader, Error, Mechanism, Profile, SealContext, Sealer, MAX_SHARD_LEN};
use shard::SecretId;

/// One backend (and, for PKCS#11, one mechanism) as the suite sees it.
pub trait Fixture {
    /// A running device; dropping it stops the device and removes its state.
    type Device;
    /// The backend's sealer type.
    type Sealer: Sealer + Debug;

    /// `DeviceInfo::backend` of this backend.
    const BACKEND: &'static str;
    /// The mechanism new blobs carry.
    const MECHANISM: Mechanism;
    /// Device keys one key version holds.
    const KEYS_PER_VERSION: usize;
    /// Shard lengths at this backend's layout boundaries, tried besides the common ones.
    const EDGE_SIZES: &'static [usize];

    /// A fresh device with nothing provisioned on it.
    fn device() -> Self::Device;
    /// The profile of a sealer on `device`.
    fn profile(device: &Self::Device) -> Profile;
    /// A sealer on `device`, opened (not provisioned), as a new process would open it.
    fn open(device: &Self::Device) -> Self::Sealer;
    /// How many sealing keys `device` holds.
    fn key_count(device: &Self::Device) -> usize;
    /// `DeviceInfo::key_label` of key version `version`.
    fn key_label(version: u32) -> String;
    /// Whether a `DeviceInfo::device` text names `device`.
    fn describes(device: &Self::Device, description: &str) -> bool;
    /// Checks the layout of a fresh blob's body for a shard of `len` bytes.
    fn check_body(len: usize, body: &[u8]);
    /// Whether a body of `len` bytes, cut or extended from a good one of `original`
    /// bytes, is refused as [`Error::Malformed`] before the device sees it (rather
    /// than failing the integrity check).
    fn malformed_body_len(original: usize, len: usize) -> bool;
    /// Whether `e` is what unsealing a blob with one bit of its body flipped gives.
    fn is_altered_body_error(e: &Error) -> bool;
    /// Checks that `device` holds nothing that finished or refused calls left behind.
    fn check_clean(device: &Self::Device);
}

/// Declares one `#[test]` per behaviour of the suite, for `$fixture`, in `mod $module`.
macro_rules! conformance_tests {
    ($module:ident, $fixture:ident) => {
        mod $module {
            use $crate::conformance as suite;
            type F = super::$fixture;

            $crate::conformance::conformance_tests!(@each F;
                round_trips_every_size,
                shard_length_limits,
                wrong_context_is_context_mismatch,
                every_flipped_bit_is_refused,
                truncated_or_extended_blobs,
                blob_from_another_device_is_foreign,
                unknown_key_version,
                opening_changes_nothing_and_provision_is_idempotent,
                sealers_on_one_device_share_its_keys,
                rotate_then_reseal,
                concurrent_callers,
                opens_through_the_generic_entry_point,
                errors_name_no_secret_material,
            );
        }
    };
    (@each $f:ident; $($test:ident),* $(,)?) => {
        $(
            #[test]
            fn $test() {
                suite::$test::<$f>();
            }
        )*
    };
}
pub(crate) use conformance_tests;

/// Shard lengths every backend round-trips: the smallest, a P-256 share envelope
/// (97 bytes) and its neighbours, around the TPM's 128-byte sealing limit, and up to
/// the largest shard.
const SIZES: [usize; 14] = [
    1,
    2,
    32,
    33,
    96,
    97,
    100,
    128,
    129,
    1000,
    4096,
    16384,
    65536,
    MAX_SHARD_LEN,
];

/// The context blobs are sealed for; `index` varies it.
pub fn ctx(index: u8) -> SealContext {
    SealContext {
        custodian_id: "c1".into(),
        secret_id: SecretId::from_bytes([0x42; 16]),
        index,
        epoch: 1,
    }
}

/// `len` shard bytes in a pattern that `seed` shifts.
pub fn shard(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// `blob` with bit `bit` of byte `at` flipped.
pub fn flipped(blob: &[u8], at: usize, bit: u8) -> Vec<u8> {
    let mut b = blob.to_vec();
    b[at] ^= 1 << bit;
    b
}

/// `blob` with its header's key version replaced.
pub fn with_version(blob: &[u8], version: u32) -> Vec<u8> {
    let mut b = blob.to_vec();
    b[6..10].copy_from_slice(&version.to_be_bytes());
    b
}

/// A fresh device and a provisioned sealer on it.
pub fn started<F: Fixture>() -> (F::Device, F::Sealer) {
    let device = F::device();
    let sealer = F::open(&device);
    sealer.provision().expect("provision");
    (device, sealer)
}

fn unseals_to(sealer: &(impl Sealer + ?Sized), ctx: &SealContext, blob: &[u8], data: &[u8]) {
    let back = sealer.unseal(ctx, blob).expect("unseal");
    assert_eq!(back.as_slice(), data);
}

/// Every size seals and unseals, under a header naming this mechanism, key version 1,
/// this device and the context; the shard does not show in the blob, and sealing it
/// again gives another blob.
pub fn round_trips_every_size<F: Fixture>() {
    let (_device, sealer) = started::<F>();
    let info = sealer.describe().unwrap();
    for (i, len) in SIZES.iter().chain(F::EDGE_SIZES).copied().enumerate() {
        let data = shard(len, i as u8);
        let blob = sealer.seal(&ctx(1), &data).unwrap();
        let (h, body) = BlobHeader::decode(&blob).unwrap();
        assert_eq!(h.mechanism, F::MECHANISM, "{len}");
        assert_eq!(h.key_version, 1, "{len}");
        assert_eq!(h.device_id, info.device_id, "{len}");
        assert_eq!(h.context_digest, ctx(1).digest(), "{len}");
        F::check_body(len, body);
        if len >= 16 {
            assert!(!blob.windows(16).any(|w| w == &data[..16]), "{len}");
        }
        unseals_to(&sealer, &ctx(1), &blob, &data);
        let again = sealer.seal(&ctx(1), &data).unwrap();
        assert_ne!(again, blob, "{len}: fresh randomness per seal");
        unseals_to(&sealer, &ctx(1), &again, &data);
    }
}

/// Empty and oversized shards are refused before the device sees them.
pub fn shard_length_limits<F: Fixture>() {
    let (_device, sealer) = started::<F>();
    assert!(matches!(
        sealer.seal(&ctx(1), &[]),
        Err(Error::ShardLength(0))
    ));
    let big = vec![1u8; MAX_SHARD_LEN + 1];
    assert!(matches!(
        sealer.seal(&ctx(1), &big),
        Err(Error::ShardLength(n)) if n == MAX_SHARD_LEN + 1
    ));
}

/// A blob unsealed for another index, secret, custodian or epoch is ContextMismatch.
pub fn wrong_context_is_context_mismatch<F: Fixture>() {
    let (_device, sealer) = started::<F>();
    for len in [33, 1000] {
        let blob = sealer.seal(&ctx(1), &shard(len, 1)).unwrap();
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
                matches!(sealer.unseal(&other, &blob), Err(Error::ContextMismatch)),
                "{len} {other:?}"
            );
        }
        unseals_to(&sealer, &ctx(1), &blob, &shard(len, 1));
    }
}

/// Whether flipping one bit of header byte `pos` gave the error of that field.
fn header_flip_refused(pos: usize, got: &Result<zeroize::Zeroizing<Vec<u8>>, Error>) -> bool {
    match pos {
        // magic, format, mechanism
        0..=5 => matches!(got, Err(Error::Malformed(_))),
        // only version 1 exists
        6..=9 => matches!(got, Err(Error::UnknownKeyVersion(_))),
        10..=25 => matches!(got, Err(Error::ForeignDevice)),
        _ => matches!(got, Err(Error::ContextMismatch)),
    }
}

/// One bit flipped in each header byte gives that field's error; every bit flipped
/// in the body is refused as an altered blob; the device is left clean and the
/// untouched blob still unseals.
pub fn every_flipped_bit_is_refused<F: Fixture>() {
    let (device, sealer) = started::<F>();
    let data = shard(80, 5);
    let blob = sealer.seal(&ctx(1), &data).unwrap();
    for pos in 0..blob.len() {
        // The header is judged field by field before any device call: one bit per
        // byte. The body is what the device judges: every bit.
        let bits = if pos < HEADER_LEN {
            (pos % 8) as u8..=(pos % 8) as u8
        } else {
            0..=7
        };
        for bit in bits {
            let got = sealer.unseal(&ctx(1), &flipped(&blob, pos, bit));
            let refused = if pos < HEADER_LEN {
                header_flip_refused(pos, &got)
            } else {
                got.as_ref().err().is_some_and(F::is_altered_body_error)
            };
            assert!(refused, "{}: byte {pos} bit {bit}: {got:?}", F::MECHANISM);
        }
    }
    unseals_to(&sealer, &ctx(1), &blob, &data);
    F::check_clean(&device);
}

/// Every truncation and an extension by one byte are refused: as Malformed when no
/// seal could have made that length, else by the integrity check.
pub fn truncated_or_extended_blobs<F: Fixture>() {
    let (_device, sealer) = started::<F>();
    for len in [50, 2000] {
        let blob = sealer.seal(&ctx(1), &shard(len, 6)).unwrap();
        let body = blob.len() - HEADER_LEN;
        let check = |bad: &[u8], what: &str| {
            let got = sealer.unseal(&ctx(1), bad);
            let malformed =
                bad.len() < HEADER_LEN || F::malformed_body_len(body, bad.len() - HEADER_LEN);
            if malformed {
                assert!(matches!(got, Err(Error::Malformed(_))), "{what}: {got:?}");
            } else {
                assert!(matches!(got, Err(Error::Integrity)), "{what}: {got:?}");
            }
        };
        for cut in 0..blob.len() {
            check(&blob[..cut], &format!("{len}: cut to {cut}"));
        }
        let mut longer = blob.clone();
        longer.push(0);
        check(&longer, &format!("{len}: one byte longer"));
        // A whole block taken out of the middle of the body.
        let gap = [&blob[..HEADER_LEN + 16], &blob[HEADER_LEN + 32..]].concat();
        check(&gap, &format!("{len}: 16 bytes taken out"));
        unseals_to(&sealer, &ctx(1), &blob, &shard(len, 6));
    }
}

/// A blob from another device is ForeignDevice; rewriting its header to claim this
/// device fails the integrity check.
pub fn blob_from_another_device_is_foreign<F: Fixture>() {
    let (_a, sealer_a) = started::<F>();
    let (_b, sealer_b) = started::<F>();
    let id_a = sealer_a.describe().unwrap().device_id;
    let id_b = sealer_b.describe().unwrap().device_id;
    assert_ne!(id_a, id_b);
    for len in [10, 500] {
        let blob = sealer_a.seal(&ctx(1), &shard(len, 7)).unwrap();
        assert!(matches!(
            sealer_b.unseal(&ctx(1), &blob),
            Err(Error::ForeignDevice)
        ));
        let mut forged = blob.clone();
        forged[10..26].copy_from_slice(&id_b);
        assert!(matches!(
            sealer_b.unseal(&ctx(1), &forged),
            Err(Error::Integrity)
        ));
        unseals_to(&sealer_a, &ctx(1), &blob, &shard(len, 7));
    }
}

/// A blob naming a key version the device never had is UnknownKeyVersion.
pub fn unknown_key_version<F: Fixture>() {
    let (_device, sealer) = started::<F>();
    let blob = sealer.seal(&ctx(1), &shard(33, 8)).unwrap();
    for v in [0, 2, 77, 99, u32::MAX] {
        let got = sealer.unseal(&ctx(1), &with_version(&blob, v));
        assert!(
            matches!(got, Err(Error::UnknownKeyVersion(x)) if x == v),
            "v{v}: {got:?}"
        );
    }
}

/// Opening a sealer creates nothing; provisioning creates one key version once, and
/// neither a second provisioning nor a second sealer creates more.
pub fn opening_changes_nothing_and_provision_is_idempotent<F: Fixture>() {
    let device = F::device();
    let sealer = F::open(&device);
    assert_eq!(F::key_count(&device), 0, "opening creates no key");
    let first = sealer.provision().unwrap();
    assert_eq!(F::key_count(&device), F::KEYS_PER_VERSION);
    assert_eq!(first.backend, F::BACKEND);
    assert_eq!(first.key_version, 1);
    assert_eq!(first.key_label, F::key_label(1));
    assert_eq!(first.mechanism, F::MECHANISM);
    assert!(F::describes(&device, &first.device), "{}", first.device);
    let blob = sealer.seal(&ctx(1), &shard(20, 1)).unwrap();
    assert_eq!(sealer.provision().unwrap(), first);
    assert_eq!(sealer.describe().unwrap(), first);
    assert_eq!(F::key_count(&device), F::KEYS_PER_VERSION);
    drop(sealer);
    let again = F::open(&device);
    assert_eq!(again.describe().unwrap(), first);
    assert_eq!(again.provision().unwrap(), first);
    assert_eq!(F::key_count(&device), F::KEYS_PER_VERSION);
    unseals_to(&again, &ctx(1), &blob, &shard(20, 1));
    again.health().unwrap();
}

/// Every sealer on one device has the same device id, and each unseals what the
/// other sealed.
pub fn sealers_on_one_device_share_its_keys<F: Fixture>() {
    let (device, first) = started::<F>();
    let second = F::open(&device);
    assert_eq!(
        second.describe().unwrap().device_id,
        first.describe().unwrap().device_id
    );
    let from_first = first.seal(&ctx(1), b"from the first").unwrap();
    let from_second = second.seal(&ctx(1), b"from the second").unwrap();
    unseals_to(&second, &ctx(1), &from_first, b"from the first");
    unseals_to(&first, &ctx(1), &from_second, b"from the second");
}

/// Rotation adds version 2 for new seals; older blobs keep unsealing and reseal moves
/// them forward once, bound to the same context; a blob relabelled with the new version
/// fails its integrity check; another sealer learns of the new version when it meets a
/// blob of it, and one opened later starts from it.
pub fn rotate_then_reseal<F: Fixture>() {
    let (device, sealer) = started::<F>();
    let old = [(ctx(1), shard(40, 9)), (ctx(2), shard(5000, 9))]
        .map(|(c, data)| (sealer.seal(&c, &data).unwrap(), c, data));
    assert_eq!(sealer.reseal(&old[0].1, &old[0].0).unwrap(), None);
    // A second sealer on the device, opened before the rotation.
    let bystander = F::open(&device);

    assert_eq!(sealer.rotate().unwrap(), 2);
    let info = sealer.describe().unwrap();
    assert_eq!(info.key_version, 2);
    assert_eq!(info.key_label, F::key_label(2));
    assert_eq!(F::key_count(&device), 2 * F::KEYS_PER_VERSION);
    let new = sealer.seal(&ctx(1), b"new").unwrap();
    let header = BlobHeader::decode(&new).unwrap().0;
    assert_eq!(header.key_version, 2);
    assert_eq!(header.device_id, info.device_id);
    unseals_to(&sealer, &ctx(1), &new, b"new");

    assert_eq!(bystander.describe().unwrap().key_version, 1);
    unseals_to(&bystander, &ctx(1), &new, b"new");
    assert_eq!(bystander.describe().unwrap().key_version, 2);

    let mut moved = Vec::new();
    for (blob, c, data) in &old {
        unseals_to(&sealer, c, blob, data);
        let m = sealer
            .reseal(c, blob)
            .unwrap()
            .expect("a v1 blob is resealed");
        assert_eq!(BlobHeader::decode(&m).unwrap().0.key_version, 2);
        unseals_to(&sealer, c, &m, data);
        assert_eq!(sealer.reseal(c, &m).unwrap(), None);
        assert!(matches!(
            sealer.unseal(c, &with_version(blob, 2)),
            Err(Error::Integrity)
        ));
        moved.push((m, c.clone(), data.clone()));
    }
    assert_eq!(sealer.reseal(&ctx(1), &new).unwrap(), None);
    assert!(matches!(
        sealer.reseal(&ctx(9), &old[0].0),
        Err(Error::ContextMismatch)
    ));

    let later = F::open(&device);
    assert_eq!(later.describe().unwrap().key_version, 2);
    assert_eq!(later.describe().unwrap().device_id, info.device_id);
    unseals_to(&later, &old[0].1, &old[0].0, &old[0].2);

    assert_eq!(sealer.rotate().unwrap(), 3);
    assert_eq!(F::key_count(&device), 3 * F::KEYS_PER_VERSION);
    for (blob, c, data) in old.iter().chain(&moved) {
        unseals_to(&sealer, c, blob, data);
    }
    unseals_to(&sealer, &ctx(1), &new, b"new");
    sealer.health().unwrap();
}

/// Threads sharing one sealer seal and unseal at once without mixing up results.
pub fn concurrent_callers<F: Fixture>() {
    let (device, sealer) = started::<F>();
    std::thread::scope(|s| {
        for t in 0..8u8 {
            let sealer = &sealer;
            s.spawn(move || {
                for i in 0..50u32 {
                    let c = SealContext {
                        epoch: i,
                        ..ctx(t + 1)
                    };
                    let data = shard(1 + (i as usize * 37 + t as usize * 11) % 300, t);
                    let blob = sealer.seal(&c, &data).unwrap();
                    unseals_to(sealer, &c, &blob, &data);
                }
            });
        }
    });
    F::check_clean(&device);
}

/// `hsm::open` on the backend's profile gives a working sealer behind `dyn Sealer`.
pub fn opens_through_the_generic_entry_point<F: Fixture>() {
    let device = F::device();
    let sealer = hsm::open(&F::profile(&device)).unwrap();
    let info = sealer.provision().unwrap();
    assert_eq!(info.backend, F::BACKEND);
    assert_eq!(info.mechanism, F::MECHANISM);
    let blob = sealer.seal(&ctx(1), b"\x02hello").unwrap();
    unseals_to(&*sealer, &ctx(1), &blob, b"\x02hello");
    sealer.health().unwrap();
}

/// No error and no `Debug` of the sealer shows the shard.
pub fn errors_name_no_secret_material<F: Fixture>() {
    let (_device, sealer) = started::<F>();
    let data = b"SECRET-SHARD-BYTES";
    let blob = sealer.seal(&ctx(1), data).unwrap();
    let last = blob.len() - 1;
    let errs = [
        sealer.unseal(&ctx(2), &blob).unwrap_err(),
        sealer
            .unseal(&ctx(1), &flipped(&blob, last, 1))
            .unwrap_err(),
        sealer.unseal(&ctx(1), &blob[..last]).unwrap_err(),
        sealer.unseal(&ctx(1), &with_version(&blob, 5)).unwrap_err(),
    ];
    for e in errs {
        let text = format!("{e} {e:?}");
        assert!(!text.contains("SECRET"), "{text}");
        assert!(!text.contains(&hex::encode(data)), "{text}");
    }
    let dbg = format!("{sealer:?}");
    assert!(!dbg.contains("SECRET"), "{dbg}");
}
