//! The blob header shared by every backend, and the context a blob is bound to.
//!
//! ```text
//! magic    "SHSB"            4 bytes
//! format   u8                FORMAT_VERSION
//! mech     u8                Mechanism code
//! version  u32 BE            key version
//! device   [u8; 16]          device id of the key set that sealed it
//! context  [u8; 32]          SHA-256 of the SealContext encoding
//! body     ...               backend-specific
//! ```
//!
//! The whole header is authenticated by every backend (as AES-GCM AAD, inside the
//! HMAC, or inside the TPM-sealed data), and the context digest is compared with the
//! caller's context before any device call, so a moved blob fails with
//! [`Error::ContextMismatch`] and an altered one with [`Error::Integrity`].

use sha2::{Digest, Sha256};
use shard::SecretId;

use crate::Error;

/// Version of the blob layout written by this build.
pub const FORMAT_VERSION: u8 = 1;
const MAGIC: &[u8; 4] = b"SHSB";

/// Length of the encoded header.
pub const HEADER_LEN: usize = 4 + 1 + 1 + 4 + 16 + 32;

/// What a blob is bound to. A blob sealed for one context never unseals for another.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealContext {
    /// The custodian's own name.
    pub custodian_id: String,
    /// The secret the shard belongs to.
    pub secret_id: SecretId,
    /// Shamir index of the shard (1..=255).
    pub index: u8,
    /// Enrollment epoch.
    pub epoch: u32,
}

impl SealContext {
    /// Unambiguous encoding: length-prefixed custodian id, then fixed-width fields.
    pub fn encode(&self) -> Vec<u8> {
        let id = self.custodian_id.as_bytes();
        let mut v = Vec::with_capacity(2 + id.len() + 16 + 1 + 4);
        v.extend_from_slice(&(id.len() as u16).to_be_bytes());
        v.extend_from_slice(id);
        v.extend_from_slice(self.secret_id.as_bytes());
        v.push(self.index);
        v.extend_from_slice(&self.epoch.to_be_bytes());
        v
    }

    /// SHA-256 over a domain tag and [`SealContext::encode`].
    pub fn digest(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(b"shard-seal-context-v1\0");
        h.update(self.encode());
        h.finalize().into()
    }
}

/// How a blob's body was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mechanism {
    /// PKCS#11 CKM_AES_GCM, 96-bit random IV, 128-bit tag.
    AesGcm,
    /// AES-CBC with PKCS#7 padding (padded in software, encrypted with CKM_AES_CBC,
    /// because tpm2-pkcs11 1.9 mishandles CKM_AES_CBC_PAD) then CKM_SHA256_HMAC over
    /// header, IV and ciphertext with a second token key (encrypt-then-MAC), for
    /// devices without AES-GCM.
    AesCbcPadHmac,
    /// TPM 2.0 sealed data object; shards over the TPM's limit are AES-GCM encrypted
    /// in software under a fresh per-shard key and only that key is sealed.
    TpmSeal,
}

impl Mechanism {
    /// The code written into blob headers.
    pub fn code(self) -> u8 {
        match self {
            Mechanism::AesGcm => 1,
            Mechanism::AesCbcPadHmac => 2,
            Mechanism::TpmSeal => 3,
        }
    }

    /// Parses a header code.
    pub fn from_code(c: u8) -> Result<Self, Error> {
        match c {
            1 => Ok(Mechanism::AesGcm),
            2 => Ok(Mechanism::AesCbcPadHmac),
            3 => Ok(Mechanism::TpmSeal),
            _ => Err(Error::Malformed("unknown mechanism code")),
        }
    }
}

impl std::fmt::Display for Mechanism {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Mechanism::AesGcm => "aes-gcm",
            Mechanism::AesCbcPadHmac => "aes-cbc-pad-hmac",
            Mechanism::TpmSeal => "tpm-seal",
        })
    }
}

/// The parsed header of a blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobHeader {
    /// Mechanism of the body.
    pub mechanism: Mechanism,
    /// Key version that sealed it.
    pub key_version: u32,
    /// Device id of the sealing key set.
    pub device_id: [u8; 16],
    /// SHA-256 of the context it was sealed for.
    pub context_digest: [u8; 32],
}

