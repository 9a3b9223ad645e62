//! Looking for leaked secrets in logs.
//!
//! A secret becomes a set of [`Needle`]s, one per encoding a careless log line could use:
//! the text itself (any case), hex (any case), base64 in the standard and URL-safe
//! alphabets at each of the three alignments the bytes can have inside a longer base64
//! text, Rust's `Debug` list of the bytes, aligned pieces of long values (a partial dump),
//! and a PEM key's body lines. [`scan`] reports the needles found by what they are, never
//! by their value.

use std::collections::{BTreeSet, HashMap};
use std::fmt::Write as _;

use base64::Engine;

/// One string that must never appear in a log.
#[derive(Clone, Debug)]
pub struct Needle {
    /// What it is (printed when found; never the value itself).
    pub what: String,
    /// The text searched for.
    pub text: String,
    /// Compare case-insensitively (hex, PINs).
    pub any_case: bool,
    /// Match only as a whole token, not inside a longer word or number (short codes).
    pub whole_token: bool,
}

/// Every needle that is not a whole-token one is at least this long, so that the scan can
/// index needles by prefix and a random match is out of the question.
pub const MIN_LEN: usize = 12;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;
const B64URL: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// Needles for secret bytes (at least [`MIN_LEN`] of them): hex (any case); base64 in the
/// standard and URL-safe alphabets at each of the three alignments the bytes can have
/// inside a longer base64 text (padding and the partial groups at the ends left off);
/// Rust's `Debug` list of (the first 16 of) the bytes, e.g. `31, 7, 200, ...`; and, for
/// long values, every aligned 16-byte piece in hex and 24-byte piece in base64.
pub fn needles_for_bytes(what: &str, bytes: &[u8]) -> Vec<Needle> {
    assert!(
        bytes.len() >= MIN_LEN,
        "{what}: too short to scan for without false alarms"
    );
    let needle = |what: String, text: String, any_case: bool| Needle {
        what,
        text,
        any_case,
        whole_token: false,
    };
    let mut v = vec![needle(format!("{what} (hex)"), hex::encode(bytes), true)];
    for off in 0..3 {
        let rest = &bytes[off..];
        // Whole 3-byte groups only: the group that straddles the start or the end
        // depends on bytes around the secret, the others are the same in any base64
        // text whose groups start `off` bytes into the secret.
        let whole = &rest[..rest.len() / 3 * 3];
        if whole.len() < 9 {
            continue;
        }
        v.push(needle(
            format!("{what} (base64, offset {off})"),
            B64.encode(whole),
            false,
        ));
        v.push(needle(
            format!("{what} (base64url, offset {off})"),
            B64URL.encode(whole),
            false,
        ));
    }
    let head = &bytes[..bytes.len().min(16)];
    let list = format!("{head:?}");
    v.push(needle(
        format!("{what} (Debug byte list)"),
        list.trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned(),
        false,
    ));
    if bytes.len() > 16 {
        for (i, piece) in bytes.chunks_exact(16).enumerate() {
            v.push(needle(
                format!("{what} (hex piece {i})"),
                hex::encode(piece),
                true,
            ));
        }
    }
    if bytes.len() > 24 {
        for (i, piece) in bytes.chunks_exact(24).enumerate() {
            v.push(needle(
                format!("{what} (base64 piece {i})"),
                B64.encode(piece),
                false,
            ));
        }
    }
    v
}

/// Needles for a secret string (a PIN, a password, an invitation code): the text in any
/// case, and its bytes (see [`needles_for_bytes`]); a text shorter than [`MIN_LEN`] is
/// looked for as a whole token only.
pub fn needles_for_text(what: &str, text: &str) -> Vec<Needle> {
    let text = text.trim();
    if text.len() < MIN_LEN {
        return needles_for_code(what, text);
    }
    let mut v = vec![Needle {
        what: what.to_owned(),
        text: text.to_owned(),
        any_case: true,
        whole_token: false,
    }];
    v.extend(needles_for_bytes(what, text.as_bytes()));
    v
}

/// A short code (a TOTP code): found only as a whole token, not inside a longer number.
pub fn needles_for_code(what: &str, code: &str) -> Vec<Needle> {
    assert!(!code.is_empty(), "{what}: empty");
    vec![Needle {
        what: what.to_owned(),
        text: code.to_owned(),
        any_case: false,
        whole_token: true,
    }]
}

