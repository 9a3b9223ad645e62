//! PKCS#11 backend: shards sealed under AES keys that never leave a token.
//!
//! # Keys
//!
//! Key version `k` is an AES-256 secret key labelled `<key_label>/v<k>`; with the
//! `aes-cbc-pad-hmac` mechanism it has a companion HMAC-SHA-256 key labelled
//! `<key_label>/v<k>/mac`. Every key is generated on the token as a token object that
//! is private, sensitive and never extractable, and carries only the usages it needs
//! (encrypt+decrypt for the AES key, sign+verify for the MAC key). Nothing else is
//! stored about keys: the set of versions is whatever the token holds, found by label
//! when a sealer opens. [`Sealer::rotate`] adds version `k+1`; old versions stay on
//! the token and keep unsealing until an operator deletes them.
//!
//! # Device id
//!
//! At first provisioning the sealer draws 16 random bytes (the token's generator mixed
//! with the operating system's) and writes them as `CKA_ID` on every sealing key it
//! creates on this token. That id goes into every blob header, so a blob sealed by
//! another token's key set is refused with [`Error::ForeignDevice`] before any device
//! call, even when both tokens use the same key labels.
//!
//! # Blob bodies
//!
//! After the 58-byte [`BlobHeader`]:
//!
//! ```text
//! aes-gcm           IV (12) || ciphertext || tag (16)       AAD = encoded header
//! aes-cbc-pad-hmac  IV (16) || ciphertext || tag (32)       tag = HMAC-SHA-256 over
//!                                                           header || IV || ciphertext
//! ```
//!
//! The CBC ciphertext is AES-CBC over the shard with PKCS#7 padding, exactly what
//! `CKM_AES_CBC_PAD` produces, but the padding is added and (after the MAC has been
//! verified) removed here around plain `CKM_AES_CBC`: tpm2-pkcs11 1.9 corrupts its
//! CBC-PAD decryption when asked for the output size first (as cryptoki always does),
//! and plain CBC is available wherever CBC-PAD is.
//!
//! Unsealing checks the header against the device id and the caller's context first
//! ([`Error::ForeignDevice`], [`Error::ContextMismatch`]), then lets the token check
//! the tag: the GCM tag inside `C_Decrypt`, the HMAC with `C_Verify` *before*
//! `C_Decrypt` (encrypt-then-MAC, so no padding oracle). A failed tag is
//! [`Error::Integrity`]. AES-KWP is never used for data (SoftHSM 2.6.1 loses the length).
//!
//! # Sessions
//!
//! A sealer keeps a pool of up to `sessions` logged-in sessions (cryptoki sessions are
//! `Send` but not `Sync`, so each call borrows one exclusively; the pool lock is held
//! only to pop and push). Each pooled session holds *session-object copies*
//! (`C_CopyObject` with `CKA_TOKEN=false`, still sensitive and non-extractable) of the
//! keys it has used, made when the session opens for the current version and on first
//! use for older ones. SoftHSM re-reads its token files on every operation that touches
//! a token object; the copies live in memory and are destroyed when the session closes.
//! A device without `C_CopyObject` is used through the token handles instead.
//!
//! Because the copies are cached, a key deleted from the token keeps working in a
//! running sealer until [`Sealer::health`] notices the deletion (it re-reads the key
//! versions from the token and, when any key is gone, drops every pooled session and
//! with it every cached copy) or the sealer restarts.
//!
//! # Modules
//!
//! `C_Initialize` is process-wide per module, and cryptoki never finalizes, so every
//! sealer (and anything else in this process that needs the same token) goes through
//! [`Module::load`], which loads and initialises each module once per process and keeps
//! it loaded. SoftHSM 2.6.1 does not lock its slot table, so [`Module`] serialises the
//! calls that walk it (slot lists, token info, opening sessions).
//!
//! PKCS#11 login state is per process and token: while one sealer in a process is
//! logged in to a token, a second sealer for the same token in the same process shares
//! that login and its PIN is not checked again. Run one sealer per token per process.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, RwLock};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Function, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::mechanism::{Mechanism as Ck, MechanismType};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, SessionState, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::{AuthPin, Ulong};
use rand::rngs::SysRng;
use rand::TryRng;
use tracing::{debug, info, warn};
use zeroize::Zeroizing;

use crate::blob::{check_shard_len, HEADER_LEN};
use crate::profile::{PinSource, Pkcs11Profile};
use crate::{BlobHeader, DeviceInfo, Error, Mechanism, SealContext, Sealer, MAX_SHARD_LEN};

const GCM_IV_LEN: usize = 12;
const GCM_TAG_LEN: usize = 16;
const AES_BLOCK: usize = 16;
const HMAC_LEN: usize = 32;
const DEVICE_ID_LEN: usize = 16;

// ---------------------------------------------------------------------------------------
// Modules
// ---------------------------------------------------------------------------------------

/// Modules loaded by this process, by canonical path. Never unloaded: cryptoki has no
/// finalize-on-drop, and unloading a module other code may still use is unsafe.
static MODULES: Mutex<Vec<Module>> = Mutex::new(Vec::new());

/// A PKCS#11 module (shared library), loaded and `C_Initialize`d once per process.
///
/// Cloning is cheap; all clones share one context. Use this rather than
/// `cryptoki::context::Pkcs11::new` for any module a sealer may also use, so the
/// module is initialised exactly once.
#[derive(Clone)]
pub struct Module {
    inner: Arc<ModuleInner>,
}

struct ModuleInner {
    path: PathBuf,
    ctx: Pkcs11,
    /// Serialises calls that read or change the module's slot table (SoftHSM 2.6.1
    /// inserts into it from `C_GetSlotList` without a lock).
    slots: Mutex<()>,
}

