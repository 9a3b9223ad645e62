//! `shardctl enroll --kind K --import FILE`: an existing private key to split into key
//! packages, read from the forms its ecosystem writes.
//!
//! | kind | accepted |
//! |---|---|
//! | `ed25519` | PKCS#8 PEM (`openssl genpkey -algorithm ed25519`), or the 32-byte seed |
//! | `p256-schnorr` | PKCS#8 PEM (`openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256`), or the 32-byte scalar |
//! | `secp256k1-tr` | the 32-byte secret (BIP340) |
//!
//! "32 bytes" is either the raw bytes or 64 hex digits (a trailing newline is fine). The
//! key is sent to the enroller, which splits it and keeps nothing; the file is left as it
//! is, and it is the user's to destroy once the enrollment succeeded.

use std::path::Path;

use base64::Engine;
use p256::pkcs8::DecodePrivateKey;
use threshold::Kind;
use zeroize::Zeroizing;

use crate::error::CliError;

/// The DER of an Ed25519 PKCS#8 private key up to its 32-byte seed (RFC 8410).
const ED25519_PKCS8_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

/// The private key of `path` as the 32 bytes the enroller takes, in base64 (both wiped on
/// drop).
pub fn read_private_key(path: &Path, kind: Option<Kind>) -> Result<Zeroizing<String>, CliError> {
    let Some(kind) = kind else {
        return Err(CliError::ImportNeedsKind);
    };
    let bad = || CliError::BadImport {
        path: path.to_owned(),
        kind: kind.as_str(),
    };
    let bytes = Zeroizing::new(
        crate::files::read_limited(path, 16 * 1024).map_err(|source| match source.kind() {
            std::io::ErrorKind::FileTooLarge => bad(),
            _ => CliError::ReadFile {
                what: "--import",
                path: path.to_owned(),
                source,
            },
        })?,
    );
    let key: Zeroizing<Vec<u8>> = if bytes.len() == 32 {
        Zeroizing::new(bytes.to_vec())
    } else {
        let text = std::str::from_utf8(&bytes).map_err(|_| bad())?;
        let trimmed = text.trim();
        if trimmed.len() == 64 && trimmed.bytes().all(|b| b.is_ascii_hexdigit()) {
            Zeroizing::new(hex::decode(trimmed).map_err(|_| bad())?)
        } else if trimmed.starts_with("-----BEGIN PRIVATE KEY-----") {
            pkcs8(kind, trimmed).ok_or_else(bad)?
        } else {
            return Err(bad());
        }
    };
    if key.len() != 32 {
        return Err(bad());
    }
    Ok(Zeroizing::new(
        base64::engine::general_purpose::STANDARD.encode(&*key),
    ))
}

fn pkcs8(kind: Kind, pem_text: &str) -> Option<Zeroizing<Vec<u8>>> {
    match kind {
        Kind::Ed25519 => {
            let parsed = pem::parse(pem_text).ok()?;
            let der = Zeroizing::new(parsed.into_contents());
            let seed = der.strip_prefix(&ED25519_PKCS8_PREFIX[..])?;
            (seed.len() == 32).then(|| Zeroizing::new(seed.to_vec()))
        }
        Kind::P256Schnorr => {
            let key = p256::SecretKey::from_pkcs8_pem(pem_text).ok()?;
            Some(Zeroizing::new(key.to_bytes().to_vec()))
        }
        Kind::Secp256k1Tr => None,
    }
}

/// The public key of the private key `b64` (as [`read_private_key`] gives it), to check the
/// enroller's signed manifest against: a split whose group key is another would be another
/// key. The split made here to learn it is dropped (and wiped) at once.
pub fn public_key(kind: Kind, b64: &str) -> Option<threshold::GroupKey> {
    let key = Zeroizing::new(
        base64::engine::general_purpose::STANDARD
            .decode(b64.as_bytes())
            .ok()?,
    );
    let split = threshold::Threshold::new(2, 2).ok()?;
    // The group key does not depend on the polynomial, so any generator does.
    let mut rng = threshold::SeededRng::from_seed(Zeroizing::new([0; 32]));
    let dealt = threshold::import(kind, &key, split, &mut rng).ok()?;
    Some(dealt.public.group_key().clone())
}
