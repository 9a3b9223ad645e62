//! The enroller's PKCS#11 token: every long-term key of the enroller lives here and
//! never leaves it.
//!
//! | label                 | kind                      | used for |
//! |-----------------------|---------------------------|----------|
//! | `<base>/manifest`     | EC P-256 key pair         | signing enrollment manifests (CKM_ECDSA) |
//! | `<base>/user-ca`      | EC P-256 key pair         | signing users' login certificates (CKM_ECDSA) |
//! | `<base>/pepper`       | 32-byte generic secret    | peppering password hashes (CKM_SHA256_HMAC) |
//! | `<base>/totp/v1`      | AES-256 (via `hsm`)       | sealing users' TOTP secrets |
//!
//! Private and secret keys are token objects, private, sensitive and never
//! extractable. Randomness for keys and polynomials comes from `C_GenerateRandom`,
//! mixed with the OS generator by the caller.

use std::sync::Mutex;

use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use hsm::pkcs11::{resident_key_template, Module, Pkcs11Sealer};
use hsm::profile::Pkcs11Profile;
use hsm::{Mechanism as SealMechanism, SealContext, Sealer};
use p256::ecdsa::{Signature, VerifyingKey};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

/// DER of the P-256 curve OID (1.2.840.10045.3.1.7), the CKA_EC_PARAMS value.
const P256_OID_DER: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];

