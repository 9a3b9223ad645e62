//! Key versions on the token: labels, the key ring read from the token, and the
//! generation of new versions.

use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::{Mechanism as Ck, MechanismType};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use cryptoki::types::Ulong;
use tracing::{info, warn};

use super::rc::{ck_text, keygen_error, CkOrErr};
use super::{Pkcs11Sealer, DEVICE_ID_LEN};
use crate::{os_random, Error, Mechanism};

/// Which keys of each version are on the token, and the token's device id.
#[derive(Debug, Default, Clone)]
pub(super) struct Keyring {
    pub(super) device_id: Option<[u8; DEVICE_ID_LEN]>,
    pub(super) versions: std::collections::BTreeMap<u32, KeyVersion>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct KeyVersion {
    pub(super) enc: bool,
    pub(super) mac: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum VersionState {
    Present,
    /// Below the current version but absent: an operator deleted it.
    Deleted,
    /// Never existed here (zero, or above the current version).
    Unknown,
}

impl Keyring {
    /// Reads every token secret key whose label is `<base>/v<k>` or `<base>/v<k>/mac`.
    pub(super) fn scan(session: &Session, base: &str) -> Result<Keyring, CkOrErr> {
        let objects = session
            .find_objects(&[
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::Token(true),
            ])
            .map_err(CkOrErr::Ck)?;
        let mut ring = Keyring::default();
        for obj in objects {
            let attrs = session
                .get_attributes(obj, &[AttributeType::Label, AttributeType::Id])
                .map_err(CkOrErr::Ck)?;
            let mut label = None;
            let mut id = None;
            for a in attrs {
                match a {
                    Attribute::Label(l) => label = Some(l),
                    Attribute::Id(i) => id = Some(i),
                    _ => {}
                }
            }
            let Some(label) = label else { continue };
            let Ok(label) = std::str::from_utf8(&label) else {
                continue;
            };
            let Some((version, role)) = parse_key_label(base, label) else {
                continue;
            };
            let id: [u8; DEVICE_ID_LEN] = id
                .as_deref()
                .and_then(|i| i.try_into().ok())
                .ok_or_else(|| {
                    CkOrErr::Err(Error::Device(format!(
                        "sealing key {label} has no 16-byte CKA_ID"
                    )))
                })?;
            match ring.device_id {
                None => ring.device_id = Some(id),
                Some(d) if d == id => {}
                Some(_) => {
                    return Err(CkOrErr::Err(Error::Device(format!(
                        "sealing keys under {base:?} carry different CKA_ID values"
                    ))))
                }
            }
            let entry = ring.versions.entry(version).or_default();
            let slot = match role {
                Role::Enc => &mut entry.enc,
                Role::Mac => &mut entry.mac,
            };
            if *slot {
                return Err(CkOrErr::Err(Error::Device(format!(
                    "several token keys are labelled {label}"
                ))));
            }
            *slot = true;
        }
        Ok(ring)
    }

    pub(super) fn current(&self) -> Option<u32> {
        self.versions.keys().next_back().copied()
    }

    /// Whether a key present in `before` is absent now (or the device id changed).
    pub(super) fn lost_keys_since(&self, before: &Keyring) -> bool {
        if before.device_id.is_some() && before.device_id != self.device_id {
            return true;
        }
        before.versions.iter().any(|(v, was)| {
            let now = self.versions.get(v).copied().unwrap_or_default();
            (was.enc && !now.enc) || (was.mac && !now.mac)
        })
    }

    pub(super) fn state(&self, version: u32) -> VersionState {
        if self.versions.contains_key(&version) {
            VersionState::Present
        } else if version > 0 && self.current().is_some_and(|c| version < c) {
            VersionState::Deleted
        } else {
            VersionState::Unknown
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Role {
    Enc,
    Mac,
}

pub(super) fn roles(mechanism: Mechanism) -> Result<Vec<Role>, Error> {
    match mechanism {
        Mechanism::AesGcm => Ok(vec![Role::Enc]),
        Mechanism::AesCbcPadHmac => Ok(vec![Role::Enc, Role::Mac]),
        Mechanism::TpmSeal => Err(Error::Profile(
            "pkcs11.mechanism must be aes-gcm or aes-cbc-pad-hmac".into(),
        )),
    }
}

pub(super) fn needed_mechanisms(mechanism: Mechanism) -> Vec<MechanismType> {
    match mechanism {
        Mechanism::AesGcm => vec![MechanismType::AES_GCM],
        Mechanism::AesCbcPadHmac => vec![MechanismType::AES_CBC, MechanismType::SHA256_HMAC],
        Mechanism::TpmSeal => vec![],
    }
}

/// `<base>/v<version>` or `<base>/v<version>/mac`.
pub(super) fn key_label(base: &str, version: u32, role: Role) -> String {
    match role {
        Role::Enc => format!("{base}/v{version}"),
        Role::Mac => format!("{base}/v{version}/mac"),
    }
}

/// The keys of one version of one key set: what a session looks up on the token.
#[derive(Debug, Clone, Copy)]
pub(super) struct VersionKeys<'a> {
    /// The profile's base label.
    pub(super) base: &'a str,
    /// The key set's device id (`CKA_ID`).
    pub(super) device_id: [u8; DEVICE_ID_LEN],
    /// The key version.
    pub(super) version: u32,
}

impl VersionKeys<'_> {
    /// Label of the key of `role`.
    pub(super) fn label(&self, role: Role) -> String {
        key_label(self.base, self.version, role)
    }
}

/// Inverse of [`key_label`]; versions are decimal without leading zeros, from 1.
fn parse_key_label(base: &str, label: &str) -> Option<(u32, Role)> {
    let rest = label.strip_prefix(base)?.strip_prefix("/v")?;
    let (digits, role) = match rest.strip_suffix("/mac") {
        Some(d) => (d, Role::Mac),
        None => (rest, Role::Enc),
    };
    if digits.is_empty() || digits.starts_with('0') || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok().map(|v| (v, role))
}

/// The token object (not a session copy) for `label` with this device id.
pub(super) fn find_token_key(
    session: &Session,
    label: &str,
    device_id: [u8; DEVICE_ID_LEN],
) -> Result<ObjectHandle, CkOrErr> {
    let found = session
        .find_objects(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::Token(true),
            Attribute::Label(label.as_bytes().to_vec()),
            Attribute::Id(device_id.to_vec()),
        ])
        .map_err(CkOrErr::Ck)?;
    match found.as_slice() {
        [one] => Ok(*one),
        [] => Err(CkOrErr::Err(Error::KeyMissing {
            label: label.to_owned(),
        })),
        _ => Err(CkOrErr::Err(Error::Device(format!(
            "several token keys are labelled {label}"
        )))),
    }
}

/// Template of a key that must never leave the token: a token object that needs a
/// login to use, whose value is sensitive and never extractable, followed by `rest`
/// (class, type, usages, label). Every long-term key this project generates on a
/// token starts from it.
pub fn resident_key_template(rest: impl IntoIterator<Item = Attribute>) -> Vec<Attribute> {
    let mut template = vec![
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
    ];
    template.extend(rest);
    template
}

/// A 256-bit sealing key of `key_type`: encrypt/decrypt only for [`Role::Enc`],
/// sign/verify only for [`Role::Mac`], never wrapping, unwrapping or deriving.
/// `CKA_MODIFIABLE` stays at its default (true) because SoftHSM refuses
/// `C_CopyObject` of an unmodifiable object; sensitivity and extractability are
/// one-way attributes, so this does not open a path to the key bytes.
fn sealing_key_template(
    label: &str,
    id: &[u8; DEVICE_ID_LEN],
    role: Role,
    key_type: KeyType,
) -> Vec<Attribute> {
    let mac = role == Role::Mac;
    resident_key_template([
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(key_type),
        Attribute::ValueLen(Ulong::new(32)),
        Attribute::Encrypt(!mac),
        Attribute::Decrypt(!mac),
        Attribute::Sign(mac),
        Attribute::Verify(mac),
        Attribute::Wrap(false),
        Attribute::Unwrap(false),
        Attribute::Derive(false),
        Attribute::Label(label.as_bytes().to_vec()),
        Attribute::Id(id.to_vec()),
    ])
}

impl Pkcs11Sealer {
    /// Creates the keys of `version` that the profile's mechanism needs, with
    /// `device_id` as their `CKA_ID`.
    pub(super) fn create_keys(
        &self,
        session: &Session,
        version: u32,
        device_id: [u8; DEVICE_ID_LEN],
    ) -> Result<(), Error> {
        let base = &self.profile.key_label;
        let label = key_label(base, version, Role::Enc);
        session
            .generate_key(
                &Ck::AesKeyGen,
                &sealing_key_template(&label, &device_id, Role::Enc, KeyType::AES),
            )
            .map_err(|e| keygen_error(e, "CKM_AES_KEY_GEN"))?;
        info!(key = %label, "created AES-256 sealing key on the token");
        if self.profile.mechanism == Mechanism::AesCbcPadHmac {
            let label = key_label(base, version, Role::Mac);
            let generic = session.generate_key(
                &Ck::GenericSecretKeyGen,
                &sealing_key_template(&label, &device_id, Role::Mac, KeyType::GENERIC_SECRET),
            );
            match generic {
                Ok(_) => {}
                // Some tokens (YubiHSM2) want an HMAC-typed key rather than a generic one.
                Err(CkError::Pkcs11(
                    RvError::TemplateInconsistent
                    | RvError::KeyTypeInconsistent
                    | RvError::AttributeValueInvalid,
                    _,
                )) => {
                    session
                        .generate_key(
                            &Ck::GenericSecretKeyGen,
                            &sealing_key_template(
                                &label,
                                &device_id,
                                Role::Mac,
                                KeyType::SHA256_HMAC,
                            ),
                        )
                        .map_err(|e| keygen_error(e, "CKM_GENERIC_SECRET_KEY_GEN"))?;
                }
                Err(e) => return Err(keygen_error(e, "CKM_GENERIC_SECRET_KEY_GEN")),
            }
            info!(key = %label, "created HMAC-SHA-256 sealing key on the token");
        }
        Ok(())
    }

    /// Fresh device id: token randomness mixed with the operating system's.
    pub(super) fn new_device_id(&self, session: &Session) -> Result<[u8; DEVICE_ID_LEN], Error> {
        let mut id = [0u8; DEVICE_ID_LEN];
        os_random(&mut id)?;
        let mut token = [0u8; DEVICE_ID_LEN];
        match session.generate_random_slice(&mut token) {
            Ok(()) => id.iter_mut().zip(token).for_each(|(a, b)| *a ^= b),
            Err(e) => warn!(
                error = %ck_text(&e),
                "token has no usable random generator; device id from the OS only"
            ),
        }
        Ok(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_labels_round_trip_and_reject_lookalikes() {
        for (v, r) in [(1, Role::Enc), (2, Role::Mac), (u32::MAX, Role::Enc)] {
            let l = key_label("shard-seal", v, r);
            assert_eq!(parse_key_label("shard-seal", &l), Some((v, r)), "{l}");
        }
        for bad in [
            "shard-seal",
            "shard-seal/v",
            "shard-seal/v0",
            "shard-seal/v01",
            "shard-seal/v1/",
            "shard-seal/v1/mac2",
            "shard-seal/vx",
            "shard-seal/v99999999999",
            "shard-seal-2/v1",
            "other/v1",
        ] {
            assert_eq!(parse_key_label("shard-seal", bad), None, "{bad}");
        }
    }

    #[test]
    fn version_states() {
        let mut ring = Keyring::default();
        assert_eq!(ring.state(1), VersionState::Unknown);
        ring.versions.insert(
            2,
            KeyVersion {
                enc: true,
                mac: false,
            },
        );
        ring.versions.insert(
            3,
            KeyVersion {
                enc: true,
                mac: false,
            },
        );
        assert_eq!(ring.current(), Some(3));
        assert_eq!(ring.state(0), VersionState::Unknown);
        assert_eq!(ring.state(1), VersionState::Deleted);
        assert_eq!(ring.state(2), VersionState::Present);
        assert_eq!(ring.state(4), VersionState::Unknown);
    }

    #[test]
    fn lost_keys_are_noticed() {
        let mut before = Keyring {
            device_id: Some([1; 16]),
            ..Keyring::default()
        };
        before.versions.insert(
            1,
            KeyVersion {
                enc: true,
                mac: true,
            },
        );
        let mut after = before.clone();
        assert!(!after.lost_keys_since(&before));
        after.versions.insert(
            2,
            KeyVersion {
                enc: true,
                mac: true,
            },
        );
        assert!(
            !after.lost_keys_since(&before),
            "a new version is not a loss"
        );
        after.versions.insert(
            1,
            KeyVersion {
                enc: true,
                mac: false,
            },
        );
        assert!(after.lost_keys_since(&before));
        let mut replaced = before.clone();
        replaced.device_id = Some([2; 16]);
        assert!(replaced.lost_keys_since(&before));
        assert!(Keyring::default().lost_keys_since(&before));
    }
}
