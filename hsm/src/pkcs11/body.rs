//! Blob bodies: the AES-GCM and AES-CBC + HMAC layouts, their IVs and padding.

use cryptoki::context::Function;
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::mechanism::Mechanism as Ck;
use cryptoki::types::Ulong;
use zeroize::Zeroizing;

use super::keyring::{Role, VersionKeys};
use super::pool::Lease;
use crate::blob::HEADER_LEN;
use crate::{os_random, Error, Mechanism, MAX_SHARD_LEN};

const GCM_IV_LEN: usize = 12;
const GCM_TAG_LEN: usize = 16;
const AES_BLOCK: usize = 16;
const HMAC_LEN: usize = 32;

/// The blob for `shard`: `header`, then the body of `mechanism` under `keys`.
pub(super) fn seal(
    lease: &mut Lease<'_>,
    mechanism: Mechanism,
    header: &[u8; HEADER_LEN],
    keys: VersionKeys<'_>,
    shard: &[u8],
) -> Result<Vec<u8>, Error> {
    let mut blob = Vec::with_capacity(HEADER_LEN + AES_BLOCK + padded_len(shard.len()) + HMAC_LEN);
    blob.extend_from_slice(header);
    match mechanism {
        Mechanism::AesGcm => {
            let key = lease.key(keys, Role::Enc)?;
            let iv: [u8; GCM_IV_LEN] = random_iv()?;
            let mut iv_param = iv;
            let params = GcmParams::new(&mut iv_param, header, Ulong::new(128))
                .map_err(|e| lease.note(e))?;
            let ct = lease
                .session()
                .encrypt(&Ck::AesGcm(params), key, shard)
                .map_err(|e| lease.note(e))?;
            expect_len("AES-GCM", &ct, shard.len() + GCM_TAG_LEN)?;
            blob.extend_from_slice(&iv);
            blob.extend_from_slice(&ct);
        }
        Mechanism::AesCbcPadHmac => {
            let enc = lease.key(keys, Role::Enc)?;
            let mac = lease.key(keys, Role::Mac)?;
            let iv: [u8; AES_BLOCK] = random_iv()?;
            let padded = pkcs7_pad(shard);
            let ct = lease
                .session()
                .encrypt(&Ck::AesCbc(iv), enc, &padded)
                .map_err(|e| lease.note(e))?;
            expect_len("AES-CBC", &ct, padded.len())?;
            blob.extend_from_slice(&iv);
            blob.extend_from_slice(&ct);
            let tag = lease
                .session()
                .sign(&Ck::Sha256Hmac, mac, &blob)
                .map_err(|e| lease.note(e))?;
            expect_len("HMAC-SHA-256", &tag, HMAC_LEN)?;
            blob.extend_from_slice(&tag);
        }
        Mechanism::TpmSeal => {
            return Err(Error::Profile(
                "pkcs11.mechanism must be aes-gcm or aes-cbc-pad-hmac".into(),
            ))
        }
    }
    Ok(blob)
}

