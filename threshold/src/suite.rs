//! The one place that knows the three ciphersuites: what each adds to FROST
//! (its group-key encoding, how an imported private key becomes a scalar), the
//! dispatch from a [`Kind`] to the generic code, and the conversions between
//! FROST's values and ours (bytes, holder numbers, errors).
//!
//! Everything else in the crate is written once, generic over [`Suite`].

use std::collections::BTreeMap;

use frost_core::{Ciphersuite, Field, Group, Identifier, SigningKey, VerifyingKey};
use sha2::{Digest, Sha512};
use zeroize::Zeroizing;

use crate::{Error, HolderId, Kind};

/// A FROST ciphersuite this crate signs with, and what its ecosystem expects
/// beyond FROST itself.
pub(crate) trait Suite: Ciphersuite {
    /// The kind this ciphersuite signs for.
    const KIND: Kind;

    /// The ecosystem's encoding of a group key, from the ciphersuite's.
    fn ecosystem_key(frost: Vec<u8>) -> Vec<u8> {
        frost
    }

    /// The ciphersuite's encoding of a group key, from the ecosystem's.
    fn frost_key(ecosystem: &[u8]) -> Vec<u8> {
        ecosystem.to_vec()
    }

    /// Whether the DKG's last step negates the whole sharing when the sum of
    /// the holders' constant terms is `key` (BIP340 keeps only even-`y` keys).
    fn dkg_negates(_key: &VerifyingKey<Self>) -> bool {
        false
    }

    /// The signing key that a private key in the ecosystem's encoding names.
    /// By default that encoding is the ciphersuite's scalar.
    fn import_key(private_key: &[u8]) -> Result<SigningKey<Self>, Error> {
        SigningKey::deserialize(private_key).map_err(|_| Error::InvalidPrivateKey(Self::KIND))
    }
}

impl Suite for frost_ed25519::Ed25519Sha512 {
    const KIND: Kind = Kind::Ed25519;

    /// An Ed25519 private key (RFC 8032, and what PKCS#8 carries) is a 32-byte
    /// seed: the scalar is the clamped first half of its SHA-512, reduced.
    /// Sharing that scalar keeps the public key, so the imported key still
    /// verifies as itself.
    fn import_key(private_key: &[u8]) -> Result<SigningKey<Self>, Error> {
        if private_key.len() != 32 {
            return Err(Error::InvalidPrivateKey(Self::KIND));
        }
        let digest = Zeroizing::new(<[u8; 64]>::from(Sha512::digest(private_key)));
        let mut half = Zeroizing::new([0u8; 32]);
        half.copy_from_slice(&digest[..32]);
        half[0] &= 248;
        half[31] &= 127;
        half[31] |= 64;
        let scalar = curve25519_dalek::Scalar::from_bytes_mod_order(*half);
        let bytes = Zeroizing::new(scalar.to_bytes());
        SigningKey::deserialize(&bytes[..]).map_err(|_| Error::InvalidPrivateKey(Self::KIND))
    }
}

impl Suite for frost_secp256k1_tr::Secp256K1Sha256TR {
    const KIND: Kind = Kind::Secp256k1Tr;

    /// BIP340 keys are x-only: the SEC1 compressed point without its parity byte.
    fn ecosystem_key(mut frost: Vec<u8>) -> Vec<u8> {
        if !frost.is_empty() {
            frost.remove(0);
        }
        frost
    }

    /// The DKG makes the key even-`y` (negating every share if needed), then
    /// adds the BIP341 tweak of an unspendable script path.
    fn dkg_negates(key: &VerifyingKey<Self>) -> bool {
        !frost_secp256k1_tr::keys::EvenY::has_even_y(key)
    }

    /// An x-only key names the point with even `y` (BIP340 `lift_x`).
    fn frost_key(ecosystem: &[u8]) -> Vec<u8> {
        let mut frost = Vec::with_capacity(33);
        frost.push(0x02);
        frost.extend_from_slice(ecosystem);
        frost
    }
}

impl Suite for frost_p256::P256Sha256 {
    const KIND: Kind = Kind::P256Schnorr;
}

