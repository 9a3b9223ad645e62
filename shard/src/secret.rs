//! Types that hold secret bytes: zeroized on drop, never printed.

use std::fmt;

use zeroize::{Zeroize, Zeroizing};

use crate::Error;

/// Largest secret the system escrows.
pub const MAX_SECRET_LEN: usize = 64 * 1024;

/// A whole secret (a P-256 scalar or a user's own bytes). Zeroized on drop;
/// `Debug` prints only the length.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Zeroizing<Vec<u8>>);

impl Secret {
    /// Takes ownership of secret bytes, checking the 1..=64 KiB length.
    pub fn new(bytes: Vec<u8>) -> Result<Self, Error> {
        let bytes = Zeroizing::new(bytes);
        if bytes.is_empty() || bytes.len() > MAX_SECRET_LEN {
            return Err(Error::SecretLength(bytes.len()));
        }
        Ok(Secret(bytes))
    }

    /// Copies secret bytes out of a slice.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, Error> {
        Secret::new(bytes.to_vec())
    }

    /// The secret bytes. Keep the borrow short.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Always false: a secret has at least one byte.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({} bytes)", self.0.len())
    }
}

/// The value bytes of one Shamir share (without its index). Zeroized on drop;
/// `Debug` prints only the length.
#[derive(Clone, PartialEq, Eq, Zeroize)]
#[zeroize(drop)]
pub struct ShareBytes(Vec<u8>);

impl ShareBytes {
    /// Wraps share bytes.
    pub fn new(bytes: Vec<u8>) -> Self {
        ShareBytes(bytes)
    }

    /// The share bytes.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when empty (never for a share made by [`crate::split`]).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for ShareBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ShareBytes({} bytes)", self.0.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_prints_bytes() {
        let s = Secret::from_slice(b"hunter2-hunter2").unwrap();
        let d = format!("{s:?}");
        assert_eq!(d, "Secret(15 bytes)");
        let sh = ShareBytes::new(vec![0xAB; 4]);
        assert_eq!(format!("{sh:?}"), "ShareBytes(4 bytes)");
    }

    #[test]
    fn length_limits() {
        assert_eq!(Secret::new(vec![]).unwrap_err(), Error::SecretLength(0));
        assert!(Secret::new(vec![1; MAX_SECRET_LEN]).is_ok());
        assert_eq!(
            Secret::new(vec![1; MAX_SECRET_LEN + 1]).unwrap_err(),
            Error::SecretLength(MAX_SECRET_LEN + 1)
        );
    }
}