/// The shard in `blob`, whose header was checked against this device and the
/// caller's context and whose body length [`check_body_len`] accepted, under `keys`.
pub(super) fn open(
    lease: &mut Lease<'_>,
    mechanism: Mechanism,
    blob: &[u8],
    keys: VersionKeys<'_>,
) -> Result<Zeroizing<Vec<u8>>, Error> {
    match mechanism {
        Mechanism::AesGcm => {
            let key = lease.key(keys, Role::Enc)?;
            let (aad, body) = blob.split_at(HEADER_LEN);
            let (iv, ct) = body.split_at(GCM_IV_LEN);
            let mut iv_param = [0u8; GCM_IV_LEN];
            iv_param.copy_from_slice(iv);
            let params =
                GcmParams::new(&mut iv_param, aad, Ulong::new(128)).map_err(|e| lease.note(e))?;
            match lease.session().decrypt(&Ck::AesGcm(params), key, ct) {
                Ok(pt) => Ok(Zeroizing::new(pt)),
                Err(CkError::Pkcs11(
                    RvError::EncryptedDataInvalid | RvError::EncryptedDataLenRange,
                    _,
                )) => Err(Error::Integrity),
                // SoftHSM 2.6.1 reports a failed GCM tag check as CKR_GENERAL_ERROR (2.7
                // says CKR_ENCRYPTED_DATA_INVALID). By this point the header matched this
                // device and context and the key exists, so a failing C_Decrypt is the tag.
                Err(CkError::Pkcs11(RvError::GeneralError, Function::Decrypt)) => {
                    Err(Error::Integrity)
                }
                Err(e) => Err(lease.note(e)),
            }
        }
        Mechanism::AesCbcPadHmac => {
            let mac = lease.key(keys, Role::Mac)?;
            let (authenticated, tag) = blob.split_at(blob.len() - HMAC_LEN);
            match lease
                .session()
                .verify(&Ck::Sha256Hmac, mac, authenticated, tag)
            {
                Ok(()) => {}
                Err(CkError::Pkcs11(RvError::SignatureInvalid | RvError::SignatureLenRange, _)) => {
                    return Err(Error::Integrity)
                }
                Err(e) => return Err(lease.note(e)),
            }
            // Only authenticated bytes reach the decryption: no padding oracle.
            let enc = lease.key(keys, Role::Enc)?;
            let (iv, ct) = authenticated[HEADER_LEN..].split_at(AES_BLOCK);
            let mut iv_param = [0u8; AES_BLOCK];
            iv_param.copy_from_slice(iv);
            let padded = match lease.session().decrypt(&Ck::AesCbc(iv_param), enc, ct) {
                Ok(pt) => Zeroizing::new(pt),
                Err(e) => return Err(lease.note(e)),
            };
            expect_len("AES-CBC", &padded, ct.len())?;
            // A bad pad under a good MAC was made by a holder of the MAC key: still an
            // integrity failure, not a device fault.
            pkcs7_unpad(padded).ok_or(Error::Integrity)
        }
        // check_body_len already refused it.
        Mechanism::TpmSeal => Err(Error::Malformed("not a PKCS#11 blob")),
    }
}

/// A device answer of the wrong length is a device fault; it never goes into a blob
/// or back to the caller.
fn expect_len(operation: &str, out: &[u8], expected: usize) -> Result<(), Error> {
    if out.len() == expected {
        return Ok(());
    }
    Err(Error::Device(format!(
        "{operation} returned {} bytes instead of {expected}",
        out.len()
    )))
}

/// The IV comes from the operating system's CSPRNG, not `C_GenerateRandom`: an IV
/// must be unique and (for CBC) unpredictable, not secret, and the OS generator
/// gives both without a device round trip per seal. With random 96-bit GCM IVs a key
/// version should seal fewer than 2^32 shards; rotation keeps far below that.
fn random_iv<const N: usize>() -> Result<[u8; N], Error> {
    let mut iv = [0u8; N];
    os_random(&mut iv)?;
    Ok(iv)
}

/// Ciphertext length of PKCS#7-padded CBC for `n` plaintext bytes.
fn padded_len(n: usize) -> usize {
    (n / AES_BLOCK + 1) * AES_BLOCK
}

/// The shard followed by PKCS#7 padding to whole AES blocks (1..=16 bytes of value n).
fn pkcs7_pad(shard: &[u8]) -> Zeroizing<Vec<u8>> {
    let len = padded_len(shard.len());
    // Exact capacity: the buffer never reallocates, so no copy escapes zeroization.
    let mut v = Zeroizing::new(Vec::with_capacity(len));
    v.extend_from_slice(shard);
    let pad = len - shard.len();
    // pad is 1..=16, so the cast is lossless.
    v.resize(len, pad as u8);
    v
}