impl std::fmt::Debug for Module {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Module")
            .field("path", &self.inner.path)
            .finish()
    }
}

impl Module {
    /// Loads and initialises the module at `path`, or returns the instance this process
    /// already loaded. A missing or unloadable library is [`Error::DeviceUnavailable`].
    pub fn load(path: &Path) -> Result<Module, Error> {
        let canonical = std::fs::canonicalize(path).map_err(|e| {
            Error::DeviceUnavailable(format!("PKCS#11 module {}: {e}", path.display()))
        })?;
        let mut modules = lock(&MODULES);
        if let Some(m) = modules.iter().find(|m| m.inner.path == canonical) {
            return Ok(m.clone());
        }
        let ctx = Pkcs11::new(&canonical).map_err(|e| {
            Error::DeviceUnavailable(format!(
                "cannot load PKCS#11 module {}: {e}",
                canonical.display()
            ))
        })?;
        match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
            // Another library in this process initialised it first: share that state.
            Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
            Err(e) => {
                return Err(Error::DeviceUnavailable(format!(
                    "initialising {}: {}",
                    canonical.display(),
                    ck_text(&e)
                )))
            }
        }
        debug!(module = %canonical.display(), "PKCS#11 module loaded");
        let module = Module {
            inner: Arc::new(ModuleInner {
                path: canonical,
                ctx,
                slots: Mutex::new(()),
            }),
        };
        modules.push(module.clone());
        Ok(module)
    }

    /// Whether this process has already loaded the module at `path`.
    #[cfg_attr(not(feature = "testing"), allow(dead_code))]
    pub(crate) fn is_loaded(path: &Path) -> bool {
        match std::fs::canonicalize(path) {
            Ok(c) => lock(&MODULES).iter().any(|m| m.inner.path == c),
            Err(_) => false,
        }
    }

    /// Canonical path of the library.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// The cryptoki context, for operations this crate does not wrap (random numbers,
    /// signing with other keys). Do not call slot functions on it from several threads
    /// at once; use [`Module::find_token`] and [`Module::open_session`].
    pub fn context(&self) -> &Pkcs11 {
        &self.inner.ctx
    }

    /// Runs `f` while holding the lock that serialises slot-table calls.
    pub(crate) fn with_slot_lock<R>(&self, f: impl FnOnce(&Pkcs11) -> R) -> R {
        let _guard = lock(&self.inner.slots);
        f(&self.inner.ctx)
    }

    /// Finds the slot holding the initialised token labelled `label`. Slots are never
    /// remembered by number: SoftHSM renumbers them.
    pub fn find_token(&self, label: &str) -> Result<Slot, Error> {
        self.with_slot_lock(|ctx| {
            let slots = ctx.get_slots_with_token().map_err(map_ck)?;
            let mut found = Vec::new();
            for slot in slots {
                match ctx.get_token_info(slot) {
                    Ok(info) if info.token_initialized() && info.label() == label => {
                        found.push(slot)
                    }
                    Ok(_) => {}
                    // A slot whose token vanished: not ours, keep looking.
                    Err(e) => {
                        debug!(slot = slot.id(), error = %ck_text(&e), "skipping unreadable slot")
                    }
                }
            }
            match found.len() {
                0 => Err(Error::TokenNotFound(label.to_owned())),
                1 => Ok(found[0]),
                n => Err(Error::Device(format!(
                    "{n} tokens are labelled {label:?}; token labels must be unique"
                ))),
            }
        })
    }

    /// Opens a session on `slot` (read-write when `read_write`).
    pub fn open_session(&self, slot: Slot, read_write: bool) -> Result<Session, Error> {
        self.with_slot_lock(|ctx| {
            if read_write {
                ctx.open_rw_session(slot)
            } else {
                ctx.open_ro_session(slot)
            }
            .map_err(map_ck)
        })
    }

    /// Opens a session on `slot` logged in as the normal user, reading the PIN from `pin`
    /// only when this process is not already logged in to the token.
    pub fn user_session(
        &self,
        slot: Slot,
        pin: &PinSource,
        read_write: bool,
    ) -> Result<Session, Error> {
        let session = self.open_session(slot, read_write)?;
        login(&session, pin)?;
        Ok(session)
    }

    fn mechanisms(&self, slot: Slot) -> Result<Vec<MechanismType>, Error> {
        self.with_slot_lock(|ctx| ctx.get_mechanism_list(slot).map_err(map_ck))
    }
}

