//! Password policy and hashing: Argon2id (OWASP parameters: 19 MiB, 2 passes, 1 lane)
//! over an HMAC-SHA-256 of the password computed inside the enroller's token (the
//! pepper), so a stolen user table cannot be attacked offline without the token.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use zeroize::Zeroizing;

/// Shortest password accepted, in characters.
pub const MIN_LEN: usize = 12;
/// Longest password accepted, in bytes (Argon2 input is bounded to keep hashing cheap to refuse).
pub const MAX_LEN: usize = 256;

/// Why a password was refused at registration. Never carries the password.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// Fewer than 12 characters.
    #[error("the password must have at least 12 characters")]
    TooShort,
    /// More than 256 bytes.
    #[error("the password must have at most 256 bytes")]
    TooLong,
    /// Contains the user name.
    #[error("the password must not contain the user name")]
    ContainsUsername,
    /// Too few distinct characters, a run like `abcdef...` or `9876...`, or a common password.
    #[error("the password is too easy to guess")]
    Guessable,
}

const COMMON: &[&str] = &[
    "password",
    "passw0rd",
    "qwerty",
    "qwertyuiop",
    "asdfghjkl",
    "letmein",
    "iloveyou",
    "welcome",
    "admin",
    "changeme",
    "monkey",
    "dragon",
    "football",
    "baseball",
    "sunshine",
    "princess",
    "trustno1",
    "secret",
];

/// Checks a new password against the policy.
pub fn check_policy(username: &str, password: &str) -> Result<(), PolicyError> {
    if password.len() > MAX_LEN {
        return Err(PolicyError::TooLong);
    }
    let chars: Vec<char> = password.chars().collect();
    if chars.len() < MIN_LEN {
        return Err(PolicyError::TooShort);
    }
    let lower = password.to_lowercase();
    if username.len() >= 3 && lower.contains(&username.to_lowercase()) {
        return Err(PolicyError::ContainsUsername);
    }
    let mut distinct = chars.clone();
    distinct.sort_unstable();
    distinct.dedup();
    if distinct.len() < 5 {
        return Err(PolicyError::Guessable);
    }
    // A run like abcdef..., 9876543210987 (digits and letters wrap around).
    let succ = |c: char| match c {
        '9' => '0',
        'z' => 'a',
        'Z' => 'A',
        c => char::from_u32(c as u32 + 1).unwrap_or(c),
    };
    if chars.windows(2).all(|w| w[1] == succ(w[0])) || chars.windows(2).all(|w| w[0] == succ(w[1]))
    {
        return Err(PolicyError::Guessable);
    }
    let core: String = lower
        .trim_matches(|c: char| !c.is_ascii_alphabetic())
        .to_owned();
    if COMMON.iter().any(|w| {
        core == *w
            || core
                .strip_suffix(|c: char| c.is_ascii_digit())
                .is_some_and(|s| s == *w)
    }) {
        return Err(PolicyError::Guessable);
    }
    // A short pattern repeated (abcabcabcabc, 123412341234).
    for period in 1..=chars.len() / 3 {
        if chars
            .iter()
            .enumerate()
            .all(|(i, c)| *c == chars[i % period])
        {
            return Err(PolicyError::Guessable);
        }
    }
    Ok(())
}

/// The token's keyed hash of a password (the pepper). The enroller's token implements it.
pub trait Pepper {
    /// HMAC-SHA-256 of `data` under the token's pepper key.
    fn pepper(&self, data: &[u8]) -> Result<[u8; 32], String>;
}

fn peppered(
    pepper: &dyn Pepper,
    username: &str,
    password: &str,
) -> Result<Zeroizing<[u8; 32]>, String> {
    let mut input = Zeroizing::new(Vec::with_capacity(32 + username.len() + password.len()));
    input.extend_from_slice(b"shard-password-v1\0");
    input.extend_from_slice(username.as_bytes());
    input.push(0);
    input.extend_from_slice(password.as_bytes());
    pepper.pepper(&input).map(Zeroizing::new)
}

fn argon2() -> Argon2<'static> {
    // Invariant: these are valid Argon2 parameters (OWASP's first recommendation).
    let params = Params::new(19 * 1024, 2, 1, Some(32)).expect("valid Argon2id parameters");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// Hashes a password for storage (PHC string: `$argon2id$v=19$m=19456,t=2,p=1$...`).
pub fn hash(
    pepper: &dyn Pepper,
    username: &str,
    password: &str,
    salt: &[u8; 16],
) -> Result<String, String> {
    let input = peppered(pepper, username, password)?;
    let salt = SaltString::encode_b64(salt).map_err(|e| e.to_string())?;
    argon2()
        .hash_password(&*input, &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

/// Checks a password against a stored hash (the comparison is constant-time).
pub fn verify(
    pepper: &dyn Pepper,
    username: &str,
    password: &str,
    stored: &str,
) -> Result<bool, String> {
    if password.len() > MAX_LEN {
        return Ok(false);
    }
    let parsed = PasswordHash::new(stored).map_err(|e| e.to_string())?;
    let input = peppered(pepper, username, password)?;
    Ok(argon2().verify_password(&*input, &parsed).is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    struct SoftPepper;
    impl Pepper for SoftPepper {
        fn pepper(&self, data: &[u8]) -> Result<[u8; 32], String> {
            use hmac::{Hmac, Mac};
            let mut m = <Hmac<sha2::Sha256> as Mac>::new_from_slice(b"test pepper key")
                .map_err(|e| e.to_string())?;
            m.update(data);
            Ok(m.finalize().into_bytes().into())
        }
    }

    #[test]
    fn policy() {
        assert_eq!(check_policy("alice", "short"), Err(PolicyError::TooShort));
        assert_eq!(
            check_policy("alice", "my-Alice-is-great-42"),
            Err(PolicyError::ContainsUsername)
        );
        assert_eq!(
            check_policy("alice", "aaaaaaaaaaaaaaa"),
            Err(PolicyError::Guessable)
        );
        assert_eq!(
            check_policy("alice", "abcdefghijklmn"),
            Err(PolicyError::Guessable)
        );
        assert_eq!(
            check_policy("alice", "123456789012"),
            Err(PolicyError::Guessable)
        );
        assert_eq!(
            check_policy("alice", "Password1234"),
            Err(PolicyError::Guessable)
        );
        assert_eq!(
            check_policy("alice", "abcdeabcdeabcde"),
            Err(PolicyError::Guessable)
        );
        assert_eq!(
            check_policy("alice", &"x".repeat(300)),
            Err(PolicyError::TooLong)
        );
        assert!(check_policy("alice", "correct horse battery staple").is_ok());
        assert!(check_policy("alice", "Tr0ub4dor&3-extra").is_ok());
    }

    #[test]
    fn hash_and_verify_with_pepper() {
        let h = hash(
            &SoftPepper,
            "alice",
            "correct horse battery staple",
            &[7; 16],
        )
        .unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{h}");
        assert!(!h.contains("correct"));
        assert!(verify(&SoftPepper, "alice", "correct horse battery staple", &h).unwrap());
        assert!(!verify(&SoftPepper, "alice", "correct horse battery stapl", &h).unwrap());
        assert!(
            !verify(&SoftPepper, "bob", "correct horse battery staple", &h).unwrap(),
            "bound to the user"
        );
    }
}
