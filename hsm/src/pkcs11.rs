//! PKCS#11 backend (being written).
use crate::{profile::Pkcs11Profile, DeviceInfo, Error, SealContext, Sealer};
use zeroize::Zeroizing;

/// Seals shards with AES keys resident in a PKCS#11 token.
pub struct Pkcs11Sealer {}

impl Pkcs11Sealer {
    /// Opens the token a profile names.
    pub fn open(_p: &Pkcs11Profile) -> Result<Self, Error> {
        Err(Error::Unsupported("pkcs11 backend not yet written".into()))
    }
}

impl Sealer for Pkcs11Sealer {
    fn seal(&self, _ctx: &SealContext, _shard: &[u8]) -> Result<Vec<u8>, Error> {
        unimplemented!()
    }
    fn unseal(&self, _ctx: &SealContext, _blob: &[u8]) -> Result<Zeroizing<Vec<u8>>, Error> {
        unimplemented!()
    }
    fn provision(&self) -> Result<DeviceInfo, Error> {
        unimplemented!()
    }
    fn describe(&self) -> Result<DeviceInfo, Error> {
        unimplemented!()
    }
    fn health(&self) -> Result<(), Error> {
        unimplemented!()
    }
    fn rotate(&self) -> Result<u32, Error> {
        unimplemented!()
    }
}
