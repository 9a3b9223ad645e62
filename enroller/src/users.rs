//! The enroller's database: invitations, users, TOTP use, attempt limits and
//! enrollments, in SQLite (WAL, `synchronous=FULL`).
//!
//! Invitation codes are stored only as SHA-256 digests; passwords only as Argon2id
//! PHC strings over the token's pepper; TOTP secrets only sealed by the token.

use std::path::Path;
use std::sync::Mutex;

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use sha2::{Digest, Sha256};

/// Consecutive failures after which a user is locked until an admin unlocks it.
pub const LOCK_AFTER: i64 = 10;
/// Failures from one source within [`SOURCE_WINDOW`] seconds before it is refused.
pub const SOURCE_LIMIT: i64 = 30;
/// The per-source window, seconds.
pub const SOURCE_WINDOW: i64 = 900;

const MIGRATIONS: &[&str] = &[
    "
    CREATE TABLE invitations (
        code_hash  BLOB PRIMARY KEY,
        name       TEXT NOT NULL,
        created_by TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        expires_at INTEGER NOT NULL,
        used_at    INTEGER
    );
    CREATE TABLE users (
        name          TEXT PRIMARY KEY,
        password_hash TEXT NOT NULL,
        totp_sealed   BLOB,
        created_at    INTEGER NOT NULL,
        failures      INTEGER NOT NULL DEFAULT 0,
        last_failure  INTEGER NOT NULL DEFAULT 0,
        locked        INTEGER NOT NULL DEFAULT 0
    );
    CREATE TABLE totp_used (
        name TEXT NOT NULL,
        step INTEGER NOT NULL,
        PRIMARY KEY (name, step)
    ) WITHOUT ROWID;
    CREATE TABLE source_failures (
        source       TEXT PRIMARY KEY,
        failures     INTEGER NOT NULL,
        window_start INTEGER NOT NULL
    );
    CREATE TABLE enrollments (
        secret_id  BLOB PRIMARY KEY,
        owner      TEXT NOT NULL,
        epoch      INTEGER NOT NULL,
        kind       TEXT NOT NULL,
        public_key TEXT,
        manifest   BLOB NOT NULL,
        created_at INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX enrollments_owner ON enrollments (owner, secret_id);
",
    "
    CREATE TABLE jobs (
        secret_id  BLOB PRIMARY KEY,
        kind       TEXT NOT NULL,
        from_epoch INTEGER NOT NULL,
        to_epoch   INTEGER NOT NULL,
        step       TEXT NOT NULL,
        created_at INTEGER NOT NULL
    ) WITHOUT ROWID;
",
    "
    ALTER TABLE jobs ADD COLUMN old_custodians TEXT NOT NULL DEFAULT '';
    ALTER TABLE jobs ADD COLUMN new_custodians TEXT NOT NULL DEFAULT '';
",
];

/// An epoch change under way (a refresh), kept durably so that it is driven to its end
/// after a crash: `prepare` (the custodians make pending rows of `to_epoch`; a crash
/// here aborts it), then `commit` (the manifest of `to_epoch` is stored; the rest is
/// driven forward: commit at every custodian, then delete `from_epoch`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    /// The secret.
    pub secret_id: [u8; 16],
    /// `refresh`.
    pub kind: String,
    /// The epoch being left.
    pub from_epoch: u32,
    /// The epoch being made.
    pub to_epoch: u32,
    /// `prepare` or `commit`.
    pub step: String,
    /// The custodians holding `from_epoch`, by name (none for an enrollment).
    pub old: Vec<String>,
    /// The custodians making `to_epoch`, by name, in holder order. Both lists are empty
    /// in a job written before they were kept: it involves the enroller's custodians.
    pub new: Vec<String>,
}

