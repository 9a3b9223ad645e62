//! The three threshold-signing key kinds and their wire names.

use std::fmt;
use std::str::FromStr;

/// A threshold-signing key kind: which FROST ciphersuite signs, and so which
/// ecosystem verifies the result.
///
/// The wire name (`Display`, `FromStr`, serde) is the one manifests and requests carry.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(try_from = "String", into = "&'static str")]
pub enum Kind {
    /// `ed25519`: FROST(Ed25519, SHA-512) of RFC 9591. The signature is a plain
    /// 64-byte Ed25519 signature (RFC 8032) that OpenSSL and every Ed25519
    /// verifier accept; the group key is an Ed25519 public key.
    Ed25519,
    /// `secp256k1-tr`: FROST over secp256k1 with BIP340 challenges (Taproot).
    /// The signature is a 64-byte BIP340 Schnorr signature that libsecp256k1
    /// accepts; the group key is a 32-byte x-only public key.
    Secp256k1Tr,
    /// `p256-schnorr`: FROST(P-256, SHA-256) of RFC 9591. This is a **Schnorr**
    /// signature over P-256, not ECDSA: an ES256 (ECDSA) verifier rejects it.
    /// The signature is the ciphersuite's 65 bytes (compressed `R`, then `z`);
    /// the group key is a SEC1 compressed P-256 point.
    P256Schnorr,
}

impl Kind {
    /// Every kind, in a fixed order.
    pub const ALL: [Kind; 3] = [Kind::Ed25519, Kind::Secp256k1Tr, Kind::P256Schnorr];

    /// The wire name: `ed25519`, `secp256k1-tr` or `p256-schnorr`.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Ed25519 => "ed25519",
            Kind::Secp256k1Tr => "secp256k1-tr",
            Kind::P256Schnorr => "p256-schnorr",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A string that names no threshold-signing kind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown key kind {0:?} (expected ed25519, secp256k1-tr or p256-schnorr)")]
pub struct UnknownKind(pub String);

impl FromStr for Kind {
    type Err = UnknownKind;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Kind::ALL
            .into_iter()
            .find(|kind| kind.as_str() == s)
            .ok_or_else(|| UnknownKind(s.to_owned()))
    }
}

impl TryFrom<String> for Kind {
    type Error = UnknownKind;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<Kind> for &'static str {
    fn from(kind: Kind) -> Self {
        kind.as_str()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_names_round_trip() {
        for kind in Kind::ALL {
            assert_eq!(kind.to_string().parse::<Kind>(), Ok(kind));
            let json = serde_json::to_string(&kind).unwrap();
            assert_eq!(json, format!("\"{kind}\""));
            assert_eq!(serde_json::from_str::<Kind>(&json).unwrap(), kind);
        }
        assert_eq!("secp256k1-tr".parse::<Kind>(), Ok(Kind::Secp256k1Tr));
    }

    #[test]
    fn unknown_names_are_refused() {
        for name in ["", "Ed25519", "p256", "secp256k1", "p256-ecdsa", "ed25519 "] {
            assert!(name.parse::<Kind>().is_err(), "{name:?}");
            assert!(serde_json::from_str::<Kind>(&format!("\"{name}\"")).is_err());
        }
    }
}
