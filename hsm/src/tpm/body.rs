//! The body of a TPM blob, and the values derived from a blob's header and body.
//!
//! ```text
//! kind      u8          1 = direct (the shard is sealed), 2 = envelope (a data key is sealed)
//! salt      [u8; 16]    random per shard; input to the auth value
//! public    u16 BE + n  TPM2B_PUBLIC of the sealed data object (TPMT_PUBLIC inside)
//! private   u16 BE + n  TPM2B_PRIVATE of the sealed data object
//! envelope only:
//! nonce     [u8; 12]    AES-256-GCM nonce
//! ct_len    u32 BE      ciphertext length, tag included
//! ct        ct_len      AES-256-GCM(data key, nonce, aad = encoded header, shard)
//! ```
//!
//! Every length is explicit and the body must end exactly where its last field does,
//! so a truncated or extended blob is [`Error::Malformed`] before any device call.
//!
//! The TPM-sealed data is `SHA-256(context)[..16] || payload`, where the payload is
//! the shard (direct) or the 32-byte data key (envelope). The TPM seals at most 128
//! bytes, so shards up to [`DIRECT_MAX`] = 112 bytes are sealed directly: that takes
//! a P-256 shard envelope (97 bytes). 16 bytes of digest are plenty for this check:
//! it is defence in depth behind the auth value (which already binds the whole
//! header), and passing it with another context needs a SHA-256 second preimage
//! on 128 bits.

use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::blob::HEADER_LEN;
use crate::Error;

/// Most bytes a TPM 2.0 sealed data object holds (`MAX_SYM_DATA`).
pub(crate) const TPM_SEAL_MAX: usize = 128;
/// Length of the context digest prefix that starts the sealed data.
pub(crate) const DIGEST_LEN: usize = 16;
/// Largest shard sealed directly; larger shards use the envelope.
pub const DIRECT_MAX: usize = TPM_SEAL_MAX - DIGEST_LEN;
/// Length of the per-shard salt.
pub(crate) const SALT_LEN: usize = 16;
/// Length of an envelope data key (AES-256).
pub(crate) const DATA_KEY_LEN: usize = 32;
/// Length of an AES-GCM nonce.
pub(crate) const NONCE_LEN: usize = 12;
/// Length of an AES-GCM tag.
const TAG_LEN: usize = 16;
/// Largest envelope ciphertext a blob may carry.
const CT_MAX: usize = crate::MAX_SHARD_LEN + TAG_LEN;

const AUTH_TAG: &[u8] = b"shard-tpm-seal-auth-v1\0";

/// How the shard is held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// The shard itself is in the sealed data object.
    Direct,
    /// A fresh data key is sealed; the shard is AES-GCM encrypted under it.
    Envelope,
}

impl Kind {
    /// The kind a shard of `len` bytes is sealed with.
    pub(crate) fn for_len(len: usize) -> Kind {
        if len <= DIRECT_MAX {
            Kind::Direct
        } else {
            Kind::Envelope
        }
    }

    fn code(self) -> u8 {
        match self {
            Kind::Direct => 1,
            Kind::Envelope => 2,
        }
    }

    fn from_code(c: u8) -> Result<Kind, Error> {
        match c {
            1 => Ok(Kind::Direct),
            2 => Ok(Kind::Envelope),
            _ => Err(Error::Malformed("unknown TPM body kind")),
        }
    }
}

/// The software-encrypted part of an envelope blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Envelope<'a> {
    /// AES-GCM nonce.
    pub nonce: [u8; NONCE_LEN],
    /// Ciphertext with its tag.
    pub ciphertext: &'a [u8],
}

/// A parsed (or to-be-encoded) TPM blob body. Framing only: nothing here is trusted
/// until the TPM loads the object and the auth value and context digest check out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Body<'a> {
    /// Direct or envelope.
    pub kind: Kind,
    /// Per-shard salt of the auth value.
    pub salt: [u8; SALT_LEN],
    /// Marshalled TPMT_PUBLIC of the sealed object.
    pub public: &'a [u8],
    /// TPM2B_PRIVATE buffer of the sealed object.
    pub private: &'a [u8],
    /// Present exactly when `kind` is [`Kind::Envelope`].
    pub envelope: Option<Envelope<'a>>,
}

impl<'a> Body<'a> {
    /// Appends the encoded body to `out`.
    pub(crate) fn encode_into(&self, out: &mut Vec<u8>) -> Result<(), Error> {
        out.push(self.kind.code());
        out.extend_from_slice(&self.salt);
        put_u16_prefixed(out, self.public)?;
        put_u16_prefixed(out, self.private)?;
        match (self.kind, &self.envelope) {
            (Kind::Direct, None) => {}
            (Kind::Envelope, Some(env)) => {
                out.extend_from_slice(&env.nonce);
                let len = u32::try_from(env.ciphertext.len())
                    .map_err(|_| Error::Device("envelope ciphertext too long".into()))?;
                out.extend_from_slice(&len.to_be_bytes());
                out.extend_from_slice(env.ciphertext);
            }
            _ => return Err(Error::Device("blob kind and envelope disagree".into())),
        }
        Ok(())
    }