/// Runs `$body` with `$S` naming the ciphersuite of `$kind`.
macro_rules! dispatch {
    ($kind:expr, $S:ident => $body:expr) => {
        match $kind {
            $crate::Kind::Ed25519 => {
                type $S = frost_ed25519::Ed25519Sha512;
                $body
            }
            $crate::Kind::Secp256k1Tr => {
                type $S = frost_secp256k1_tr::Secp256K1Sha256TR;
                $body
            }
            $crate::Kind::P256Schnorr => {
                type $S = frost_p256::P256Sha256;
                $body
            }
        }
    };
}
pub(crate) use dispatch;

/// A FROST value that crosses this crate's API as bytes, in FROST's own
/// serialization (a header naming the ciphersuite, then the fields).
pub(crate) trait Wire<S: Suite>: Sized {
    /// What the value is, for errors.
    const WHAT: &'static str;

    /// Reads the value, refusing anything that is not one of this ciphersuite.
    fn decode(bytes: &[u8]) -> Result<Self, Error>;

    /// Writes the value.
    fn encode(&self) -> Result<Vec<u8>, Error>;
}

/// The refusal for bytes that are not a `what` of `S`.
pub(crate) fn malformed<S: Suite>(what: &'static str) -> Error {
    Error::Malformed {
        kind: S::KIND,
        what,
    }
}

/// FROST's `serialize` answers either bytes or a result; both become ours.
trait Serialized<S: Suite> {
    fn into_bytes(self, what: &'static str) -> Result<Vec<u8>, Error>;
}

impl<S: Suite> Serialized<S> for Vec<u8> {
    fn into_bytes(self, _: &'static str) -> Result<Vec<u8>, Error> {
        Ok(self)
    }
}

impl<S: Suite> Serialized<S> for Result<Vec<u8>, frost_core::Error<S>> {
    fn into_bytes(self, what: &'static str) -> Result<Vec<u8>, Error> {
        self.map_err(|_| malformed::<S>(what))
    }
}

/// Implements [`Wire`] for FROST types through their own `serialize` and
/// `deserialize`.
macro_rules! wire {
    ($($($segment:ident)::+ => $what:literal),+ $(,)?) => {$(
        impl<S: Suite> Wire<S> for frost_core::$($segment)::+<S> {
            const WHAT: &'static str = $what;

            fn decode(bytes: &[u8]) -> Result<Self, Error> {
                Self::deserialize(bytes).map_err(|_| malformed::<S>($what))
            }

            fn encode(&self) -> Result<Vec<u8>, Error> {
                Serialized::<S>::into_bytes(self.serialize(), $what)
            }
        }
    )+};
}

wire! {
    keys::KeyPackage => "key package",
    keys::PublicKeyPackage => "public key package",
    round1::SigningNonces => "signing nonces",
    round1::SigningCommitments => "signing commitments",
    SigningPackage => "signing package",
    round2::SignatureShare => "signature share",
    Signature => "signature",
    VerifyingKey => "group key",
    keys::dkg::round1::SecretPackage => "DKG round-1 secret",
    keys::dkg::round1::Package => "DKG round-1 package",
    keys::dkg::round2::SecretPackage => "DKG round-2 secret",
    keys::dkg::round2::Package => "DKG round-2 package",
    keys::SecretShare => "reshare sub-share",
}

impl<S: Suite> Wire<S> for frost_core::keys::VerifiableSecretSharingCommitment<S> {
    const WHAT: &'static str = "group commitment";

    /// The coefficient commitments, concatenated; at least one.
    fn decode(bytes: &[u8]) -> Result<Self, Error> {
        if bytes.is_empty() {
            return Err(malformed::<S>(Self::WHAT));
        }
        Self::deserialize_whole(bytes).map_err(|_| malformed::<S>(Self::WHAT))
    }

