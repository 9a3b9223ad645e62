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

mod body;
mod keyring;
mod module;
mod pool;
mod rc;
mod token;

use std::sync::{Mutex, MutexGuard, PoisonError, RwLock};

use cryptoki::session::Session;
use cryptoki::slot::Slot;
use tracing::{debug, info, warn};
use zeroize::Zeroizing;

use crate::blob::check_shard_len;
use crate::profile::Pkcs11Profile;
use crate::{BlobHeader, DeviceInfo, Error, Mechanism, SealContext, Sealer};

use body::check_body_len;
pub use keyring::resident_key_template;
use keyring::{key_label, needed_mechanisms, roles, Keyring, Role, VersionKeys, VersionState};
pub use module::Module;
use pool::{Conn, Pool};
use rc::map_ck;
pub use token::ensure_token;

const DEVICE_ID_LEN: usize = 16;

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
                if let Err(e) = conn.key(self.version_keys(version, device_id), role) {
                    debug!(error = %Error::from(e), "key not cached at session open");
                }
            }
        }
        conn
    }

    /// The keys of `version` in the key set `device_id`.
    fn version_keys(&self, version: u32, device_id: [u8; DEVICE_ID_LEN]) -> VersionKeys<'_> {
        VersionKeys {
            base: &self.profile.key_label,
            device_id,
            version,
        }
    }

    /// A logged-in read-write session for creating keys (not pooled).
    fn admin_session(&self) -> Result<Session, Error> {
        self.module.user_session(self.slot, &self.profile.pin, true)
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
        let keys = self.version_keys(version, device_id);
        body::seal(&mut lease, mechanism, &header, keys, shard)
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
        let keys = self.version_keys(version, device_id);
        body::open(&mut lease, header.mechanism, blob, keys)
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

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Nothing holding these locks can leave the data half-updated; a panic elsewhere
    // must not take the sealer down with it.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
