//! One open ESAPI context and the TPM commands the sealer sends through it.
//!
//! A [`Conn`] is used by one thread at a time (the sealer's mutex). It caches the
//! ESYS handles of the verified persistent primaries and, with parameter encryption,
//! one salted session, so a seal costs one `TPM2_Create` and an unseal
//! `TPM2_Load` + `TPM2_Unseal` + `TPM2_FlushContext`: the same commands as the bare
//! device path.
//!
//! Failures come back as [`Fail`], which tells the sealer whether to reconnect,
//! send `TPM2_Startup`, retry after dropping a stale cache entry, or give up.

use std::collections::BTreeMap;
use std::str::FromStr;

use sha2::{Digest, Sha256};
use tss_esapi::attributes::{ObjectAttributesBuilder, SessionAttributesBuilder};
use tss_esapi::constants::{CapabilityType, PropertyTag, SessionType, StartupType};
use tss_esapi::handles::{KeyHandle, ObjectHandle, PersistentTpmHandle, TpmHandle};
use tss_esapi::interface_types::algorithm::{HashingAlgorithm, PublicAlgorithm};
use tss_esapi::interface_types::dynamic_handles::Persistent;
use tss_esapi::interface_types::ecc::EccCurve;
use tss_esapi::interface_types::resource_handles::{Hierarchy, Provision};
use tss_esapi::interface_types::session_handles::AuthSession;
use tss_esapi::structures::{
    Auth, CapabilityData, EccParameter, EccPoint, KeyedHashScheme, Private, Public, PublicBuilder,
    PublicEccParametersBuilder, PublicKeyedHashParameters, SensitiveData, SymmetricDefinition,
    SymmetricDefinitionObject,
};
use tss_esapi::tcti_ldr::TctiNameConf;
use tss_esapi::traits::Marshall;
use tss_esapi::Context;
use zeroize::Zeroizing;

use super::rc::{classify, describe, Class};
use crate::Error;

/// Most key versions a sealer looks for above its base handle.
pub(crate) const MAX_VERSIONS: u32 = 64;

const PRIMARY_UNIQUE_TAG: &[u8] = b"shard-tpm-storage-primary-v1\0";

/// What to do after a failed device call.
#[derive(Debug)]
pub(crate) enum Fail {
    /// The connection is gone: drop the context, reconnect and retry.
    Reconnect(String),
    /// The TPM wants `TPM2_Startup(CLEAR)`: send it and retry.
    Startup,
    /// A cached handle or session went stale and was dropped: retry.
    Retry(String),
    /// A final answer.
    Done(Error),
}

impl Fail {
    /// The error to report when no retry is left.
    pub(crate) fn into_error(self) -> Error {
        match self {
            Fail::Reconnect(m) => Error::DeviceUnavailable(m),
            Fail::Startup => Error::Device("the TPM keeps asking for TPM2_Startup".into()),
            Fail::Retry(m) => Error::Device(m),
            Fail::Done(e) => e,
        }
    }
}

/// What the sealer knows about its keys; it outlives connections.
#[derive(Debug)]
pub(crate) struct Keys {
    /// Persistent handle of key version 1; version k is at `base + k - 1`.
    pub base: u32,
    /// The Name each version's primary has on this TPM, learned by creating it.
    pub names: BTreeMap<u32, Vec<u8>>,
    /// The version new seals use.
    pub current: u32,
}

impl Keys {
    /// The persistent handle of key version `v`.
    pub(crate) fn handle(&self, v: u32) -> Result<u32, Error> {
        if v == 0 || v > MAX_VERSIONS {
            return Err(Error::UnknownKeyVersion(v));
        }
        self.base
            .checked_add(v - 1)
            .filter(|h| *h <= 0x817F_FFFF)
            .ok_or(Error::UnknownKeyVersion(v))
    }
}

/// An open ESAPI context with its caches.
pub(crate) struct Conn {
    ctx: Context,
    parameter_encryption: bool,
    /// ESYS handles of persistent primaries whose Name was checked, by version.
    primaries: BTreeMap<u32, KeyHandle>,
    /// The salted parameter-encryption session, when enabled and started.
    session: Option<AuthSession>,
    /// Set when cleanup failed; the sealer drops the connection after the call.
    pub broken: bool,
}

