//! Loading a PKCS#11 module once per process, and the slot-table calls on it.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::MechanismType;
use cryptoki::session::Session;
use cryptoki::slot::Slot;
use tracing::debug;

use super::lock;
use super::rc::{ck_text, map_ck};
use crate::Error;

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

    pub(super) fn mechanisms(&self, slot: Slot) -> Result<Vec<MechanismType>, Error> {
        self.with_slot_lock(|ctx| ctx.get_mechanism_list(slot).map_err(map_ck))
    }
}
