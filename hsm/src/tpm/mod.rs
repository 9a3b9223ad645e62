//! TPM 2.0 backend (tss-esapi 7 over any TCTI: the kernel resource manager,
//! `swtpm`, `mssim`).
//!
//! # Keys
//!
//! Key version `k` is a storage primary in the owner hierarchy (ECC P-256,
//! restricted decrypt, AES-128-CFB, no auth) made persistent at
//! `primary_handle + k - 1`. Its template is fixed and its `unique` field names the
//! version, so each version is a different key, and a primary that was evicted is
//! re-created from the same owner seed as the same key: blobs keep unsealing.
//! The current version is the highest one whose persistent handle holds this
//! sealer's key (a handle is trusted only when its Name equals the Name the TPM
//! gives the template). [`Sealer::rotate`] persists version `k + 1`; a blob of a
//! version above the current one makes the sealer look again (another process may
//! have rotated) before it answers [`Error::UnknownKeyVersion`]. `TPM2_Clear`
//! changes the owner seed and loses every blob: a running sealer then refuses to
//! adopt the new keys, and one opened afterwards has a new device id.
//!
//! The device id written into every header is the first 16 bytes of
//! `SHA-256(tag || Name of the version-1 primary)`: it is the same for every
//! sealer on one TPM (owner seed) and differs between TPMs, so a blob from another
//! TPM is [`Error::ForeignDevice`] before any device call.
//!
//! # Blobs
//!
//! One sealed data object per shard (the body layout is documented in `body.rs`):
//! the TPM seals `SHA-256(context)[..16] || payload`, where the payload is the
//! shard when it has at most [`DIRECT_MAX`] = 112 bytes (a TPM seals at most 128),
//! and otherwise a fresh AES-256 data key under which the shard is AES-GCM encrypted in software
//! with the encoded header as AAD (envelope). The object's auth value is
//! `SHA-256(tag || header || kind || salt)` with a random per-shard salt, so a
//! header or kind altered after sealing fails the TPM's authorization, and the
//! context digest inside the sealed data is checked after unsealing. Salt, data key
//! and nonce come from the operating system's generator.
//!
//! # Device access
//!
//! One ESAPI context per sealer, behind a mutex: the context is not `Sync`, and a
//! TPM without a resource manager (swtpm) has three transient object slots.
//! Transient objects are flushed on every path. Open one sealer per TPM.
//! The persistent primaries' ESYS handles are cached, so an unseal is
//! `TPM2_Load` + `TPM2_Unseal` + `TPM2_FlushContext`. With
//! `parameter_encryption`, a salted HMAC session (AES-128-CFB parameter
//! encryption, salt encrypted to the current primary) authorizes `TPM2_Create`
//! (its sensitive input, shard and auth value, is encrypted) and `TPM2_Unseal`
//! (its output is encrypted, and the auth value is never sent, only an HMAC); it is
//! started once and kept (starting one costs an ECDH on the TPM). `TPM2_Load`
//! carries nothing secret and uses the password session with the parent's empty
//! auth.
//! A lost connection is re-opened, a TPM that wants `TPM2_Startup` gets
//! `Startup(CLEAR)`, and a stale cached handle or session is dropped; each call
//! retries at most twice.

mod body;
mod device;
mod rc;

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};

use sha2::{Digest, Sha256};
use tss_esapi::structures::{Private, Public};
use tss_esapi::traits::{Marshall, UnMarshall};
use zeroize::Zeroizing;

use crate::blob::{check_shard_len, BlobHeader, HEADER_LEN};
use crate::profile::TpmProfile;
use crate::{os_random, DeviceInfo, Error, Mechanism, SealContext, Sealer};

pub use body::DIRECT_MAX;
use body::{Body, Envelope, Kind};
use device::{Conn, Fail, Keys};

/// Attempts per call: the first, plus at most two after a reconnect, a startup or a
/// dropped stale cache entry.
const ATTEMPTS: usize = 3;

const DEVICE_ID_TAG: &[u8] = b"shard-tpm-device-id-v1\0";

/// Seals shards as TPM 2.0 sealed data objects under a persistent storage primary.
pub struct TpmSealer {
    tcti: String,
    parameter_encryption: bool,
    device_id: [u8; 16],
    device: String,
    state: Mutex<State>,
}

struct State {
    conn: Option<Conn>,
    keys: Keys,
}

impl std::fmt::Debug for TpmSealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TpmSealer")
            .field("tcti", &self.tcti)
            .field("parameter_encryption", &self.parameter_encryption)
            .field("device_id", &hex::encode(self.device_id))
            .field("device", &self.device)
            .finish_non_exhaustive()
    }
}