impl Conn {
    /// Opens an ESAPI context on `tcti`. No TPM command is sent.
    pub(crate) fn connect(tcti: &str, parameter_encryption: bool) -> Result<Conn, Error> {
        let conf = TctiNameConf::from_str(tcti)
            .map_err(|e| Error::Profile(format!("tpm.tcti {tcti:?} is not usable: {e}")))?;
        let ctx = Context::new(conf).map_err(|e| {
            Error::DeviceUnavailable(format!("cannot open TPM at {tcti}: {}", describe(&e)))
        })?;
        Ok(Conn {
            ctx,
            parameter_encryption,
            primaries: BTreeMap::new(),
            session: None,
            broken: false,
        })
    }

    /// Sends `TPM2_Startup(CLEAR)`; "already started" counts as success.
    pub(crate) fn startup(&mut self) -> Result<(), Fail> {
        match self.ctx.startup(StartupType::Clear) {
            Ok(()) => Ok(()),
            Err(e) if classify(&e) == Class::Initialize => Ok(()),
            Err(e) => Err(self.fail("TPM2_Startup", &e)),
        }
    }

    /// The default mapping of an error from a management command.
    fn fail(&mut self, what: &str, e: &tss_esapi::Error) -> Fail {
        match classify(e) {
            Class::Transport => Fail::Reconnect(format!("{what}: {}", describe(e))),
            Class::Initialize => Fail::Startup,
            Class::Session => {
                self.drop_session();
                Fail::Retry(format!("{what}: session lost: {}", describe(e)))
            }
            _ => Fail::Done(Error::Device(format!("{what}: {}", describe(e)))),
        }
    }

    /// `TPM 2.0 <manufacturer> <vendor> firmware <version 1>`.
    pub(crate) fn device_description(&mut self) -> Result<String, Fail> {
        let mut prop = |tag| {
            self.ctx
                .get_tpm_property(tag)
                .map(|v| v.unwrap_or(0))
                .map_err(|e| (e, "TPM2_GetCapability"))
        };
        let r = (|| {
            let manufacturer = prop(PropertyTag::Manufacturer)?;
            let mut vendor = Vec::new();
            for tag in [
                PropertyTag::VendorString1,
                PropertyTag::VendorString2,
                PropertyTag::VendorString3,
                PropertyTag::VendorString4,
            ] {
                vendor.extend_from_slice(&prop(tag)?.to_be_bytes());
            }
            let fw = prop(PropertyTag::FirmwareVersion1)?;
            Ok((manufacturer, vendor, fw))
        })();
        match r {
            Ok((manufacturer, vendor, fw)) => {
                let text = |b: &[u8]| -> String {
                    let s: String = b
                        .iter()
                        .map(|c| {
                            if c.is_ascii_graphic() {
                                *c as char
                            } else {
                                ' '
                            }
                        })
                        .collect();
                    s.split_whitespace().collect::<Vec<_>>().join(" ")
                };
                Ok(format!(
                    "TPM 2.0 {} {} firmware {fw:#010x}",
                    text(&manufacturer.to_be_bytes()),
                    text(&vendor),
                ))
            }
            Err((e, what)) => Err(self.fail(what, &e)),
        }
    }

    /// The Name version `v`'s primary has on this TPM, creating it transiently the
    /// first time (the template is fixed, so the same TPM always gives the same key).
    pub(crate) fn expected_name(&mut self, keys: &mut Keys, v: u32) -> Result<Vec<u8>, Fail> {
        if let Some(n) = keys.names.get(&v) {
            return Ok(n.clone());
        }
        let handle = self.create_primary(v)?;
        let name = self.ctx.tr_get_name(handle.into());
        self.flush(handle.into());
        let name = name
            .map_err(|e| self.fail("Esys_TR_GetName", &e))?
            .value()
            .to_vec();
        keys.names.insert(v, name.clone());
        Ok(name)
    }

    /// Creates version `v`'s primary as a transient object. The caller flushes it.
    fn create_primary(&mut self, v: u32) -> Result<KeyHandle, Fail> {
        let template = primary_template(v).map_err(|e| {
            Fail::Done(Error::Device(format!("primary template: {}", describe(&e))))
        })?;
        let r = self
            .ctx
            .execute_with_session(Some(AuthSession::Password), |c| {
                c.create_primary(Hierarchy::Owner, template, None, None, None, None)
            });
        match r {
            Ok(res) => Ok(res.key_handle),
            Err(e) => Err(self.fail("TPM2_CreatePrimary", &e)),
        }
    }

