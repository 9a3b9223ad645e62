//! Scheduled share checks: every `checks.interval_seconds`, the enroller walks every
//! enrollment and asks each custodian its manifest names to check its share against the
//! manifest's commitment (`POST /v1/shards/{id}/verify`). A custodian answers a verdict,
//! never the share. Each bad verdict and each custodian that did not answer is a warning
//! naming the secret and the custodian; each pass ends with one summary line. The
//! custodians count every verdict in their metrics.

use std::time::Duration;

use shard::{SecretId, SignedManifest};

use crate::routes::Shared;

/// Manifests read from the database at a time.
const PAGE: u32 = 256;

/// What one pass found.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pass {
    /// Secrets checked.
    pub secrets: u64,
    /// Shares that checked.
    pub ok: u64,
    /// Shares that did not.
    pub bad: u64,
    /// Custodians that did not answer (or are no longer configured).
    pub unanswered: u64,
}

/// Runs a pass every `every`, forever.
pub async fn run(state: Shared, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.tick().await; // the first tick is immediate: start one interval after startup
    loop {
        tick.tick().await;
        let pass = pass(&state).await;
        tracing::info!(
            secrets = pass.secrets,
            ok = pass.ok,
            bad = pass.bad,
            unanswered = pass.unanswered,
            "scheduled share checks done"
        );
    }
}

/// One pass over every enrollment, one secret at a time (its custodians at once).
pub async fn pass(state: &Shared) -> Pass {
    let mut pass = Pass::default();
    let mut after: Option<[u8; 16]> = None;
    loop {
        let db = state.db.clone();
        let from = after;
        let page = tokio::task::spawn_blocking(move || db.manifests_after(from.as_ref(), PAGE))
            .await
            .ok()
            .and_then(Result::ok);
        let Some(page) = page else {
            tracing::error!("scheduled share checks: cannot read the enrollments");
            return pass;
        };
        let Some((last, _)) = page.last() else {
            return pass;
        };
        after = Some(*last);
        for (id, encoded) in page {
            let id = SecretId::from_bytes(id);
            match SignedManifest::decode(&encoded) {
                Ok(signed) => check_one(state, &signed, &mut pass).await,
                Err(e) => {
                    tracing::error!(secret_id = %id, error = %e, "scheduled share checks: a stored manifest does not decode")
                }
            }
        }
    }
}

async fn check_one(state: &Shared, signed: &SignedManifest, pass: &mut Pass) {
    let manifest = signed.unverified();
    pass.secrets += 1;
    let asks = manifest.custodians.iter().zip(&manifest.commitments).map(
        |(name, commitment)| async move {
            let client = state.known.iter().find(|k| &k.name == name);
            let Some(crate::set::Known { client, .. }) = client else {
                return (name, Err("not configured".to_owned()));
            };
            let answer = client
                .verify(&manifest.secret_id, Some(manifest.epoch), &commitment.0)
                .await;
            (name, answer.map_err(|e| e.to_string()))
        },
    );
    for (name, answer) in futures_util::future::join_all(asks).await {
        let secret_id = manifest.secret_id;
        match answer {
            Ok(v) if v.verdict == "ok" => pass.ok += 1,
            Ok(v) => {
                pass.bad += 1;
                tracing::warn!(%secret_id, custodian = %name, epoch = manifest.epoch, reason = v.reason.as_deref().unwrap_or(""), "scheduled share check: bad share");
            }
            Err(e) => {
                pass.unanswered += 1;
                tracing::warn!(%secret_id, custodian = %name, error = %e, "scheduled share check: no verdict");
            }
        }
    }
}
