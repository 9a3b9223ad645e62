//! Shard envelopes to deposit: a random secret dealt 3-of-4 under a fresh id.

use std::time::{SystemTime, UNIX_EPOCH};

use shard::rand::rngs::{StdRng, SysRng};
use shard::rand::{Rng, SeedableRng, TryRng};
use shard::{SecretId, ShardEnvelope, Threshold};

/// A random 32-byte seed from the operating system.
pub fn os_seed() -> [u8; 32] {
    let mut seed = [0u8; 32];
    SysRng.try_fill_bytes(&mut seed).expect("OS random");
    seed
}

/// `n` bytes from the operating system's generator.
pub fn random_bytes(n: usize) -> Vec<u8> {
    let mut b = vec![0u8; n];
    SysRng.try_fill_bytes(&mut b).expect("OS random");
    b
}

/// A fresh time-ordered secret id.
pub fn new_secret_id() -> SecretId {
    let millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64;
    let mut random = [0u8; 10];
    SysRng.try_fill_bytes(&mut random).expect("OS random");
    SecretId::new_v7(millis, random)
}

/// Deals a random secret of `secret_len` bytes 3-of-4 under a new id and returns the
/// envelope of shard `index` (1..=4).
pub fn dealt_envelope(secret_len: usize, epoch: u32, index: u8) -> ShardEnvelope {
    let mut rng = StdRng::from_seed(os_seed());
    let mut secret = vec![0u8; secret_len];
    rng.fill_bytes(&mut secret);
    let secret = shard::Secret::new(secret).expect("secret");
    let mut envs = shard::deal(
        &secret,
        Threshold::new(3, 4).expect("threshold"),
        new_secret_id(),
        epoch,
        &mut rng,
    );
    envs.swap_remove(usize::from(index) - 1)
}

/// The secret id of an envelope as the API prints it.
pub fn sid(env: &ShardEnvelope) -> String {
    env.secret_id.to_string()
}
