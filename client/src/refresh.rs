//! `shardctl refresh <secret-id>`: a proactive refresh of a signing key by its custodians
//! (the enroller coordinates; each custodian deals a sharing of zero to the others over
//! the peer channel). Same key, new shares; shares of the old epoch stop combining with
//! the new ones. The new signed manifest is checked and cached.
//!
//! `shardctl reshare <secret-id> --custodians c1,c2,c3,c5 --threshold T`: the same key
//! moved to another set of custodians or another threshold. A quorum of `t` current
//! custodians deal Lagrange-weighted sub-shares of their shares to the new ones; the key
//! is never rebuilt, and its group key does not change.

use base64::Engine;
use serde_json::json;
use shard::{SecretId, SecretKind};
use wire::enroller::{Refresh, RefreshResponse, Reshare};

use crate::error::CliError;
use crate::net::{self, Failure};
use crate::recover::{owned, Owned};
use crate::{manifests, Ctx, Report};

/// An epoch change `shardctl` asks for.
enum Change<'a> {
    Refresh,
    Reshare {
        custodians: &'a [String],
        threshold: u8,
    },
}

/// `shardctl refresh`.
pub fn refresh(ctx: &Ctx, secret_id: &str) -> Result<Report, CliError> {
    change(ctx, secret_id, Change::Refresh)
}

/// `shardctl reshare`.
pub fn reshare(
    ctx: &Ctx,
    secret_id: &str,
    custodians: &[String],
    threshold: u8,
) -> Result<Report, CliError> {
    change(
        ctx,
        secret_id,
        Change::Reshare {
            custodians,
            threshold,
        },
    )
}

fn change(ctx: &Ctx, secret_id: &str, change: Change<'_>) -> Result<Report, CliError> {
    let secret_id: SecretId = secret_id
        .parse()
        .map_err(|_| CliError::InvalidSecretId(secret_id.to_owned()))?;
    let Owned {
        config,
        login,
        signed: old,
        mut report,
        ..
    } = owned(ctx, &secret_id)?;
    let before = old.unverified();
    if !matches!(before.kind, SecretKind::Signing { .. }) {
        return Err(CliError::NotASigningKey {
            secret_id: secret_id.to_string(),
            kind: before.kind.name(),
        });
    }
    let (_, client) = crate::secrets::user_enroller(&config)?;
    let what = match change {
        Change::Refresh => "refresh",
        Change::Reshare { .. } => "reshare",
    };
    let call = async {
        match change {
            Change::Refresh => {
                let request = Refresh {
                    secret_id: secret_id.to_string(),
                };
                net::call(&client, &request).await
            }
            Change::Reshare {
                custodians,
                threshold,
            } => {
                let request = Reshare {
                    secret_id: secret_id.to_string(),
                    custodians: custodians.to_vec(),
                    threshold,
                };
                net::call(&client, &request).await
            }
        }
    };
    let answer: RefreshResponse = ctx.block_on(call)?.map_err(|f| match f {
        Failure::Refused {
            reason: wire::Reason::NotFound,
            ..
        } => CliError::UnknownSecret(secret_id.to_string()),
        Failure::Refused {
            reason:
                wire::Reason::CustodiansFailed
                | wire::Reason::CustodiansDisagree
                | wire::Reason::ReshareTooFewHolders,
            custodians,
            ..
        } => CliError::RefreshFailed {
            what,
            custodians: custodians
                .iter()
                .map(|c| (c.name.clone(), c.reason.to_string()))
                .collect(),
        },
        f => net::failure_error(&config, &config.enroller, Some(&login), f),
    })?;
    let bad = |why: &str| CliError::BadManifest {
        secret_id: secret_id.to_string(),
        why: why.to_owned(),
    };
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(answer.manifest.as_bytes())
        .map_err(|_| bad("the refreshed manifest is not base64"))?;
    let key = manifests::pinned_key(&config)?;
    let signed = manifests::verify(&key, &bytes, &secret_id, &login.id)?;
    let after = signed.unverified();
    let set_as_asked = match change {
        Change::Refresh => {
            after.threshold == before.threshold && after.custodians == before.custodians
        }
        Change::Reshare {
            custodians,
            threshold,
        } => {
            after.threshold.t() == threshold
                && after
                    .custodians
                    .iter()
                    .map(|c| c.as_str())
                    .eq(custodians.iter().map(|c| c.as_str()))
        }
    };
    if after.kind != before.kind || after.epoch <= before.epoch || !set_as_asked {
        return Err(bad(
            "the new manifest changes the key, names other custodians or another threshold than asked, or does not move the epoch forward",
        ));
    }
    manifests::store(&config, &signed)?;
    let (from, to) = (before.epoch, after.epoch);
    if ctx.json {
        let mut text = json!({
            "secret_id": secret_id.to_string(),
            "kind": after.kind.name(),
            "from_epoch": from,
            "epoch": to,
            "threshold": after.threshold.t(),
            "custodians": after.custodians.iter().map(|c| c.as_str()).collect::<Vec<_>>(),
            "complete": answer.complete,
        })
        .to_string();
        text.push('\n');
        report.text = text;
        return Ok(report);
    }
    let mut text = match change {
        Change::Refresh => format!(
            "refreshed {secret_id}: epoch {from} -> {to}; the same key, new shares at every custodian; shares of epoch {from} no longer combine with them\n"
        ),
        Change::Reshare { .. } => format!(
            "reshared {secret_id}: epoch {from} -> {to}; the same key, now {} of {} at {}; shares of epoch {from} no longer combine with the new ones\n",
            after.threshold.t(),
            after.threshold.n(),
            after.custodians.iter().map(|c| c.as_str()).collect::<Vec<_>>().join(", "),
        ),
    };
    if !answer.complete {
        text.push_str(
            "  not every custodian has dropped the old epoch yet; the enroller finishes that on its own\n",
        );
    }
    report.text = text;
    Ok(report)
}