/// Makes sure the token the profile names exists: when no initialised token carries
/// `profile.token_label`, initialises the first slot whose token is present but not
/// initialised (SoftHSM2 always offers one) with that label, the security-officer PIN
/// read from `so_pin_file`, and the profile's user PIN. Returns whether it created the
/// token. An existing token is never re-initialised; with no free slot (a hardware
/// device that must be set up with its own tools) the error says so.
pub fn ensure_token(profile: &Pkcs11Profile, so_pin_file: &Path) -> Result<bool, Error> {
    let module = Module::load(&profile.module)?;
    let label = &profile.token_label;
    match module.find_token(label) {
        Ok(slot) => {
            let pin_ready = module
                .with_slot_lock(|ctx| ctx.get_token_info(slot))
                .map_err(map_ck)?
                .user_pin_initialized();
            if !pin_ready {
                // A token left half-made (initialised, user PIN not yet set): finish it.
                let so_pin = PinSource::File(so_pin_file.to_owned()).read()?;
                let user_pin = profile.pin.read()?;
                set_user_pin(&module, label, &so_pin, &user_pin)?;
                info!(token = %label, "user PIN of an existing token set");
                return Ok(true);
            }
            return Ok(false);
        }
        Err(Error::TokenNotFound(_)) => {}
        Err(e) => return Err(e),
    }
    let so_pin = PinSource::File(so_pin_file.to_owned()).read()?;
    let user_pin = profile.pin.read()?;
    if label.is_empty() || label.len() > 32 {
        return Err(Error::Device(format!(
            "token label {label:?} must be 1 to 32 bytes"
        )));
    }
    module.with_slot_lock(|ctx| {
        let slots = ctx.get_slots_with_token().map_err(map_ck)?;
        let free = slots
            .into_iter()
            .find(|s| matches!(ctx.get_token_info(*s), Ok(info) if !info.token_initialized()))
            .ok_or_else(|| {
                Error::Device(format!(
                    "no token is labelled {label:?} and no slot offers an uninitialised token; \
                     set the device up with its own tools"
                ))
            })?;
        ctx.init_token(free, &AuthPin::new(so_pin.as_str().into()), label)
            .map_err(map_ck)
    })?;
    set_user_pin(&module, label, &so_pin, &user_pin)?;
    info!(token = %label, "token initialised");
    Ok(true)
}

/// Logs in to the token labelled `label` as security officer and sets the user PIN.
fn set_user_pin(module: &Module, label: &str, so_pin: &str, user_pin: &str) -> Result<(), Error> {
    // Found by label every time: SoftHSM moves a new token to another slot number.
    let slot = module.find_token(label)?;
    let session = module.open_session(slot, true)?;
    session
        .login(UserType::So, Some(&AuthPin::new(so_pin.into())))
        .map_err(map_ck)?;
    session
        .init_pin(&AuthPin::new(user_pin.into()))
        .map_err(map_ck)?;
    session.logout().map_err(map_ck)
}

/// Logs `session` in as the normal user unless the process already is.
fn login(session: &Session, pin: &PinSource) -> Result<(), Error> {
    if let Ok(info) = session.get_session_info() {
        if matches!(
            info.session_state(),
            SessionState::RoUser | SessionState::RwUser
        ) {
            return Ok(());
        }
    }
    let pin = pin.read()?;
    // AuthPin zeroizes its copy on drop; `pin` is Zeroizing too.
    let auth = AuthPin::new(pin.as_str().into());
    match session.login(UserType::User, Some(&auth)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => Ok(()),
        Err(e) => Err(map_ck(e)),
    }
}

// ---------------------------------------------------------------------------------------
// The sealer
// ---------------------------------------------------------------------------------------

/// Seals shards with AES keys resident in a PKCS#11 token (see the module docs).
pub struct Pkcs11Sealer {
    module: Module,
    slot: Slot,
    profile: Pkcs11Profile,
    device: String,
    keyring: RwLock<Keyring>,
    pool: Pool,
    /// Serialises provisioning, rotation and key-ring rescans in this process.
    admin: Mutex<()>,
}

impl std::fmt::Debug for Pkcs11Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pkcs11Sealer")
            .field("device", &self.device)
            .field("key_label", &self.profile.key_label)
            .field("mechanism", &self.profile.mechanism)
            .finish_non_exhaustive()
    }
}

impl Pkcs11Sealer {
    /// Opens the token a profile names: loads the module, finds the token by label,
    /// logs in, checks that the token offers the profile's mechanism, and reads which
    /// key versions exist. Does not create keys (see [`Sealer::provision`]).
    pub fn open(p: &Pkcs11Profile) -> Result<Self, Error> {
        let roles = roles(p.mechanism)?;
        let module = Module::load(&p.module)?;
        let slot = module.find_token(&p.token_label)?;
        let info = module.with_slot_lock(|ctx| ctx.get_token_info(slot).map_err(map_ck))?;
        let device = format!(
            "{} {} token {:?} serial {}",
            info.manufacturer_id(),
            info.model(),
            info.label(),
            info.serial_number()
        );
        let available = module.mechanisms(slot)?;
        for needed in needed_mechanisms(p.mechanism) {
            if !available.contains(&needed) {
                return Err(Error::Unsupported(format!(
                    "{needed} (profile mechanism {}) on token {:?}",
                    p.mechanism, p.token_label
                )));
            }
        }
        let first = module.user_session(slot, &p.pin, false)?;
        let keyring = Keyring::scan(&first, &p.key_label).map_err(Error::from)?;
        let sealer = Pkcs11Sealer {
            module,
            slot,
            profile: p.clone(),
            device,
            keyring: RwLock::new(keyring),
            pool: Pool::new(p.sessions),
            admin: Mutex::new(()),
        };
        // Keep the logged-in session: it becomes the pool's first member.
        let conn = sealer.adopt(first, &roles);
        sealer.pool.put_new(conn);
        info!(
            device = %sealer.device,
            key_label = %p.key_label,
            mechanism = %p.mechanism,
            key_version = ?sealer.read_keyring().current(),
            "PKCS#11 sealer opened"
        );
        Ok(sealer)
    }

    /// The module this sealer uses.
    pub fn module(&self) -> &Module {
        &self.module
    }

    fn read_keyring(&self) -> std::sync::RwLockReadGuard<'_, Keyring> {
        self.keyring.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// Current version and device id, or `KeyMissing` on an unprovisioned token.
    fn current(&self) -> Result<(u32, [u8; DEVICE_ID_LEN]), Error> {
        let ring = self.read_keyring();
        match (ring.current(), ring.device_id) {
            (Some(v), Some(id)) => Ok((v, id)),
            _ => Err(Error::KeyMissing {
                label: key_label(&self.profile.key_label, 1, Role::Enc),
            }),
        }
    }