    /// Parses a body. Only framing is checked here.
    pub(crate) fn decode(body: &'a [u8]) -> Result<Body<'a>, Error> {
        let mut r = Reader(body);
        let kind = Kind::from_code(r.take(1)?[0])?;
        let mut salt = [0u8; SALT_LEN];
        salt.copy_from_slice(r.take(SALT_LEN)?);
        let public = r.u16_prefixed()?;
        let private = r.u16_prefixed()?;
        if public.is_empty() || private.is_empty() {
            return Err(Error::Malformed("empty TPM public or private area"));
        }
        let envelope = match kind {
            Kind::Direct => None,
            Kind::Envelope => {
                let mut nonce = [0u8; NONCE_LEN];
                nonce.copy_from_slice(r.take(NONCE_LEN)?);
                let mut len = [0u8; 4];
                len.copy_from_slice(r.take(4)?);
                let len = u32::from_be_bytes(len) as usize;
                if !(TAG_LEN + 1..=CT_MAX).contains(&len) {
                    return Err(Error::Malformed("envelope ciphertext length out of range"));
                }
                Some(Envelope {
                    nonce,
                    ciphertext: r.take(len)?,
                })
            }
        };
        if !r.0.is_empty() {
            return Err(Error::Malformed("trailing bytes after the TPM body"));
        }
        Ok(Body {
            kind,
            salt,
            public,
            private,
            envelope,
        })
    }
}

fn put_u16_prefixed(out: &mut Vec<u8>, data: &[u8]) -> Result<(), Error> {
    let len = u16::try_from(data.len())
        .map_err(|_| Error::Device("TPM structure longer than 65535 bytes".into()))?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(data);
    Ok(())
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Error> {
        if self.0.len() < n {
            return Err(Error::Malformed("TPM body is truncated"));
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }

    fn u16_prefixed(&mut self) -> Result<&'a [u8], Error> {
        let b = self.take(2)?;
        let len = u16::from_be_bytes([b[0], b[1]]) as usize;
        self.take(len)
    }
}

/// The sealed object's auth value: SHA-256 over a domain tag, the encoded header,
/// the body kind and the salt. It binds the header (device, key version, context)
/// and the kind to the TPM object, so a blob whose header or kind was changed fails
/// the TPM's authorization. It is derivable from the blob: it binds, it is not a
/// secret (the secret is the TPM-resident parent key, usable only on this TPM).
///
/// The last byte is never zero: the TPM strips trailing zero bytes of auth values,
/// and a value that keeps its full length avoids depending on how each TSS layer
/// handles that.
pub(crate) fn auth_value(
    header: &[u8; HEADER_LEN],
    kind: Kind,
    salt: &[u8; SALT_LEN],
) -> Zeroizing<[u8; 32]> {
    let mut h = Sha256::new();
    h.update(AUTH_TAG);
    h.update(header);
    h.update([kind.code()]);
    h.update(salt);
    let mut v = Zeroizing::new(<[u8; 32]>::from(h.finalize()));
    if v[31] == 0 {
        v[31] = 1;
    }
    v
}

/// The data the TPM seals: the context digest's first [`DIGEST_LEN`] bytes, then
/// the payload.
pub(crate) fn sealed_data(context_digest: &[u8; 32], payload: &[u8]) -> Zeroizing<Vec<u8>> {
    let mut v = Zeroizing::new(Vec::with_capacity(DIGEST_LEN + payload.len()));
    v.extend_from_slice(&context_digest[..DIGEST_LEN]);
    v.extend_from_slice(payload);
    v
}

/// Checks unsealed data against the expected context and returns its payload.
/// A wrong digest means the object was relabelled: [`Error::Integrity`].
pub(crate) fn open_sealed_data<'d>(
    data: &'d [u8],
    context_digest: &[u8; 32],
    kind: Kind,
) -> Result<&'d [u8], Error> {
    if data.len() <= DIGEST_LEN || data[..DIGEST_LEN] != context_digest[..DIGEST_LEN] {
        return Err(Error::Integrity);
    }
    let payload = &data[DIGEST_LEN..];
    let ok = match kind {
        Kind::Direct => payload.len() <= DIRECT_MAX,
        Kind::Envelope => payload.len() == DATA_KEY_LEN,
    };
    if !ok {
        return Err(Error::Integrity);
    }
    Ok(payload)
}

/// Encrypts a shard under a data key (AES-256-GCM, AAD = encoded header).
pub(crate) fn envelope_encrypt(
    key: &[u8; DATA_KEY_LEN],
    nonce: &[u8; NONCE_LEN],
    header: &[u8; HEADER_LEN],
    shard: &[u8],
) -> Result<Vec<u8>, Error> {
    let cipher = Aes256Gcm::new(key.into());
    // Zeroizing, and sized so it never reallocates: on failure it still holds the shard.
    let mut buf = Zeroizing::new(Vec::with_capacity(shard.len() + TAG_LEN));
    buf.extend_from_slice(shard);
    cipher
        .encrypt_in_place(&Nonce::from(*nonce), header, &mut *buf)
        .map_err(|_| Error::Device("AES-GCM encryption failed".into()))?;
    Ok(std::mem::take(&mut *buf))
}

