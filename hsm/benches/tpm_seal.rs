//! Seal and unseal rates of the TPM backend against a private swtpm, beside the raw
//! device rate measured in the same run: `TPM2_Load` + `TPM2_Unseal` +
//! `TPM2_FlushContext` of an already sealed object on an open ESAPI context with a
//! password session (the least any unseal of a sealed data object costs).
//!
//! `cargo bench -p hsm --bench tpm_seal --features testing`
//!
//! Raw and backend unseals are timed in alternating batches so that load from other
//! processes falls on both alike. The whole run takes about 20 seconds.

use std::hint::black_box;
use std::str::FromStr;
use std::time::{Duration, Instant};

use hsm::testing::swtpm::{Swtpm, PRIMARY_HANDLE};
use hsm::tpm::TpmSealer;
use hsm::{SealContext, Sealer};
use shard::SecretId;
use tss_esapi::attributes::ObjectAttributesBuilder;
use tss_esapi::handles::{KeyHandle, PersistentTpmHandle, TpmHandle};
use tss_esapi::interface_types::algorithm::{HashingAlgorithm, PublicAlgorithm};
use tss_esapi::interface_types::session_handles::AuthSession;
use tss_esapi::structures::{
    Auth, KeyedHashScheme, Private, Public, PublicBuilder, PublicKeyedHashParameters, SensitiveData,
};
use tss_esapi::tcti_ldr::TctiNameConf;
use tss_esapi::Context;

/// Time given to each measurement.
const BUDGET: Duration = Duration::from_millis(3000);
/// Calls per batch when two paths are timed in alternation.
const BATCH: u32 = 20;

/// Calls per second of `f`, over about [`BUDGET`].
fn rate(mut f: impl FnMut()) -> f64 {
    f(); // warm up caches and the connection
    let start = Instant::now();
    let mut n = 0u32;
    while start.elapsed() < BUDGET {
        f();
        n += 1;
    }
    f64::from(n) / start.elapsed().as_secs_f64()
}

/// Calls per second of `a` and of `b`, timed in alternating batches (order swapped
/// every batch) for about [`BUDGET`], so that load from other processes on the
/// machine falls on both alike.
fn paired(mut a: impl FnMut(), mut b: impl FnMut()) -> (f64, f64) {
    a();
    b();
    let (mut ta, mut tb) = (Duration::ZERO, Duration::ZERO);
    let mut n = 0u32;
    let start = Instant::now();
    while start.elapsed() < BUDGET {
        for turn in [n % 2 == 0, n % 2 != 0] {
            let t = Instant::now();
            for _ in 0..BATCH {
                if turn {
                    a()
                } else {
                    b()
                }
            }
            if turn {
                ta += t.elapsed();
            } else {
                tb += t.elapsed();
            }
        }
        n += 1;
    }
    let calls = f64::from(n * BATCH);
    (calls / ta.as_secs_f64(), calls / tb.as_secs_f64())
}

struct Raw {
    ctx: Context,
    parent: KeyHandle,
    public: Public,
    private: Private,
    auth: Auth,
}

impl Raw {
    /// Seals a 100-byte object under the sealer's persistent primary.
    fn new(tcti: &str) -> Raw {
        let mut ctx = Context::new(TctiNameConf::from_str(tcti).unwrap()).unwrap();
        let handle = PersistentTpmHandle::new(PRIMARY_HANDLE).unwrap();
        let parent = KeyHandle::from(
            ctx.tr_from_tpm_public(TpmHandle::Persistent(handle))
                .unwrap(),
        );
        let attributes = ObjectAttributesBuilder::new()
            .with_fixed_tpm(true)
            .with_fixed_parent(true)
            .with_user_with_auth(true)
            .with_no_da(true)
            .build()
            .unwrap();
        let template = PublicBuilder::new()
            .with_public_algorithm(PublicAlgorithm::KeyedHash)
            .with_name_hashing_algorithm(HashingAlgorithm::Sha256)
            .with_object_attributes(attributes)
            .with_keyed_hash_parameters(PublicKeyedHashParameters::new(KeyedHashScheme::Null))
            .with_keyed_hash_unique_identifier(Default::default())
            .build()
            .unwrap();
        let auth = Auth::try_from(vec![0x5a; 32]).unwrap();
        let data = SensitiveData::try_from(vec![7u8; 100]).unwrap();
        let created = ctx
            .execute_with_session(Some(AuthSession::Password), |c| {
                c.create(parent, template, Some(auth.clone()), Some(data), None, None)
            })
            .unwrap();
        ctx.set_sessions((Some(AuthSession::Password), None, None));
        Raw {
            ctx,
            parent,
            public: created.out_public,
            private: created.out_private,
            auth,
        }
    }