    /// Re-reads the key versions from the token.
    fn rescan(&self) -> Result<(), Error> {
        let lease = self.pool.acquire(self)?;
        let ring = Keyring::scan(lease.session(), &self.profile.key_label)
            .map_err(|e| lease.note_err(e))?;
        *self.keyring.write().unwrap_or_else(PoisonError::into_inner) = ring;
        Ok(())
    }

    /// Opens a pooled session: logged in, with copies of the current keys.
    fn open_conn(&self, generation: u64) -> Result<Conn, Error> {
        let session = self
            .module
            .user_session(self.slot, &self.profile.pin, false)?;
        let roles = roles(self.profile.mechanism)?;
        let mut conn = self.adopt(session, &roles);
        conn.generation = generation;
        Ok(conn)
    }

    /// Wraps a logged-in session and copies the current version's keys into it. A key
    /// that cannot be copied now is looked up again on first use, which reports why.
    fn adopt(&self, session: Session, roles: &[Role]) -> Conn {
        let mut conn = Conn {
            session,
            keys: Vec::new(),
            generation: 0,
        };
        if let Ok((version, device_id)) = self.current() {
            for &role in roles {
                if let Err(e) = conn.key(&self.profile.key_label, device_id, version, role) {
                    debug!(error = %Error::from(e), "key not cached at session open");
                }
            }
        }
        conn
    }

    fn seal_gcm(
        &self,
        lease: &mut Lease<'_>,
        header: &[u8; HEADER_LEN],
        version: u32,
        device_id: [u8; DEVICE_ID_LEN],
        shard: &[u8],
    ) -> Result<Vec<u8>, Error> {
        let key = lease.key(&self.profile.key_label, device_id, version, Role::Enc)?;
        let iv: [u8; GCM_IV_LEN] = random_iv()?;
        let mut iv_param = iv;
        let params =
            GcmParams::new(&mut iv_param, header, Ulong::new(128)).map_err(|e| lease.note(e))?;
        let ct = lease
            .session()
            .encrypt(&Ck::AesGcm(params), key, shard)
            .map_err(|e| lease.note(e))?;
        if ct.len() != shard.len() + GCM_TAG_LEN {
            return Err(Error::Device(format!(
                "AES-GCM returned {} bytes for a {}-byte shard",
                ct.len(),
                shard.len()
            )));
        }
        let mut blob = Vec::with_capacity(HEADER_LEN + GCM_IV_LEN + ct.len());
        blob.extend_from_slice(header);
        blob.extend_from_slice(&iv);
        blob.extend_from_slice(&ct);
        Ok(blob)
    }

    fn seal_cbc_hmac(
        &self,
        lease: &mut Lease<'_>,
        header: &[u8; HEADER_LEN],
        version: u32,
        device_id: [u8; DEVICE_ID_LEN],
        shard: &[u8],
    ) -> Result<Vec<u8>, Error> {
        let label = &self.profile.key_label;
        let enc = lease.key(label, device_id, version, Role::Enc)?;
        let mac = lease.key(label, device_id, version, Role::Mac)?;
        let iv: [u8; AES_BLOCK] = random_iv()?;
        let padded = pkcs7_pad(shard);
        let ct = lease
            .session()
            .encrypt(&Ck::AesCbc(iv), enc, &padded)
            .map_err(|e| lease.note(e))?;
        if ct.len() != padded.len() {
            return Err(Error::Device(format!(
                "AES-CBC returned {} bytes for {} padded bytes",
                ct.len(),
                padded.len()
            )));
        }
        let mut blob = Vec::with_capacity(HEADER_LEN + AES_BLOCK + ct.len() + HMAC_LEN);
        blob.extend_from_slice(header);
        blob.extend_from_slice(&iv);
        blob.extend_from_slice(&ct);
        let tag = lease
            .session()
            .sign(&Ck::Sha256Hmac, mac, &blob)
            .map_err(|e| lease.note(e))?;
        if tag.len() != HMAC_LEN {
            return Err(Error::Device(format!(
                "HMAC-SHA-256 returned {} bytes",
                tag.len()
            )));
        }
        blob.extend_from_slice(&tag);
        Ok(blob)
    }