/// Token failures. Never carries key material or PINs.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// The device layer refused (module, token, PIN, session).
    #[error("token: {0}")]
    Device(#[from] hsm::Error),
    /// A PKCS#11 call failed; the text is the return code.
    #[error("token operation {op} failed: {rv}")]
    Call {
        /// Which operation.
        op: &'static str,
        /// The return code.
        rv: String,
    },
    /// A key is missing: run `enroller init`.
    #[error("token key {0} is missing; run `enroller init`")]
    KeyMissing(String),
    /// The token returned something that is not what PKCS#11 promises.
    #[error("token returned an invalid {0}")]
    Invalid(&'static str),
}

fn call<T>(op: &'static str, r: cryptoki::error::Result<T>) -> Result<T, TokenError> {
    r.map_err(|e| TokenError::Call {
        op,
        rv: e.to_string(),
    })
}

/// Handles of the keys, found once at open.
#[derive(Clone, Copy)]
struct Keys {
    manifest: ObjectHandle,
    user_ca: ObjectHandle,
    pepper: ObjectHandle,
}

/// The enroller's token: one logged-in session (sessions are not `Sync`, so calls are
/// serialised) plus a sealer for TOTP secrets.
pub struct Token {
    session: Mutex<Session>,
    keys: Keys,
    manifest_public: VerifyingKey,
    user_ca_public: VerifyingKey,
    totp: Pkcs11Sealer,
    label: String,
}

/// The public parts a caller may show or write to files.
#[derive(Debug, Clone)]
pub struct TokenInfo {
    /// Token label.
    pub token: String,
    /// Manifest-signing public key.
    pub manifest_key: VerifyingKey,
    /// User-CA public key.
    pub user_ca_key: VerifyingKey,
}

fn find_one(
    s: &Session,
    class: ObjectClass,
    label: &str,
) -> Result<Option<ObjectHandle>, TokenError> {
    let found = call(
        "find objects",
        s.find_objects(&[
            Attribute::Class(class),
            Attribute::Label(label.as_bytes().to_vec()),
        ]),
    )?;
    match found.len() {
        0 => Ok(None),
        1 => Ok(Some(found[0])),
        _ => Err(TokenError::Invalid("duplicate key label")),
    }
}

fn ec_public(s: &Session, handle: ObjectHandle) -> Result<VerifyingKey, TokenError> {
    let attrs = call(
        "read public key",
        s.get_attributes(handle, &[AttributeType::EcPoint]),
    )?;
    let Some(Attribute::EcPoint(point)) = attrs.into_iter().next() else {
        return Err(TokenError::Invalid("public key"));
    };
    // CKA_EC_POINT is a DER OCTET STRING around the SEC1 point (some modules omit the wrapper).
    let sec1 = match point.as_slice() {
        [0x04, 65, rest @ ..] if rest.len() == 65 && rest[0] == 0x04 => rest,
        other => other,
    };
    VerifyingKey::from_sec1_bytes(sec1).map_err(|_| TokenError::Invalid("public key"))
}

impl Token {
    fn profile(p: &Pkcs11Profile) -> Pkcs11Profile {
        Pkcs11Profile {
            key_label: format!("{}/totp", p.key_label),
            mechanism: SealMechanism::AesGcm,
            sessions: 1,
            ..p.clone()
        }
    }

    fn session(p: &Pkcs11Profile) -> Result<Session, TokenError> {
        let module = Module::load(&p.module)?;
        let slot = module.find_token(&p.token_label)?;
        Ok(module.user_session(slot, &p.pin, true)?)
    }

    /// Creates the keys that are missing (idempotent) and returns the public parts.
    /// `p.key_label` is the base label.
    pub fn provision(p: &Pkcs11Profile) -> Result<TokenInfo, TokenError> {
        let s = Self::session(p)?;
        let base = &p.key_label;
        for which in ["manifest", "user-ca"] {
            let label = format!("{base}/{which}");
            if find_one(&s, ObjectClass::PRIVATE_KEY, &label)?.is_none() {
                let public = [
                    Attribute::Token(true),
                    Attribute::Private(false),
                    Attribute::Verify(true),
                    Attribute::EcParams(P256_OID_DER.to_vec()),
                    Attribute::Label(label.as_bytes().to_vec()),
                ];
                let private = resident_key_template([
                    Attribute::Sign(true),
                    Attribute::Derive(false),
                    Attribute::Label(label.as_bytes().to_vec()),
                ]);
                call(
                    "generate EC key pair",
                    s.generate_key_pair(&Mechanism::EccKeyPairGen, &public, &private),
                )?;
            }
        }
        let label = format!("{base}/pepper");
        if find_one(&s, ObjectClass::SECRET_KEY, &label)?.is_none() {
            let template = resident_key_template([
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::KeyType(KeyType::GENERIC_SECRET),
                Attribute::ValueLen(32.into()),
                Attribute::Sign(true),
                Attribute::Verify(true),
                Attribute::Label(label.as_bytes().to_vec()),
            ]);
            call(
                "generate pepper key",
                s.generate_key(&Mechanism::GenericSecretKeyGen, &template),
            )?;
        }
        drop(s);
        Pkcs11Sealer::open(&Self::profile(p))?.provision()?;
        let t = Token::open(p)?;
        Ok(t.info())
    }

    /// Opens a provisioned token.
    pub fn open(p: &Pkcs11Profile) -> Result<Token, TokenError> {
        let s = Self::session(p)?;
        let base = &p.key_label;
        let need = |class, which: &str| -> Result<ObjectHandle, TokenError> {
            let label = format!("{base}/{which}");
            find_one(&s, class, &label)?.ok_or(TokenError::KeyMissing(label))
        };
        let keys = Keys {
            manifest: need(ObjectClass::PRIVATE_KEY, "manifest")?,
            user_ca: need(ObjectClass::PRIVATE_KEY, "user-ca")?,
            pepper: need(ObjectClass::SECRET_KEY, "pepper")?,
        };
        let manifest_public = ec_public(&s, need(ObjectClass::PUBLIC_KEY, "manifest")?)?;
        let user_ca_public = ec_public(&s, need(ObjectClass::PUBLIC_KEY, "user-ca")?)?;
        let totp = Pkcs11Sealer::open(&Self::profile(p))?;
        totp.describe()?;
        Ok(Token {
            session: Mutex::new(s),
            keys,
            manifest_public,
            user_ca_public,
            totp,
            label: p.token_label.clone(),
        })
    }

    fn with<T>(&self, f: impl FnOnce(&Session) -> Result<T, TokenError>) -> Result<T, TokenError> {
        // A panic in a PKCS#11 call leaves no half-state in the session we rely on.
        let s = self.session.lock().unwrap_or_else(|p| p.into_inner());
        f(&s)
    }

    /// The public parts.
    pub fn info(&self) -> TokenInfo {
        TokenInfo {
            token: self.label.clone(),
            manifest_key: self.manifest_public,
            user_ca_key: self.user_ca_public,
        }
    }

    /// `N` bytes from the token's generator.
    pub fn random<const N: usize>(&self) -> Result<Zeroizing<[u8; N]>, TokenError> {
        let mut out = Zeroizing::new([0u8; N]);
        self.with(|s| call("generate random", s.generate_random_slice(&mut *out)))?;
        Ok(out)
    }

    fn ecdsa(&self, key: ObjectHandle, digest: &[u8; 32]) -> Result<Signature, TokenError> {
        let raw = self.with(|s| call("sign", s.sign(&Mechanism::Ecdsa, key, digest)))?;
        Signature::from_slice(&raw).map_err(|_| TokenError::Invalid("ECDSA signature"))
    }

    /// Signs a digest with the user-CA key.
    pub fn sign_as_user_ca(&self, digest: &[u8; 32]) -> Result<Signature, TokenError> {
        self.ecdsa(self.keys.user_ca, digest)
    }

    /// HMAC-SHA-256 with the pepper key.
    pub fn hmac(&self, data: &[u8]) -> Result<[u8; 32], TokenError> {
        let raw = self.with(|s| {
            call(
                "HMAC",
                s.sign(&Mechanism::Sha256Hmac, self.keys.pepper, data),
            )
        })?;
        // The peppered password opens the account: keep no copy of it around.
        let raw = Zeroizing::new(raw);
        <[u8; 32]>::try_from(raw.as_slice()).map_err(|_| TokenError::Invalid("HMAC length"))
    }

    fn totp_context(user: &str) -> SealContext {
        let d = Sha256::digest([b"shard-totp-v1\0".as_slice(), user.as_bytes()].concat());
        let mut id = [0u8; 16];
        id.copy_from_slice(&d[..16]);
        SealContext {
            custodian_id: "enroller-totp".into(),
            secret_id: shard::SecretId::from_bytes(id),
            index: 1,
            epoch: 1,
        }
    }

    /// Seals a user's TOTP secret (bound to the user name).
    pub fn seal_totp(&self, user: &str, secret: &[u8]) -> Result<Vec<u8>, TokenError> {
        Ok(self.totp.seal(&Self::totp_context(user), secret)?)
    }

    /// Unseals a user's TOTP secret.
    pub fn unseal_totp(&self, user: &str, blob: &[u8]) -> Result<Zeroizing<Vec<u8>>, TokenError> {
        Ok(self.totp.unseal(&Self::totp_context(user), blob)?)
    }

    /// Checks the token answers.
    pub fn health(&self) -> Result<(), TokenError> {
        self.random::<8>().map(|_| ())?;
        Ok(self.totp.health()?)
    }
}

impl shard::ManifestSigner for Token {
    fn sign_digest(&self, digest: &[u8; 32]) -> Result<Signature, shard::Error> {
        self.ecdsa(self.keys.manifest, digest)
            .map_err(|e| shard::Error::Signer(e.to_string()))
    }
}

impl crate::password::Pepper for Token {
    fn pepper(&self, data: &[u8]) -> Result<[u8; 32], String> {
        self.hmac(data).map_err(|e| e.to_string())
    }
}

/// The user CA's key as rcgen sees it: the public key from the token, signatures made
/// by the token (SHA-256, then CKM_ECDSA, DER-encoded as X.509 wants).
pub struct UserCaKey<'a> {
    token: &'a Token,
    point: Vec<u8>,
}

