//! `shardctl recover <secret-id> --out F`: ask every custodian of the signed manifest at once,
//! check each shard against the manifest as it arrives, stop as soon as `t` verify, name every
//! custodian that did not help and why, and write the secret (mode 0600, never over a file).

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use futures_util::stream::{FuturesUnordered, StreamExt};
use mtls::{Client as CustodianClient, Error as ClientError};
use p256::pkcs8::{EncodePrivateKey, LineEnding};
use serde_json::json;
use shard::{Fault, Manifest, RecoverError, Returned, SecretId, SecretKind, SignedManifest};
use zeroize::Zeroizing;

use crate::config::Config;
use crate::error::CliError;
use crate::net::{self, Caller, Failure};
use crate::outcome::{Outcome, MAX_DEADLINE_MS};
use crate::session::Login;
use crate::{manifests, Ctx, Report};

/// `shardctl recover`.
pub fn recover(
    ctx: &Ctx,
    secret_id: &str,
    out: &Path,
    deadline_ms: u64,
    wait_all: bool,
) -> Result<Report, CliError> {
    let secret_id = secret_and_deadline(secret_id, deadline_ms)?;
    check_out(out)?;
    let Owned {
        config,
        login,
        tls,
        mut signed,
        mut report,
    } = owned(ctx, &secret_id)?;
    if let SecretKind::Signing { kind, .. } = &signed.unverified().kind {
        return Err(CliError::SigningKeyNotRecoverable {
            secret_id: secret_id.to_string(),
            kind,
        });
    }
    let deadline = Duration::from_millis(deadline_ms);

    let progress = !ctx.json && std::io::stderr().is_terminal();
    if progress {
        let _ = writeln!(
            std::io::stderr(),
            "asking {} custodians for shards of {secret_id} (any {} will do, {deadline_ms} ms each)",
            signed.unverified().threshold.n(),
            signed.unverified().threshold.t()
        );
    }
    let ask = |m: &Manifest| {
        ctx.block_on(gather(
            &config, m, &login, &tls, deadline, wait_all, progress,
        ))
    };
    let mut gathered = ask(signed.unverified())?;
    if gathered.1.len() < usize::from(signed.unverified().threshold.t()) {
        if let Some(newer) = newer_manifest(ctx, &config, &login, &tls, signed.unverified()) {
            signed = newer;
            gathered = ask(signed.unverified())?;
        }
    }
    let (outcomes, valid) = gathered;
    let manifest = signed.unverified();
    let t = usize::from(manifest.threshold.t());
    if valid.len() < t {
        if outcomes.iter().any(|o| o.result == "expired") {
            return Err(login.expired_error());
        }
        return Err(CliError::NotEnoughShards {
            secret_id: secret_id.to_string(),
            valid: valid.len(),
            needed: t,
            outcomes,
        });
    }
    let recovered = match shard::combine_verified(manifest, valid) {
        Ok(r) => r,
        Err(RecoverError::PublicKeyMismatch) => {
            return Err(CliError::KeyMismatch(secret_id.to_string()))
        }
        Err(e) => return Err(CliError::Combine(e.to_string())),
    };
    let (bytes, what) = match manifest.kind {
        SecretKind::P256(_) => {
            let key = p256::SecretKey::from_slice(recovered.secret.expose())
                .map_err(|_| CliError::KeyMismatch(secret_id.to_string()))?;
            let pem = key
                .to_pkcs8_pem(LineEnding::LF)
                .map_err(|e| CliError::Combine(e.to_string()))?;
            (
                Zeroizing::new(pem.as_bytes().to_vec()),
                "P-256 private key (PKCS#8 PEM)",
            )
        }
        _ => (
            Zeroizing::new(recovered.secret.expose().to_vec()),
            "secret (raw bytes)",
        ),
    };
    drop(recovered);
    certs::write_new_private(out, &bytes).map_err(|e| match e {
        certs::Error::FileExists(p) => CliError::OutExists(p),
        other => CliError::Write(other),
    })?;

    let used = outcomes.iter().filter(|o| o.result == "verified").count();
    if ctx.json {
        report.text = json_line(&json!({
            "secret_id": secret_id.to_string(),
            "kind": manifest.kind.name(),
            "out": out,
            "threshold": t,
            "custodians": outcomes,
        }));
        return Ok(report);
    }
    let mut text = format!(
        "recovered {secret_id}: {what} written to {} (mode 0600), from {used} of {} custodians\n",
        out.display(),
        manifest.threshold.n()
    );
    for o in &outcomes {
        text.push_str(&format!("  {}\n", o.line()));
    }
    report.text = text;
    Ok(report)
}

