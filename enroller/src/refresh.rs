//! Proactive refresh of a threshold-signing key: epoch `e` to `e + 1`, same key, same `t`
//! and `n`, new key packages at every custodian, and old ones that no longer combine.
//!
//! Two-phase, with a durable job row (`users::Job`) so that a crash of any process at any
//! step ends at one epoch:
//!
//! 1. `prepare`: the job row is written; the custodians run the refresh (a DKG of zero:
//!    the enroller relays public round-1 packages, the sharings travel over the peer
//!    channel) and each stores its new key package as a *pending* row of `e + 1`.
//! 2. The turning point: the manifest of `e + 1` is signed and stored with the job's step
//!    `commit`, in one transaction. Before it, `e` is the only epoch in force and a
//!    failure (or a restart) aborts: every pending row of `e + 1` is deleted. After it,
//!    `e + 1` is in force (a custodian answers a pending row when asked for its epoch)
//!    and the job only goes forward:
//! 3. `commit`: every custodian makes `e + 1` its current row;
//! 4. then every custodian deletes `e`, and the job row goes.
//!
//! Clients take `t` shares of the epoch their signed manifest names, never a mix.

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::Duration;

use base64::Engine;
use mtls::{Error, StatusCode};
use shard::{Manifest, SecretId, SecretKind, SignedManifest};
use wire::enroller::RefreshResponse;
use wire::Reason;

use crate::distribute::{all_or_failed, each, Failed};
use crate::routes::{ApiError, Shared};
use crate::users::Job;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// Keys the scheduled refresh refreshes at once: enough to overlap one key's device and
/// network waits with another's computation, few enough to leave the custodians room.
pub const PASS_AT_ONCE: usize = 4;

/// The jobs this process is running now. A job row whose id is here is under way, not
/// left over from a crash: the re-driver and a second refresh of the same key leave it
/// alone. (At startup the set is empty, so every job row found is a crashed one.)
static IN_FLIGHT: Mutex<BTreeSet<[u8; 16]>> = Mutex::new(BTreeSet::new());

/// Marks a job as run by this process until dropped; `None` when it already is.
pub(crate) struct Running([u8; 16]);

impl Running {
    pub(crate) fn claim(id: [u8; 16]) -> Option<Running> {
        let mut set = IN_FLIGHT.lock().unwrap_or_else(|e| e.into_inner());
        // Lazily: a `Running` made and dropped here would unlock what it never held.
        let claimed = set.insert(id);
        drop(set);
        claimed.then(|| Running(id))
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        IN_FLIGHT
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.0);
    }
}

/// How often unfinished jobs are driven again (and once at startup).
pub const REDRIVE_EVERY: Duration = Duration::from_secs(10);

pub(crate) async fn db<T: Send + 'static>(
    s: &Shared,
    f: impl FnOnce(&crate::users::Db) -> Result<T, crate::users::DbError> + Send + 'static,
) -> Result<T, ApiError> {
    let db = s.db.clone();
    tokio::task::spawn_blocking(move || f(&db))
        .await
        .map_err(|e| crate::routes::internal(Reason::Worker, e))?
        .map_err(|e| crate::routes::internal(Reason::Database, e))
}

/// Refreshes `owner`'s key `secret_id` (any owner's when `None`: the scheduled
/// refresh); answers once the manifest of the new epoch is in force (and says whether
/// every custodian has committed it and dropped the old one).
pub async fn refresh(
    s: &Shared,
    owner: Option<&certs::SpiffeId>,
    secret_id: SecretId,
) -> Result<RefreshResponse, ApiError> {
    let id = *secret_id.as_bytes();
    let row = db(s, move |d| d.enrollment(&id)).await?;
    let Some(row) = row.filter(|r| owner.is_none_or(|o| r.owner == o.to_string())) else {
        return Err(ApiError::new(StatusCode::NOT_FOUND, Reason::NotFound));
    };
    let signed = SignedManifest::decode(&row.manifest)
        .map_err(|e| crate::routes::internal(Reason::ManifestSigning, e))?;
    let manifest = signed.unverified().clone();
    let SecretKind::Signing { kind, group_key } = &manifest.kind else {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            Reason::RefreshNotForKind,
        ));
    };
    let kind: threshold::Kind = kind
        .parse()
        .map_err(|_| ApiError::new(StatusCode::CONFLICT, Reason::RefreshNotForKind))?;
    // The custodians the manifest names, wherever a reshare moved the key.
    let set = crate::set::resolve(&s.known, &manifest.custodians).map_err(|name| {
        tracing::warn!(%secret_id, custodian = %name, "refresh: a custodian of the manifest is not configured");
        ApiError::new(StatusCode::CONFLICT, Reason::CustodianSetChanged)
    })?;
    // One refresh of a key at a time in this process; another one under way is not
    // touched. An unfinished job left by a crash is finished (or aborted) first.
    let Some(running) = Running::claim(id) else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            Reason::RefreshInProgress,
        ));
    };
    if let Some(job) = db(s, move |d| d.job(&id)).await? {
        drive(s, &job).await;
        drop(running);
        if db(s, move |d| d.job(&id)).await?.is_some() {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                Reason::RefreshInProgress,
            ));
        }
        return refresh_again(s, owner, secret_id).await;
    }
    let from = manifest.epoch;
    let to = from
        .checked_add(1)
        .ok_or_else(|| ApiError::new(StatusCode::CONFLICT, Reason::RefreshNotForKind))?;
    let job = Job {
        secret_id: id,
        kind: "refresh".into(),
        from_epoch: from,
        to_epoch: to,
        step: "prepare".into(),
        old: set.names(),
        new: set.names(),
    };
    let begun = job.clone();
    if !db(s, move |d| d.begin_job(&begun)).await? {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            Reason::RefreshInProgress,
        ));
    }
    #[cfg(feature = "fault-injection")]
    crate::fault::at("refresh-after-begin");
    let prepared = prepare(s, &set, &manifest, kind, group_key, to).await;
    let next = match prepared {
        Ok(next) => next,
        Err(e) => {
            abort(s, &job).await;
            return Err(e);
        }
    };
    turn(s, job, next).await
}