    /// The ESYS handle of version `v`'s persistent primary. When the handle is
    /// empty the primary is re-created from its template and persisted there; when
    /// it holds another object, that is an error (it is never evicted by us).
    pub(crate) fn primary(&mut self, keys: &mut Keys, v: u32) -> Result<KeyHandle, Fail> {
        if let Some(h) = self.primaries.get(&v) {
            return Ok(*h);
        }
        let tpm_handle = keys.handle(v).map_err(Fail::Done)?;
        match self.read_persistent(tpm_handle)? {
            Some(mut obj) => {
                let expected = match self.expected_name(keys, v) {
                    Ok(n) => n,
                    Err(f) => {
                        let _ = self.ctx.tr_close(&mut obj);
                        return Err(f);
                    }
                };
                match self.ctx.tr_get_name(obj) {
                    Ok(n) if n.value() == expected.as_slice() => {
                        let h = KeyHandle::from(obj);
                        self.primaries.insert(v, h);
                        Ok(h)
                    }
                    Ok(_) => {
                        let _ = self.ctx.tr_close(&mut obj);
                        Err(Fail::Done(Error::Device(format!(
                            "persistent handle {tpm_handle:#010x} holds an object that is not key version {v} of this sealer"
                        ))))
                    }
                    Err(e) => {
                        let _ = self.ctx.tr_close(&mut obj);
                        Err(self.fail("Esys_TR_GetName", &e))
                    }
                }
            }
            None => {
                tracing::info!(
                    handle = tpm_handle,
                    version = v,
                    "TPM storage primary missing; re-creating it from its template"
                );
                let transient = self.create_primary(v)?;
                let persisted = self.check_and_persist(keys, v, transient, tpm_handle);
                self.flush(transient.into());
                let h = KeyHandle::from(persisted?);
                self.primaries.insert(v, h);
                Ok(h)
            }
        }
    }

    /// Persists a freshly created primary of version `v` at `handle`, after checking
    /// that it is the key this sealer knew (a different Name means the owner seed
    /// changed: the TPM was cleared, and older blobs are lost).
    fn check_and_persist(
        &mut self,
        keys: &mut Keys,
        v: u32,
        transient: KeyHandle,
        handle: u32,
    ) -> Result<ObjectHandle, Fail> {
        let name = match self.ctx.tr_get_name(transient.into()) {
            Ok(n) => n.value().to_vec(),
            Err(e) => return Err(self.fail("Esys_TR_GetName", &e)),
        };
        match keys.names.get(&v) {
            Some(expected) if *expected != name => {
                return Err(Fail::Done(Error::Device(format!(
                "re-created key version {v} differs from this sealer's key (was the TPM cleared?)"
            ))))
            }
            Some(_) => {}
            None => {
                keys.names.insert(v, name);
            }
        }
        self.persist(transient, handle)
    }

    /// `Esys_TR_FromTPMPublic` on a persistent handle; `None` when it is empty.
    fn read_persistent(&mut self, handle: u32) -> Result<Option<ObjectHandle>, Fail> {
        let tpm = PersistentTpmHandle::new(handle)
            .map_err(|e| Fail::Done(Error::Profile(format!("bad handle: {}", describe(&e)))))?;
        let r = self
            .ctx
            .execute_without_session(|c| c.tr_from_tpm_public(TpmHandle::Persistent(tpm)));
        match r {
            Ok(obj) => Ok(Some(obj)),
            Err(e) if matches!(classify(&e), Class::Handle(1)) => Ok(None),
            Err(e) => Err(self.fail("TPM2_ReadPublic", &e)),
        }
    }

