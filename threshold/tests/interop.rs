//! What we sign, checked by verifiers no one here wrote: the `openssl` command
//! (OpenSSL 3) for Ed25519, libsecp256k1 (through the `secp256k1` crate) for
//! BIP340. `openssl` is installed by `scripts/setup.sh`; without it the OpenSSL
//! tests fail, saying so.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{dkg_keys, rng, run_dkg, sign_with, vector_field};
use threshold::{deal, import, GroupKey, Kind, Signature, Threshold};

const MESSAGE: &[u8] = b"threshold signature checked by another implementation";

/// A scratch directory for one test, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("threshold-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    fn write(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn openssl(args: &[&str]) -> Output {
    Command::new("openssl")
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run `openssl` ({e}): it is needed here; scripts/setup.sh installs it")
        })
}

fn arg(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// `openssl pkeyutl -verify` of a raw Ed25519 signature over a message file.
fn openssl_verifies(
    scratch: &Scratch,
    public_pem: &Path,
    signature: &[u8],
    message: &[u8],
) -> bool {
    let sig = scratch.write("sig", signature);
    let msg = scratch.write("msg", message);
    let out = openssl(&[
        "pkeyutl",
        "-verify",
        "-rawin",
        "-pubin",
        "-inkey",
        arg(public_pem),
        "-sigfile",
        arg(&sig),
        "-in",
        arg(&msg),
    ]);
    let verified = String::from_utf8_lossy(&out.stdout).contains("Signature Verified Successfully");
    assert_eq!(out.status.success(), verified, "{out:?}");
    verified
}

/// The same, over [`MESSAGE`].
fn openssl_verifies_message(scratch: &Scratch, public_pem: &Path, signature: &Signature) -> bool {
    openssl_verifies(scratch, public_pem, signature.as_bytes(), MESSAGE)
}

#[test]
fn openssl_accepts_a_three_of_four_ed25519_signature() {
    let scratch = Scratch::new("openssl-3of4");
    let dealt = deal(Kind::Ed25519, Threshold::new(3, 4).unwrap(), &mut rng()).unwrap();
    let signature = sign_with(&dealt.key_packages, &dealt.public, &[1, 3, 4], MESSAGE).unwrap();
    let pem = scratch.write("pub.pem", dealt.public.group_key().to_text().as_bytes());
    assert!(openssl_verifies_message(&scratch, &pem, &signature));
    assert!(!openssl_verifies(
        &scratch,
        &pem,
        signature.as_bytes(),
        b"another message"
    ));
    let mut bent = signature.as_bytes().to_vec();
    bent[40] ^= 1;
    assert!(!openssl_verifies(&scratch, &pem, &bent, MESSAGE));
}

#[test]
fn openssl_accepts_an_ed25519_signature_of_a_dkg_key() {
    let scratch = Scratch::new("openssl-dkg");
    let shares = run_dkg(Kind::Ed25519, Threshold::new(2, 3).unwrap(), &mut rng());
    let (key_packages, public) = dkg_keys(shares);
    let signature = sign_with(&key_packages, &public, &[1, 3], MESSAGE).unwrap();
    let pem = scratch.write("pub.pem", public.group_key().to_text().as_bytes());
    assert!(openssl_verifies_message(&scratch, &pem, &signature));
}

/// An Ed25519 key OpenSSL made, imported and split 3-of-4: the group key is
/// OpenSSL's public key, and OpenSSL accepts what the holders sign with it.
#[test]
fn an_openssl_ed25519_key_imported_keeps_its_public_key() {
    let scratch = Scratch::new("openssl-import");
    let key = scratch.0.join("key.der");
    let made = openssl(&[
        "genpkey",
        "-algorithm",
        "ed25519",
        "-outform",
        "DER",
        "-out",
        arg(&key),
    ]);
    assert!(made.status.success(), "{made:?}");
    let pem = scratch.0.join("pub.pem");
    let public = openssl(&[
        "pkey",
        "-inform",
        "DER",
        "-in",
        arg(&key),
        "-pubout",
        "-out",
        arg(&pem),
    ]);
    assert!(public.status.success(), "{public:?}");

    // PKCS#8 for Ed25519 is 16 bytes of header, then the 32-byte seed.
    let der = std::fs::read(&key).unwrap();
    assert_eq!(der.len(), 48);
    let dealt = import(
        Kind::Ed25519,
        &der[16..],
        Threshold::new(3, 4).unwrap(),
        &mut rng(),
    )
    .unwrap();
    let openssl_pem = std::fs::read_to_string(&pem).unwrap();
    assert_eq!(
        dealt.public.group_key(),
        &GroupKey::from_text(Kind::Ed25519, &openssl_pem).unwrap()
    );

    let signature = sign_with(&dealt.key_packages, &dealt.public, &[2, 3, 4], MESSAGE).unwrap();
    assert!(openssl_verifies_message(&scratch, &pem, &signature));
}

/// The published FROST(Ed25519, SHA-512) vector's signature is a plain
/// Ed25519 signature too: OpenSSL accepts it under the key as we write it.
#[test]
fn openssl_accepts_the_rfc9591_ed25519_vector() {
    let scratch = Scratch::new("openssl-vector");
    let field = vector_field("frost-ed25519-sha512.json");
    let key = GroupKey::decode(Kind::Ed25519, &field("group_public_key")).unwrap();
    let pem = scratch.write("pub.pem", key.to_text().as_bytes());
    assert!(openssl_verifies(
        &scratch,
        &pem,
        &field("signature"),
        &field("message")
    ));
}

fn libsecp256k1_verifies(group_key: &GroupKey, signature: &[u8], message: &[u8]) -> bool {
    let key = secp256k1::XOnlyPublicKey::from_byte_array(group_key.as_bytes().try_into().unwrap())
        .unwrap();
    let signature = secp256k1::schnorr::Signature::from_byte_array(signature.try_into().unwrap());
    secp256k1::schnorr::verify(&signature, message, &key).is_ok()
}

#[test]
fn libsecp256k1_accepts_a_three_of_four_bip340_signature() {
    // Both parities of the group key occur among a few keys.
    for _ in 0..4 {
        let dealt = deal(Kind::Secp256k1Tr, Threshold::new(3, 4).unwrap(), &mut rng()).unwrap();
        let signature = sign_with(&dealt.key_packages, &dealt.public, &[1, 2, 4], MESSAGE).unwrap();
        let key = dealt.public.group_key();
        assert!(libsecp256k1_verifies(key, signature.as_bytes(), MESSAGE));
        assert!(!libsecp256k1_verifies(
            key,
            signature.as_bytes(),
            b"another message"
        ));
    }
}

#[test]
fn libsecp256k1_accepts_a_bip340_signature_of_a_dkg_key() {
    for threshold in [(2, 2), (2, 3), (3, 4)] {
        let threshold = Threshold::new(threshold.0, threshold.1).unwrap();
        let shares = run_dkg(Kind::Secp256k1Tr, threshold, &mut rng());
        let (key_packages, public) = dkg_keys(shares);
        let signers: Vec<u16> = (1..=threshold.t()).collect();
        let signature = sign_with(&key_packages, &public, &signers, MESSAGE).unwrap();
        assert!(libsecp256k1_verifies(
            public.group_key(),
            signature.as_bytes(),
            MESSAGE
        ));
    }
}

/// A secp256k1 secret imported and split: the group key is the x-only key
/// libsecp256k1 derives from it, and libsecp256k1 accepts the signatures.
#[test]
fn a_libsecp256k1_key_imported_keeps_its_x_only_key() {
    for secret in [[0x11u8; 32], [0x5au8; 32], [0xc3u8; 32]] {
        let keypair = secp256k1::Keypair::from_secret_bytes(secret).unwrap();
        let (x_only, _) = keypair.x_only_public_key();
        let dealt = import(
            Kind::Secp256k1Tr,
            &secret,
            Threshold::new(3, 4).unwrap(),
            &mut rng(),
        )
        .unwrap();
        assert_eq!(dealt.public.group_key().as_bytes(), x_only.to_byte_array());
        let signature = sign_with(&dealt.key_packages, &dealt.public, &[1, 2, 3], MESSAGE).unwrap();
        assert!(libsecp256k1_verifies(
            dealt.public.group_key(),
            signature.as_bytes(),
            MESSAGE
        ));
    }
}

/// The frost repository's secp256k1-tr vector is a BIP340 signature that
/// libsecp256k1 accepts.
#[test]
fn libsecp256k1_accepts_the_secp256k1_tr_vector() {
    let field = vector_field("frost-secp256k1-tr.json");
    let key = GroupKey::decode(Kind::Secp256k1Tr, &field("group_public_key")[1..]).unwrap();
    assert!(libsecp256k1_verifies(
        &key,
        &field("signature"),
        &field("message")
    ));
}
