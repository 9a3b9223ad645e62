//! Private SoftHSM2 tokens for tests and benchmarks.
//!
//! ```no_run
//! use hsm::testing::softhsm::SoftHsm;
//! use hsm::{Mechanism, Sealer};
//!
//! let token = SoftHsm::start().unwrap();
//! let sealer = hsm::pkcs11::Pkcs11Sealer::open(&token.profile(Mechanism::AesGcm)).unwrap();
//! sealer.provision().unwrap();
//! drop(sealer);
//! drop(token); // removes the token's files and its PIN file
//! ```
//!
//! # Why one SoftHSM directory per process
//!
//! SoftHSM reads `SOFTHSM2_CONF` once, in `C_Initialize`, and scans its token directory
//! only then; a token that another process (`softhsm2-util`) creates afterwards stays
//! invisible to this process. The cryptoki context is process-wide per module
//! ([`crate::pkcs11::Module`]), and the tests of one binary run on parallel threads.
//! So the harness works like this:
//!
//! - The first [`SoftHsm::start`] in a process creates a private directory
//!   (`$TMPDIR/shard-softhsm-<pid>-<random>`, mode 0700) with its own `softhsm2.conf`
//!   and token directory, and points `SOFTHSM2_CONF` at it, before SoftHSM is loaded.
//!   If SoftHSM was already loaded in this process, `start` fails rather than handing
//!   out a token the module cannot see.
//! - Every `start` then creates one **new token with a unique label** through the
//!   already-loaded module itself (`C_InitToken` on SoftHSM's free slot, then SO login
//!   and `C_InitPIN`), which SoftHSM makes visible at once. Token creation is
//!   serialised by a lock; the tokens themselves are independent, so tests run in
//!   parallel, each on its own token, and a test that needs "another custodian's
//!   device" simply starts a second one.
//! - The PINs are random; the user PIN is written to a 0600 file for the profile
//!   (`pin_file`), the SO PIN is forgotten. No PIN is ever put on a command line, which
//!   is why tokens are not made with `softhsm2-util` (it takes PINs only as arguments
//!   or from a terminal).
//! - Dropping a [`SoftHsm`] removes that token's directory and its PIN file. The
//!   process directory itself (config and empty token directory) is removed by the
//!   next process that starts the harness, once the owning process is gone.
//!
//! For tests that run a service in a **child process**, [`SoftHsm::start_standalone`]
//! makes an independent directory and token with `softhsm/init-token.sh` (the same
//! script development and containers use) without loading SoftHSM here; give the
//! child `SOFTHSM2_CONF=`[`SoftHsm::conf_path`] and the profile.

use std::fs::{self, DirBuilder, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock, PoisonError};

use cryptoki::session::{Session, UserType};
use cryptoki::types::AuthPin;
use rand::rngs::SysRng;
use rand::TryRng;

use crate::pkcs11::Module;
use crate::profile::{PinSource, Pkcs11Profile};
use crate::{Error, Mechanism};

/// Where Debian puts the SoftHSM2 module; override with [`MODULE_ENV`].
pub const DEFAULT_MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
/// Environment variable naming another SoftHSM2 module path.
pub const MODULE_ENV: &str = "SHARD_SOFTHSM_MODULE";
/// Key label used by [`SoftHsm::profile`].
pub const KEY_LABEL: &str = "shard-seal";
/// Token set-up script shared with development and containers.
pub const INIT_SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../softhsm/init-token.sh");

const DIR_PREFIX: &str = "shard-softhsm-";

/// The SoftHSM2 module this harness uses.
pub fn module_path() -> PathBuf {
    std::env::var_os(MODULE_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_MODULE))
}

/// One SoftHSM2 token with a random user PIN in a 0600 file. See the module docs.
#[derive(Debug)]
pub struct SoftHsm {
    label: String,
    pin_file: PathBuf,
    conf: PathBuf,
    module: PathBuf,
    kind: Kind,
}

#[derive(Debug)]
enum Kind {
    /// A token in this process's SoftHSM directory: its own token directory (if it
    /// could be identified) and its private directory holding the PIN file.
    InProcess {
        token_dir: Option<PathBuf>,
        private_dir: PathBuf,
    },
    /// A whole directory of its own, for child processes.
    Standalone { root: PathBuf },
}