    /// Makes a transient object persistent at `handle` (owner hierarchy, empty auth).
    fn persist(&mut self, transient: KeyHandle, handle: u32) -> Result<ObjectHandle, Fail> {
        let tpm = PersistentTpmHandle::new(handle)
            .map_err(|e| Fail::Done(Error::Profile(format!("bad handle: {}", describe(&e)))))?;
        let r = self
            .ctx
            .execute_with_session(Some(AuthSession::Password), |c| {
                c.evict_control(
                    Provision::Owner,
                    transient.into(),
                    Persistent::Persistent(tpm),
                )
            });
        r.map_err(|e| self.fail("TPM2_EvictControl", &e))
    }

    /// Flushes a transient object or session; a failure marks the connection broken
    /// so that it is dropped (and the device forgets everything it held).
    pub(crate) fn flush(&mut self, h: ObjectHandle) {
        if let Err(e) = self.ctx.flush_context(h) {
            tracing::warn!(error = %describe(&e), "TPM2_FlushContext failed; dropping the connection");
            self.broken = true;
        }
    }

    /// Forgets a cached primary handle (after the TPM said it is gone).
    fn forget_primary(&mut self, v: u32) {
        if let Some(h) = self.primaries.remove(&v) {
            let mut obj = ObjectHandle::from(h);
            let _ = self.ctx.tr_close(&mut obj);
        }
    }

    fn drop_session(&mut self) {
        if let Some(s) = self.session.take() {
            let h = ObjectHandle::from(tss_esapi::handles::SessionHandle::from(s));
            // The session may already be gone with a restarted TPM; failing here is fine.
            let _ = self.ctx.flush_context(h);
        }
    }

    /// The session that authorizes object use: the password session, or the salted
    /// HMAC session with parameter encryption (started once, then kept).
    fn auth_session(
        &mut self,
        keys: &mut Keys,
        decrypt: bool,
        encrypt: bool,
    ) -> Result<AuthSession, Fail> {
        if !self.parameter_encryption {
            return Ok(AuthSession::Password);
        }
        let session = match self.session {
            Some(s) => s,
            None => {
                // Salted with the current storage primary: ESAPI encrypts the salt
                // to its public key (ECDH), so the session key never crosses the bus.
                let salt_key = self.primary(keys, keys.current)?;
                let r = self.ctx.execute_without_session(|c| {
                    c.start_auth_session(
                        Some(salt_key),
                        None,
                        None,
                        SessionType::Hmac,
                        SymmetricDefinition::AES_128_CFB,
                        HashingAlgorithm::Sha256,
                    )
                });
                let s = match r {
                    Ok(Some(s)) => s,
                    Ok(None) => {
                        return Err(Fail::Done(Error::Device(
                            "TPM2_StartAuthSession returned no session".into(),
                        )))
                    }
                    Err(e) => {
                        if matches!(classify(&e), Class::Handle(_)) {
                            self.forget_primary(keys.current);
                            return Err(Fail::Retry("salt key handle went stale".into()));
                        }
                        return Err(self.fail("TPM2_StartAuthSession", &e));
                    }
                };
                self.session = Some(s);
                s
            }
        };
        let (attrs, mask) = SessionAttributesBuilder::new()
            .with_continue_session(true)
            .with_decrypt(decrypt)
            .with_encrypt(encrypt)
            .build();
        if let Err(e) = self.ctx.tr_sess_set_attributes(session, attrs, mask) {
            return Err(self.fail("Esys_TRSess_SetAttributes", &e));
        }
        Ok(session)
    }

    /// Maps an error from a command that used the object session, dropping the
    /// stale primary or session it points at.
    fn fail_object(&mut self, what: &str, v: u32, e: &tss_esapi::Error) -> Fail {
        match classify(e) {
            Class::Handle(1) => {
                self.forget_primary(v);
                Fail::Retry(format!("{what}: parent handle went stale"))
            }
            _ => self.fail(what, e),
        }
    }