/// A secret id and a per-custodian deadline from the command line, checked.
pub(crate) fn secret_and_deadline(secret_id: &str, deadline_ms: u64) -> Result<SecretId, CliError> {
    if !(1..=MAX_DEADLINE_MS).contains(&deadline_ms) {
        return Err(CliError::InvalidDeadline(deadline_ms));
    }
    secret_id
        .parse()
        .map_err(|_| CliError::InvalidSecretId(secret_id.to_owned()))
}

/// What a command on one of the user's secrets starts with: the configuration, a fresh
/// login and its TLS configuration, and the secret's verified manifest.
pub(crate) struct Owned {
    pub config: Config,
    pub login: Login,
    pub tls: Arc<certs::rustls::ClientConfig>,
    pub signed: SignedManifest,
    /// Warnings met on the way (an ignored cached manifest).
    pub report: Report,
}

pub(crate) fn owned(ctx: &Ctx, secret_id: &SecretId) -> Result<Owned, CliError> {
    let config = ctx.config()?;
    let key = manifests::pinned_key(&config)?;
    let login = Login::load(&config)?;
    login.require_fresh()?;
    let tls = net::tls(&config, &Caller::User(&login))?;
    let mut report = Report::default();
    let signed = manifest(ctx, &config, &key, &login, &tls, secret_id, &mut report)?;
    Ok(Owned {
        config,
        login,
        tls,
        signed,
        report,
    })
}

/// Refuses an `--out` that exists or whose directory does not, before anything is asked
/// of a service; the final create-new write is what really guarantees it.
pub(crate) fn check_out(out: &Path) -> Result<(), CliError> {
    if out.symlink_metadata().is_ok() {
        return Err(CliError::OutExists(out.to_owned()));
    }
    match out.parent() {
        Some(dir) if !dir.as_os_str().is_empty() && !dir.is_dir() => {
            Err(CliError::NoOutDir(dir.to_owned()))
        }
        _ => Ok(()),
    }
}

fn json_line(v: &serde_json::Value) -> String {
    let mut s = v.to_string();
    s.push('\n');
    s
}

/// The verified manifest of `secret_id`: the cached copy, else the enroller's (cached then).
fn manifest(
    ctx: &Ctx,
    config: &Config,
    key: &p256::ecdsa::VerifyingKey,
    login: &Login,
    tls: &Arc<certs::rustls::ClientConfig>,
    secret_id: &SecretId,
    report: &mut Report,
) -> Result<SignedManifest, CliError> {
    if let Some(bytes) = manifests::cached(config, secret_id)? {
        match manifests::verify(key, &bytes, secret_id, &login.id) {
            Ok(signed) => return Ok(signed),
            Err(e @ CliError::NotOwner { .. }) => return Err(e),
            Err(e) => report.warnings.push(format!(
                "ignoring the cached manifest ({e}); fetching it from the enroller"
            )),
        }
    }
    from_enroller(ctx, config, key, login, tls, secret_id)
}

/// A manifest newer than `current` from the enroller (cached then), when the enroller
/// has one: a refresh moved the secret to the next epoch since `current` was cached. A
/// command that found too few shares or signers of `current`'s epoch tries once more
/// with it. `None` when the enroller cannot be asked or has nothing newer.
pub(crate) fn newer_manifest(
    ctx: &Ctx,
    config: &Config,
    login: &Login,
    tls: &Arc<certs::rustls::ClientConfig>,
    current: &Manifest,
) -> Option<SignedManifest> {
    let key = manifests::pinned_key(config).ok()?;
    let fetched = from_enroller(ctx, config, &key, login, tls, &current.secret_id).ok()?;
    (fetched.unverified().epoch > current.epoch).then_some(fetched)
}

