//! Creating a token and its user PIN, and logging sessions in.

use std::path::Path;

use cryptoki::error::{Error as CkError, RvError};
use cryptoki::session::{Session, SessionState, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use tracing::info;

use super::module::Module;
use super::rc::map_ck;
use crate::profile::{PinSource, Pkcs11Profile};
use crate::Error;

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

impl Module {
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
}

/// Logs `session` in as the normal user unless the process already is.
pub(super) fn login(session: &Session, pin: &PinSource) -> Result<(), Error> {
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
