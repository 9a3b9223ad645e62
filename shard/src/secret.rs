//! Types that hold secret bytes: zeroized on drop, never printed.

use std::fmt;

use zeroize::{Zeroize, Zeroizing};

use crate::Error;

/// The reading half both secret holders share: `expose`, `len`, `is_empty`, and a
/// `Debug` that prints only the length.
macro_rules! secret_bytes {
    ($ty:ident, $expose:literal, $empty:literal) => {
        impl $ty {
            #[doc = $expose]
            pub fn expose(&self) -> &[u8] {
                &self.0
            }

            /// Length in bytes.
            pub fn len(&self) -> usize {
                self.0.len()
            }

            #[doc = $empty]
            pub fn is_empty(&self) -> bool {
                self.0.is_empty()
            }
        }

        impl fmt::Debug for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($ty), "({} bytes)"), self.0.len())
            }
        }
    };
}

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
}

secret_bytes!(
    Secret,
    "The secret bytes. Keep the borrow short.",
    "Always false: a secret has at least one byte."
);

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
}

secret_bytes!(
    ShareBytes,
    "The share bytes.",
    "True when empty (never for a share made by [`crate::split`])."
);

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
