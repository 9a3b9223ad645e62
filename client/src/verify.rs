//! `shardctl verify <secret-id>`: ask every custodian of the signed manifest to check its
//! share against the manifest's commitment for it, without the share leaving the
//! custodian, and report each one's verdict.

use std::time::{Duration, Instant};

use serde_json::json;
use shard::Manifest;

use crate::error::CliError;
use crate::net;
use crate::outcome::Outcome;
use crate::recover::{owned, secret_and_deadline, Owned};
use crate::{Ctx, Report};

/// `shardctl verify`.
pub fn verify(ctx: &Ctx, secret_id: &str, deadline_ms: u64) -> Result<Report, CliError> {
    let secret_id = secret_and_deadline(secret_id, deadline_ms)?;
    let Owned {
        config,
        login,
        tls,
        signed,
        mut report,
    } = owned(ctx, &secret_id)?;
    let deadline = Duration::from_millis(deadline_ms);
    let check = |manifest: &Manifest| {
        let started = Instant::now();
        let asks = manifest
        .custodians
        .iter()
        .zip(&manifest.commitments)
        .map(|(name, commitment)| {
            let client = config
                .custodian(name.as_str())
                .ok_or(())
                .and_then(|svc| net::client(svc, tls.clone(), deadline).map_err(|_| ()));
            let login = &login;
            let config = &config;
            async move {
                let client = match client {
                    Ok(c) => c,
                    Err(()) => {
                        return Outcome {
                            name: name.to_string(),
                            result: "not_configured",
                            detail: format!(
                                "not in your configuration, or its address does not resolve (see [[custodians]] in {})",
                                config.path.display()
                            ),
                            ms: None,
                        }
                    }
                };
                let answer = client
                    .verify(&manifest.secret_id, Some(manifest.epoch), &commitment.0)
                    .await;
                let ms = Some(started.elapsed().as_millis() as u64);
                let (result, detail) = match answer {
                    Ok(v) if v.verdict == "ok" => ("ok", String::new()),
                    Ok(v) => (
                        "bad",
                        format!(
                            "its share does not check ({})",
                            v.reason.as_deref().unwrap_or("no reason given")
                        ),
                    ),
                    Err(e) => net::classify(&e, login, crate::reasons::release_refused),
                };
                Outcome {
                    name: name.to_string(),
                    result,
                    detail,
                    ms,
                }
            }
        });
        ctx.block_on(futures_util::future::join_all(asks))
    };
    let mut signed = signed;
    let mut outcomes: Vec<Outcome> = check(signed.unverified())?;
    // Not every share checks at the cached manifest's epoch: a refresh may have moved the
    // secret on since. Once more with the enroller's manifest, if it is newer.
    if outcomes.iter().any(|o| o.result != "ok") {
        if let Some(newer) =
            crate::recover::newer_manifest(ctx, &config, &login, &tls, signed.unverified())
        {
            signed = newer;
            outcomes = check(signed.unverified())?;
        }
    }
    let manifest = signed.unverified();
    let ok = outcomes.iter().filter(|o| o.result == "ok").count();
    let n = outcomes.len();
    if outcomes.iter().any(|o| o.result == "expired") {
        return Err(login.expired_error());
    }
    if ok < n {
        return Err(CliError::NotVerified {
            secret_id: secret_id.to_string(),
            ok,
            outcomes,
        });
    }
    if ctx.json {
        let mut text = json!({
            "secret_id": secret_id.to_string(),
            "kind": manifest.kind.name(),
            "epoch": manifest.epoch,
            "threshold": manifest.threshold.t(),
            "ok": ok,
            "custodians": outcomes,
        })
        .to_string();
        text.push('\n');
        report.text = text;
        return Ok(report);
    }
    let mut text = format!(
        "verified {secret_id}: every custodian's share checks against the signed manifest (epoch {}, {ok} of {n})\n",
        manifest.epoch
    );
    for o in &outcomes {
        text.push_str(&format!("  {}: share checks\n", o.name));
    }
    report.text = text;
    Ok(report)
}