impl<'a> UserCaKey<'a> {
    /// Wraps the token's user-CA key.
    pub fn new(token: &'a Token) -> Self {
        UserCaKey {
            token,
            point: token
                .user_ca_public
                .to_encoded_point(false)
                .as_bytes()
                .to_vec(),
        }
    }
}

impl rcgen::PublicKeyData for UserCaKey<'_> {
    fn der_bytes(&self) -> &[u8] {
        &self.point
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        &rcgen::PKCS_ECDSA_P256_SHA256
    }
}

impl rcgen::SigningKey for UserCaKey<'_> {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        let digest: [u8; 32] = Sha256::digest(msg).into();
        let sig = self
            .token
            .sign_as_user_ca(&digest)
            .map_err(|_| rcgen::Error::RemoteKeyError)?;
        Ok(sig.to_der().as_bytes().to_vec())
    }
}

/// PEM of a public key (SubjectPublicKeyInfo), as `shardctl pki issue-user-ca` reads it.
pub fn public_key_pem(key: &VerifyingKey) -> String {
    use p256::pkcs8::EncodePublicKey;
    key.to_public_key_pem(p256::pkcs8::LineEnding::LF)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use p256::ecdsa::signature::hazmat::PrehashVerifier;
    use testkit::device::softhsm::SoftHsm;

    #[test]
    fn provision_is_idempotent_and_keys_work_but_never_leave() {
        let token = SoftHsm::start().unwrap();
        let mut profile = token.profile(SealMechanism::AesGcm);
        profile.key_label = "enroller".into();
        let a = Token::provision(&profile).unwrap();
        let b = Token::provision(&profile).unwrap();
        assert_eq!(
            a.manifest_key, b.manifest_key,
            "second provision keeps the keys"
        );
        let t = Token::open(&profile).unwrap();

        let digest = [7u8; 32];
        let sig = shard::ManifestSigner::sign_digest(&t, &digest).unwrap();
        t.info().manifest_key.verify_prehash(&digest, &sig).unwrap();
        let sig = t.sign_as_user_ca(&digest).unwrap();
        t.info().user_ca_key.verify_prehash(&digest, &sig).unwrap();
        assert_ne!(t.info().manifest_key, t.info().user_ca_key);

        let h1 = t.hmac(b"x").unwrap();
        assert_eq!(h1, t.hmac(b"x").unwrap());
        assert_ne!(h1, t.hmac(b"y").unwrap());
        assert_ne!(*t.random::<32>().unwrap(), *t.random::<32>().unwrap());

        let sealed = t.seal_totp("alice", b"totp secret bytes").unwrap();
        assert_eq!(
            &*t.unseal_totp("alice", &sealed).unwrap(),
            b"totp secret bytes"
        );
        assert!(t.unseal_totp("bob", &sealed).is_err(), "bound to the user");

        // No private or secret key's value can be read from the token.
        let s = token.user_session().unwrap();
        for (class, which) in [
            (ObjectClass::PRIVATE_KEY, "manifest"),
            (ObjectClass::PRIVATE_KEY, "user-ca"),
            (ObjectClass::SECRET_KEY, "pepper"),
        ] {
            let h = find_one(&s, class, &format!("enroller/{which}"))
                .unwrap()
                .unwrap();
            let attrs = s.get_attributes(
                h,
                &[
                    AttributeType::Value,
                    AttributeType::Extractable,
                    AttributeType::Sensitive,
                ],
            );
            let values = attrs.unwrap_or_default();
            assert!(
                !values.iter().any(|a| matches!(a, Attribute::Value(_))),
                "{which}: CKA_VALUE readable"
            );
            assert!(values.contains(&Attribute::Extractable(false)), "{which}");
            assert!(values.contains(&Attribute::Sensitive(true)), "{which}");
        }
    }
}