/// A job's turning point and what follows it: the new manifest stored with the job's
/// step `commit` in one transaction, then the commit driven as far as it goes now.
/// Answers the new epoch and manifest, and whether the job is done.
pub(crate) async fn turn(
    s: &Shared,
    job: Job,
    next: SignedManifest,
) -> Result<RefreshResponse, ApiError> {
    #[cfg(feature = "fault-injection")]
    crate::fault::at(&format!("{}-before-manifest", job.kind));
    let (id, from, to) = (job.secret_id, job.from_epoch, job.to_epoch);
    let encoded = next.encode();
    let stored = encoded.clone();
    db(s, move |d| d.advance_job(&id, to, &stored)).await?;
    let secret_id = SecretId::from_bytes(id);
    tracing::info!(%secret_id, from, to, job = %job.kind, custodians = ?job.new, "the new epoch is in force");
    #[cfg(feature = "fault-injection")]
    crate::fault::at(&format!("{}-after-manifest", job.kind));
    let committed = Job {
        step: "commit".into(),
        ..job
    };
    let complete = drive(s, &committed).await;
    Ok(RefreshResponse {
        secret_id: secret_id.to_string(),
        epoch: to,
        manifest: B64.encode(&encoded),
        complete,
    })
}

/// A refresh started over once an unfinished job was cleared.
fn refresh_again<'a>(
    s: &'a Shared,
    owner: Option<&'a certs::SpiffeId>,
    secret_id: SecretId,
) -> std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<RefreshResponse, ApiError>> + Send + 'a>,
> {
    Box::pin(refresh(s, owner, secret_id))
}

/// Step 1 and the new manifest: the custodians' refresh, checked (same group key, every
/// custodian agreeing), and the manifest of `to` signed by the token.
async fn prepare(
    s: &Shared,
    set: &crate::set::Set,
    manifest: &Manifest,
    kind: threshold::Kind,
    group_key: &[u8],
    to: u32,
) -> Result<SignedManifest, ApiError> {
    let key = crate::dkg::KeyRun {
        owner: &manifest.owner,
        kind,
        threshold: manifest.threshold,
        secret_id: manifest.secret_id,
        epoch: to,
        refreshes: Some(manifest.epoch),
    };
    let ran = crate::dkg::run(&set.clients, &set.peers, &key).await;
    let public = match ran {
        Ok(public) if public.group_key().as_bytes() == group_key => public,
        Ok(_) | Err(crate::dkg::DkgFailed::Disagree) => {
            return Err(ApiError::new(
                StatusCode::BAD_GATEWAY,
                Reason::CustodiansDisagree,
            ))
        }
        Err(crate::dkg::DkgFailed::Custodians(failure)) => {
            let mut e = ApiError::new(StatusCode::BAD_GATEWAY, Reason::CustodiansFailed);
            e.custodians = Some(failure.failed);
            return Err(e);
        }
    };
    let commitments = public
        .holder_digests()
        .map_err(|e| crate::routes::internal(Reason::Secret, e))?
        .into_iter()
        .map(shard::Commitment)
        .collect();
    let next = Manifest {
        epoch: to,
        created_at: crate::routes::now() as u64,
        commitments,
        ..manifest.clone()
    };
    sign(s, next).await
}