impl TpmSealer {
    /// Connects to the TPM a profile names, learns its device id and current key
    /// version, and changes nothing on the device (see [`Sealer::provision`]).
    ///
    /// Fails with [`Error::DeviceUnavailable`] when the TPM cannot be reached.
    pub fn open(p: &TpmProfile) -> Result<Self, Error> {
        if !(0x8100_0000..=0x817F_FF00).contains(&p.primary_handle) {
            return Err(Error::Profile(
                "tpm.primary_handle must be an owner persistent handle 0x81000000..=0x817FFF00"
                    .into(),
            ));
        }
        let tcti = p.effective_tcti();
        let mut state = State {
            conn: None,
            keys: Keys {
                base: p.primary_handle,
                names: BTreeMap::new(),
                current: 1,
            },
        };
        let (device, v1_name, current) =
            state.run(&tcti, p.parameter_encryption, |conn, keys| {
                let device = conn.device_description()?;
                let v1_name = conn.expected_name(keys, 1)?;
                let current = conn.find_current(keys)?;
                Ok((device, v1_name, current))
            })?;
        state.keys.current = current;
        let mut h = Sha256::new();
        h.update(DEVICE_ID_TAG);
        h.update(&v1_name);
        let mut device_id = [0u8; 16];
        device_id.copy_from_slice(&h.finalize()[..16]);
        tracing::info!(
            tcti = %tcti,
            device = %device,
            device_id = %hex::encode(device_id),
            key_version = current,
            "TPM sealer opened"
        );
        Ok(TpmSealer {
            tcti,
            parameter_encryption: p.parameter_encryption,
            device_id,
            device,
            state: Mutex::new(state),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        match self.state.lock() {
            Ok(g) => g,
            Err(poisoned) => {
                // A panic mid-call may have left an object loaded: forget the
                // connection (dropping the context flushes what it tracked).
                let mut g = poisoned.into_inner();
                g.conn = None;
                self.state.clear_poison();
                g
            }
        }
    }

    fn run<T>(&self, op: impl FnMut(&mut Conn, &mut Keys) -> Result<T, Fail>) -> Result<T, Error> {
        self.lock().run(&self.tcti, self.parameter_encryption, op)
    }

    fn info(&self, version: u32, base: u32) -> DeviceInfo {
        DeviceInfo {
            backend: "tpm",
            device: self.device.clone(),
            key_label: format!("{:#010x}", base.saturating_add(version.saturating_sub(1))),
            key_version: version,
            mechanism: Mechanism::TpmSeal,
            device_id: self.device_id,
        }
    }
}

impl State {
    /// Runs `op` on the connection, reconnecting, starting the TPM up or retrying
    /// after a stale cache entry, at most [`ATTEMPTS`] times in all.
    fn run<T>(
        &mut self,
        tcti: &str,
        parameter_encryption: bool,
        mut op: impl FnMut(&mut Conn, &mut Keys) -> Result<T, Fail>,
    ) -> Result<T, Error> {
        let mut last = None;
        for _ in 0..ATTEMPTS {
            let conn = match &mut self.conn {
                Some(c) => c,
                None => self.conn.insert(Conn::connect(tcti, parameter_encryption)?),
            };
            let r = op(conn, &mut self.keys);
            let r = match r {
                Err(Fail::Startup) => {
                    tracing::info!("TPM needs TPM2_Startup; sending Startup(CLEAR)");
                    conn.startup().and(Err(Fail::Startup))
                }
                other => other,
            };
            if conn.broken {
                self.conn = None;
            }
            match r {
                Ok(v) => return Ok(v),
                Err(Fail::Done(e)) => return Err(e),
                Err(Fail::Reconnect(m)) => {
                    tracing::warn!(reason = %m, "TPM connection lost; reconnecting");
                    self.conn = None;
                    last = Some(Fail::Reconnect(m));
                }
                Err(f) => {
                    tracing::debug!(reason = ?f, "retrying TPM call");
                    last = Some(f);
                }
            }
        }
        Err(last
            .map(Fail::into_error)
            .unwrap_or_else(|| Error::Device("no attempt made".into())))
    }
}

impl Sealer for TpmSealer {
    fn seal(&self, ctx: &SealContext, shard: &[u8]) -> Result<Vec<u8>, Error> {
        check_shard_len(shard)?;
        let kind = Kind::for_len(shard.len());
        let version = self.lock().keys.current;
        let header = BlobHeader::new(Mechanism::TpmSeal, version, self.device_id, ctx);
        let header_bytes = header.encode();
        let mut salt = [0u8; body::SALT_LEN];
        os_random(&mut salt)?;
        let auth = body::auth_value(&header_bytes, kind, &salt);

        // The software part (envelope encryption) runs before taking the device.
        let (sealed, envelope) = match kind {
            Kind::Direct => (body::sealed_data(&header.context_digest, shard), None),
            Kind::Envelope => {
                let mut key = Zeroizing::new([0u8; body::DATA_KEY_LEN]);
                os_random(&mut key[..])?;
                let mut nonce = [0u8; body::NONCE_LEN];
                os_random(&mut nonce)?;
                let ct = body::envelope_encrypt(&key, &nonce, &header_bytes, shard)?;
                (
                    body::sealed_data(&header.context_digest, &key[..]),
                    Some((nonce, ct)),
                )
            }
        };

        let (public, private) = self.run(|conn, keys| conn.seal(keys, version, &auth, &sealed))?;

        let b = Body {
            kind,
            salt,
            public: &public,
            private: &private,
            envelope: envelope.as_ref().map(|(nonce, ct)| Envelope {
                nonce: *nonce,
                ciphertext: ct,
            }),
        };
        let ct_len = envelope.as_ref().map_or(0, |(_, ct)| ct.len());
        let mut blob = Vec::with_capacity(HEADER_LEN + 64 + public.len() + private.len() + ct_len);
        blob.extend_from_slice(&header_bytes);
        b.encode_into(&mut blob)?;
        Ok(blob)
    }

    fn unseal(&self, ctx: &SealContext, blob: &[u8]) -> Result<Zeroizing<Vec<u8>>, Error> {
        let (header, rest) = BlobHeader::decode(blob)?;
        header.check(&self.device_id, ctx)?;
        if header.mechanism != Mechanism::TpmSeal {
            // Our device id with another mechanism: the header was altered.
            return Err(Error::Integrity);
        }
        let b = Body::decode(rest)?;
        // The TSS parses the public area; it must also be its canonical encoding,
        // so the bytes the TPM hashes into the Name are exactly the blob's bytes.
        let public = Public::unmarshall(b.public).map_err(|_| Error::Integrity)?;
        if public.marshall().map_err(|_| Error::Integrity)? != b.public {
            return Err(Error::Integrity);
        }
        let private = Private::try_from(b.private).map_err(|_| Error::Integrity)?;
        let header_bytes = header.encode();
        let auth = body::auth_value(&header_bytes, b.kind, &b.salt);
        let version = header.key_version;

        let data = {
            let mut st = self.lock();
            if version == 0 || version > device::MAX_VERSIONS {
                return Err(Error::UnknownKeyVersion(version));
            }
            if version > st.keys.current {
                // Another process (an operator's rotate) may have added versions
                // since this sealer opened: look again before refusing.
                let current = st.run(&self.tcti, self.parameter_encryption, |conn, keys| {
                    conn.find_current(keys)
                })?;
                st.keys.current = st.keys.current.max(current);
                if version > st.keys.current {
                    return Err(Error::UnknownKeyVersion(version));
                }
            }
            st.run(&self.tcti, self.parameter_encryption, |conn, keys| {
                conn.unseal(keys, version, &public, &private, &auth)
            })?
        };

        let payload = body::open_sealed_data(&data, &header.context_digest, b.kind)?;
        match (b.kind, b.envelope) {
            (Kind::Direct, None) => Ok(Zeroizing::new(payload.to_vec())),
            (Kind::Envelope, Some(env)) => {
                body::envelope_decrypt(payload, &env.nonce, &header_bytes, env.ciphertext)
            }
            _ => Err(Error::Malformed("TPM body kind and envelope disagree")),
        }
    }

    fn provision(&self) -> Result<DeviceInfo, Error> {
        let (current, base) = {
            let mut st = self.lock();
            st.run(&self.tcti, self.parameter_encryption, |conn, keys| {
                for v in 1..=keys.current {
                    if !conn.has_persistent(keys, v)? {
                        conn.primary(keys, v)?;
                    }
                }
                Ok(())
            })?;
            (st.keys.current, st.keys.base)
        };
        Ok(self.info(current, base))
    }

    fn describe(&self) -> Result<DeviceInfo, Error> {
        let st = self.lock();
        Ok(self.info(st.keys.current, st.keys.base))
    }

    fn health(&self) -> Result<(), Error> {
        self.run(|conn, keys| {
            // Re-reads the current primary from the TPM (re-creating it if it was
            // evicted), which also proves the device answers.
            let v = keys.current;
            if !conn.has_persistent(keys, v)? {
                conn.primary(keys, v)?;
            }
            Ok(())
        })
    }

    fn rotate(&self) -> Result<u32, Error> {
        let mut st = self.lock();
        let next = st.keys.current + 1;
        if st.keys.handle(next).is_err() {
            return Err(Error::Unsupported(format!(
                "key version {next}: no persistent handle left above the profile's primary_handle"
            )));
        }
        st.run(&self.tcti, self.parameter_encryption, |conn, keys| {
            conn.primary(keys, next).map(|_| ())
        })?;
        st.keys.current = next;
        tracing::info!(key_version = next, "TPM sealing key rotated");
        Ok(next)
    }
}