    fn unseal(&mut self) {
        let obj = self
            .ctx
            .load(self.parent, self.private.clone(), self.public.clone())
            .unwrap();
        self.ctx.tr_set_auth(obj.into(), self.auth.clone()).unwrap();
        let data = self.ctx.unseal(obj.into()).unwrap();
        self.ctx.flush_context(obj.into()).unwrap();
        black_box(data);
    }
}

fn main() {
    let tpm = Swtpm::start().expect("swtpm starts");
    let sealer = TpmSealer::open(&tpm.profile()).expect("sealer opens");
    sealer.provision().expect("provision");
    let mut p = tpm.profile();
    p.parameter_encryption = true;
    let encrypted = TpmSealer::open(&p).expect("sealer opens");
    let mut raw = Raw::new(&tpm.tcti());

    let ctx = SealContext {
        custodian_id: "bench".into(),
        secret_id: SecretId::from_bytes([1; 16]),
        index: 1,
        epoch: 1,
    };
    let small = vec![0x11u8; 100];
    let large = vec![0x22u8; 4096];
    let small_blob = sealer.seal(&ctx, &small).unwrap();
    let large_blob = sealer.seal(&ctx, &large).unwrap();

    // Raw and backend unseal rates, and a seal rate (which has no raw counterpart).
    let mut unseal_rates = |s: &TpmSealer, blob: &[u8]| {
        paired(
            || raw.unseal(),
            || {
                black_box(s.unseal(&ctx, blob).unwrap());
            },
        )
    };
    let seal_rate = |s: &TpmSealer, shard: &[u8]| {
        rate(|| {
            black_box(s.seal(&ctx, shard).unwrap());
        })
    };
    let (raw_a, unseal_small) = unseal_rates(&sealer, &small_blob);
    let (raw_b, unseal_large) = unseal_rates(&sealer, &large_blob);
    let seal_small = seal_rate(&sealer, &small);
    let seal_large = seal_rate(&sealer, &large);
    let (raw_c, unseal_enc) = unseal_rates(&encrypted, &small_blob);
    let seal_enc = seal_rate(&encrypted, &small);

    println!("TPM backend against swtpm {} (release build)", tpm.tcti());
    println!(
        "{:<40} {:>9} {:>9} {:>7}",
        "operation", "ops/s", "raw ops/s", "ratio"
    );
    let row = |name: &str, r: f64, raw: Option<f64>| match raw {
        Some(raw) => println!("{name:<40} {r:>9.0} {raw:>9.0} {:>6.1}%", 100.0 * r / raw),
        None => println!("{name:<40} {r:>9.0}"),
    };
    row("unseal 100 B (direct)", unseal_small, Some(raw_a));
    row("unseal 4 KiB (envelope)", unseal_large, Some(raw_b));
    row("seal 100 B (direct)", seal_small, None);
    row("seal 4 KiB (envelope)", seal_large, None);
    row(
        "unseal 100 B, parameter encryption",
        unseal_enc,
        Some(raw_c),
    );
    row("seal 100 B, parameter encryption", seal_enc, None);
    let ratio = (unseal_small / raw_a).min(unseal_large / raw_b);
    println!(
        "backend unseal / raw Load+Unseal+Flush = {:.1}% (target >= 80%): {}",
        100.0 * ratio,
        if ratio >= 0.8 { "met" } else { "NOT met" }
    );
}
