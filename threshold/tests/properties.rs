//! No input panics: arbitrary bytes and text into every decoder, and valid
//! encodings with one byte altered or cut short into every operation.

mod common;

use std::collections::BTreeMap;
use std::sync::OnceLock;

use common::{holder, rng};
use proptest::collection::vec;
use proptest::prelude::*;
use threshold::{
    aggregate, commit, deal, dkg, import, sign, Commitment, Dealt, GroupKey, KeyPackage, Kind,
    PublicKeyPackage, Signature, SignatureShare, SigningCommitments, SigningPackage, Threshold,
};

const MESSAGE: &[u8] = b"fuzzed";

/// Every decoder of `kind`, fed `bytes`; whatever decodes is used once.
fn decode_everything(kind: Kind, bytes: &[u8]) {
    let fixture = fixture(kind);
    if let Ok(key) = KeyPackage::decode(kind, bytes) {
        let _ = key.check(&fixture.dealt.commitment);
        if let Ok((nonces, _)) = commit(&key, &mut rng()) {
            let _ = sign(&key, nonces, &fixture.package);
        }
    }
    if let Ok(public) = PublicKeyPackage::decode(kind, bytes) {
        let _ = public.check(&fixture.dealt.commitment);
        let _ = aggregate(&public, &fixture.package, &fixture.shares);
    }
    if let Ok(commitment) = Commitment::decode(kind, bytes) {
        let _ = fixture.key().check(&commitment);
        let _ = fixture.dealt.public.check(&commitment);
    }
    if let Ok(commitments) = SigningCommitments::decode(kind, bytes) {
        let set = BTreeMap::from([(holder(1), commitments)]);
        let _ = SigningPackage::new(kind, &set, MESSAGE);
    }
    if let Ok(package) = SigningPackage::decode(kind, bytes) {
        let (nonces, _) = commit(fixture.key(), &mut rng()).unwrap();
        let _ = sign(fixture.key(), nonces, &package);
        let _ = aggregate(&fixture.dealt.public, &package, &fixture.shares);
    }
    if let Ok(share) = SignatureShare::decode(kind, bytes) {
        let mut shares = fixture.shares.clone();
        shares.insert(holder(1), share);
        let _ = aggregate(&fixture.dealt.public, &fixture.package, &shares);
    }
    if let Ok(signature) = Signature::decode(kind, bytes) {
        let _ = fixture.dealt.public.group_key().verify(MESSAGE, &signature);
    }
    if let Ok(key) = GroupKey::decode(kind, bytes) {
        let _ = key.verify(MESSAGE, &fixture.signature);
    }
    let _ = dkg::Round1Package::decode(kind, bytes);
    let _ = dkg::Round2Package::decode(kind, bytes);
    let _ = import(kind, bytes, Threshold::new(2, 3).unwrap(), &mut rng());
}

/// One 2-of-3 key of a kind, with a finished signing session by holders 1 and 2.
struct Fixture {
    dealt: Dealt,
    package: SigningPackage,
    shares: BTreeMap<threshold::HolderId, SignatureShare>,
    signature: Signature,
    encodings: Vec<Vec<u8>>,
}

impl Fixture {
    fn key(&self) -> &KeyPackage {
        &self.dealt.key_packages[&holder(1)]
    }
}

fn fixture(kind: Kind) -> &'static Fixture {
    static FIXTURES: OnceLock<Vec<Fixture>> = OnceLock::new();
    let all = FIXTURES.get_or_init(|| Kind::ALL.into_iter().map(make_fixture).collect());
    &all[Kind::ALL.iter().position(|k| *k == kind).unwrap()]
}

fn make_fixture(kind: Kind) -> Fixture {
    let dealt = deal(kind, Threshold::new(2, 3).unwrap(), &mut rng()).unwrap();
    let mut nonces = BTreeMap::new();
    let mut commitments = BTreeMap::new();
    for id in [holder(1), holder(2)] {
        let (mine, public_part) = commit(&dealt.key_packages[&id], &mut rng()).unwrap();
        nonces.insert(id, mine);
        commitments.insert(id, public_part);
    }
    let package = SigningPackage::new(kind, &commitments, MESSAGE).unwrap();
    let shares: BTreeMap<_, _> = nonces
        .into_iter()
        .map(|(id, mine)| (id, sign(&dealt.key_packages[&id], mine, &package).unwrap()))
        .collect();
    let signature = aggregate(&dealt.public, &package, &shares).unwrap();
    let (_, round1) =
        dkg::part1(kind, holder(1), Threshold::new(2, 3).unwrap(), &mut rng()).unwrap();
    let encodings = vec![
        dealt.key_packages[&holder(1)].expose().to_vec(),
        dealt.public.as_bytes().to_vec(),
        dealt.commitment.as_bytes().to_vec(),
        commitments[&holder(1)].as_bytes().to_vec(),
        package.as_bytes().to_vec(),
        shares[&holder(1)].as_bytes().to_vec(),
        signature.as_bytes().to_vec(),
        dealt.public.group_key().as_bytes().to_vec(),
        round1.as_bytes().to_vec(),
    ];
    Fixture {
        dealt,
        package,
        shares,
        signature,
        encodings,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in vec(any::<u8>(), 0..400)) {
        for kind in Kind::ALL {
            decode_everything(kind, &bytes);
        }
    }

    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,200}") {
        for kind in Kind::ALL {
            let _ = GroupKey::from_text(kind, &text);
        }
        let _ = text.parse::<Kind>();
    }

    #[test]
    fn an_altered_byte_never_panics(which in any::<usize>(), at in any::<usize>(), xor in 1u8..) {
        for kind in Kind::ALL {
            let fixture = fixture(kind);
            let mut bytes = fixture.encodings[which % fixture.encodings.len()].clone();
            let at = at % bytes.len();
            bytes[at] ^= xor;
            decode_everything(kind, &bytes);
            bytes.truncate(at);
            decode_everything(kind, &bytes);
        }
    }
}

/// Each kind's encodings, decoded as every other kind, are refused.
#[test]
fn another_kinds_bytes_are_refused() {
    for kind in Kind::ALL {
        for other in Kind::ALL.into_iter().filter(|k| *k != kind) {
            let encodings = &fixture(other).encodings;
            assert!(
                KeyPackage::decode(kind, &encodings[0]).is_err(),
                "{kind} {other}"
            );
            assert!(
                PublicKeyPackage::decode(kind, &encodings[1]).is_err(),
                "{kind} {other}"
            );
            assert!(
                SigningPackage::decode(kind, &encodings[4]).is_err(),
                "{kind} {other}"
            );
            assert!(
                dkg::Round1Package::decode(kind, &encodings[8]).is_err(),
                "{kind} {other}"
            );
        }
    }
}