impl SoftHsm {
    /// Creates a fresh, empty token in this process's SoftHSM (see the module docs).
    pub fn start() -> Result<SoftHsm, Error> {
        let farm = farm()?;
        let _serial = farm.lock.lock().unwrap_or_else(PoisonError::into_inner);
        let n = farm.counter.fetch_add(1, Ordering::Relaxed);
        let label = format!("t{}-{n}", std::process::id());
        let so_pin = random_pin()?;
        let user_pin = random_pin()?;

        let module = Module::load(&farm.module)?;
        let before = list_dirs(&farm.tokens);
        module.with_slot_lock(|ctx| -> Result<(), Error> {
            let slots = ctx.get_slots_with_token().map_err(device)?;
            let mut free = None;
            for slot in slots {
                if let Ok(info) = ctx.get_token_info(slot) {
                    if !info.token_initialized() {
                        free = Some(slot);
                        break;
                    }
                }
            }
            let free = free.ok_or_else(|| Error::Device("SoftHSM offers no free slot".into()))?;
            ctx.init_token(free, &AuthPin::new(so_pin.as_str().into()), &label)
                .map_err(device)
        })?;
        let slot = module.find_token(&label)?;
        let session = module.open_session(slot, true)?;
        session
            .login(UserType::So, Some(&AuthPin::new(so_pin.as_str().into())))
            .map_err(device)?;
        session
            .init_pin(&AuthPin::new(user_pin.as_str().into()))
            .map_err(device)?;
        let _ = session.logout();
        drop(session);
        let after = list_dirs(&farm.tokens);
        let mut new: Vec<PathBuf> = after.into_iter().filter(|d| !before.contains(d)).collect();
        let token_dir = if new.len() == 1 { new.pop() } else { None };

        let private_dir = farm.root.join(&label);
        make_private_dir(&private_dir)?;
        let pin_file = private_dir.join("user.pin");
        write_secret_file(&pin_file, &user_pin)?;
        Ok(SoftHsm {
            label,
            pin_file,
            conf: farm.conf.clone(),
            module: farm.module.clone(),
            kind: Kind::InProcess {
                token_dir,
                private_dir,
            },
        })
    }

