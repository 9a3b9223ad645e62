//! Known-answer vectors for the envelope, the commitment and the manifest signature,
//! kept as files in `tests/vectors/`. A change to any encoding breaks these tests on
//! purpose: bump the format version instead of changing bytes under a version.
//!
//! To write the files afresh after a deliberate version bump:
//! `SHARD_WRITE_VECTORS=1 cargo test -p shard --test vectors`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use p256::ecdsa::{SigningKey, VerifyingKey};
use shard::{
    Commitment, CustodianId, Manifest, Salt, SecretId, SecretKind, ShardEnvelope, ShareBytes,
    SignedManifest, Threshold,
};

fn path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/vectors")
        .join(name)
}

/// Reads `key = value` lines (comments start with `#`).
fn read(name: &str) -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(path(name)).expect("vector file present");
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (k, v) = l.split_once('=').expect("key = value");
            (k.trim().to_owned(), v.trim().to_owned())
        })
        .collect()
}

/// Compares `fields` with the file, or writes the file when asked to.
fn check(name: &str, header: &str, fields: &[(&str, String)]) {
    if std::env::var_os("SHARD_WRITE_VECTORS").is_some() {
        let mut text = format!("# {header}\n");
        for (k, v) in fields {
            text.push_str(&format!("{k} = {v}\n"));
        }
        std::fs::write(path(name), text).unwrap();
    }
    let file = read(name);
    for (k, v) in fields {
        assert_eq!(
            file.get(*k),
            Some(v),
            "{name}: field {k} differs from the known answer"
        );
    }
    assert_eq!(file.len(), fields.len(), "{name}: unexpected fields");
}

fn sample_envelope() -> ShardEnvelope {
    ShardEnvelope {
        secret_id: SecretId::from_bytes(
            *b"\x01\x8f\x2a\x3b\x4c\x5d\x7e\x6f\x80\x91\xa2\xb3\xc4\xd5\xe6\xf7",
        ),
        index: 3,
        threshold: Threshold::new(3, 4).unwrap(),
        epoch: 1,
        salt: Salt(std::array::from_fn(|i| i as u8)),
        share: ShareBytes::new(
            (0..33u8)
                .map(|i| i.wrapping_mul(37).wrapping_add(11))
                .collect(),
        ),
    }
}

#[test]
fn envelope_known_answer() {
    let e = sample_envelope();
    let enc = e.encode();
    check(
        "envelope.txt",
        "Shard envelope v1: secret id, index 3 of a 3-of-4, epoch 1, salt 00..1f, 33-byte share",
        &[("encoded", hex::encode(&*enc))],
    );
    let file = read("envelope.txt");
    let bytes = hex::decode(&file["encoded"]).unwrap();
    assert_eq!(ShardEnvelope::decode(&bytes).unwrap(), e);
}

#[test]
fn commitment_known_answer() {
    let e = sample_envelope();
    let c = e.commitment();
    check(
        "commitment.txt",
        "SHA-256(\"shard-commitment-v1\\0\" || salt || index || share) for the envelope vector",
        &[
            ("salt", hex::encode(e.salt.0)),
            ("index", e.index.to_string()),
            ("share", hex::encode(e.share.expose())),
            ("commitment", hex::encode(c.0)),
        ],
    );
}

fn sample_manifest() -> (SigningKey, Manifest) {
    let signing = SigningKey::from_slice(&[0x42; 32]).unwrap();
    let user_key = p256::SecretKey::from_slice(&[0x24; 32]).unwrap();
    let m = Manifest {
        secret_id: sample_envelope().secret_id,
        threshold: Threshold::new(3, 4).unwrap(),
        epoch: 1,
        created_at: 1_790_000_000,
        owner: "spiffe://example.test/user/alice".into(),
        kind: SecretKind::P256(user_key.public_key()),
        custodians: ["c1", "c2", "c3", "c4"]
            .iter()
            .map(|c| CustodianId::new(c).unwrap())
            .collect(),
        commitments: (1..=4u8).map(|i| Commitment([i; 32])).collect(),
    };
    (signing, m)
}

#[test]
fn manifest_signature_known_answer() {
    let (signing, m) = sample_manifest();
    let verifying = VerifyingKey::from(&signing);
    let signed = m.clone().sign(&signing).unwrap();
    let encoded = signed.encode();
    check(
        "manifest.txt",
        "Signed manifest v1; ECDSA P-256 / SHA-256 with RFC 6979 nonces, signing key scalar 0x42 x 32",
        &[
            ("public_key_sec1", hex::encode(verifying.to_encoded_point(true).as_bytes())),
            ("canonical", hex::encode(m.canonical_bytes().unwrap())),
            ("signature", hex::encode(signed.signature_bytes())),
            ("signed", hex::encode(&encoded)),
        ],
    );

    // The stored signed manifest verifies with the stored public key and decodes to the sample.
    let file = read("manifest.txt");
    let key =
        VerifyingKey::from_sec1_bytes(&hex::decode(&file["public_key_sec1"]).unwrap()).unwrap();
    let stored = SignedManifest::decode(&hex::decode(&file["signed"]).unwrap()).unwrap();
    assert_eq!(stored.verify(&key).unwrap(), &m);

    // Any flipped bit in the stored bytes is refused, by structure or by signature.
    let bytes = hex::decode(&file["signed"]).unwrap();
    for bit in (0..bytes.len() * 8).step_by(7) {
        let mut b = bytes.clone();
        b[bit / 8] ^= 1 << (bit % 8);
        let ok = SignedManifest::decode(&b)
            .ok()
            .and_then(|s| s.verify(&key).ok().cloned());
        assert!(ok.is_none(), "bit {bit} flipped and still verified");
    }
    // Another key does not verify it.
    let other = VerifyingKey::from(&SigningKey::from_slice(&[0x43; 32]).unwrap());
    assert_eq!(
        stored.verify(&other).unwrap_err(),
        shard::Error::BadSignature
    );
}
