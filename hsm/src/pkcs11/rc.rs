//! Mapping cryptoki return codes to the crate's error, and which of them end a session.

use cryptoki::error::{Error as CkError, RvError};

use crate::Error;

/// A raw device error (whose effect on the session is still to be judged) or a
/// finished [`Error`].
pub(super) enum CkOrErr {
    Ck(CkError),
    Err(Error),
}

/// Errors after which a session must not be reused.
pub(super) fn session_dead(e: &CkError) -> bool {
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
pub(super) fn map_ck(e: CkError) -> Error {
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
pub(super) fn ck_text(e: &CkError) -> String {
    match e {
        CkError::Pkcs11(rv, function) => format!("C_{function:?}: {rv:?}"),
        other => other.to_string(),
    }
}

pub(super) fn keygen_error(e: CkError, mechanism: &str) -> Error {
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

#[cfg(test)]
mod tests {
    use cryptoki::context::Function;

    use super::*;

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