/// Decrypts an envelope ciphertext. Any failure is [`Error::Integrity`].
pub(crate) fn envelope_decrypt(
    key: &[u8],
    nonce: &[u8; NONCE_LEN],
    header: &[u8; HEADER_LEN],
    ciphertext: &[u8],
) -> Result<Zeroizing<Vec<u8>>, Error> {
    let cipher = Aes256Gcm::new_from_slice(key).map_err(|_| Error::Integrity)?;
    // Decrypt in place in a zeroizing buffer that never reallocates, so no plaintext
    // copy is left behind in freed memory.
    let mut buf = Zeroizing::new(Vec::with_capacity(ciphertext.len()));
    buf.extend_from_slice(ciphertext);
    cipher
        .decrypt_in_place(&Nonce::from(*nonce), header, &mut *buf)
        .map_err(|_| Error::Integrity)?;
    if buf.is_empty() {
        return Err(Error::Integrity);
    }
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(kind: Kind, ct: &[u8]) -> Vec<u8> {
        let b = Body {
            kind,
            salt: [5; SALT_LEN],
            public: &[1, 2, 3],
            private: &[4, 5],
            envelope: (kind == Kind::Envelope).then_some(Envelope {
                nonce: [6; NONCE_LEN],
                ciphertext: ct,
            }),
        };
        let mut v = Vec::new();
        b.encode_into(&mut v).unwrap();
        v
    }

    #[test]
    fn body_round_trips_and_rejects_bad_framing() {
        let ct = [9u8; 20];
        for kind in [Kind::Direct, Kind::Envelope] {
            let v = body(kind, &ct);
            let d = Body::decode(&v).unwrap();
            assert_eq!(d.kind, kind);
            assert_eq!(d.public, &[1, 2, 3]);
            assert_eq!(d.private, &[4, 5]);
            for cut in 0..v.len() {
                assert!(
                    matches!(Body::decode(&v[..cut]), Err(Error::Malformed(_))),
                    "cut at {cut}"
                );
            }
            let mut longer = v.clone();
            longer.push(0);
            assert!(matches!(Body::decode(&longer), Err(Error::Malformed(_))));
        }
        let mut v = body(Kind::Direct, &ct);
        v[0] = 7;
        assert!(matches!(Body::decode(&v), Err(Error::Malformed(_))));
    }

    #[test]
    fn auth_value_binds_header_kind_and_salt() {
        let h = [3u8; HEADER_LEN];
        let a = auth_value(&h, Kind::Direct, &[1; SALT_LEN]);
        assert_ne!(*a, *auth_value(&h, Kind::Envelope, &[1; SALT_LEN]));
        assert_ne!(*a, *auth_value(&h, Kind::Direct, &[2; SALT_LEN]));
        let mut h2 = h;
        h2[40] ^= 1;
        assert_ne!(*a, *auth_value(&h2, Kind::Direct, &[1; SALT_LEN]));
        assert_ne!(a[31], 0);
    }

    #[test]
    fn sealed_data_checks_digest_and_length() {
        let d = [7u8; 32];
        let s = sealed_data(&d, b"shard");
        assert_eq!(open_sealed_data(&s, &d, Kind::Direct).unwrap(), b"shard");
        let mut other = d;
        other[3] ^= 1;
        assert!(matches!(
            open_sealed_data(&s, &other, Kind::Direct),
            Err(Error::Integrity)
        ));
        assert!(matches!(
            open_sealed_data(&s, &d, Kind::Envelope),
            Err(Error::Integrity)
        ));
        assert!(matches!(
            open_sealed_data(&d[..DIGEST_LEN], &d, Kind::Direct),
            Err(Error::Integrity)
        ));
        assert_eq!(sealed_data(&d, &[0; DIRECT_MAX]).len(), TPM_SEAL_MAX);
    }

    #[test]
    fn envelope_round_trip_and_tamper() {
        let key = [1u8; DATA_KEY_LEN];
        let nonce = [2u8; NONCE_LEN];
        let h = [3u8; HEADER_LEN];
        let ct = envelope_encrypt(&key, &nonce, &h, b"a larger shard").unwrap();
        assert_eq!(
            &envelope_decrypt(&key, &nonce, &h, &ct).unwrap()[..],
            b"a larger shard"
        );
        let mut bad = ct.clone();
        bad[0] ^= 1;
        assert!(matches!(
            envelope_decrypt(&key, &nonce, &h, &bad),
            Err(Error::Integrity)
        ));
        let mut h2 = h;
        h2[0] ^= 1;
        assert!(matches!(
            envelope_decrypt(&key, &nonce, &h2, &ct),
            Err(Error::Integrity)
        ));
    }
}
