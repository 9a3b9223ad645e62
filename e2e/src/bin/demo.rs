//! The demo behind the README's first command: a trust domain, four custodians (two
//! sealing with SoftHSM2, two with swtpm), a P-256 key split 3-of-4 and deposited,
//! one custodian stopped, the key recovered from the rest and proved by a signature.
//!
//! The enroller service (user login, token-backed key generation and manifest
//! signing) is not built yet: this demo plays the enroller's part in-process, with
//! the same core library, an enroller certificate and the same deposit API.

use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use e2e::{Backend, Bins, Cluster};
use p256::ecdsa::signature::{Signer, Verifier};
use p256::ecdsa::{Signature, SigningKey, VerifyingKey};
use shard::rand::rngs::SysRng;
use shard::rand::TryRng;
use shard::{
    combine_verified, CustodianId, Manifest, Returned, Secret, SecretId, SecretKind, Threshold,
};

fn say(step: &str) {
    println!("  - {step}");
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => {
            println!(
                "\ndemo finished: every step above succeeded; processes stopped and files removed."
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("\ndemo FAILED: {e}");
            ExitCode::FAILURE
        }
    }
}

fn os_random<const N: usize>() -> Result<[u8; N], String> {
    let mut b = [0u8; N];
    SysRng
        .try_fill_bytes(&mut b)
        .map_err(|e| format!("OS random generator: {e}"))?;
    Ok(b)
}

