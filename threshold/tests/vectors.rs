//! The published signing transcripts in `tests/vectors/` (see its README),
//! replayed through this crate: the vector's key packages in, the vector's nonce
//! randomness as the generator, and out must come the vector's commitments,
//! signature shares and, byte for byte, its signature.

use std::collections::BTreeMap;

use frost_core::keys::{
    KeyPackage as FrostKeyPackage, PublicKeyPackage as FrostPublicKeyPackage, SigningShare,
    VerifyingShare,
};
use frost_core::round1::{NonceCommitment, SigningCommitments as FrostCommitments};
use frost_core::round2::SignatureShare as FrostShare;
use frost_core::{Ciphersuite, Identifier, VerifyingKey};
use serde_json::Value;
use threshold::rand_core::{CryptoRng, RngCore};
use threshold::{
    aggregate, commit, import, sign, GroupKey, HolderId, KeyPackage, Kind, PublicKeyPackage,
    SigningPackage, Threshold,
};

/// A generator that answers the vector's nonce randomness, in order.
struct Replay(Vec<u8>);

impl RngCore for Replay {
    // Words come from the same bytes; a draw the vector did not make shifts every
    // nonce after it, so the transcript comparisons below fail.
    fn next_u32(&mut self) -> u32 {
        threshold::rand_core::impls::next_u32_via_fill(self)
    }

    fn next_u64(&mut self) -> u64 {
        threshold::rand_core::impls::next_u64_via_fill(self)
    }

    fn fill_bytes(&mut self, dest: &mut [u8]) {
        assert!(
            dest.len() <= self.0.len(),
            "drew more than the vector holds"
        );
        let rest = self.0.split_off(dest.len());
        dest.copy_from_slice(&self.0);
        self.0 = rest;
    }

    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), threshold::rand_core::Error> {
        self.fill_bytes(dest);
        Ok(())
    }
}

impl CryptoRng for Replay {}

