//! What the threshold tests share: a generator, and one whole signing session.

#![allow(dead_code)]

use std::collections::BTreeMap;

use threshold::rand_core::{OsRng, RngCore};
use threshold::{
    aggregate, commit, dkg, sign, HolderId, KeyPackage, Kind, PublicKeyPackage, SeededRng,
    Signature, SigningPackage, Threshold, Zeroizing,
};

/// A generator seeded from the OS, as a service seeds one from its mixed randomness.
pub fn rng() -> SeededRng {
    let mut seed = Zeroizing::new([0u8; 32]);
    OsRng.fill_bytes(&mut seed[..]);
    SeededRng::from_seed(seed)
}

/// Holder `n`.
pub fn holder(n: u16) -> HolderId {
    HolderId::new(n).unwrap()
}

/// Both rounds and the aggregation, with the holders in `signers`.
pub fn sign_with(
    key_packages: &BTreeMap<HolderId, KeyPackage>,
    public: &PublicKeyPackage,
    signers: &[u16],
    message: &[u8],
) -> Result<Signature, threshold::Error> {
    let mut rng = rng();
    let mut nonces = BTreeMap::new();
    let mut commitments = BTreeMap::new();
    for &n in signers {
        let (mine, public_part) = commit(&key_packages[&holder(n)], &mut rng)?;
        nonces.insert(holder(n), mine);
        commitments.insert(holder(n), public_part);
    }
    let package = SigningPackage::new(public.kind(), &commitments, message)?;
    let mut shares = BTreeMap::new();
    for (id, mine) in nonces {
        shares.insert(id, sign(&key_packages[&id], mine, &package)?);
    }
    aggregate(public, &package, &shares)
}

/// Every `k`-subset of `1..=n`, in order.
pub fn subsets(n: u16, k: usize) -> Vec<Vec<u16>> {
    let mut all = vec![vec![]];
    for i in 1..=n {
        let mut more = Vec::new();
        for s in &all {
            if s.len() < k {
                let mut t = s.clone();
                t.push(i);
                more.push(t);
            }
        }
        all.extend(more);
    }
    all.retain(|s| s.len() == k);
    all
}

/// Every holder's DKG outcome, all holders run here. Each package crosses as
/// bytes, as it would between custodians.
pub fn run_dkg(
    kind: Kind,
    threshold: Threshold,
    rng: &mut SeededRng,
) -> BTreeMap<HolderId, dkg::KeyShare> {
    let mut round1_secrets = BTreeMap::new();
    let mut round1 = BTreeMap::new();
    for id in HolderId::all(threshold.n()) {
        let (secret, package) = dkg::part1(kind, id, threshold, rng).unwrap();
        let sent = dkg::Round1Package::decode(kind, package.as_bytes()).unwrap();
        assert_eq!(sent, package);
        round1_secrets.insert(id, secret);
        round1.insert(id, sent);
    }
    // Each holder sees every round-1 package, its own included (it is ignored).
    let mut round2_secrets = BTreeMap::new();
    let mut inbox: BTreeMap<HolderId, BTreeMap<HolderId, dkg::Round2Package>> = BTreeMap::new();
    for (id, secret) in round1_secrets {
        let (secret, outgoing) = dkg::part2(secret, &round1).unwrap();
        assert_eq!(outgoing.len(), usize::from(threshold.n()) - 1);
        assert!(!outgoing.contains_key(&id));
        for (to, package) in outgoing {
            let sent = dkg::Round2Package::decode(kind, package.expose()).unwrap();
            inbox.entry(to).or_default().insert(id, sent);
        }
        round2_secrets.insert(id, secret);
    }
    round2_secrets
        .into_iter()
        .map(|(id, secret)| (id, dkg::part3(secret, &round1, &inbox[&id]).unwrap()))
        .collect()
}

/// The key packages and the public key package of a DKG outcome.
pub fn dkg_keys(
    shares: BTreeMap<HolderId, dkg::KeyShare>,
) -> (BTreeMap<HolderId, KeyPackage>, PublicKeyPackage) {
    let mut public = None;
    let keys = shares
        .into_iter()
        .map(|(id, share)| {
            assert!(public.as_ref().is_none_or(|p| *p == share.public));
            public = Some(share.public);
            (id, share.key_package)
        })
        .collect();
    (keys, public.unwrap())
}

/// A reader of the hex fields of a vector file in `tests/vectors/`.
pub fn vector_field(file: &str) -> impl Fn(&str) -> Vec<u8> {
    let path = format!("{}/tests/vectors/{file}", env!("CARGO_MANIFEST_DIR"));
    let vector: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    move |name| hex::decode(vector[name].as_str().unwrap()).unwrap()
}