/// The manifest signed by the token.
pub(crate) async fn sign(s: &Shared, next: Manifest) -> Result<SignedManifest, ApiError> {
    let token = s.token.clone();
    tokio::task::spawn_blocking(move || next.sign(&*token))
        .await
        .map_err(|e| crate::routes::internal(Reason::Worker, e))?
        .map_err(|e| crate::routes::internal(Reason::ManifestSigning, e))
}

/// An enrollment under way, covered by a job row (`enroll`) from before anything is
/// sent to a custodian until its enrollment row is stored. Left by a crash, the job is
/// driven like a refresh's `prepare`: whatever landed is taken back.
pub struct Enrolling {
    secret_id: [u8; 16],
    epoch: u32,
    custodians: Vec<String>,
    _running: Running,
}

impl Enrolling {
    /// Writes the job row (durably) and claims it for this process.
    pub async fn begin(s: &Shared, secret_id: SecretId, epoch: u32) -> Result<Enrolling, ApiError> {
        let id = *secret_id.as_bytes();
        let running = Running::claim(id).ok_or_else(|| {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, Reason::RefreshInProgress)
        })?;
        let custodians: Vec<String> = s.custodians.iter().map(|(c, _)| c.to_string()).collect();
        let job = Job {
            secret_id: id,
            kind: "enroll".into(),
            from_epoch: 0,
            to_epoch: epoch,
            step: "prepare".into(),
            old: Vec::new(),
            new: custodians.clone(),
        };
        if !db(s, move |d| d.begin_job(&job)).await? {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                Reason::RefreshInProgress,
            ));
        }
        Ok(Enrolling {
            secret_id: id,
            epoch,
            custodians,
            _running: running,
        })
    }

    /// Ends the job: it is done when the enrollment was stored; otherwise everything that
    /// may have landed is taken back, in the background so that the failure is answered
    /// at once (the job stays for the re-driver if a custodian cannot confirm).
    pub async fn settle(self, s: &Shared, stored: bool) {
        let id = self.secret_id;
        if stored {
            let _ = db(s, move |d| d.end_job(&id)).await;
            return;
        }
        let job = Job {
            secret_id: id,
            kind: "enroll".into(),
            from_epoch: 0,
            to_epoch: self.epoch,
            step: "prepare".into(),
            old: Vec::new(),
            new: self.custodians.clone(),
        };
        let s = s.clone();
        tokio::spawn(async move {
            // The claim goes with the task: the re-driver leaves the job to it meanwhile.
            let _still_running = self;
            drive(&s, &job).await;
        });
    }
}

/// Drives `job` as far as it goes now: a `prepare` job is aborted, a `commit` job is
/// committed everywhere and the old epoch deleted; an `enroll` job whose enrollment is
/// stored is done, one whose enrollment is not is taken back everywhere. Answers whether
/// the job is done.
pub async fn drive(s: &Shared, job: &Job) -> bool {
    if job.kind == "enroll" {
        let id = job.secret_id;
        if matches!(db(s, move |d| d.enrollment(&id)).await, Ok(Some(_))) {
            return db(s, move |d| d.end_job(&id)).await.is_ok();
        }
        return abort(s, job).await;
    }
    if job.step != "commit" {
        return abort(s, job).await;
    }
    let id = SecretId::from_bytes(job.secret_id);
    let (to, from) = (job.to_epoch, job.from_epoch);
    let (new, all) = sets(s, job);
    let committed = each(&new, |_, c| c.commit_epoch(&id, to)).await;
    if let Err(failed) = all_or_failed(committed) {
        log_unfinished(job, "commit", &id, &failed);
        return false;
    }
    let deleted = each(&all, |_, c| gone(c.delete(&id, Some(from)))).await;
    if let Err(failed) = all_or_failed(deleted) {
        log_unfinished(job, "delete the old epoch", &id, &failed);
        return false;
    }
    let secret = job.secret_id;
    match db(s, move |d| d.end_job(&secret)).await {
        Ok(()) => {
            tracing::info!(secret_id = %id, epoch = to, job = %job.kind, "epoch change complete: every custodian holds the new epoch only");
            true
        }
        Err(_) => false,
    }
}

type Clients = Vec<(shard::CustodianId, std::sync::Arc<mtls::Client>)>;

/// A job's custodians: those making the new epoch, and every one involved (the old
/// holders too). A job written before the sets were kept involves the enroller's own.
fn sets(s: &Shared, job: &Job) -> (Clients, Clients) {
    if job.old.is_empty() && job.new.is_empty() {
        return (s.custodians.clone(), s.custodians.clone());
    }
    let all: Vec<&String> = job.new.iter().chain(&job.old).collect();
    (
        crate::set::reachable(&s.known, &job.new),
        crate::set::reachable(&s.known, &all),
    )
}