fn load(file: &str) -> Value {
    let path = format!("{}/tests/vectors/{file}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn bytes(value: &Value) -> Vec<u8> {
    hex::decode(value.as_str().unwrap()).unwrap()
}

fn holder(value: &Value) -> u16 {
    u16::try_from(value.as_u64().unwrap()).unwrap()
}

/// Replays one vector file of suite `C`, answering the signature it made.
fn replay<C: Ciphersuite>(kind: Kind, file: &str) -> threshold::Signature {
    let vector = load(file);
    assert_eq!(vector["kind"].as_str(), Some(kind.as_str()));
    let min_signers = u16::try_from(vector["min_signers"].as_u64().unwrap()).unwrap();
    let group = VerifyingKey::<C>::deserialize(&bytes(&vector["group_public_key"])).unwrap();
    let message = bytes(&vector["message"]);

    // Key packages in: the vector's shares, as FROST serializes a key package.
    let mut verifying_shares = BTreeMap::new();
    let mut key_packages = BTreeMap::new();
    for share in vector["shares"].as_array().unwrap() {
        let n = holder(&share["holder"]);
        let id = Identifier::<C>::try_from(n).unwrap();
        let signing_share = SigningShare::<C>::deserialize(&bytes(&share["share"])).unwrap();
        let verifying_share = VerifyingShare::from(signing_share);
        verifying_shares.insert(id, verifying_share);
        let package = FrostKeyPackage::new(id, signing_share, verifying_share, group, min_signers);
        let package = KeyPackage::decode(kind, &package.serialize().unwrap()).unwrap();
        assert_eq!(package.holder().get(), n);
        key_packages.insert(package.holder(), package);
    }
    let public = FrostPublicKeyPackage::new(verifying_shares, group, Some(min_signers));
    let public = PublicKeyPackage::decode(kind, &public.serialize().unwrap()).unwrap();

    // Round 1, with the vector's randomness: the vector's commitments.
    let mut nonces = BTreeMap::new();
    let mut commitments = BTreeMap::new();
    for signer in vector["signers"].as_array().unwrap() {
        let id = HolderId::new(holder(&signer["holder"])).unwrap();
        let randomness = [
            bytes(&signer["hiding_nonce_randomness"]),
            bytes(&signer["binding_nonce_randomness"]),
        ]
        .concat();
        let (mine, public_part) = commit(&key_packages[&id], &mut Replay(randomness)).unwrap();
        let expected = FrostCommitments::<C>::new(
            NonceCommitment::deserialize(&bytes(&signer["hiding_nonce_commitment"])).unwrap(),
            NonceCommitment::deserialize(&bytes(&signer["binding_nonce_commitment"])).unwrap(),
        );
        assert_eq!(
            public_part.as_bytes(),
            expected.serialize().unwrap(),
            "{id}"
        );
        nonces.insert(id, mine);
        commitments.insert(id, public_part);
    }

    // Round 2: the vector's signature shares.
    let package = SigningPackage::new(kind, &commitments, &message).unwrap();
    assert_eq!(package.message(), message);
    let mut shares = BTreeMap::new();
    for signer in vector["signers"].as_array().unwrap() {
        let id = HolderId::new(holder(&signer["holder"])).unwrap();
        let nonces = nonces.remove(&id).unwrap();
        let share = sign(&key_packages[&id], nonces, &package).unwrap();
        let expected = FrostShare::<C>::deserialize(&bytes(&signer["signature_share"])).unwrap();
        assert_eq!(share.as_bytes(), expected.serialize(), "{id}");
        shares.insert(id, share);
    }

    // The signature, byte for byte, and it verifies under the group key.
    let signature = aggregate(&public, &package, &shares).unwrap();
    assert_eq!(
        hex::encode(signature.as_bytes()),
        vector["signature"].as_str().unwrap()
    );
    public.group_key().verify(&message, &signature).unwrap();
    assert_eq!(
        public.group_key().verify(b"another message", &signature),
        Err(threshold::Error::InvalidSignature)
    );
    signature
}

#[test]
fn rfc9591_ed25519_sha512() {
    let signature =
        replay::<frost_ed25519::Ed25519Sha512>(Kind::Ed25519, "frost-ed25519-sha512.json");
    assert_eq!(signature.as_bytes().len(), 64);
}

#[test]
fn rfc9591_p256_sha256() {
    let signature = replay::<frost_p256::P256Sha256>(Kind::P256Schnorr, "frost-p256-sha256.json");
    assert_eq!(signature.as_bytes().len(), 65);
}

#[test]
fn frost_repository_secp256k1_tr() {
    let signature = replay::<frost_secp256k1_tr::Secp256K1Sha256TR>(
        Kind::Secp256k1Tr,
        "frost-secp256k1-tr.json",
    );
    assert_eq!(signature.as_bytes().len(), 64);
}

/// The group key in its ecosystem's encoding is the vector's key: itself for
/// Ed25519 and P-256, without its parity byte for BIP340.
#[test]
fn vector_group_keys_in_each_ecosystem() {
    for (kind, file, strip) in [
        (Kind::Ed25519, "frost-ed25519-sha512.json", 0),
        (Kind::P256Schnorr, "frost-p256-sha256.json", 0),
        (Kind::Secp256k1Tr, "frost-secp256k1-tr.json", 1),
    ] {
        let vector = load(file);
        let key = bytes(&vector["group_public_key"]);
        let group_key = GroupKey::decode(kind, &key[strip..]).unwrap();
        assert_eq!(
            GroupKey::from_text(kind, &group_key.to_text()),
            Ok(group_key)
        );
    }
}

/// Importing the vector's secret scalar (the encoding of the private key for
/// secp256k1-tr and p256-schnorr) gives the vector's group key.
#[test]
fn importing_a_vector_secret_gives_its_group_key() {
    for (kind, file, strip) in [
        (Kind::P256Schnorr, "frost-p256-sha256.json", 0),
        (Kind::Secp256k1Tr, "frost-secp256k1-tr.json", 1),
    ] {
        let vector = load(file);
        let secret = bytes(&vector["group_secret_key"]);
        let dealt = import(
            kind,
            &secret,
            Threshold::new(2, 3).unwrap(),
            &mut common_rng(),
        )
        .unwrap();
        let key = bytes(&vector["group_public_key"]);
        assert_eq!(dealt.public.group_key().as_bytes(), &key[strip..]);
    }
}

fn common_rng() -> threshold::SeededRng {
    threshold::SeededRng::from_seed(threshold::Zeroizing::new([9; 32]))
}