fn run() -> Result<(), String> {
    let started = Instant::now();
    println!("1. Start a cluster");
    let bins = Bins::locate()?;
    let cluster = Cluster::start(
        bins,
        &[
            Backend::SoftHsm,
            Backend::SoftHsm,
            Backend::Tpm,
            Backend::Tpm,
        ],
        &say,
    )?;
    for n in &cluster.nodes {
        say(&format!(
            "{} seals with {} (pid {})",
            n.name,
            n.backend,
            n.pid().unwrap_or(0)
        ));
    }

    println!("\n2. Enroll a P-256 key for alice, 3-of-4 (the enroller's part, played in-process)");
    let (ecert, ekey) = cluster.issue("enroller", "main")?;
    let enroller_tls = cluster.client_tls(&ecert, &ekey)?;
    let mut rng = shard::rng::mixed_rng(&os_random::<32>()?, &os_random::<32>()?);
    let user_key = loop {
        let mut b = zeroize::Zeroizing::new([0u8; 32]);
        shard::rand::Rng::fill_bytes(&mut rng, &mut *b);
        if let Ok(k) = p256::SecretKey::from_slice(&*b) {
            break k;
        }
    };
    let public = user_key.public_key();
    let mut scalar = user_key.to_bytes();
    let secret = Secret::from_slice(&scalar);
    zeroize::Zeroize::zeroize(&mut scalar[..]);
    let secret = secret.map_err(|e| e.to_string())?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(|e| e.to_string())?;
    let secret_id = SecretId::new_v7(now.as_millis() as u64, os_random::<10>()?);
    let threshold = Threshold::new(3, 4).map_err(|e| e.to_string())?;
    let envelopes = shard::deal(&secret, threshold, secret_id, 1, &mut rng);
    drop(secret);
    let manifest_key = SigningKey::from_slice(&os_random::<32>()?).map_err(|e| e.to_string())?;
    let custodians: Vec<CustodianId> = cluster
        .nodes
        .iter()
        .map(|n| CustodianId::new(&n.name))
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    let owner = format!("spiffe://{}/user/alice", e2e::TRUST_DOMAIN);
    let manifest = Manifest {
        secret_id,
        threshold,
        epoch: 1,
        created_at: now.as_secs(),
        owner: owner.clone(),
        kind: SecretKind::P256(public),
        custodians: custodians.clone(),
        commitments: shard::commitments(&envelopes),
    }
    .sign(&manifest_key)
    .map_err(|e| e.to_string())?;
    say(&format!(
        "secret {secret_id}: key generated, split into 4 shards, manifest signed"
    ));
    let rt = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
    let clients: Vec<_> = (0..4)
        .map(|i| cluster.client(i, enroller_tls.clone()))
        .collect::<Result<_, _>>()?;
    let deposits = rt.block_on(futures_util::future::join_all(
        clients.iter().zip(&envelopes).map(|(c, e)| {
            let enc = e.encode();
            let owner = owner.clone();
            async move { c.deposit(&owner, &enc).await }
        }),
    ));
    for (n, d) in cluster.nodes.iter().zip(&deposits) {
        match d {
            Ok(r) => say(&format!(
                "{}: shard {} sealed with key version {} and stored",
                n.name, r.index, r.key_version
            )),
            Err(e) => return Err(format!("deposit at {} failed: {e}", n.name)),
        }
    }
    drop(envelopes);
    let encoded_manifest = manifest.encode();
    say(&format!(
        "the enroller forgets the key; alice keeps the manifest ({} bytes) and the public key",
        encoded_manifest.len()
    ));

    println!("\n3. Lose a custodian");
    let mut cluster = cluster;
    let status = cluster.nodes[1].stop().map_err(|e| e.to_string())?;
    say(&format!(
        "c2 stopped with SIGTERM after draining ({})",
        status.map(|s| s.to_string()).unwrap_or_default()
    ));

    println!("\n4. Recover as alice from whoever answers");
    let (ucert, ukey) = cluster.issue("user", "alice")?;
    let user_tls = cluster.client_tls(&ucert, &ukey)?;
    let verified = shard::SignedManifest::decode(&encoded_manifest).map_err(|e| e.to_string())?;
    let manifest = verified
        .verify(&VerifyingKey::from(&manifest_key))
        .map_err(|e| e.to_string())?
        .clone();
    say("manifest signature verified");
    let clients: Vec<_> = (0..4)
        .map(|i| {
            cluster
                .client(i, user_tls.clone())
                .map(|c| c.with_deadline(Duration::from_secs(3)))
        })
        .collect::<Result<_, _>>()?;
    let t0 = Instant::now();
    let answers = rt.block_on(futures_util::future::join_all(
        clients
            .iter()
            .map(|c| async move { c.release(&secret_id, None).await }),
    ));
    let mut returned = Vec::new();
    for (n, a) in cluster.nodes.iter().zip(answers) {
        match a {
            Ok(r) => {
                say(&format!("{} released shard {}", n.name, r.index));
                returned.push(Returned {
                    custodian: CustodianId::new(&n.name).map_err(|e| e.to_string())?,
                    envelope: r.envelope,
                });
            }
            Err(e) => say(&format!("{} did not answer: {e}", n.name)),
        }
    }
    let recovered =
        combine_verified(&manifest, returned).map_err(|e| format!("recovery failed: {e}"))?;
    say(&format!(
        "{} shards verified against the manifest and combined in {:?}; used {}",
        recovered.used.len(),
        t0.elapsed(),
        recovered
            .used
            .iter()
            .map(|c| c.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    ));

    println!("\n5. Prove the recovered key");
    let key = SigningKey::from_slice(recovered.secret.expose()).map_err(|e| e.to_string())?;
    let message = format!("demo message for secret {secret_id}");
    let signature: Signature = key.sign(message.as_bytes());
    let shard::SecretKind::P256(enrolled) = manifest.kind else {
        return Err("manifest is not for a P-256 key".into());
    };
    VerifyingKey::from(enrolled)
        .verify(message.as_bytes(), &signature)
        .map_err(|_| {
            "the recovered key's signature does not verify with the enrolled public key".to_string()
        })?;
    say("signed a message with the recovered key; it verifies with the enrolled public key");

    println!("\n6. Check the custodians' audit logs");
    for n in &cluster.nodes {
        let out = n
            .run(&cluster.bins, &["audit", "verify"])
            .map_err(|e| e.to_string())?;
        say(&format!(
            "{}: {}",
            n.name,
            String::from_utf8_lossy(&out.stdout).trim()
        ));
        if !out.status.success() {
            return Err(format!("audit log of {} is broken", n.name));
        }
    }
    say(&format!("total {:.1} s", started.elapsed().as_secs_f64()));
    Ok(())
}