fn names(joined: String) -> Vec<String> {
    joined
        .split(',')
        .filter(|n| !n.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Database errors.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DbError {
    /// SQLite failed.
    #[error("database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The file was written by a newer build.
    #[error("database schema version {0} is newer than this build knows")]
    TooNew(i64),
}

/// What happened to an invitation code presented at registration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InvitationState {
    /// Valid for this user name.
    Valid,
    /// No such code, or it names another user.
    Unknown,
    /// Expired.
    Expired,
    /// Already used.
    Used,
}

/// A stored user.
#[derive(Debug, Clone)]
pub struct UserRow {
    /// Name.
    pub name: String,
    /// Argon2id PHC string.
    pub password_hash: String,
    /// TOTP secret sealed by the token, if the user enabled TOTP.
    pub totp_sealed: Option<Vec<u8>>,
    /// Consecutive failures.
    pub failures: i64,
    /// Unix time of the last failure.
    pub last_failure: i64,
    /// Locked until an admin unlocks.
    pub locked: bool,
}

/// An enrollment record (the manifest is public data).
#[derive(Debug, Clone, serde::Serialize)]
pub struct EnrollmentRow {
    /// Secret id (hex).
    pub secret_id: String,
    /// Owner identity.
    pub owner: String,
    /// Epoch.
    pub epoch: u32,
    /// `p256` or `opaque`.
    pub kind: String,
    /// Public key PEM for P-256 secrets.
    pub public_key: Option<String>,
    /// Encoded signed manifest.
    #[serde(skip)]
    pub manifest: Vec<u8>,
    /// Unix seconds.
    pub created_at: i64,
}

/// A secret id's bytes and its encoded signed manifest.
pub type StoredManifest = ([u8; 16], Vec<u8>);

/// The enroller's database.
pub struct Db {
    conn: Mutex<Connection>,
}

/// Hash under which an invitation code is stored.
pub fn code_hash(code: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"shard-invitation-v1\0");
    h.update(code.as_bytes());
    h.finalize().into()
}

/// Seconds to wait before the next attempt after `failures` consecutive failures:
/// none for the first 3, then 1, 2, 4, ... seconds, at most 5 minutes.
pub fn backoff_seconds(failures: i64) -> i64 {
    if failures < 3 {
        0
    } else {
        (1i64 << (failures - 3).min(9)).min(300)
    }
}

impl Db {
    /// Opens or creates the database.
    pub fn open(path: &Path) -> Result<Db, DbError> {
        let mut conn = Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        if version > MIGRATIONS.len() as i64 {
            return Err(DbError::TooNew(version));
        }
        for (i, m) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            tx.execute_batch(m)?;
            tx.pragma_update(None, "user_version", (i + 1) as i64)?;
            tx.commit()?;
        }
        Ok(Db {
            conn: Mutex::new(conn),
        })
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        // SQLite rolls back an unfinished transaction, so a poisoned lock is still usable.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stores an invitation (by digest) for `name`.
    pub fn add_invitation(
        &self,
        code: &str,
        name: &str,
        by: &str,
        now: i64,
        ttl: i64,
    ) -> Result<(), DbError> {
        self.conn().execute(
            "INSERT INTO invitations (code_hash, name, created_by, created_at, expires_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![&code_hash(code)[..], name, by, now, now + ttl],
        )?;
        Ok(())
    }

    /// Registers a user with an invitation in one transaction: the code is checked and
    /// spent, and the user row written, or nothing happens.
    pub fn register(
        &self,
        code: &str,
        name: &str,
        password_hash: &str,
        totp_sealed: Option<&[u8]>,
        now: i64,
    ) -> Result<Result<(), RegisterRefusal>, DbError> {
        let mut c = self.conn();
        let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let state = invitation_state(&tx, code, name, now)?;
        if state != InvitationState::Valid {
            return Ok(Err(RegisterRefusal::Invitation(state)));
        }
        let exists: bool = tx.query_row(
            "SELECT count(*) FROM users WHERE name = ?1",
            params![name],
            |r| r.get::<_, i64>(0),
        )? > 0;
        if exists {
            return Ok(Err(RegisterRefusal::UserExists));
        }
        tx.execute(
            "UPDATE invitations SET used_at = ?2 WHERE code_hash = ?1",
            params![&code_hash(code)[..], now],
        )?;
        tx.execute(
            "INSERT INTO users (name, password_hash, totp_sealed, created_at) VALUES (?1, ?2, ?3, ?4)",
            params![name, password_hash, totp_sealed, now],
        )?;
        tx.commit()?;
        Ok(Ok(()))
    }

    /// The state of an invitation for `name` (read only), so that expensive work is
    /// spent only on a valid one; [`Db::register`] checks it again when spending it.
    pub fn invitation(&self, code: &str, name: &str, now: i64) -> Result<InvitationState, DbError> {
        invitation_state(&self.conn(), code, name, now)
    }