    fn unseal_gcm(
        &self,
        lease: &mut Lease<'_>,
        blob: &[u8],
        version: u32,
        device_id: [u8; DEVICE_ID_LEN],
    ) -> Result<Zeroizing<Vec<u8>>, Error> {
        let key = lease.key(&self.profile.key_label, device_id, version, Role::Enc)?;
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
            Err(CkError::Pkcs11(RvError::GeneralError, Function::Decrypt)) => Err(Error::Integrity),
            Err(e) => Err(lease.note(e)),
        }
    }

    fn unseal_cbc_hmac(
        &self,
        lease: &mut Lease<'_>,
        blob: &[u8],
        version: u32,
        device_id: [u8; DEVICE_ID_LEN],
    ) -> Result<Zeroizing<Vec<u8>>, Error> {
        let label = &self.profile.key_label;
        let mac = lease.key(label, device_id, version, Role::Mac)?;
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
        let enc = lease.key(label, device_id, version, Role::Enc)?;
        let body = &authenticated[HEADER_LEN..];
        let mut iv = [0u8; AES_BLOCK];
        iv.copy_from_slice(&body[..AES_BLOCK]);
        let ct = &body[AES_BLOCK..];
        let padded = match lease.session().decrypt(&Ck::AesCbc(iv), enc, ct) {
            Ok(pt) => Zeroizing::new(pt),
            Err(e) => return Err(lease.note(e)),
        };
        if padded.len() != ct.len() {
            return Err(Error::Device(format!(
                "AES-CBC returned {} bytes for {} ciphertext bytes",
                padded.len(),
                ct.len()
            )));
        }
        // A bad pad under a good MAC was made by a holder of the MAC key: still an
        // integrity failure, not a device fault.
        pkcs7_unpad(padded).ok_or(Error::Integrity)
    }

    /// Creates the keys of `version` that the profile's mechanism needs, with
    /// `device_id` as their `CKA_ID`.
    fn create_keys(
        &self,
        session: &Session,
        version: u32,
        device_id: [u8; DEVICE_ID_LEN],
    ) -> Result<(), Error> {
        let base = &self.profile.key_label;
        let label = key_label(base, version, Role::Enc);
        session
            .generate_key(&Ck::AesKeyGen, &aes_template(&label, &device_id))
            .map_err(|e| keygen_error(e, "CKM_AES_KEY_GEN"))?;
        info!(key = %label, "created AES-256 sealing key on the token");
        if self.profile.mechanism == Mechanism::AesCbcPadHmac {
            let label = key_label(base, version, Role::Mac);
            let generic = session.generate_key(
                &Ck::GenericSecretKeyGen,
                &hmac_template(&label, &device_id, KeyType::GENERIC_SECRET),
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
                            &hmac_template(&label, &device_id, KeyType::SHA256_HMAC),
                        )
                        .map_err(|e| keygen_error(e, "CKM_GENERIC_SECRET_KEY_GEN"))?;
                }
                Err(e) => return Err(keygen_error(e, "CKM_GENERIC_SECRET_KEY_GEN")),
            }
            info!(key = %label, "created HMAC-SHA-256 sealing key on the token");
        }
        Ok(())
    }

    /// A logged-in read-write session for creating keys (not pooled).
    fn admin_session(&self) -> Result<Session, Error> {
        self.module.user_session(self.slot, &self.profile.pin, true)
    }

    /// Fresh device id: token randomness mixed with the operating system's.
    fn new_device_id(&self, session: &Session) -> Result<[u8; DEVICE_ID_LEN], Error> {
        let mut id = [0u8; DEVICE_ID_LEN];
        SysRng
            .try_fill_bytes(&mut id)
            .map_err(|e| Error::Device(format!("operating system random generator: {e}")))?;
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

    fn device_info(&self, version: u32, device_id: [u8; DEVICE_ID_LEN]) -> DeviceInfo {
        DeviceInfo {
            backend: "pkcs11",
            device: self.device.clone(),
            key_label: key_label(&self.profile.key_label, version, Role::Enc),
            key_version: version,
            mechanism: self.profile.mechanism,
            device_id,
        }
    }
}

impl Sealer for Pkcs11Sealer {
    fn seal(&self, ctx: &SealContext, shard: &[u8]) -> Result<Vec<u8>, Error> {
        check_shard_len(shard)?;
        let (version, device_id) = self.current()?;
        let mechanism = self.profile.mechanism;
        let header = BlobHeader::new(mechanism, version, device_id, ctx).encode();
        let mut lease = self.pool.acquire(self)?;
        match mechanism {
            Mechanism::AesGcm => self.seal_gcm(&mut lease, &header, version, device_id, shard),
            Mechanism::AesCbcPadHmac => {
                self.seal_cbc_hmac(&mut lease, &header, version, device_id, shard)
            }
            Mechanism::TpmSeal => Err(Error::Profile(
                "pkcs11.mechanism must be aes-gcm or aes-cbc-pad-hmac".into(),
            )),
        }
    }

    fn unseal(&self, ctx: &SealContext, blob: &[u8]) -> Result<Zeroizing<Vec<u8>>, Error> {
        let (header, body) = BlobHeader::decode(blob)?;
        let device_id = self
            .read_keyring()
            .device_id
            .ok_or_else(|| Error::KeyMissing {
                label: key_label(&self.profile.key_label, 1, Role::Enc),
            })?;
        header.check(&device_id, ctx)?;
        check_body_len(header.mechanism, body.len())?;
        let version = header.key_version;
        let known = self.read_keyring().state(version);
        match known {
            VersionState::Present => {}
            VersionState::Deleted => {
                return Err(Error::KeyMissing {
                    label: key_label(&self.profile.key_label, version, Role::Enc),
                })
            }
            VersionState::Unknown => {
                // Another sealer on this token may have rotated since we looked.
                let _admin = lock(&self.admin);
                self.rescan()?;
                if self.read_keyring().state(version) != VersionState::Present {
                    return Err(Error::UnknownKeyVersion(version));
                }
            }
        }
        let mut lease = self.pool.acquire(self)?;
        match header.mechanism {
            Mechanism::AesGcm => self.unseal_gcm(&mut lease, blob, version, device_id),
            Mechanism::AesCbcPadHmac => self.unseal_cbc_hmac(&mut lease, blob, version, device_id),
            // check_body_len already refused it.
            Mechanism::TpmSeal => Err(Error::Malformed("not a PKCS#11 blob")),
        }
    }