impl BlobHeader {
    /// Builds the header for sealing `ctx`.
    pub fn new(
        mechanism: Mechanism,
        key_version: u32,
        device_id: [u8; 16],
        ctx: &SealContext,
    ) -> Self {
        BlobHeader {
            mechanism,
            key_version,
            device_id,
            context_digest: ctx.digest(),
        }
    }

    /// The encoded header (exactly [`HEADER_LEN`] bytes).
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[..4].copy_from_slice(MAGIC);
        b[4] = FORMAT_VERSION;
        b[5] = self.mechanism.code();
        b[6..10].copy_from_slice(&self.key_version.to_be_bytes());
        b[10..26].copy_from_slice(&self.device_id);
        b[26..58].copy_from_slice(&self.context_digest);
        b
    }

    /// Splits a blob into its header and body.
    pub fn decode(blob: &[u8]) -> Result<(BlobHeader, &[u8]), Error> {
        if blob.len() < HEADER_LEN {
            return Err(Error::Malformed("shorter than the header"));
        }
        if &blob[..4] != MAGIC {
            return Err(Error::Malformed("bad magic"));
        }
        if blob[4] != FORMAT_VERSION {
            return Err(Error::Malformed("unsupported format version"));
        }
        let mechanism = Mechanism::from_code(blob[5])?;
        let mut v = [0u8; 4];
        v.copy_from_slice(&blob[6..10]);
        let mut device_id = [0u8; 16];
        device_id.copy_from_slice(&blob[10..26]);
        let mut context_digest = [0u8; 32];
        context_digest.copy_from_slice(&blob[26..58]);
        Ok((
            BlobHeader {
                mechanism,
                key_version: u32::from_be_bytes(v),
                device_id,
                context_digest,
            },
            &blob[HEADER_LEN..],
        ))
    }

    /// Checks the header against this device and the caller's context, in the order
    /// that gives the most useful error: foreign device, then context.
    pub fn check(&self, device_id: &[u8; 16], ctx: &SealContext) -> Result<(), Error> {
        if &self.device_id != device_id {
            return Err(Error::ForeignDevice);
        }
        if self.context_digest != ctx.digest() {
            return Err(Error::ContextMismatch);
        }
        Ok(())
    }
}

/// Checks a shard's length before any device call.
pub fn check_shard_len(shard: &[u8]) -> Result<(), Error> {
    if shard.is_empty() || shard.len() > crate::MAX_SHARD_LEN {
        return Err(Error::ShardLength(shard.len()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> SealContext {
        SealContext {
            custodian_id: "c1".into(),
            secret_id: SecretId::from_bytes([7; 16]),
            index: 2,
            epoch: 1,
        }
    }

    #[test]
    fn header_round_trip_and_checks() {
        let h = BlobHeader::new(Mechanism::AesGcm, 3, [9; 16], &ctx());
        let mut blob = h.encode().to_vec();
        blob.extend_from_slice(b"body");
        let (d, body) = BlobHeader::decode(&blob).unwrap();
        assert_eq!(d, h);
        assert_eq!(body, b"body");
        assert!(d.check(&[9; 16], &ctx()).is_ok());
        assert!(matches!(
            d.check(&[8; 16], &ctx()),
            Err(Error::ForeignDevice)
        ));
        let other = SealContext { index: 3, ..ctx() };
        assert!(matches!(
            d.check(&[9; 16], &other),
            Err(Error::ContextMismatch)
        ));
        assert!(matches!(
            BlobHeader::decode(&blob[..10]),
            Err(Error::Malformed(_))
        ));
        blob[0] ^= 1;
        assert!(matches!(
            BlobHeader::decode(&blob),
            Err(Error::Malformed(_))
        ));
    }

    #[test]
    fn context_encoding_is_unambiguous() {
        let a = SealContext {
            custodian_id: "c1".into(),
            ..ctx()
        };
        let b = SealContext {
            custodian_id: "c12".into(),
            ..ctx()
        };
        assert_ne!(a.digest(), b.digest());
    }
}
