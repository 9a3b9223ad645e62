//! Who holds a share, and how many of them must sign.

use std::fmt;
use std::num::NonZeroU16;

use crate::Error;

/// The identifier of one share holder (a custodian) inside one key: `1..=n`.
///
/// It is FROST's participant identifier, the `x` at which the holder's share
/// of the key polynomial is evaluated; `0` would be the key itself and has no
/// value of this type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HolderId(NonZeroU16);

impl HolderId {
    /// The holder with this number, refusing `0`.
    pub fn new(id: u16) -> Result<Self, Error> {
        NonZeroU16::new(id)
            .map(HolderId)
            .ok_or(Error::InvalidHolder(id))
    }

    /// The number, `1..=n`.
    pub fn get(self) -> u16 {
        self.0.get()
    }

    /// Every holder of an `n`-holder key, `1..=n`.
    pub fn all(n: u16) -> impl Iterator<Item = HolderId> {
        (1..=n).filter_map(NonZeroU16::new).map(HolderId)
    }
}

impl fmt::Display for HolderId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// How many holders (`t`) of how many (`n`) must take part to sign:
/// `2 <= t <= n`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Threshold {
    t: u16,
    n: u16,
}

impl Threshold {
    /// `t`-of-`n`, refusing `t < 2` and `t > n`.
    pub fn new(t: u16, n: u16) -> Result<Self, Error> {
        if t < 2 || t > n {
            return Err(Error::InvalidThreshold { t, n });
        }
        Ok(Threshold { t, n })
    }

    /// The number of holders that must sign.
    pub fn t(self) -> u16 {
        self.t
    }

    /// The number of holders.
    pub fn n(self) -> u16 {
        self.n
    }

    /// Refuses a holder outside `1..=n`.
    pub(crate) fn check(self, holder: HolderId) -> Result<(), Error> {
        if holder.get() > self.n {
            return Err(Error::InvalidHolder(holder.get()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_is_no_holder() {
        assert_eq!(HolderId::new(0), Err(Error::InvalidHolder(0)));
        assert_eq!(HolderId::new(7).map(HolderId::get), Ok(7));
        let all: Vec<u16> = HolderId::all(4).map(HolderId::get).collect();
        assert_eq!(all, [1, 2, 3, 4]);
    }

    #[test]
    fn threshold_bounds() {
        assert!(Threshold::new(2, 2).is_ok());
        assert!(Threshold::new(3, 4).is_ok());
        for (t, n) in [(0, 0), (1, 3), (4, 3), (2, 1), (u16::MAX, 2)] {
            assert_eq!(Threshold::new(t, n), Err(Error::InvalidThreshold { t, n }));
        }
        let t = Threshold::new(2, 3).unwrap();
        assert!(t.check(HolderId::new(3).unwrap()).is_ok());
        assert_eq!(
            t.check(HolderId::new(4).unwrap()),
            Err(Error::InvalidHolder(4))
        );
    }
}
