//! The authenticator app's side of TOTP (RFC 6238: HMAC-SHA-1, 6 digits, 30 s steps),
//! written here independently of the enroller's implementation it checks.

use std::time::{SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};

/// RFC 4648 base32 without padding (the secret in an `otpauth://` URI). `None` on a
/// character outside the alphabet.
pub fn base32_decode(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let (mut buf, mut bits) = (0u32, 0u32);
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'2'..=b'7' => c - b'2' + 26,
            _ => return None,
        };
        buf = (buf << 5) | u32::from(v);
        bits += 5;
        if bits >= 8 {
            out.push((buf >> (bits - 8)) as u8);
            bits -= 8;
        }
    }
    Some(out)
}

/// The base32 secret of an `otpauth://` URI, as it stands there.
pub fn secret_text_of(uri: &str) -> &str {
    uri.split("secret=")
        .nth(1)
        .and_then(|s| s.split('&').next())
        .expect("secret in the otpauth URI")
}

/// The secret of an `otpauth://` URI.
pub fn secret_of(uri: &str) -> Vec<u8> {
    base32_decode(secret_text_of(uri)).expect("base32 secret")
}

/// The current time step.
pub fn step_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
        / 30
}

/// The code of `secret` at time step `step`.
pub fn code(secret: &[u8], step: u64) -> String {
    let mut mac = <Hmac<sha1::Sha1> as Mac>::new_from_slice(secret).expect("any key length");
    mac.update(&step.to_be_bytes());
    let h = mac.finalize().into_bytes();
    let off = usize::from(h[19] & 0x0f);
    let n = u32::from_be_bytes([h[off] & 0x7f, h[off + 1], h[off + 2], h[off + 3]]);
    format!("{:06}", n % 1_000_000)
}

/// The code of `secret` now.
pub fn code_now(secret: &[u8]) -> String {
    code(secret, step_now())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_6238_sha1_vectors() {
        // RFC 6238 appendix B, SHA-1 secret "12345678901234567890", 6 of the 8 digits.
        let secret = b"12345678901234567890";
        assert_eq!(code(secret, 59 / 30), "287082");
        assert_eq!(code(secret, 1_111_111_109 / 30), "081804");
        assert_eq!(base32_decode("GEZDGNBVGY3TQOJQ").unwrap(), b"1234567890");
    }
}