/// Removes PKCS#7 padding; `None` when it is not well formed. Only ever called on
/// MAC-verified data, so its timing reveals nothing an attacker could not compute.
fn pkcs7_unpad(mut padded: Zeroizing<Vec<u8>>) -> Option<Zeroizing<Vec<u8>>> {
    let pad = usize::from(*padded.last()?);
    if pad == 0 || pad > AES_BLOCK || pad > padded.len() - 1 {
        return None;
    }
    let keep = padded.len() - pad;
    if padded[keep..].iter().any(|&b| usize::from(b) != pad) {
        return None;
    }
    padded.truncate(keep);
    Some(padded)
}

/// Refuses bodies that no seal of a 1..=MAX_SHARD_LEN shard could have produced.
pub(super) fn check_body_len(mechanism: Mechanism, len: usize) -> Result<(), Error> {
    match mechanism {
        Mechanism::AesGcm => {
            if len < GCM_IV_LEN + 1 + GCM_TAG_LEN {
                return Err(Error::Malformed(
                    "AES-GCM body shorter than IV, one byte and tag",
                ));
            }
            if len > GCM_IV_LEN + MAX_SHARD_LEN + GCM_TAG_LEN {
                return Err(Error::Malformed(
                    "AES-GCM body longer than the largest shard",
                ));
            }
        }
        Mechanism::AesCbcPadHmac => {
            if len < AES_BLOCK + AES_BLOCK + HMAC_LEN {
                return Err(Error::Malformed(
                    "CBC body shorter than IV, one block and tag",
                ));
            }
            if (len - AES_BLOCK - HMAC_LEN) % AES_BLOCK != 0 {
                return Err(Error::Malformed("CBC ciphertext is not whole blocks"));
            }
            if len > AES_BLOCK + padded_len(MAX_SHARD_LEN) + HMAC_LEN {
                return Err(Error::Malformed("CBC body longer than the largest shard"));
            }
        }
        Mechanism::TpmSeal => return Err(Error::Malformed("not a PKCS#11 blob")),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_lengths() {
        assert!(check_body_len(Mechanism::AesGcm, 12 + 16).is_err());
        assert!(check_body_len(Mechanism::AesGcm, 12 + 1 + 16).is_ok());
        assert!(check_body_len(Mechanism::AesGcm, 12 + MAX_SHARD_LEN + 16).is_ok());
        assert!(check_body_len(Mechanism::AesGcm, 12 + MAX_SHARD_LEN + 17).is_err());
        assert!(check_body_len(Mechanism::AesCbcPadHmac, 16 + 16 + 32).is_ok());
        assert!(check_body_len(Mechanism::AesCbcPadHmac, 16 + 15 + 32).is_err());
        assert!(check_body_len(Mechanism::AesCbcPadHmac, 16 + 17 + 32).is_err());
        assert!(check_body_len(
            Mechanism::AesCbcPadHmac,
            16 + padded_len(MAX_SHARD_LEN) + 32
        )
        .is_ok());
        assert!(check_body_len(
            Mechanism::AesCbcPadHmac,
            16 + padded_len(MAX_SHARD_LEN) + 16 + 32
        )
        .is_err());
        assert!(check_body_len(Mechanism::TpmSeal, 100).is_err());
        assert_eq!(padded_len(1), 16);
        assert_eq!(padded_len(16), 32);
    }

    #[test]
    fn pkcs7_padding() {
        for n in [1usize, 15, 16, 17, 100] {
            let shard: Vec<u8> = (0..n as u8).collect();
            let padded = pkcs7_pad(&shard);
            assert_eq!(padded.len(), padded_len(n));
            assert_eq!(padded.len() % AES_BLOCK, 0);
            assert_eq!(pkcs7_unpad(padded).unwrap().as_slice(), shard.as_slice());
        }
        let bad = |v: Vec<u8>| pkcs7_unpad(Zeroizing::new(v)).is_none();
        assert!(bad(vec![]));
        assert!(bad(vec![0; 16]));
        assert!(bad(vec![17; 32]));
        assert!(bad(vec![16; 16])); // would leave an empty shard
        let mut v = vec![1u8; 16];
        v[15] = 3;
        v[14] = 3;
        assert!(bad(v)); // 3 3 preceded by 1, not 3 3 3
    }
}