    /// `TPM2_Create` of a sealed data object under version `v`'s primary.
    /// Returns the marshalled TPMT_PUBLIC and the TPM2B_PRIVATE buffer.
    pub(crate) fn seal(
        &mut self,
        keys: &mut Keys,
        v: u32,
        auth: &[u8; 32],
        data: &[u8],
    ) -> Result<(Vec<u8>, Vec<u8>), Fail> {
        let parent = self.primary(keys, v)?;
        let session = self.auth_session(keys, true, false)?;
        let template = sealed_template()
            .map_err(|e| Fail::Done(Error::Device(format!("sealed template: {}", describe(&e)))))?;
        let auth = Auth::try_from(auth.to_vec())
            .map_err(|_| Fail::Done(Error::Device("auth value rejected by the TSS".into())))?;
        let data = SensitiveData::try_from(data.to_vec())
            .map_err(|_| Fail::Done(Error::Device("sealed data rejected by the TSS".into())))?;
        let r = self.ctx.execute_with_session(Some(session), |c| {
            c.create(parent, template, Some(auth), Some(data), None, None)
        });
        match r {
            Ok(res) => {
                let public = res.out_public.marshall().map_err(|e| {
                    Fail::Done(Error::Device(format!("marshal public: {}", describe(&e))))
                })?;
                Ok((public, res.out_private.value().to_vec()))
            }
            Err(e) => Err(self.fail_object("TPM2_Create", v, &e)),
        }
    }

    /// `TPM2_Load` + `TPM2_Unseal` + `TPM2_FlushContext` under version `v`'s primary.
    /// Anything the TPM refuses about the object itself is [`Error::Integrity`].
    pub(crate) fn unseal(
        &mut self,
        keys: &mut Keys,
        v: u32,
        public: &Public,
        private: &Private,
        auth: &[u8; 32],
    ) -> Result<Zeroizing<Vec<u8>>, Fail> {
        let parent = self.primary(keys, v)?;
        // TPM2_Load carries nothing secret (the private area is encrypted under the
        // parent, whose auth is empty), so it goes with the password session even
        // with parameter encryption: an HMAC session costs the ESAPI milliseconds
        // of client CPU per command with tpm2-tss 3.2 and OpenSSL 3.
        let r = self
            .ctx
            .execute_with_session(Some(AuthSession::Password), |c| {
                c.load(parent, private.clone(), public.clone())
            });
        let obj = match r {
            Ok(h) => h,
            Err(e) => {
                return Err(match classify(&e) {
                    Class::Transport | Class::Initialize | Class::Session | Class::Handle(1) => {
                        self.fail_object("TPM2_Load", v, &e)
                    }
                    // The TPM checked the private area's HMAC over the public area
                    // (TPM_RC_INTEGRITY) or rejected their contents: altered blob.
                    _ => {
                        tracing::debug!(error = %describe(&e), "TPM2_Load refused a blob");
                        Fail::Done(Error::Integrity)
                    }
                });
            }
        };
        // From here on the object occupies one of the TPM's few transient slots:
        // it is flushed on every path.
        let r = self.unseal_loaded(keys, obj, auth);
        self.flush(obj.into());
        r
    }

    fn unseal_loaded(
        &mut self,
        keys: &mut Keys,
        obj: KeyHandle,
        auth: &[u8; 32],
    ) -> Result<Zeroizing<Vec<u8>>, Fail> {
        let auth = Auth::try_from(auth.to_vec())
            .map_err(|_| Fail::Done(Error::Device("auth value rejected by the TSS".into())))?;
        if let Err(e) = self.ctx.tr_set_auth(obj.into(), auth) {
            return Err(self.fail("Esys_TR_SetAuth", &e));
        }
        let session = self.auth_session(keys, false, true)?;
        let r = self
            .ctx
            .execute_with_session(Some(session), |c| c.unseal(obj.into()));
        match r {
            Ok(data) => Ok(Zeroizing::new(data.value().to_vec())),
            Err(e) => Err(match classify(&e) {
                // The auth value is derived from the header, kind and salt: a
                // failure means one of them was altered after sealing.
                Class::Auth => Fail::Done(Error::Integrity),
                Class::Handle(_) => Fail::Retry("loaded object vanished".into()),
                _ => self.fail("TPM2_Unseal", &e),
            }),
        }
    }

    /// The highest version whose persistent primary is present and ours, or 1.
    pub(crate) fn find_current(&mut self, keys: &mut Keys) -> Result<u32, Fail> {
        let r = self.ctx.execute_without_session(|c| {
            c.get_capability(CapabilityType::Handles, keys.base, MAX_VERSIONS)
        });
        let handles = match r {
            Ok((CapabilityData::Handles(list), _)) => list
                .iter()
                .map(|h| u32::from(*h))
                .filter(|h| (keys.base..keys.base.saturating_add(MAX_VERSIONS)).contains(h))
                .collect::<Vec<_>>(),
            Ok(_) => {
                return Err(Fail::Done(Error::Device(
                    "TPM2_GetCapability returned no handle list".into(),
                )))
            }
            Err(e) => return Err(self.fail("TPM2_GetCapability", &e)),
        };
        for h in handles.into_iter().rev() {
            let v = h - keys.base + 1;
            if self.is_ours(keys, v)? {
                return Ok(v);
            }
        }
        Ok(1)
    }