/// The verified manifest of `secret_id` from the enroller, cached then.
fn from_enroller(
    ctx: &Ctx,
    config: &Config,
    key: &p256::ecdsa::VerifyingKey,
    login: &Login,
    tls: &Arc<certs::rustls::ClientConfig>,
    secret_id: &SecretId,
) -> Result<SignedManifest, CliError> {
    let client = net::client(&config.enroller, tls.clone(), net::ENROLLER_DEADLINE)?;
    let request = wire::enroller::Enrollment {
        secret_id: secret_id.to_string(),
    };
    let info: wire::enroller::EnrollmentInfo = ctx
        .block_on(net::call(&client, &request))?
        .map_err(|f| match f {
            Failure::Refused {
                reason: wire::Reason::NotFound,
                ..
            } => CliError::UnknownSecret(secret_id.to_string()),
            f => CliError::NoManifest {
                secret_id: secret_id.to_string(),
                why: net::failure_error(config, &config.enroller, Some(login), f).to_string(),
            },
        })?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(info.manifest.as_bytes())
        .map_err(|e| CliError::BadManifest {
            secret_id: secret_id.to_string(),
            why: format!("it is not base64 ({e})"),
        })?;
    let signed = manifests::verify(key, &bytes, secret_id, &login.id)?;
    manifests::store(config, &signed)?;
    Ok(signed)
}

/// Asks every custodian of `manifest` at once and returns each one's outcome (in manifest
/// order) and the verified shards, as soon as `t` have verified (unless `wait_all`) or every
/// answer is in.
async fn gather(
    config: &Config,
    manifest: &Manifest,
    login: &Login,
    tls: &Arc<certs::rustls::ClientConfig>,
    deadline: Duration,
    wait_all: bool,
    progress: bool,
) -> (Vec<Outcome>, Vec<Returned>) {
    let t = usize::from(manifest.threshold.t());
    let mut outcomes: Vec<Option<Outcome>> = vec![None; manifest.custodians.len()];
    let mut clients: Vec<(usize, CustodianClient)> = Vec::new();
    for (i, name) in manifest.custodians.iter().enumerate() {
        let client = match config.custodian(name.as_str()) {
            None => Err((
                "not_configured",
                format!(
                    "not in your configuration (add it under [[custodians]] in {})",
                    config.path.display()
                ),
            )),
            // A name that does not resolve (a stopped or cut-off container, say) is a
            // custodian we cannot reach; a malformed server_name is a configuration mistake.
            Some(svc) => net::client(svc, tls.clone(), deadline).map_err(|e| match e {
                CliError::Resolve { .. } => ("unreachable", e.to_string()),
                other => ("not_configured", other.to_string()),
            }),
        };
        match client {
            Ok(c) => clients.push((i, c)),
            Err((result, detail)) => {
                outcomes[i] = Some(Outcome {
                    name: name.to_string(),
                    result,
                    detail,
                    ms: None,
                })
            }
        }
    }
    let started = Instant::now();
    let mut pending: FuturesUnordered<_> = clients
        .iter()
        .map(|(i, client)| async move {
            let r = client
                .release(&manifest.secret_id, Some(manifest.epoch))
                .await;
            (*i, r, started.elapsed())
        })
        .collect();
    let mut valid: Vec<Returned> = Vec::new();
    while wait_all || valid.len() < t {
        let Some((i, result, took)) = pending.next().await else {
            break;
        };
        let name = manifest.custodians[i].clone();
        let ms = Some(took.as_millis() as u64);
        let outcome = match result {
            Ok(released) => {
                // The custodian is named by its verified TLS identity, not by the payload.
                let returned = Returned {
                    custodian: name.clone(),
                    envelope: released.envelope,
                };
                match check(manifest, &returned) {
                    Ok(()) => {
                        valid.push(returned);
                        Outcome {
                            name: name.to_string(),
                            result: "verified",
                            detail: String::new(),
                            ms,
                        }
                    }
                    Err(fault) => Outcome {
                        name: name.to_string(),
                        result: "bad_shard",
                        detail: format!("returned a bad shard: {fault}"),
                        ms,
                    },
                }
            }
            Err(e) => {
                let (result, detail) = classify(&e, login);
                Outcome {
                    name: name.to_string(),
                    result,
                    detail,
                    ms,
                }
            }
        };
        if progress {
            let _ = writeln!(
                std::io::stderr(),
                "  {:<12} {} ({} ms)",
                outcome.name,
                if outcome.result == "verified" {
                    "shard verified".to_owned()
                } else {
                    outcome.detail.clone()
                },
                took.as_millis()
            );
        }
        outcomes[i] = Some(outcome);
    }
    // Whoever has not answered yet is not waited for: `t` shards verified (or none could).
    drop(pending);
    let outcomes = outcomes
        .into_iter()
        .enumerate()
        .map(|(i, o)| {
            o.unwrap_or_else(|| Outcome {
                name: manifest.custodians[i].to_string(),
                result: "not_needed",
                detail: format!("not needed (no answer yet when {t} shards had verified)"),
                ms: None,
            })
        })
        .collect();
    (outcomes, valid)
}

