//! Distribution of one secret's shards to its custodians: every deposit at once, each
//! retried on transport failures (a deposit is idempotent), and on any failure every
//! shard that may have landed taken back. No HTTP handler logic lives here.

use std::sync::Arc;
use std::time::Duration;

use certs::SpiffeId;
use mtls::{Client, Error};
use shard::{CustodianId, SecretId};
use wire::{CustodianFailure, Reason};
use zeroize::Zeroizing;

/// Deposits tried per custodian before its failure counts.
const ATTEMPTS: u32 = 3;

/// An enrollment that did not reach every custodian.
#[derive(Debug)]
pub struct Failed {
    /// The custodians whose deposit failed, each with its reason.
    pub failed: Vec<CustodianFailure>,
    /// Custodians whose deposit was acknowledged (their shards must be taken back).
    pub landed: Vec<CustodianId>,
    /// Set by [`take_back`] when a landed shard could not be deleted.
    pub cleanup_incomplete: bool,
}

/// The reason a custodian's failure is reported with.
pub fn failure_reason(e: &Error) -> Reason {
    match e {
        Error::Connect { .. } => Reason::Unreachable,
        Error::Handshake { .. } => Reason::TlsHandshakeFailed,
        Error::WrongPeer { .. } => Reason::WrongIdentity,
        Error::Timeout { .. } => Reason::Timeout,
        Error::Refused { body, .. } => body.reason,
        Error::Transport { .. } => Reason::ConnectionBroken,
        Error::Decode { .. } => Reason::InvalidAnswer,
    }
}

/// Whether a deposit is tried again: only when no answer came (the custodian may be
/// restarting). A refusal is final here, even a transient one: the whole enrollment
/// fails with a retryable reason and the user tries again.
fn no_answer(e: &Error) -> bool {
    matches!(
        e,
        Error::Connect { .. } | Error::Transport { .. } | Error::Timeout { .. }
    )
}

/// Runs `call` against every custodian at once, each tried again (up to [`ATTEMPTS`],
/// backing off) while no answer comes: every step it is used for is idempotent. Answers
/// each custodian's outcome, in custodian order.
pub async fn each<'a, T, F, Fut>(
    custodians: &'a [(CustodianId, Arc<Client>)],
    call: F,
) -> Vec<(&'a CustodianId, Result<T, Error>)>
where
    F: Fn(usize, &'a Client) -> Fut,
    Fut: std::future::Future<Output = Result<T, Error>>,
{
    let call = &call;
    futures_util::future::join_all(custodians.iter().enumerate().map(
        |(i, (name, client))| async move {
            let mut attempt = 0;
            loop {
                attempt += 1;
                match call(i, client).await {
                    Err(e) if no_answer(&e) && attempt < ATTEMPTS => {
                        tokio::time::sleep(Duration::from_millis(100 << (attempt - 1))).await;
                    }
                    outcome => return (name, outcome),
                }
            }
        },
    ))
    .await
}

/// The outcomes of [`each`] as a [`Failed`] when any custodian failed, else the answers
/// in custodian order.
pub fn all_or_failed<T>(outcomes: Vec<(&CustodianId, Result<T, Error>)>) -> Result<Vec<T>, Failed> {
    let mut failed = Vec::new();
    let mut landed = Vec::new();
    let mut answers = Vec::new();
    for (name, r) in outcomes {
        match r {
            Ok(answer) => {
                landed.push(name.clone());
                answers.push(answer);
            }
            Err(e) => failed.push(CustodianFailure {
                name: name.to_string(),
                reason: failure_reason(&e),
            }),
        }
    }
    if failed.is_empty() {
        Ok(answers)
    } else {
        Err(Failed {
            failed,
            landed,
            cleanup_incomplete: false,
        })
    }
}

/// Deposits the encoded envelope `envelopes[i]` (a shard's or a signing key's) at
/// `custodians[i]` for `owner`, all at once. `Ok` only when every custodian acknowledged.
pub async fn deposit_all(
    custodians: &[(CustodianId, Arc<Client>)],
    owner: &SpiffeId,
    envelopes: &[Zeroizing<Vec<u8>>],
) -> Result<(), Failed> {
    let owner = owner.to_string();
    let owner = owner.as_str();
    let outcomes = each(custodians, |i, client| async move {
        let encoded = envelopes.get(i).ok_or_else(|| Error::Decode {
            addr: client.addr(),
            reason: "no envelope for this custodian".into(),
        })?;
        client.deposit(owner, encoded).await
    })
    .await;
    all_or_failed(outcomes).map(drop)
}

/// Takes back every shard of a failed enrollment: asks every custodian, also those whose
/// deposit failed (an answer lost after the shard was stored counts as a failure too).
/// Deleting is idempotent; "not found" means nothing to take back. Sets
/// `failure.cleanup_incomplete` when a landed shard could not be deleted.
pub async fn take_back(
    custodians: &[(CustodianId, Arc<Client>)],
    owner: &SpiffeId,
    secret_id: SecretId,
    epoch: u32,
    failure: &mut Failed,
) {
    let deletions =
        futures_util::future::join_all(custodians.iter().map(|(name, client)| async move {
            (name, client.delete(&secret_id, Some(epoch)).await)
        }))
        .await;
    let mut cleanup_failed = 0usize;
    for (name, outcome) in deletions {
        match outcome {
            Ok(_) => {}
            Err(Error::Refused { status, .. }) if status == mtls::StatusCode::NOT_FOUND => {}
            Err(e) if failure.landed.contains(name) => {
                tracing::error!(custodian = %name, %secret_id, error = %e, "could not delete a shard of a failed enrollment");
                cleanup_failed += 1;
            }
            Err(e) => {
                tracing::warn!(custodian = %name, %secret_id, error = %e, "could not confirm that a failed deposit left nothing behind");
            }
        }
    }
    failure.cleanup_incomplete = cleanup_failed > 0;
    tracing::warn!(user = %owner, %secret_id, failed = ?failure.failed.iter().map(|f| (&f.name, f.reason.as_str())).collect::<Vec<_>>(), removed = failure.landed.len() - cleanup_failed, "enrollment failed");
}
