//! Identifiers that travel between services: secret ids and custodian ids.

use std::fmt;
use std::str::FromStr;

use crate::Error;

/// The id of one escrowed secret: 16 bytes, time-ordered like a UUIDv7 so that
/// database rows written close together sit close together in the index.
///
/// Text form is 32 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SecretId([u8; 16]);

impl SecretId {
    /// Length of the binary form.
    pub const LEN: usize = 16;

    /// Builds a UUIDv7-layout id from a Unix time in milliseconds and 10 random bytes.
    pub fn new_v7(unix_millis: u64, random: [u8; 10]) -> Self {
        let mut b = [0u8; 16];
        b[..6].copy_from_slice(&unix_millis.to_be_bytes()[2..]);
        b[6..].copy_from_slice(&random);
        b[6] = 0x70 | (b[6] & 0x0f); // version 7
        b[8] = 0x80 | (b[8] & 0x3f); // RFC 4122 variant
        SecretId(b)
    }

    /// Wraps raw bytes (any 16 bytes are a valid id).
    pub const fn from_bytes(bytes: [u8; 16]) -> Self {
        SecretId(bytes)
    }

    /// The raw bytes.
    pub const fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }
}

impl fmt::Display for SecretId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for SecretId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretId({self})")
    }
}

impl FromStr for SecretId {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        if s.len() != 32
            || !s
                .bytes()
                .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
        {
            return Err(Error::InvalidId(
                "secret id must be 32 lowercase hex digits",
            ));
        }
        let mut b = [0u8; 16];
        hex::decode_to_slice(s, &mut b).map_err(|_| Error::InvalidId("secret id is not hex"))?;
        Ok(SecretId(b))
    }
}

/// The name of a custodian inside the trust domain, e.g. `c1`.
///
/// 1 to 63 characters of `[a-z0-9-]`, starting with a letter or digit: the same
/// shape as the last segment of its SPIFFE id, so it can be put in paths and
/// audit rows without escaping.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct CustodianId(String);

impl CustodianId {
    /// Maximum length in bytes.
    pub const MAX_LEN: usize = 63;

    /// Parses and validates a custodian name.
    pub fn new(name: &str) -> Result<Self, Error> {
        validate_name(name).map_err(Error::InvalidId)?;
        Ok(CustodianId(name.to_owned()))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for CustodianId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for CustodianId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for CustodianId {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        CustodianId::new(s)
    }
}

/// Checks the `[a-z0-9][a-z0-9-]{0,62}` shape shared by custodian and user names.
pub fn validate_name(name: &str) -> Result<(), &'static str> {
    let b = name.as_bytes();
    if b.is_empty() || b.len() > CustodianId::MAX_LEN {
        return Err("name must be 1 to 63 characters");
    }
    if !b[0].is_ascii_lowercase() && !b[0].is_ascii_digit() {
        return Err("name must start with a lowercase letter or digit");
    }
    if !b
        .iter()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
    {
        return Err("name may contain only a-z, 0-9 and '-'");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_id_text_round_trip_and_order() {
        let a = SecretId::new_v7(1_000, [0xff; 10]);
        let b = SecretId::new_v7(1_001, [0x00; 10]);
        assert!(a < b, "ids made later sort later");
        let s = a.to_string();
        assert_eq!(s.len(), 32);
        assert_eq!(s.parse::<SecretId>().unwrap(), a);
        assert_eq!(a.as_bytes()[6] >> 4, 7);
        assert!("ABCDEF00000000000000000000000000"
            .parse::<SecretId>()
            .is_err());
        assert!("abc".parse::<SecretId>().is_err());
    }

    #[test]
    fn custodian_names() {
        assert!(CustodianId::new("c1").is_ok());
        assert!(CustodianId::new("custodian-a").is_ok());
        for bad in ["", "-c", "C1", "c_1", "c/1", &"a".repeat(64)] {
            assert!(CustodianId::new(bad).is_err(), "{bad:?} accepted");
        }
    }
}
