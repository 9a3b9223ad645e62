//! Time-based one-time passwords (RFC 6238): HMAC-SHA-1, 30-second steps, 6 digits,
//! the parameters every authenticator app uses by default.

use hmac::{Hmac, Mac};
use sha1::Sha1;

/// Seconds per step.
pub const STEP: u64 = 30;
/// Digits per code.
pub const DIGITS: u32 = 6;

/// The code for time step `counter`.
pub fn code_at(secret: &[u8], counter: u64) -> u32 {
    // Invariant: HMAC accepts keys of any length.
    let mut mac = <Hmac<Sha1> as Mac>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(&counter.to_be_bytes());
    let h = mac.finalize().into_bytes();
    let off = usize::from(h[19] & 0x0f);
    let bin = (u32::from(h[off]) & 0x7f) << 24
        | u32::from(h[off + 1]) << 16
        | u32::from(h[off + 2]) << 8
        | u32::from(h[off + 3]);
    bin % 10u32.pow(DIGITS)
}

/// The time step for Unix time `unix`.
pub fn step_of(unix: u64) -> u64 {
    unix / STEP
}

/// Checks `code` against the steps `now - 1 ..= now + 1` (clock drift of one step either
/// way) in constant time per candidate. Returns the matching step, which the caller
/// records so that the code cannot be used again.
pub fn verify(secret: &[u8], code: &str, unix: u64) -> Option<u64> {
    if code.len() != DIGITS as usize || !code.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let given: u32 = code.parse().ok()?;
    let now = step_of(unix);
    let mut found = None;
    for step in now.saturating_sub(1)..=now + 1 {
        let expected = code_at(secret, step);
        let same =
            subtle::ConstantTimeEq::ct_eq(&expected.to_be_bytes()[..], &given.to_be_bytes()[..]);
        if bool::from(same) && found.is_none() {
            found = Some(step);
        }
    }
    found
}

/// Base32 (RFC 4648, no padding) as authenticator apps expect in `otpauth://` URIs.
pub fn base32(data: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut out = String::with_capacity(data.len().div_ceil(5) * 8);
    let (mut buf, mut bits) = (0u32, 0u32);
    for &b in data {
        buf = (buf << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            out.push(ALPHABET[((buf >> (bits - 5)) & 31) as usize] as char);
            bits -= 5;
        }
    }
    if bits > 0 {
        out.push(ALPHABET[((buf << (5 - bits)) & 31) as usize] as char);
    }
    out
}

/// The `otpauth://` URI an authenticator app imports.
pub fn otpauth_uri(issuer: &str, account: &str, secret: &[u8]) -> String {
    let enc = |s: &str| -> String {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect()
    };
    format!(
        "otpauth://totp/{}:{}?secret={}&issuer={}&algorithm=SHA1&digits={DIGITS}&period={STEP}",
        enc(issuer),
        enc(account),
        base32(secret),
        enc(issuer)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6238 Appendix B, SHA-1 rows (8 digits there; the last 6 digits here).
    #[test]
    fn rfc6238_vectors() {
        let secret = b"12345678901234567890";
        for (t, full) in [
            (59u64, "94287082"),
            (1_111_111_109, "07081804"),
            (1_111_111_111, "14050471"),
            (1_234_567_890, "89005924"),
            (2_000_000_000, "69279037"),
            (20_000_000_000, "65353130"),
        ] {
            assert_eq!(
                format!("{:06}", code_at(secret, step_of(t))),
                &full[2..],
                "t = {t}"
            );
        }
    }

    #[test]
    fn verify_window_and_shape() {
        let s = b"12345678901234567890";
        let t = 1_111_111_111;
        let code = format!("{:06}", code_at(s, step_of(t)));
        assert_eq!(verify(s, &code, t), Some(step_of(t)));
        assert_eq!(verify(s, &code, t + 30), Some(step_of(t)));
        assert_eq!(verify(s, &code, t + 90), None);
        assert_eq!(verify(s, "12345", t), None);
        assert_eq!(verify(s, "12345a", t), None);
    }

    #[test]
    fn base32_and_uri() {
        assert_eq!(base32(b"foobar"), "MZXW6YTBOI");
        assert_eq!(base32(b"f"), "MY");
        let u = otpauth_uri("shard demo.test", "alice", b"12345678901234567890");
        assert!(
            u.starts_with(
                "otpauth://totp/shard%20demo.test:alice?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"
            ),
            "{u}"
        );
    }
}
