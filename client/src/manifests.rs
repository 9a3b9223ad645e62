//! Enrollment manifests: verified with the enroller's manifest-signing key pinned in the
//! configuration (never one fetched from a server), and cached locally at enrollment so that
//! recovery works while the enroller is down.

use std::path::PathBuf;

use certs::SpiffeId;
use p256::ecdsa::VerifyingKey;
use p256::pkcs8::DecodePublicKey;
use shard::{SecretId, SignedManifest};

use crate::config::Config;
use crate::error::CliError;

/// A signed manifest is at most a few KiB; a public key PEM less.
const MAX_FILE_BYTES: u64 = 64 * 1024;

/// The pinned manifest-signing key of `config`.
pub fn pinned_key(config: &Config) -> Result<VerifyingKey, CliError> {
    let path = config
        .manifest_key
        .clone()
        .ok_or_else(|| CliError::NoManifestKey(config.path.clone()))?;
    let bytes =
        crate::files::read_limited(&path, MAX_FILE_BYTES).map_err(|source| CliError::ReadFile {
            what: "the manifest key (`manifest_key`)",
            path: path.clone(),
            source,
        })?;
    std::str::from_utf8(&bytes)
        .ok()
        .and_then(|pem| VerifyingKey::from_public_key_pem(pem).ok())
        .ok_or(CliError::BadManifestKey(path))
}

/// Decodes `bytes` and checks, in this order, the signature with `key`, that the manifest is
/// for `secret_id` and that it names `owner` as the owner.
pub fn verify(
    key: &VerifyingKey,
    bytes: &[u8],
    secret_id: &SecretId,
    owner: &SpiffeId,
) -> Result<SignedManifest, CliError> {
    let bad = |why: String| CliError::BadManifest {
        secret_id: secret_id.to_string(),
        why,
    };
    let signed = SignedManifest::decode(bytes).map_err(|e| bad(e.to_string()))?;
    let manifest = signed
        .verify(key)
        .map_err(|_| bad("its signature does not verify with the pinned manifest key".into()))?;
    if manifest.secret_id != *secret_id {
        return Err(bad(format!("it is the manifest of {}", manifest.secret_id)));
    }
    if manifest.owner != owner.to_string() {
        return Err(CliError::NotOwner {
            secret_id: secret_id.to_string(),
            owner: manifest.owner.clone(),
            you: owner.to_string(),
        });
    }
    Ok(signed)
}

/// Where the manifest of `secret_id` is cached.
pub fn cache_path(config: &Config, secret_id: &SecretId) -> Result<PathBuf, CliError> {
    Ok(config.manifest_dir()?.join(secret_id.to_string()))
}

/// Caches a verified manifest; returns where.
pub fn store(config: &Config, signed: &SignedManifest) -> Result<PathBuf, CliError> {
    let dir = config.manifest_dir()?;
    crate::files::create_private_dir(&dir).map_err(|source| CliError::CreateDir {
        path: dir.clone(),
        source,
    })?;
    let path = dir.join(signed.unverified().secret_id.to_string());
    crate::files::replace_private(&path, &signed.encode()).map_err(CliError::Write)?;
    Ok(path)
}

/// The cached manifest bytes of `secret_id`, if any (to be verified before use).
pub fn cached(config: &Config, secret_id: &SecretId) -> Result<Option<Vec<u8>>, CliError> {
    let path = cache_path(config, secret_id)?;
    match crate::files::read_limited(&path, MAX_FILE_BYTES) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(CliError::ReadFile {
            what: "the cached manifest",
            path,
            source,
        }),
    }
}
