//! Sorting TSS and TPM response codes into what the sealer does about them.
//!
//! tss-esapi 7 exposes a response code's kind but not its layer, and a TCTI I/O
//! error (layer 10) would look like an unknown TPM code. The raw code is recovered
//! from the `Display` of the format-zero/format-one wrapper ("... value: 0x...");
//! `raw_code_round_trips` pins that against the pinned tss-esapi version.

use tss_esapi::constants::Tss2ResponseCode;

/// Where a response code came from and what it means to the sealer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Class {
    /// The TCTI or the ESAPI lost the device (connection refused, reset, malformed
    /// or missing response). Drop the context and reconnect.
    Transport,
    /// TPM_RC_INITIALIZE: the TPM needs TPM2_Startup.
    Initialize,
    /// A handle in the handle area is wrong or not loaded (1-based position).
    Handle(u8),
    /// An authorization session is not loaded or not valid.
    Session,
    /// The authorization check failed (TPM_RC_AUTH_FAIL or TPM_RC_BAD_AUTH).
    Auth,
    /// Any other TPM or TSS error.
    Other,
}

/// The raw TSS2_RC of an error, when it has one (wrapper errors do not).
pub(crate) fn raw_code(e: &tss_esapi::Error) -> Option<u32> {
    let tss_esapi::Error::Tss2Error(rc) = e else {
        return None;
    };
    let text = match rc {
        Tss2ResponseCode::Success => return Some(0),
        Tss2ResponseCode::FormatZero(z) => z.to_string(),
        Tss2ResponseCode::FormatOne(o) => o.to_string(),
    };
    let hex = text.rsplit("0x").next()?;
    u32::from_str_radix(hex.trim(), 16).ok()
}

/// Classifies an error from any tss-esapi call.
pub(crate) fn classify(e: &tss_esapi::Error) -> Class {
    match raw_code(e) {
        Some(rc) => classify_code(rc),
        None => Class::Other,
    }
}

/// Classifies a raw TSS2_RC by its layer (bits 16..24, numbered as in
/// `tss2_common.h`) and base code.
pub(crate) fn classify_code(rc: u32) -> Class {
    let base = rc & 0xffff;
    match (rc >> 16) & 0xff {
        // The TCTI.
        10 => Class::Transport,
        // The ESAPI (7), the SAPI (8) and the resource manager (11). Their base codes
        // 8 NO_CONNECTION, 9 TRY_AGAIN, 10 IO_ERROR, 17 MALFORMED_RESPONSE,
        // 19 INSUFFICIENT_RESPONSE and 7 BAD_SEQUENCE (an exchange was cut off and
        // the context is unusable) mean the device is lost.
        7 | 8 | 11 => match base {
            7 | 8 | 9 | 10 | 17 | 19 => Class::Transport,
            _ => Class::Other,
        },
        // The TPM itself (0), or a TPM code the resource manager passes on (12).
        0 | 12 => classify_tpm(base),
        _ => Class::Other,
    }
}

fn classify_tpm(rc: u32) -> Class {
    const RC_INITIALIZE: u32 = 0x100;
    const RC_AUTH_FAIL: u32 = 0x0e;
    const RC_BAD_AUTH: u32 = 0x22;
    const RC_HANDLE: u32 = 0x0b;
    const RC_VALUE: u32 = 0x04;
    const RC_NONCE: u32 = 0x0f;
    const WARN_REFERENCE_H0: u32 = 0x910;
    const WARN_REFERENCE_H6: u32 = 0x916;
    const WARN_REFERENCE_S0: u32 = 0x918;
    const WARN_REFERENCE_S6: u32 = 0x91e;

    if rc == RC_INITIALIZE {
        return Class::Initialize;
    }
    if (WARN_REFERENCE_H0..=WARN_REFERENCE_H6).contains(&rc) {
        // Handles are 1-based here, as in format-one codes.
        return Class::Handle((rc - WARN_REFERENCE_H0 + 1) as u8);
    }
    if (WARN_REFERENCE_S0..=WARN_REFERENCE_S6).contains(&rc) {
        return Class::Session;
    }
    if rc & 0x80 != 0 {
        // Format one: error number in bits 0..5, parameter flag in bit 6,
        // number in bits 8..11 (handles 1..7, sessions 8..15).
        let err = rc & 0x3f;
        let is_param = rc & 0x40 != 0;
        let n = ((rc >> 8) & 0xf) as u8;
        if err == RC_AUTH_FAIL || err == RC_BAD_AUTH {
            return Class::Auth;
        }
        if !is_param && n >= 8 && (err == RC_HANDLE || err == RC_VALUE || err == RC_NONCE) {
            return Class::Session;
        }
        if !is_param && (1..8).contains(&n) && err == RC_HANDLE {
            return Class::Handle(n);
        }
    }
    Class::Other
}

/// A short, data-free description of an error for logs and error messages.
pub(crate) fn describe(e: &tss_esapi::Error) -> String {
    match raw_code(e) {
        Some(rc) => format!("{e} (rc {rc:#010x})"),
        None => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_code_round_trips() {
        for rc in [
            0x100u32,
            0x18b,
            0x98e,
            0x9a2,
            0x910,
            0x918,
            0x000a_000a,
            0x0007_000a,
        ] {
            let e = tss_esapi::Error::Tss2Error(Tss2ResponseCode::from(rc));
            assert_eq!(raw_code(&e), Some(rc), "{rc:#x}");
        }
    }

    #[test]
    fn codes_sort_into_classes() {
        assert_eq!(classify_code(0x000a_000a), Class::Transport); // TCTI IO_ERROR
        assert_eq!(classify_code(0x0007_000a), Class::Transport); // ESAPI IO_ERROR
        assert_eq!(classify_code(0x100), Class::Initialize);
        assert_eq!(classify_code(0x18b), Class::Handle(1)); // TPM_RC_HANDLE + handle 1
        assert_eq!(classify_code(0x910), Class::Handle(1)); // REFERENCE_H0
        assert_eq!(classify_code(0x918), Class::Session); // REFERENCE_S0
        assert_eq!(classify_code(0x98e), Class::Auth); // AUTH_FAIL + session 1
        assert_eq!(classify_code(0x9a2), Class::Auth); // BAD_AUTH + session 1
        assert_eq!(classify_code(0x1df), Class::Other); // INTEGRITY + parameter 1
        assert_eq!(
            classify(&tss_esapi::Error::WrapperError(
                tss_esapi::WrapperErrorKind::WrongParamSize
            )),
            Class::Other
        );
    }
}