/// Whether one returned shard is good, by the same rules `combine_verified` applies.
fn check(manifest: &Manifest, returned: &Returned) -> Result<(), Fault> {
    shard::check_returned(manifest, returned)
}

/// The result word and the reason for a custodian that gave no shard.
fn classify(e: &ClientError, login: &Login) -> (&'static str, String) {
    net::classify(e, login, crate::reasons::release_refused)
}

#[cfg(test)]
mod tests {
    use shard::{CustodianId, Secret, Threshold};

    use super::*;

    fn dealt() -> (Manifest, Vec<Returned>) {
        let threshold = Threshold::new(3, 4).unwrap();
        let id = SecretId::from_bytes([7; 16]);
        let mut rng = shard::rng::mixed_rng(&[1; 32], &[2; 32]);
        let secret = Secret::from_slice(b"opaque bytes").unwrap();
        let envelopes = shard::deal(&secret, threshold, id, 1, &mut rng);
        let custodians: Vec<CustodianId> = (1..=4)
            .map(|i| CustodianId::new(&format!("c{i}")).unwrap())
            .collect();
        let manifest = Manifest {
            secret_id: id,
            threshold,
            epoch: 1,
            created_at: 0,
            owner: "spiffe://demo.test/user/alice".into(),
            kind: SecretKind::Opaque,
            custodians: custodians.clone(),
            commitments: shard::commitments(&envelopes),
        };
        let returned = custodians
            .into_iter()
            .zip(&envelopes)
            .map(|(custodian, e)| Returned {
                custodian,
                envelope: e.encode(),
            })
            .collect();
        (manifest, returned)
    }

    #[test]
    fn check_accepts_good_shards_and_names_the_fault_of_bad_ones() {
        let (manifest, mut returned) = dealt();
        for r in &returned {
            assert_eq!(check(&manifest, r), Ok(()));
        }
        // A flipped share byte: the commitment no longer matches.
        let last = returned[0].envelope.len() - 1;
        returned[0].envelope[last] ^= 1;
        assert_eq!(
            check(&manifest, &returned[0]),
            Err(Fault::CommitmentMismatch)
        );
        // c2 hands over c3's shard.
        let swapped = Returned {
            custodian: returned[1].custodian.clone(),
            envelope: returned[2].envelope.clone(),
        };
        assert_eq!(
            check(&manifest, &swapped),
            Err(Fault::WrongIndex {
                expected: 2,
                got: 3
            })
        );
        // A stranger.
        let stranger = Returned {
            custodian: CustodianId::new("c9").unwrap(),
            envelope: returned[3].envelope.clone(),
        };
        assert_eq!(check(&manifest, &stranger), Err(Fault::NotInManifest));
    }

    #[test]
    fn not_enough_shards_is_one_line_naming_each_missing_custodian() {
        let outcome = |name: &str, result: &'static str, detail: &str| Outcome {
            name: name.into(),
            result,
            detail: detail.into(),
            ms: None,
        };
        let e = CliError::NotEnoughShards {
            secret_id: "0190".into(),
            valid: 2,
            needed: 3,
            outcomes: vec![
                outcome("c1", "verified", ""),
                outcome("c2", "timeout", "did not answer within 3000 ms"),
                outcome("c3", "bad_shard", "returned a bad shard: x"),
                outcome("c4", "verified", ""),
            ],
        };
        let text = e.to_string();
        assert!(
            text.starts_with("2 of 3 shards verified for 0190"),
            "{text}"
        );
        assert!(text.contains("c2: did not answer within 3000 ms; c3: returned a bad shard"));
        assert!(!text.contains("c1") && !text.contains('\n'), "{text}");
        let json = e.json();
        assert_eq!(json["error"], "not_enough_shards");
        assert_eq!(json["custodians"][1]["result"], "timeout");
    }
}
