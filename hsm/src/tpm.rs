//! TPM 2.0 backend (being written).
use crate::{profile::TpmProfile, DeviceInfo, Error, SealContext, Sealer};
use zeroize::Zeroizing;

/// Seals shards with objects sealed by a TPM 2.0.
pub struct TpmSealer {}

impl TpmSealer {
    /// Connects to the TPM a profile names.
    pub fn open(_p: &TpmProfile) -> Result<Self, Error> {
        Err(Error::Unsupported("tpm backend not yet written".into()))
    }
}

impl Sealer for TpmSealer {
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