    fn provision(&self) -> Result<DeviceInfo, Error> {
        let _admin = lock(&self.admin);
        self.rescan()?;
        let (current, device_id, have) = {
            let ring = self.read_keyring();
            let current = ring.current();
            let have = current
                .and_then(|v| ring.versions.get(&v).copied())
                .unwrap_or_default();
            (current, ring.device_id, have)
        };
        let complete = have.enc && (self.profile.mechanism != Mechanism::AesCbcPadHmac || have.mac);
        match (current, device_id) {
            (Some(_), Some(_)) if complete => {}
            // The current version lacks a key this mechanism needs (the profile moved
            // to CBC+HMAC, or a key was deleted). A missing key is never re-created
            // under its old label: blobs sealed with the lost key must keep saying
            // KeyMissing, not turn into integrity failures. Start a complete version.
            (Some(v), Some(id)) => {
                let next = v
                    .checked_add(1)
                    .ok_or_else(|| Error::Device("key version space exhausted".into()))?;
                let session = self.admin_session()?;
                self.create_keys(&session, next, id)?;
                info!(
                    key_version = next,
                    "current key version was incomplete; created the next one"
                );
            }
            _ => {
                let session = self.admin_session()?;
                let id = self.new_device_id(&session)?;
                self.create_keys(&session, 1, id)?;
                info!(device_id = %hex::encode(id), "token provisioned");
            }
        }
        self.rescan()?;
        let (v, id) = self.current()?;
        Ok(self.device_info(v, id))
    }

    fn describe(&self) -> Result<DeviceInfo, Error> {
        let (v, id) = self.current()?;
        Ok(self.device_info(v, id))
    }

    fn health(&self) -> Result<(), Error> {
        // Look at the token itself, not at the cached session copies: a key deleted
        // from the token drops every pooled session and with it every cached copy.
        let before = self.read_keyring().clone();
        {
            let _admin = lock(&self.admin);
            self.rescan()?;
        }
        let after = self.read_keyring().clone();
        if after.lost_keys_since(&before) {
            warn!("sealing keys are gone from the token; dropping cached copies");
            self.pool.invalidate();
        }
        let (version, _) = self.current()?;
        let have = after.versions.get(&version).copied().unwrap_or_default();
        for role in roles(self.profile.mechanism)? {
            let present = match role {
                Role::Enc => have.enc,
                Role::Mac => have.mac,
            };
            if !present {
                return Err(Error::KeyMissing {
                    label: key_label(&self.profile.key_label, version, role),
                });
            }
        }
        let ctx = SealContext {
            custodian_id: "health-probe".into(),
            secret_id: shard::SecretId::from_bytes([0; 16]),
            index: 1,
            epoch: 0,
        };
        let probe = [0x5a_u8];
        let blob = self.seal(&ctx, &probe)?;
        if self.unseal(&ctx, &blob)?.as_slice() != probe {
            return Err(Error::Device("health probe did not round-trip".into()));
        }
        Ok(())
    }

    fn rotate(&self) -> Result<u32, Error> {
        let _admin = lock(&self.admin);
        self.rescan()?;
        let (current, device_id) = self.current()?;
        let next = current
            .checked_add(1)
            .ok_or_else(|| Error::Device("key version space exhausted".into()))?;
        let session = self.admin_session()?;
        self.create_keys(&session, next, device_id)?;
        drop(session);
        self.rescan()?;
        info!(key_version = next, "sealing key rotated");
        Ok(next)
    }
}

// ---------------------------------------------------------------------------------------
// Key versions on the token
// ---------------------------------------------------------------------------------------