    /// Whether version `v`'s handle holds this sealer's primary (caching it if so).
    fn is_ours(&mut self, keys: &mut Keys, v: u32) -> Result<bool, Fail> {
        if self.primaries.contains_key(&v) {
            return Ok(true);
        }
        let tpm_handle = keys.handle(v).map_err(Fail::Done)?;
        let Some(mut obj) = self.read_persistent(tpm_handle)? else {
            return Ok(false);
        };
        let expected = self.expected_name(keys, v)?;
        match self.ctx.tr_get_name(obj) {
            Ok(n) if n.value() == expected.as_slice() => {
                self.primaries.insert(v, KeyHandle::from(obj));
                Ok(true)
            }
            Ok(_) => {
                let _ = self.ctx.tr_close(&mut obj);
                Ok(false)
            }
            Err(e) => {
                let _ = self.ctx.tr_close(&mut obj);
                Err(self.fail("Esys_TR_GetName", &e))
            }
        }
    }

    /// Whether a persistent primary for version `v` is present now (no re-creation).
    pub(crate) fn has_persistent(&mut self, keys: &mut Keys, v: u32) -> Result<bool, Fail> {
        self.forget_primary(v);
        self.is_ours(keys, v)
    }
}

/// The storage primary of key version `v`: ECC P-256, restricted decrypt, AES-128-CFB,
/// no auth, no DA. Its `unique` field is a tag and the version, so each version is
/// a different key derived from the owner seed, and re-creating it gives it back.
fn primary_template(v: u32) -> tss_esapi::Result<Public> {
    let attributes = ObjectAttributesBuilder::new()
        .with_fixed_tpm(true)
        .with_fixed_parent(true)
        .with_sensitive_data_origin(true)
        .with_user_with_auth(true)
        .with_no_da(true)
        .with_restricted(true)
        .with_decrypt(true)
        .build()?;
    let mut h = Sha256::new();
    h.update(PRIMARY_UNIQUE_TAG);
    h.update(v.to_be_bytes());
    let x = EccParameter::try_from(h.finalize().to_vec())?;
    PublicBuilder::new()
        .with_public_algorithm(PublicAlgorithm::Ecc)
        .with_name_hashing_algorithm(HashingAlgorithm::Sha256)
        .with_object_attributes(attributes)
        .with_ecc_parameters(
            PublicEccParametersBuilder::new_restricted_decryption_key(
                SymmetricDefinitionObject::AES_128_CFB,
                EccCurve::NistP256,
            )
            .build()?,
        )
        .with_ecc_unique_identifier(EccPoint::new(x, EccParameter::default()))
        .build()
}

/// A sealed data object: fixedTPM and fixedParent (it never leaves this TPM and
/// this parent), used with its auth value (userWithAuth), no admin role
/// (adminWithPolicy with an empty policy: its auth can never be changed), and
/// noDA: its auth value is a 256-bit derived value, not a guessable password, so
/// dictionary-attack lockout would only let a tampered blob lock the TPM.
fn sealed_template() -> tss_esapi::Result<Public> {
    let attributes = ObjectAttributesBuilder::new()
        .with_fixed_tpm(true)
        .with_fixed_parent(true)
        .with_user_with_auth(true)
        .with_admin_with_policy(true)
        .with_no_da(true)
        .build()?;
    PublicBuilder::new()
        .with_public_algorithm(PublicAlgorithm::KeyedHash)
        .with_name_hashing_algorithm(HashingAlgorithm::Sha256)
        .with_object_attributes(attributes)
        .with_auth_policy(Default::default())
        .with_keyed_hash_parameters(PublicKeyedHashParameters::new(KeyedHashScheme::Null))
        .with_keyed_hash_unique_identifier(Default::default())
        .build()
}