/// Needles for a PEM private key: every full body line, the joined body, and the DER
/// bytes after their fixed PKCS#8 start (see [`needles_for_bytes`]).
pub fn needles_for_pem(what: &str, pem: &str) -> Vec<Needle> {
    let body: Vec<&str> = pem
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("-----"))
        .collect();
    let mut v: Vec<Needle> = body
        .iter()
        .filter(|l| l.len() >= 40)
        .map(|l| Needle {
            what: format!("{what} (PEM line)"),
            text: (*l).to_owned(),
            any_case: false,
            whole_token: false,
        })
        .collect();
    let joined = body.concat();
    v.push(Needle {
        what: format!("{what} (PEM body)"),
        text: joined.clone(),
        any_case: false,
        whole_token: false,
    });
    let der = B64.decode(joined.as_bytes()).expect("PEM body is base64");
    v.extend(needles_for_bytes(
        &format!("{what} (DER)"),
        &der[der.len().min(36)..],
    ));
    v
}

/// Needles for a shard envelope: the whole encoding, its salt and (when long enough to
/// scan for) its share.
pub fn needles_for_envelope(env: &shard::ShardEnvelope) -> Vec<Needle> {
    let mut v = needles_for_bytes("envelope", &env.encode());
    v.extend(needles_for_bytes("salt", &env.salt.0));
    if env.share.len() >= MIN_LEN {
        v.extend(needles_for_bytes("share", env.share.expose()));
    }
    v
}

/// What the needles found in `haystack` are (their descriptions, never their values),
/// sorted and without repeats.
///
/// Needles are indexed by their first [`MIN_LEN`] characters; every window of the
/// (lower-cased, for the any-case needles) haystack is looked up, and a hit is then
/// compared in full. Linear in the log size, whatever the number of needles.
pub fn scan(haystack: &str, needles: &[Needle]) -> Vec<String> {
    let mut found = BTreeSet::new();
    for any_case in [false, true] {
        let mut index: HashMap<Vec<u8>, Vec<(Vec<u8>, &str)>> = HashMap::new();
        for n in needles
            .iter()
            .filter(|n| n.any_case == any_case && !n.whole_token)
        {
            let text = if any_case {
                n.text.to_ascii_lowercase()
            } else {
                n.text.clone()
            };
            assert!(text.len() >= MIN_LEN, "needle {} is too short", n.what);
            index
                .entry(text.as_bytes()[..MIN_LEN].to_vec())
                .or_default()
                .push((text.into_bytes(), &n.what));
        }
        if index.is_empty() {
            continue;
        }
        let hay = if any_case {
            haystack.to_ascii_lowercase().into_bytes()
        } else {
            haystack.as_bytes().to_vec()
        };
        for i in 0..hay.len().saturating_sub(MIN_LEN - 1) {
            if let Some(candidates) = index.get(&hay[i..i + MIN_LEN]) {
                for (text, what) in candidates {
                    if hay[i..].starts_with(text) {
                        found.insert((*what).to_owned());
                    }
                }
            }
        }
    }
    for n in needles.iter().filter(|n| n.whole_token) {
        if contains_token(haystack, &n.text) {
            found.insert(n.what.clone());
        }
    }
    found.into_iter().collect()
}

/// Whether `token` occurs in `text` with no letter or digit right before or after it.
fn contains_token(text: &str, token: &str) -> bool {
    text.match_indices(token).any(|(i, m)| {
        let before = text[..i].chars().next_back();
        let after = text[i + m.len()..].chars().next();
        !before.is_some_and(char::is_alphanumeric) && !after.is_some_and(char::is_alphanumeric)
    })
}

/// Whether `needle` occurs in `haystack` as raw bytes (a database file, a core dump).
pub fn contains_bytes(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

/// The hits of a scan as an indented list, for messages.
pub fn describe(hits: &[String]) -> String {
    let mut s = String::new();
    for h in hits {
        let _ = writeln!(s, "  {h}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_short_code_is_found_only_as_a_whole_token() {
        let n = needles_for_code("code", "123456");
        assert_eq!(scan("code=123456 ok", &n), vec!["code".to_owned()]);
        assert!(scan("id 91234567", &n).is_empty());
        assert!(scan("x123456", &n).is_empty());
    }

    #[test]
    fn a_piece_of_a_long_value_is_found() {
        let bytes: Vec<u8> = (0u8..64).map(|b| b.wrapping_mul(37)).collect();
        let n = needles_for_bytes("value", &bytes);
        let piece = hex::encode(&bytes[32..48]);
        assert!(scan(&format!("dump {piece} end"), &n).contains(&"value (hex piece 2)".to_owned()));
        assert!(scan("nothing here at all, really nothing", &n).is_empty());
    }
}