/// Aborts a job before its turning point: every custodian drops its pending row of the
/// new epoch and any refresh state. Answers whether every custodian confirmed.
pub(crate) async fn abort(s: &Shared, job: &Job) -> bool {
    let id = SecretId::from_bytes(job.secret_id);
    let to = job.to_epoch;
    let (_, all) = sets(s, job);
    let deleted = each(&all, |_, c| gone(c.delete(&id, Some(to)))).await;
    if let Err(failed) = all_or_failed(deleted) {
        log_unfinished(job, "abort", &id, &failed);
        return false;
    }
    let secret = job.secret_id;
    let ended = db(s, move |d| d.end_job(&secret)).await.is_ok();
    if job.kind == "enroll" {
        tracing::warn!(secret_id = %id, "enrollment not finished: whatever landed at the custodians is taken back");
    } else {
        tracing::warn!(secret_id = %id, epoch = job.from_epoch, job = %job.kind, "epoch change aborted: the old epoch stays in force");
    }
    ended
}

/// A deletion that found nothing counts as done.
async fn gone<T>(
    deletion: impl std::future::Future<Output = Result<T, Error>>,
) -> Result<(), Error> {
    match deletion.await {
        Ok(_) => Ok(()),
        Err(Error::Refused { status, .. }) if status == StatusCode::NOT_FOUND => Ok(()),
        Err(e) => Err(e),
    }
}

fn log_unfinished(job: &Job, what: &str, id: &SecretId, failed: &Failed) {
    let names: Vec<_> = failed
        .failed
        .iter()
        .map(|f| format!("{}: {}", f.name, f.reason))
        .collect();
    tracing::warn!(secret_id = %id, custodians = ?names, job = %job.kind, "could not {what} everywhere yet; it is driven again");
}

/// The scheduled refresh: every `every`, each threshold-signing key is refreshed,
/// [`PASS_AT_ONCE`] at a time, so that the custodians' other work goes on. A key whose refresh fails
/// stays at its epoch and is tried again at the next pass; each pass ends with one
/// summary line.
pub async fn scheduled(s: Shared, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.tick().await; // the first tick is immediate: start one interval after startup
    loop {
        tick.tick().await;
        let (done, failed) = pass(&s).await;
        tracing::info!(refreshed = done, failed, "scheduled refresh done");
    }
}

/// One pass of the scheduled refresh: answers how many keys were refreshed and failed.
pub async fn pass(s: &Shared) -> (u64, u64) {
    let (mut done, mut failed) = (0, 0);
    let mut after: Option<[u8; 16]> = None;
    loop {
        let from = after;
        let Ok(page) = db(s, move |d| d.manifests_after(from.as_ref(), 256)).await else {
            return (done, failed);
        };
        let Some((last, _)) = page.last() else {
            return (done, failed);
        };
        after = Some(*last);
        let signing: Vec<SecretId> = page
            .iter()
            .filter(|(_, encoded)| {
                SignedManifest::decode(encoded)
                    .is_ok_and(|m| matches!(m.unverified().kind, SecretKind::Signing { .. }))
            })
            .map(|(id, _)| SecretId::from_bytes(*id))
            .collect();
        for batch in signing.chunks(PASS_AT_ONCE) {
            let outcomes =
                futures_util::future::join_all(batch.iter().map(|id| refresh(s, None, *id))).await;
            for (id, outcome) in batch.iter().zip(outcomes) {
                match outcome {
                    Ok(_) => done += 1,
                    Err(e) => {
                        failed += 1;
                        tracing::warn!(secret_id = %id, reason = e.reason.as_str(), "scheduled refresh: not refreshed this time");
                    }
                }
            }
        }
    }
}

/// Drives every unfinished job, at startup and then every [`REDRIVE_EVERY`].
pub async fn redrive(s: Shared) {
    let mut tick = tokio::time::interval(REDRIVE_EVERY);
    loop {
        tick.tick().await;
        let Ok(jobs) = db(&s, |d| d.jobs()).await else {
            continue;
        };
        for job in jobs {
            // A job this process is running is not left over; leave it to its runner.
            let Some(_running) = Running::claim(job.secret_id) else {
                continue;
            };
            drive(&s, &job).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Running;

    #[test]
    fn a_job_under_way_is_claimed_once_until_its_runner_ends() {
        let id = [42u8; 16];
        let first = Running::claim(id).expect("free");
        assert!(Running::claim(id).is_none(), "claimed twice");
        assert!(Running::claim([43u8; 16]).is_some(), "another key is free");
        drop(first);
        assert!(
            Running::claim(id).is_some(),
            "free again once its runner ended"
        );
    }
}
