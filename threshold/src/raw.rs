//! How every value of this crate is held: its kind and FROST's bytes for it.
//!
//! A value is checked when it is made (decoded from bytes, or written by the
//! crate), and read back into the ciphersuite's type only by the operation that
//! needs it, which also refuses a value of another kind.

use std::collections::BTreeMap;
use std::fmt;

use frost_core::Identifier;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::suite::{identifier, Suite, Wire};
use crate::{Error, HolderId, Kind};

/// Public bytes.
pub(crate) type Open = Vec<u8>;
/// Secret bytes: zeroized on drop.
pub(crate) type Sealed = Zeroizing<Vec<u8>>;

/// A kind and FROST's bytes for one value of it.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Raw<B> {
    kind: Kind,
    bytes: B,
}

impl<B: AsRef<[u8]> + From<Vec<u8>>> Raw<B> {
    /// Writes a FROST value. Values read from bytes are written anew, so
    /// that trailing bytes are dropped and equal values hold equal bytes.
    pub(crate) fn write<S: Suite, T: Wire<S>>(value: &T) -> Result<Self, Error> {
        Ok(Raw {
            kind: S::KIND,
            bytes: B::from(value.encode()?),
        })
    }

    /// Reads the FROST value back, refusing a value of another kind than `S`'s.
    pub(crate) fn read<S: Suite, T: Wire<S>>(&self) -> Result<T, Error> {
        if self.kind != S::KIND {
            return Err(Error::KindMismatch {
                expected: S::KIND,
                found: self.kind,
                what: T::WHAT,
            });
        }
        T::decode(self.bytes.as_ref())
    }

    /// The kind of the value.
    pub(crate) fn kind(&self) -> Kind {
        self.kind
    }

    /// FROST's bytes for the value.
    pub(crate) fn bytes(&self) -> &[u8] {
        self.bytes.as_ref()
    }
}

/// Reads every value of a map keyed by holder, re-keyed by FROST identifier.
pub(crate) fn read_all<'a, S: Suite, T: Wire<S>, B: AsRef<[u8]> + From<Vec<u8>> + 'a>(
    values: impl IntoIterator<Item = (&'a HolderId, &'a Raw<B>)>,
) -> Result<BTreeMap<Identifier<S>, T>, Error> {
    values
        .into_iter()
        .map(|(holder, raw)| Ok((identifier::<S>(*holder)?, raw.read::<S, T>()?)))
        .collect()
}

impl<B: Zeroize> Zeroize for Raw<B> {
    fn zeroize(&mut self) {
        self.bytes.zeroize();
    }
}

impl ZeroizeOnDrop for Raw<Sealed> {}

impl<B: AsRef<[u8]>> fmt::Debug for Raw<B> {
    /// Only the kind and the length: never the bytes, which may be secret.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}, {} bytes", self.kind, self.bytes.as_ref().len())
    }
}

/// Declares a public type that holds one FROST value as [`Raw`] (its field
/// `raw`): `from_frost`, its kind, a `Debug` of kind and length only, and for
/// the sendable ones `decode` and the bytes to send (`as_bytes`, or `expose`
/// for a secret). A type that keeps more than the value (what it decoded, for
/// its accessors) declares itself and its `from_frost`, and takes `@bytes`.
macro_rules! held {
    ($(#[$meta:meta])* open $name:ident($($frost:ident)::+)) => {
        $(#[$meta])*
        #[derive(Clone, PartialEq, Eq)]
        pub struct $name {
            pub(crate) raw: $crate::raw::Raw<$crate::raw::Open>,
        }

        $crate::raw::held!(@wrap $name($($frost)::+));
        $crate::raw::held! {
            @bytes $name($($frost)::+) as_bytes,
            "FROST's bytes for the value, to send or store."
        }
    };
    ($(#[$meta:meta])* sealed $name:ident($($frost:ident)::+)) => {
        $crate::raw::held!(@secret $(#[$meta])* $name($($frost)::+));
        $crate::raw::held! {
            @bytes $name($($frost)::+) expose,
            "FROST's bytes for the value: secret, to seal before it is stored or sent."
        }
    };
    ($(#[$meta:meta])* memory $name:ident($($frost:ident)::+)) => {
        $crate::raw::held!(@secret $(#[$meta])* $name($($frost)::+));
        $crate::raw::held!(@kind $name);
    };
    (@secret $(#[$meta:meta])* $name:ident($($frost:ident)::+)) => {
        $(#[$meta])*
        #[derive(zeroize::Zeroize)]
        pub struct $name {
            pub(crate) raw: $crate::raw::Raw<$crate::raw::Sealed>,
        }

        impl zeroize::ZeroizeOnDrop for $name {}

        $crate::raw::held!(@wrap $name($($frost)::+));
    };
    (@wrap $name:ident($($frost:ident)::+)) => {
        impl $name {
            pub(crate) fn from_frost<S: $crate::suite::Suite>(
                value: &frost_core::$($frost)::+<S>,
            ) -> Result<Self, $crate::Error> {
                Ok($name {
                    raw: $crate::raw::Raw::write::<S, _>(value)?,
                })
            }
        }

        impl std::fmt::Debug for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, concat!(stringify!($name), "({:?})"), self.raw)
            }
        }
    };
    (@bytes $name:ident($($frost:ident)::+) $bytes:ident, $doc:literal) => {
        impl $name {
            #[doc = concat!(
                "Reads a `", stringify!($name), "` of `kind` from FROST's bytes for it, ",
                "refusing bytes that are not one."
            )]
            pub fn decode(kind: $crate::Kind, bytes: &[u8]) -> Result<Self, $crate::Error> {
                $crate::suite::dispatch!(kind, S => Self::from_frost::<S>(
                    &<frost_core::$($frost)::+<S> as $crate::suite::Wire<S>>::decode(bytes)?,
                ))
            }

            #[doc = $doc]
            pub fn $bytes(&self) -> &[u8] {
                self.raw.bytes()
            }
        }

        $crate::raw::held!(@kind $name);
    };
    (@kind $name:ident) => {
        impl $name {
            /// The key kind of the value.
            pub fn kind(&self) -> $crate::Kind {
                self.raw.kind()
            }
        }
    };
}
pub(crate) use held;