    /// Creates an independent SoftHSM directory with one token labelled `label`, by
    /// running `softhsm/init-token.sh` in a child process. SoftHSM is not loaded
    /// here: the token is for child processes started with
    /// `SOFTHSM2_CONF=`[`SoftHsm::conf_path`].
    pub fn start_standalone(label: &str) -> Result<SoftHsm, Error> {
        let root = new_private_dir(&format!("{DIR_PREFIX}sa-{}-", std::process::id()))?;
        let module = module_path();
        let out = Command::new("sh")
            .arg(INIT_SCRIPT)
            .arg(&root)
            .arg(label)
            .env(MODULE_ENV, &module)
            .env_remove("SHARD_HSM_PIN")
            .env_remove("SHARD_HSM_PIN_FILE")
            .env_remove("SHARD_HSM_SO_PIN")
            .output()
            .map_err(|e| Error::DeviceUnavailable(format!("running {INIT_SCRIPT}: {e}")))?;
        if !out.status.success() {
            let _ = fs::remove_dir_all(&root);
            return Err(Error::DeviceUnavailable(format!(
                "{INIT_SCRIPT} failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(SoftHsm {
            label: label.to_owned(),
            pin_file: root.join("user.pin"),
            conf: root.join("softhsm2.conf"),
            module,
            kind: Kind::Standalone { root },
        })
    }

    /// The token's label.
    pub fn token_label(&self) -> &str {
        &self.label
    }

    /// The 0600 file holding the user PIN.
    pub fn pin_file(&self) -> &Path {
        &self.pin_file
    }

    /// The `softhsm2.conf` that makes this token visible (`SOFTHSM2_CONF`).
    pub fn conf_path(&self) -> &Path {
        &self.conf
    }

    /// The SoftHSM2 module.
    pub fn module_path(&self) -> &Path {
        &self.module
    }

    /// A profile for this token: key label [`KEY_LABEL`], PIN from [`SoftHsm::pin_file`],
    /// four sessions. Fields are public; adjust them for a test.
    pub fn profile(&self, mechanism: Mechanism) -> Pkcs11Profile {
        Pkcs11Profile {
            module: self.module.clone(),
            token_label: self.label.clone(),
            pin: PinSource::File(self.pin_file.clone()),
            key_label: KEY_LABEL.to_owned(),
            mechanism,
            sessions: 4,
        }
    }

    /// A logged-in read-write session on this token, for tests that inspect or damage
    /// it behind a sealer's back. In-process tokens only.
    pub fn user_session(&self) -> Result<Session, Error> {
        if let Kind::Standalone { .. } = self.kind {
            return Err(Error::Profile(
                "a standalone token is for child processes; this process has not loaded it".into(),
            ));
        }
        let module = Module::load(&self.module)?;
        let slot = module.find_token(&self.label)?;
        module.user_session(slot, &PinSource::File(self.pin_file.clone()), true)
    }
}

impl Drop for SoftHsm {
    fn drop(&mut self) {
        match &self.kind {
            Kind::InProcess {
                token_dir,
                private_dir,
            } => {
                if let Some(dir) = token_dir {
                    let _ = fs::remove_dir_all(dir);
                }
                let _ = fs::remove_dir_all(private_dir);
            }
            Kind::Standalone { root } => {
                let _ = fs::remove_dir_all(root);
            }
        }
    }
}

/// This process's SoftHSM directory.
struct Farm {
    root: PathBuf,
    conf: PathBuf,
    tokens: PathBuf,
    module: PathBuf,
    lock: Mutex<()>,
    counter: AtomicU32,
}

static FARM: OnceLock<Result<Farm, String>> = OnceLock::new();

fn farm() -> Result<&'static Farm, Error> {
    FARM.get_or_init(|| make_farm().map_err(|e| e.to_string()))
        .as_ref()
        .map_err(|e| Error::DeviceUnavailable(e.clone()))
}

fn make_farm() -> Result<Farm, Error> {
    let module = module_path();
    if Module::is_loaded(&module) {
        return Err(Error::DeviceUnavailable(format!(
            "{} was loaded in this process before the SoftHSM harness started; \
             SOFTHSM2_CONF can no longer take effect",
            module.display()
        )));
    }
    sweep_stale_dirs();
    let root = new_private_dir(&format!("{DIR_PREFIX}{}-", std::process::id()))?;
    let tokens = root.join("tokens");
    make_private_dir(&tokens)?;
    let conf = root.join("softhsm2.conf");
    let text = format!(
        "# written by hsm::testing::softhsm for process {}\n\
         directories.tokendir = {}\n\
         objectstore.backend = file\n\
         log.level = ERROR\n\
         slots.removable = false\n\
         slots.mechanisms = ALL\n\
         library.reset_on_fork = false\n",
        std::process::id(),
        tokens.display()
    );
    fs::write(&conf, text).map_err(|e| io_error(&conf, e))?;
    // Before any load of the module in this process (checked above); SoftHSM reads it
    // in C_Initialize. Set once per process, from inside the OnceLock.
    std::env::set_var("SOFTHSM2_CONF", &conf);
    Ok(Farm {
        root,
        conf,
        tokens,
        module,
        lock: Mutex::new(()),
        counter: AtomicU32::new(0),
    })
}

/// Removes harness directories left by processes that no longer exist.
fn sweep_stale_dirs() {
    let Ok(entries) = fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(DIR_PREFIX)) else {
            continue;
        };
        let rest = rest.strip_prefix("sa-").unwrap_or(rest);
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

fn new_private_dir(prefix: &str) -> Result<PathBuf, Error> {
    let mut nonce = [0u8; 6];
    SysRng
        .try_fill_bytes(&mut nonce)
        .map_err(|e| Error::Device(format!("random: {e}")))?;
    let dir = std::env::temp_dir().join(format!("{prefix}{}", hex::encode(nonce)));
    make_private_dir(&dir)?;
    Ok(dir)
}

fn make_private_dir(dir: &Path) -> Result<(), Error> {
    DirBuilder::new()
        .mode(0o700)
        .create(dir)
        .map_err(|e| io_error(dir, e))
}

fn write_secret_file(path: &Path, secret: &str) -> Result<(), Error> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| io_error(path, e))?;
    f.write_all(secret.as_bytes())
        .and_then(|()| f.write_all(b"\n"))
        .map_err(|e| io_error(path, e))
}

fn random_pin() -> Result<zeroize::Zeroizing<String>, Error> {
    let mut b = zeroize::Zeroizing::new([0u8; 12]);
    SysRng
        .try_fill_bytes(b.as_mut())
        .map_err(|e| Error::Device(format!("random: {e}")))?;
    Ok(zeroize::Zeroizing::new(hex::encode(b.as_ref())))
}

fn list_dirs(dir: &Path) -> Vec<PathBuf> {
    fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| p.is_dir())
                .collect()
        })
        .unwrap_or_default()
}

fn io_error(path: &Path, e: std::io::Error) -> Error {
    Error::DeviceUnavailable(format!("{}: {e}", path.display()))
}

fn device(e: cryptoki::error::Error) -> Error {
    match e {
        cryptoki::error::Error::Pkcs11(rv, f) => Error::Device(format!("C_{f:?}: {rv:?}")),
        other => Error::Device(other.to_string()),
    }
}