    /// The user row.
    pub fn user(&self, name: &str) -> Result<Option<UserRow>, DbError> {
        Ok(self
            .conn()
            .query_row(
                "SELECT name, password_hash, totp_sealed, failures, last_failure, locked FROM users WHERE name = ?1",
                params![name],
                |r| {
                    Ok(UserRow {
                        name: r.get(0)?,
                        password_hash: r.get(1)?,
                        totp_sealed: r.get(2)?,
                        failures: r.get(3)?,
                        last_failure: r.get(4)?,
                        locked: r.get::<_, i64>(5)? != 0,
                    })
                },
            )
            .optional()?)
    }

    /// Starts a login attempt: in one transaction, refuses it when `source` is over its
    /// budget, the user is locked, or the user's back-off has not passed, and otherwise
    /// **counts it as a failure before the password is checked**, so that many attempts
    /// sent at once cannot all pass these checks before the first failure is written.
    /// A successful login takes the count back ([`Db::record_success`]).
    pub fn begin_attempt(
        &self,
        name: &str,
        source: &str,
        now: i64,
        backoff_max: i64,
    ) -> Result<Attempt, DbError> {
        let mut c = self.conn();
        let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let src: Option<(i64, i64)> = tx
            .query_row(
                "SELECT failures, window_start FROM source_failures WHERE source = ?1",
                params![source],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        if matches!(src, Some((f, start)) if f >= SOURCE_LIMIT && start + SOURCE_WINDOW > now) {
            return Ok(Attempt::SourceBlocked);
        }
        let user: Option<(i64, i64, i64)> = tx
            .query_row(
                "SELECT failures, last_failure, locked FROM users WHERE name = ?1",
                params![name],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?;
        if let Some((failures, last_failure, locked)) = user {
            if locked != 0 {
                return Ok(Attempt::Locked);
            }
            let wait = last_failure + backoff_seconds(failures).min(backoff_max) - now;
            if wait > 0 {
                return Ok(Attempt::RetryLater(wait));
            }
        }
        tx.execute(
            "UPDATE users SET failures = failures + 1, last_failure = ?2 WHERE name = ?1",
            params![name, now],
        )?;
        tx.execute(
            "INSERT INTO source_failures (source, failures, window_start) VALUES (?1, 1, ?2)
             ON CONFLICT (source) DO UPDATE SET
               failures = CASE WHEN window_start + ?3 <= ?2 THEN 1 ELSE failures + 1 END,
               window_start = CASE WHEN window_start + ?3 <= ?2 THEN ?2 ELSE window_start END",
            params![source, now, SOURCE_WINDOW],
        )?;
        tx.commit()?;
        Ok(Attempt::Go)
    }

    /// After an attempt failed (it was counted by [`Db::begin_attempt`]): locks the user
    /// once [`LOCK_AFTER`] consecutive attempts failed. Returns whether it is locked.
    pub fn settle_failure(&self, name: &str) -> Result<bool, DbError> {
        let c = self.conn();
        c.execute(
            "UPDATE users SET locked = CASE WHEN failures >= ?2 THEN 1 ELSE locked END WHERE name = ?1",
            params![name, LOCK_AFTER],
        )?;
        let locked: i64 = c
            .query_row(
                "SELECT locked FROM users WHERE name = ?1",
                params![name],
                |r| r.get(0),
            )
            .optional()?
            .unwrap_or(0);
        Ok(locked != 0)
    }

    /// A successful login: clears the user's failure count and takes back the count
    /// [`Db::begin_attempt`] charged to `source`.
    pub fn record_success(&self, name: &str, source: &str) -> Result<(), DbError> {
        self.take_back(
            name,
            source,
            "UPDATE users SET failures = 0 WHERE name = ?1",
        )
    }

    /// Takes back the count of an attempt that was not a wrong guess (the password was
    /// right and only the TOTP code was missing).
    pub fn refund_attempt(&self, name: &str, source: &str) -> Result<(), DbError> {
        self.take_back(
            name,
            source,
            "UPDATE users SET failures = max(failures - 1, 0) WHERE name = ?1",
        )
    }

    /// Applies `user_update` to the user's row and takes one failure back from
    /// `source`, in one transaction.
    fn take_back(&self, name: &str, source: &str, user_update: &str) -> Result<(), DbError> {
        let mut c = self.conn();
        let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute(user_update, params![name])?;
        tx.execute(
            "UPDATE source_failures SET failures = max(failures - 1, 0) WHERE source = ?1",
            params![source],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Marks a TOTP step used; false when it already was (a replay).
    pub fn use_totp_step(&self, name: &str, step: u64) -> Result<bool, DbError> {
        let c = self.conn();
        let n = c.execute(
            "INSERT OR IGNORE INTO totp_used (name, step) VALUES (?1, ?2)",
            params![name, step as i64],
        )?;
        // Old steps can never be accepted again (the window is +-1 step), so they can go.
        c.execute(
            "DELETE FROM totp_used WHERE name = ?1 AND step < ?2",
            params![name, step as i64 - 4],
        )?;
        Ok(n == 1)
    }

    /// Unlocks a user and clears its failures. False when there is no such user.
    pub fn unlock(&self, name: &str) -> Result<bool, DbError> {
        Ok(self.conn().execute(
            "UPDATE users SET locked = 0, failures = 0 WHERE name = ?1",
            params![name],
        )? == 1)
    }

    /// User names with lock state and failures.
    pub fn users(&self) -> Result<Vec<(String, bool, i64, bool)>, DbError> {
        let c = self.conn();
        let mut s = c.prepare(
            "SELECT name, locked, failures, totp_sealed IS NOT NULL FROM users ORDER BY name",
        )?;
        let rows = s.query_map([], |r| {
            Ok((r.get(0)?, r.get::<_, i64>(1)? != 0, r.get(2)?, r.get(3)?))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The job of `secret_id`, if one is under way.
    pub fn job(&self, secret_id: &[u8; 16]) -> Result<Option<Job>, DbError> {
        Ok(self
            .conn()
            .query_row(
                "SELECT kind, from_epoch, to_epoch, step, old_custodians, new_custodians
                 FROM jobs WHERE secret_id = ?1",
                params![&secret_id[..]],
                |r| {
                    Ok(Job {
                        secret_id: *secret_id,
                        kind: r.get(0)?,
                        from_epoch: r.get(1)?,
                        to_epoch: r.get(2)?,
                        step: r.get(3)?,
                        old: names(r.get(4)?),
                        new: names(r.get(5)?),
                    })
                },
            )
            .optional()?)
    }

    /// Every job under way.
    pub fn jobs(&self) -> Result<Vec<Job>, DbError> {
        let c = self.conn();
        let mut s = c.prepare(
            "SELECT secret_id, kind, from_epoch, to_epoch, step, old_custodians, new_custodians
             FROM jobs",
        )?;
        let rows = s.query_map([], |r| {
            let id: Vec<u8> = r.get(0)?;
            let sets: (String, String) = (r.get(5)?, r.get(6)?);
            Ok((id, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, sets))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (id, kind, from_epoch, to_epoch, step, (old, new)) = row?;
            if let Ok(secret_id) = <[u8; 16]>::try_from(id.as_slice()) {
                out.push(Job {
                    secret_id,
                    kind,
                    from_epoch,
                    to_epoch,
                    step,
                    old: names(old),
                    new: names(new),
                });
            }
        }
        Ok(out)
    }

    /// Starts a job at its first step, `prepare`; refused (false) when one is under way.
    pub fn begin_job(&self, job: &Job) -> Result<bool, DbError> {
        let n = self.conn().execute(
            "INSERT OR IGNORE INTO jobs (secret_id, kind, from_epoch, to_epoch, step, created_at,
                                        old_custodians, new_custodians)
             VALUES (?1, ?2, ?3, ?4, 'prepare', strftime('%s','now'), ?5, ?6)",
            params![
                &job.secret_id[..],
                job.kind,
                job.from_epoch,
                job.to_epoch,
                job.old.join(","),
                job.new.join(",")
            ],
        )?;
        Ok(n == 1)
    }

    /// The turning point of a job, in one transaction: the enrollment moves to `epoch`
    /// with its new signed manifest, and the job to `commit`. After it the job only goes
    /// forward.
    pub fn advance_job(
        &self,
        secret_id: &[u8; 16],
        epoch: u32,
        manifest: &[u8],
    ) -> Result<(), DbError> {
        let mut c = self.conn();
        let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute(
            "UPDATE enrollments SET epoch = ?2, manifest = ?3 WHERE secret_id = ?1",
            params![&secret_id[..], epoch, manifest],
        )?;
        tx.execute(
            "UPDATE jobs SET step = 'commit' WHERE secret_id = ?1 AND to_epoch = ?2",
            params![&secret_id[..], epoch],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Ends a job (done, or aborted before its turning point).
    pub fn end_job(&self, secret_id: &[u8; 16]) -> Result<(), DbError> {
        self.conn().execute(
            "DELETE FROM jobs WHERE secret_id = ?1",
            params![&secret_id[..]],
        )?;
        Ok(())
    }

    /// The enrollment of `secret_id`, whoever owns it.
    pub fn enrollment(&self, secret_id: &[u8; 16]) -> Result<Option<EnrollmentRow>, DbError> {
        Ok(self
            .conn()
            .query_row(
                "SELECT owner, epoch, kind, public_key, manifest, created_at FROM enrollments
                 WHERE secret_id = ?1",
                params![&secret_id[..]],
                |r| {
                    Ok(EnrollmentRow {
                        secret_id: hex::encode(secret_id),
                        owner: r.get(0)?,
                        epoch: r.get(1)?,
                        kind: r.get(2)?,
                        public_key: r.get(3)?,
                        manifest: r.get(4)?,
                        created_at: r.get(5)?,
                    })
                },
            )
            .optional()?)
    }

    /// Records an enrollment.
    pub fn add_enrollment(&self, e: &EnrollmentRow, id: &[u8; 16]) -> Result<(), DbError> {
        self.conn().execute(
            "INSERT INTO enrollments (secret_id, owner, epoch, kind, public_key, manifest, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![&id[..], e.owner, e.epoch, e.kind, e.public_key, e.manifest, e.created_at],
        )?;
        Ok(())
    }

    /// Up to `limit` manifests of every owner, by secret id after `after`: `(secret id
    /// bytes, encoded signed manifest)`. For the scheduled share checks.
    pub fn manifests_after(
        &self,
        after: Option<&[u8; 16]>,
        limit: u32,
    ) -> Result<Vec<StoredManifest>, DbError> {
        let c = self.conn();
        let mut s = c.prepare(
            "SELECT secret_id, manifest FROM enrollments WHERE secret_id > ?1
             ORDER BY secret_id LIMIT ?2",
        )?;
        let after: &[u8] = after.map_or(&[], |a| &a[..]);
        let rows = s.query_map(params![after, limit], |r| {
            let id: Vec<u8> = r.get(0)?;
            Ok((id, r.get::<_, Vec<u8>>(1)?))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (id, manifest) = row?;
            if let Ok(id) = <[u8; 16]>::try_from(id.as_slice()) {
                out.push((id, manifest));
            }
        }
        Ok(out)
    }

    /// The enrollments of `owner`, oldest first.
    pub fn enrollments(&self, owner: &str) -> Result<Vec<EnrollmentRow>, DbError> {
        let c = self.conn();
        let mut s = c.prepare(
            "SELECT secret_id, owner, epoch, kind, public_key, manifest, created_at FROM enrollments
             WHERE owner = ?1 ORDER BY secret_id",
        )?;
        let rows = s.query_map(params![owner], |r| {
            Ok(EnrollmentRow {
                secret_id: hex::encode(r.get::<_, Vec<u8>>(0)?),
                owner: r.get(1)?,
                epoch: r.get(2)?,
                kind: r.get(3)?,
                public_key: r.get(4)?,
                manifest: r.get(5)?,
                created_at: r.get(6)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

fn invitation_state(
    c: &Connection,
    code: &str,
    name: &str,
    now: i64,
) -> Result<InvitationState, DbError> {
    let inv: Option<(String, i64, Option<i64>)> = c
        .query_row(
            "SELECT name, expires_at, used_at FROM invitations WHERE code_hash = ?1",
            params![&code_hash(code)[..]],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()?;
    Ok(match inv {
        None => InvitationState::Unknown,
        Some((n, _, _)) if n != name => InvitationState::Unknown,
        Some((_, _, Some(_))) => InvitationState::Used,
        Some((_, exp, None)) if exp <= now => InvitationState::Expired,
        Some(_) => InvitationState::Valid,
    })
}

/// Whether a login attempt may go on to the password check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempt {
    /// Go on; the attempt is counted as a failure until it succeeds.
    Go,
    /// The user is locked until an admin unlocks it.
    Locked,
    /// The user must wait this many seconds (back-off).
    RetryLater(i64),
    /// The source is over its failure budget.
    SourceBlocked,
}

/// Why registration was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegisterRefusal {
    /// The invitation is not valid.
    Invitation(InvitationState),
    /// The user exists.
    UserExists,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invitations_are_one_use_and_expire() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("e.db")).unwrap();
        db.add_invitation("code-1", "alice", "admin", 100, 60)
            .unwrap();
        db.add_invitation("code-2", "bob", "admin", 100, 60)
            .unwrap();
        assert_eq!(
            db.register("code-1", "mallory", "h", None, 110).unwrap(),
            Err(RegisterRefusal::Invitation(InvitationState::Unknown))
        );
        assert_eq!(
            db.register("code-1", "alice", "h", None, 110).unwrap(),
            Ok(())
        );
        assert_eq!(
            db.register("code-1", "alice", "h", None, 111).unwrap(),
            Err(RegisterRefusal::Invitation(InvitationState::Used))
        );
        assert_eq!(
            db.register("code-2", "bob", "h", None, 161).unwrap(),
            Err(RegisterRefusal::Invitation(InvitationState::Expired))
        );
    }

    #[test]
    fn failures_back_off_lock_and_unlock() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("e.db")).unwrap();
        db.add_invitation("c", "alice", "admin", 0, 60).unwrap();
        db.register("c", "alice", "h", None, 1).unwrap().unwrap();
        let mut t = 100;
        for i in 1..=LOCK_AFTER {
            assert_eq!(
                db.begin_attempt("alice", "tcp:1", t, 300).unwrap(),
                Attempt::Go,
                "attempt {i}"
            );
            assert_eq!(db.settle_failure("alice").unwrap(), i == LOCK_AFTER);
            t += 1000;
        }
        assert_eq!(
            db.begin_attempt("alice", "tcp:1", t, 300).unwrap(),
            Attempt::Locked
        );
        assert!(db.unlock("alice").unwrap());
        assert_eq!(
            db.begin_attempt("alice", "tcp:1", t, 300).unwrap(),
            Attempt::Go
        );
        db.record_success("alice", "tcp:1").unwrap();
        assert_eq!(backoff_seconds(2), 0);
        assert_eq!(backoff_seconds(4), 2);
        assert_eq!(backoff_seconds(40), 300);
    }

    #[test]
    fn attempts_at_once_are_counted_before_the_password_check() {
        // Many attempts begun before any finishes: after the third, back-off refuses the
        // rest, so a burst cannot try more passwords than the limits allow.
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("e.db")).unwrap();
        db.add_invitation("c", "alice", "admin", 0, 60).unwrap();
        db.register("c", "alice", "h", None, 1).unwrap().unwrap();
        let admitted = (0..100)
            .filter(|_| db.begin_attempt("alice", "tcp:1", 500, 300).unwrap() == Attempt::Go)
            .count();
        assert_eq!(admitted, 3);
        let user = db.user("alice").unwrap().unwrap();
        assert_eq!(user.failures, 3);
    }

    #[test]
    fn totp_steps_are_single_use() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("e.db")).unwrap();
        assert!(db.use_totp_step("alice", 1000).unwrap());
        assert!(!db.use_totp_step("alice", 1000).unwrap());
        assert!(db.use_totp_step("bob", 1000).unwrap());
    }

    #[test]
    fn source_budget() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("e.db")).unwrap();
        for i in 0..SOURCE_LIMIT {
            assert_eq!(
                db.begin_attempt(&format!("nobody{i}"), "tcp:9", 10, 300)
                    .unwrap(),
                Attempt::Go
            );
        }
        assert_eq!(
            db.begin_attempt("nobody", "tcp:9", 11, 300).unwrap(),
            Attempt::SourceBlocked
        );
        assert_eq!(
            db.begin_attempt("nobody", "tcp:9", 10 + SOURCE_WINDOW, 300)
                .unwrap(),
            Attempt::Go
        );
        assert_eq!(
            db.begin_attempt("nobody", "tcp:8", 11, 300).unwrap(),
            Attempt::Go
        );
    }
}