    fn encode(&self) -> Result<Vec<u8>, Error> {
        Serialized::<S>::into_bytes(self.serialize_whole(), Self::WHAT)
    }
}

/// FROST's identifier of a holder: the scalar `holder`.
pub(crate) fn identifier<S: Suite>(holder: HolderId) -> Result<Identifier<S>, Error> {
    Identifier::try_from(holder.get()).map_err(|_| Error::InvalidHolder(holder.get()))
}

/// The holder a FROST identifier names, refusing identifiers that are no
/// small integer (FROST allows any non-zero scalar; this crate only `1..=n`).
pub(crate) fn holder<S: Suite>(identifier: &Identifier<S>) -> Result<HolderId, Error> {
    const OUTSIDE: Error = Error::Participants("an identifier is outside 1..=65535");
    let bytes = identifier.serialize();
    let encoded = <<S::Group as Group>::Field as Field>::Serialization::try_from(&bytes[..])
        .map_err(|_| OUTSIDE)?;
    let scalar =
        <<S::Group as Group>::Field as Field>::deserialize(&encoded).map_err(|_| OUTSIDE)?;
    let little_endian = <<S::Group as Group>::Field as Field>::little_endian_serialize(&scalar);
    match little_endian.as_ref() {
        [low, high, rest @ ..] if rest.iter().all(|b| *b == 0) => {
            HolderId::new(u16::from_le_bytes([*low, *high]))
        }
        _ => Err(OUTSIDE),
    }
}

/// The holders a list of FROST identifiers names.
pub(crate) fn holders<'a, S: Suite>(
    ids: impl IntoIterator<Item = &'a Identifier<S>>,
) -> Result<Vec<HolderId>, Error> {
    ids.into_iter().map(holder::<S>).collect()
}

/// A map keyed by FROST identifier, re-keyed by holder.
pub(crate) fn by_holder<S: Suite, V>(
    map: impl IntoIterator<Item = (Identifier<S>, V)>,
) -> Result<BTreeMap<HolderId, V>, Error> {
    map.into_iter()
        .map(|(id, value)| Ok((holder::<S>(&id)?, value)))
        .collect()
}

/// FROST's refusal, as ours: culprits become holder numbers, and nothing else
/// of the input is carried.
pub(crate) fn refuse<S: Suite>(error: frost_core::Error<S>) -> Error {
    use frost_core::Error as E;
    let culprit = |id: &Identifier<S>| holder::<S>(id);
    match error {
        E::InvalidSignatureShare { culprits } => {
            match culprits.iter().map(culprit).collect::<Result<Vec<_>, _>>() {
                Ok(culprits) => Error::InvalidShares { culprits },
                Err(outside) => outside,
            }
        }
        E::InvalidProofOfKnowledge { culprit: id }
        | E::InvalidSecretShare { culprit: Some(id) } => match culprit(&id) {
            Ok(culprit) => Error::DkgCheater { culprit },
            Err(outside) => outside,
        },
        E::InvalidSecretShare { culprit: None } => Error::ShareMismatch,
        E::InvalidSignature => Error::InvalidSignature,
        E::InvalidMinSigners | E::InvalidMaxSigners => {
            Error::Participants("the threshold does not fit the holders")
        }
        E::IncorrectNumberOfCommitments => {
            Error::Participants("fewer commitments than the threshold")
        }
        E::IncorrectNumberOfShares => {
            Error::Participants("fewer signature shares than the threshold")
        }
        E::UnknownIdentifier => {
            Error::Participants("a holder is unknown to the group, or missing from a set")
        }
        E::DuplicatedIdentifier | E::DuplicatedShares => {
            Error::Participants("a holder appears twice")
        }
        E::PackageNotFound | E::IncorrectNumberOfPackages | E::IncorrectPackage => {
            Error::Participants("the DKG packages are not one from each other holder")
        }
        E::IncorrectNumberOfIdentifiers => Error::Participants("wrong number of holders"),
        E::MissingCommitment | E::IncorrectCommitment => {
            Error::Participants("a commitment is missing or does not match")
        }
        _ => malformed::<S>("input"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn holders_round_trip<S: Suite>() {
        for n in [1u16, 2, 3, 255, 256, 4096, u16::MAX] {
            let holder_id = HolderId::new(n).unwrap();
            let id = identifier::<S>(holder_id).unwrap();
            assert_eq!(holder::<S>(&id), Ok(holder_id), "{} {n}", S::KIND);
        }
        let derived = Identifier::<S>::derive(b"not a small number").unwrap();
        assert!(holder::<S>(&derived).is_err());
    }

    #[test]
    fn holder_numbers_survive_every_suite() {
        holders_round_trip::<frost_ed25519::Ed25519Sha512>();
        holders_round_trip::<frost_secp256k1_tr::Secp256K1Sha256TR>();
        holders_round_trip::<frost_p256::P256Sha256>();
    }

    #[test]
    fn dispatch_names_the_suite_of_each_kind() {
        for kind in Kind::ALL {
            assert_eq!(dispatch!(kind, S => <S as Suite>::KIND), kind);
        }
    }
}
