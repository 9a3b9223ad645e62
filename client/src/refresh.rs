//! `shardctl refresh <secret-id>`: a proactive refresh of a signing key by its custodians
//! (the enroller coordinates; each custodian deals a sharing of zero to the others over
//! the peer channel). Same key, new shares; shares of the old epoch stop combining with
//! the new ones. The new signed manifest is checked and cached.

use base64::Engine;
use serde_json::json;
use shard::{SecretId, SecretKind};
use wire::enroller::{Refresh, RefreshResponse};

use crate::error::CliError;
use crate::net::{self, Failure};
use crate::recover::{owned, Owned};
use crate::{manifests, Ctx, Report};

/// `shardctl refresh`.
pub fn refresh(ctx: &Ctx, secret_id: &str) -> Result<Report, CliError> {
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
    let request = Refresh {
        secret_id: secret_id.to_string(),
    };
    let answer: RefreshResponse =
        ctx.block_on(net::call(&client, &request))?
            .map_err(|f| match f {
                Failure::Refused {
                    reason: wire::Reason::NotFound,
                    ..
                } => CliError::UnknownSecret(secret_id.to_string()),
                Failure::Refused {
                    reason: wire::Reason::CustodiansFailed | wire::Reason::CustodiansDisagree,
                    custodians,
                    ..
                } => CliError::RefreshFailed {
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
    if after.kind != before.kind
        || after.epoch <= before.epoch
        || after.threshold != before.threshold
        || after.custodians != before.custodians
    {
        return Err(bad(
            "the refreshed manifest changes the key, the threshold or the custodians, or does not move the epoch forward",
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
            "complete": answer.complete,
        })
        .to_string();
        text.push('\n');
        report.text = text;
        return Ok(report);
    }
    let mut text = format!(
        "refreshed {secret_id}: epoch {from} -> {to}; the same key, new shares at every custodian; shares of epoch {from} no longer combine with them\n"
    );
    if !answer.complete {
        text.push_str(
            "  not every custodian has dropped the old epoch yet; the enroller finishes that on its own\n",
        );
    }
    report.text = text;
    Ok(report)
}