/// Which keys of each version are on the token, and the token's device id.
#[derive(Debug, Default, Clone)]
struct Keyring {
    device_id: Option<[u8; DEVICE_ID_LEN]>,
    versions: std::collections::BTreeMap<u32, KeyVersion>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct KeyVersion {
    enc: bool,
    mac: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum VersionState {
    Present,
    /// Below the current version but absent: an operator deleted it.
    Deleted,
    /// Never existed here (zero, or above the current version).
    Unknown,
}

impl Keyring {
    /// Reads every token secret key whose label is `<base>/v<k>` or `<base>/v<k>/mac`.
    fn scan(session: &Session, base: &str) -> Result<Keyring, CkOrErr> {
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

    fn current(&self) -> Option<u32> {
        self.versions.keys().next_back().copied()
    }

    /// Whether a key present in `before` is absent now (or the device id changed).
    fn lost_keys_since(&self, before: &Keyring) -> bool {
        if before.device_id.is_some() && before.device_id != self.device_id {
            return true;
        }
        before.versions.iter().any(|(v, was)| {
            let now = self.versions.get(v).copied().unwrap_or_default();
            (was.enc && !now.enc) || (was.mac && !now.mac)
        })
    }

    fn state(&self, version: u32) -> VersionState {
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
enum Role {
    Enc,
    Mac,
}

fn roles(mechanism: Mechanism) -> Result<Vec<Role>, Error> {
    match mechanism {
        Mechanism::AesGcm => Ok(vec![Role::Enc]),
        Mechanism::AesCbcPadHmac => Ok(vec![Role::Enc, Role::Mac]),
        Mechanism::TpmSeal => Err(Error::Profile(
            "pkcs11.mechanism must be aes-gcm or aes-cbc-pad-hmac".into(),
        )),
    }
}

fn needed_mechanisms(mechanism: Mechanism) -> Vec<MechanismType> {
    match mechanism {
        Mechanism::AesGcm => vec![MechanismType::AES_GCM],
        Mechanism::AesCbcPadHmac => vec![MechanismType::AES_CBC, MechanismType::SHA256_HMAC],
        Mechanism::TpmSeal => vec![],
    }
}

/// `<base>/v<version>` or `<base>/v<version>/mac`.
fn key_label(base: &str, version: u32, role: Role) -> String {
    match role {
        Role::Enc => format!("{base}/v{version}"),
        Role::Mac => format!("{base}/v{version}/mac"),
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
fn find_token_key(
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

/// AES-256 sealing key: generated on the token, private, sensitive, never extractable,
/// encrypt/decrypt only. `CKA_MODIFIABLE` stays at its default (true) because SoftHSM
/// refuses `C_CopyObject` of an unmodifiable object; sensitivity and extractability
/// are one-way attributes, so this does not open a path to the key bytes.
fn aes_template(label: &str, id: &[u8; DEVICE_ID_LEN]) -> Vec<Attribute> {
    vec![
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::AES),
        Attribute::ValueLen(Ulong::new(32)),
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Encrypt(true),
        Attribute::Decrypt(true),
        Attribute::Sign(false),
        Attribute::Verify(false),
        Attribute::Wrap(false),
        Attribute::Unwrap(false),
        Attribute::Derive(false),
        Attribute::Label(label.as_bytes().to_vec()),
        Attribute::Id(id.to_vec()),
    ]
}

/// HMAC-SHA-256 key for the encrypt-then-MAC variant: sign/verify only.
fn hmac_template(label: &str, id: &[u8; DEVICE_ID_LEN], key_type: KeyType) -> Vec<Attribute> {
    vec![
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(key_type),
        Attribute::ValueLen(Ulong::new(32)),
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Encrypt(false),
        Attribute::Decrypt(false),
        Attribute::Sign(true),
        Attribute::Verify(true),
        Attribute::Wrap(false),
        Attribute::Unwrap(false),
        Attribute::Derive(false),
        Attribute::Label(label.as_bytes().to_vec()),
        Attribute::Id(id.to_vec()),
    ]
}

// ---------------------------------------------------------------------------------------
// Blob bodies and IVs
// ---------------------------------------------------------------------------------------

/// The IV comes from the operating system's CSPRNG, not `C_GenerateRandom`: an IV
/// must be unique and (for CBC) unpredictable, not secret, and the OS generator
/// gives both without a device round trip per seal. With random 96-bit GCM IVs a key
/// version should seal fewer than 2^32 shards; rotation keeps far below that.
fn random_iv<const N: usize>() -> Result<[u8; N], Error> {
    let mut iv = [0u8; N];
    SysRng
        .try_fill_bytes(&mut iv)
        .map_err(|e| Error::Device(format!("operating system random generator: {e}")))?;
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
fn check_body_len(mechanism: Mechanism, len: usize) -> Result<(), Error> {
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

// ---------------------------------------------------------------------------------------
// Session pool
// ---------------------------------------------------------------------------------------

/// Up to `max` logged-in sessions, opened on demand and reused most-recent-first.
struct Pool {
    state: Mutex<PoolState>,
    freed: Condvar,
    max: usize,
}

struct PoolState {
    idle: Vec<Conn>,
    /// Sessions open, idle or leased.
    open: usize,
    /// Bumped to retire every session opened before (and its cached key copies).
    generation: u64,
}

/// A pooled session and the session-object copies of keys it has made.
struct Conn {
    session: Session,
    keys: Vec<(u32, Role, ObjectHandle)>,
    generation: u64,
}

impl Conn {
    fn key(
        &mut self,
        base: &str,
        device_id: [u8; DEVICE_ID_LEN],
        version: u32,
        role: Role,
    ) -> Result<ObjectHandle, CkOrErr> {
        if let Some(&(_, _, h)) = self
            .keys
            .iter()
            .find(|(v, r, _)| *v == version && *r == role)
        {
            return Ok(h);
        }
        let label = key_label(base, version, role);
        let token_key = find_token_key(&self.session, &label, device_id)?;
        let handle = match self
            .session
            .copy_object(token_key, &[Attribute::Token(false)])
        {
            Ok(copy) => copy,
            Err(e) if session_dead(&e) => return Err(CkOrErr::Ck(e)),
            Err(e) => {
                debug!(key = %label, error = %ck_text(&e), "no session copy; using the token key");
                token_key
            }
        };
        self.keys.push((version, role, handle));
        Ok(handle)
    }
}

impl Pool {
    fn new(max: usize) -> Pool {
        Pool {
            state: Mutex::new(PoolState {
                idle: Vec::new(),
                open: 0,
                generation: 0,
            }),
            freed: Condvar::new(),
            max: max.max(1),
        }
    }

    /// Adds a session opened outside `acquire` (the one `open` logged in with).
    fn put_new(&self, mut conn: Conn) {
        let mut st = lock(&self.state);
        conn.generation = st.generation;
        st.open += 1;
        st.idle.push(conn);
    }

    fn acquire<'a>(&'a self, sealer: &Pkcs11Sealer) -> Result<Lease<'a>, Error> {
        let mut st = lock(&self.state);
        loop {
            while let Some(conn) = st.idle.pop() {
                if conn.generation == st.generation {
                    return Ok(Lease::new(self, conn));
                }
                st.open -= 1;
                drop(conn);
            }
            if st.open < self.max {
                st.open += 1;
                let generation = st.generation;
                drop(st);
                return match sealer.open_conn(generation) {
                    Ok(conn) => Ok(Lease::new(self, conn)),
                    Err(e) => {
                        lock(&self.state).open -= 1;
                        self.freed.notify_one();
                        Err(e)
                    }
                };
            }
            st = self.freed.wait(st).unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// Retires every session: idle ones now, leased ones when they come back.
    fn invalidate(&self) {
        let retired = {
            let mut st = lock(&self.state);
            st.generation += 1;
            let retired = std::mem::take(&mut st.idle);
            st.open -= retired.len();
            retired
        };
        drop(retired);
        self.freed.notify_all();
    }

    fn give_back(&self, conn: Conn, broken: bool) {
        let mut st = lock(&self.state);
        if broken || conn.generation != st.generation {
            st.open -= 1;
            drop(st);
            drop(conn);
        } else {
            st.idle.push(conn);
            drop(st);
        }
        self.freed.notify_one();
    }
}

/// One session borrowed from the pool; returned (or closed, if it broke) on drop.
struct Lease<'a> {
    pool: &'a Pool,
    conn: Option<Conn>,
    broken: std::cell::Cell<bool>,
}

impl<'a> Lease<'a> {
    fn new(pool: &'a Pool, conn: Conn) -> Self {
        Lease {
            pool,
            conn: Some(conn),
            broken: std::cell::Cell::new(false),
        }
    }

    fn conn(&self) -> &Conn {
        // Invariant: `conn` is Some from construction until drop.
        self.conn
            .as_ref()
            .expect("lease holds a session until dropped")
    }

    fn session(&self) -> &Session {
        &self.conn().session
    }

    fn key(
        &mut self,
        base: &str,
        device_id: [u8; DEVICE_ID_LEN],
        version: u32,
        role: Role,
    ) -> Result<ObjectHandle, Error> {
        // Invariant: `conn` is Some from construction until drop.
        let conn = self
            .conn
            .as_mut()
            .expect("lease holds a session until dropped");
        conn.key(base, device_id, version, role)
            .map_err(|e| self.note_err(e))
    }

    /// Maps a device error, remembering whether it killed the session.
    fn note(&self, e: CkError) -> Error {
        if session_dead(&e) {
            self.broken.set(true);
        }
        map_ck(e)
    }

    fn note_err(&self, e: CkOrErr) -> Error {
        match e {
            CkOrErr::Ck(e) => self.note(e),
            CkOrErr::Err(e) => e,
        }
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            self.pool.give_back(conn, self.broken.get());
        }
    }
}

// ---------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------

/// A raw device error (whose effect on the session is still to be judged) or a
/// finished [`Error`].
enum CkOrErr {
    Ck(CkError),
    Err(Error),
}

/// Errors after which a session must not be reused.
fn session_dead(e: &CkError) -> bool {
    matches!(
        e,
        CkError::Pkcs11(
            RvError::SessionHandleInvalid
                | RvError::SessionClosed
                | RvError::DeviceRemoved
                | RvError::DeviceError
                | RvError::TokenNotPresent
                | RvError::UserNotLoggedIn
                | RvError::CryptokiNotInitialized,
            _
        )
    )
}

/// Maps a device error to the crate's error. Return codes and function names only:
/// cryptoki errors never carry data, PINs or key bytes.
fn map_ck(e: CkError) -> Error {
    match e {
        CkError::LibraryLoading(e) => Error::DeviceUnavailable(format!("module: {e}")),
        CkError::Pkcs11(rv, function) => match rv {
            RvError::PinIncorrect | RvError::PinInvalid | RvError::PinLenRange => Error::WrongPin,
            RvError::PinLocked => Error::Device("the user PIN is locked".into()),
            RvError::PinExpired => Error::Device("the user PIN has expired".into()),
            RvError::UserPinNotInitialized => {
                Error::Device("the token's user PIN is not initialised".into())
            }
            RvError::TokenNotPresent
            | RvError::TokenNotRecognized
            | RvError::DeviceRemoved
            | RvError::DeviceError
            | RvError::DeviceMemory
            | RvError::SessionClosed
            | RvError::SessionHandleInvalid
            | RvError::SessionCount
            | RvError::CryptokiNotInitialized => {
                Error::DeviceUnavailable(ck_text(&CkError::Pkcs11(rv, function)))
            }
            RvError::MechanismInvalid
            | RvError::MechanismParamInvalid
            | RvError::FunctionNotSupported => {
                Error::Unsupported(ck_text(&CkError::Pkcs11(rv, function)))
            }
            _ => Error::Device(ck_text(&CkError::Pkcs11(rv, function))),
        },
        other => Error::Device(ck_text(&other)),
    }
}

/// Short text for a device error: `C_<function>: <return value>` (cryptoki's own
/// Display quotes the specification's paragraph for each return value).
fn ck_text(e: &CkError) -> String {
    match e {
        CkError::Pkcs11(rv, function) => format!("C_{function:?}: {rv:?}"),
        other => other.to_string(),
    }
}

fn keygen_error(e: CkError, mechanism: &str) -> Error {
    match e {
        CkError::Pkcs11(RvError::MechanismInvalid, _) => {
            Error::Unsupported(format!("{mechanism} (key generation)"))
        }
        other => map_ck(other),
    }
}

impl From<CkOrErr> for Error {
    fn from(e: CkOrErr) -> Error {
        match e {
            CkOrErr::Ck(e) => map_ck(e),
            CkOrErr::Err(e) => e,
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Nothing holding these locks can leave the data half-updated; a panic elsewhere
    // must not take the sealer down with it.
    m.lock().unwrap_or_else(PoisonError::into_inner)
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

    #[test]
    fn errors_map_without_data() {
        assert!(matches!(
            map_ck(CkError::Pkcs11(RvError::PinIncorrect, Function::Login)),
            Error::WrongPin
        ));
        assert!(matches!(
            map_ck(CkError::Pkcs11(
                RvError::MechanismInvalid,
                Function::EncryptInit
            )),
            Error::Unsupported(_)
        ));
        assert!(matches!(
            map_ck(CkError::Pkcs11(RvError::DeviceRemoved, Function::Encrypt)),
            Error::DeviceUnavailable(_)
        ));
        assert!(session_dead(&CkError::Pkcs11(
            RvError::SessionHandleInvalid,
            Function::Encrypt
        )));
        assert!(!session_dead(&CkError::Pkcs11(
            RvError::SignatureInvalid,
            Function::Verify
        )));
    }
}
