//! Durable storage: sealed shards and the hash-chained audit log, in SQLite.
//!
//! One writer connection (WAL, `synchronous=FULL`: a deposit is acknowledged only
//! after its row is on disk) guarded by a mutex that also holds the audit chain's
//! head, and a small pool of reader connections for releases and listings.
//!
//! Every audit row carries `hash = SHA-256(tag || prev_hash || seq || fields)`, so
//! an edited row breaks its own hash and a deleted row breaks the next row's link
//! (`verify_audit` reports the first broken row). The chain cannot show that its
//! newest rows were cut off by someone who can write the database file; the
//! README says so.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use sha2::{Digest, Sha256};
use shard::SecretId;

/// Schema migrations, applied in order; `PRAGMA user_version` records how many ran.
const MIGRATIONS: &[&str] = &[
    // 1: shards and audit.
    "CREATE TABLE shards (
        secret_id   BLOB    NOT NULL,
        epoch       INTEGER NOT NULL,
        idx         INTEGER NOT NULL,
        owner       TEXT    NOT NULL,
        blob        BLOB    NOT NULL,
        digest      BLOB    NOT NULL,
        key_version INTEGER NOT NULL,
        size        INTEGER NOT NULL,
        created_at  INTEGER NOT NULL,
        PRIMARY KEY (secret_id, epoch)
     ) WITHOUT ROWID;
     CREATE TABLE audit (
        seq       INTEGER PRIMARY KEY,
        at        INTEGER NOT NULL,
        event     TEXT    NOT NULL,
        peer      TEXT    NOT NULL,
        secret_id TEXT    NOT NULL,
        idx       INTEGER NOT NULL,
        outcome   TEXT    NOT NULL,
        reason    TEXT    NOT NULL,
        prev_hash BLOB    NOT NULL,
        hash      BLOB    NOT NULL
     );",
    // 2: the sealing device the shards belong to (its key set's device id).
    "CREATE TABLE device (
        one       INTEGER PRIMARY KEY CHECK (one = 1),
        device_id BLOB    NOT NULL,
        bound_at  INTEGER NOT NULL
     );",
];

/// Storage errors. None carries shard bytes.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// SQLite failed (disk full, locked, corrupt). Possibly retryable.
    #[error("database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The database was written by a newer build.
    #[error("database schema version {found} is newer than this build's {known}")]
    TooNew {
        /// Version in the file.
        found: i64,
        /// Latest version this build knows.
        known: i64,
    },
    /// A row holds a value this build cannot read.
    #[error("database row is invalid: {0}")]
    Corrupt(&'static str),
}

/// A shard to store: the sealed blob and what it is bound to.
#[derive(Debug, Clone)]
pub struct NewShard {
    /// Secret id.
    pub secret_id: SecretId,
    /// Epoch.
    pub epoch: u32,
    /// Shamir index.
    pub index: u8,
    /// Owner identity (SPIFFE id text) allowed to release it.
    pub owner: String,
    /// The sealed blob.
    pub blob: Vec<u8>,
    /// SHA-256 of the deposited envelope (which holds a 32-byte random salt, so the
    /// digest reveals nothing), to recognise a repeated deposit without unsealing.
    pub digest: [u8; 32],
    /// Key version that sealed it.
    pub key_version: u32,
    /// Envelope length in bytes.
    pub size: u32,
}

/// A stored shard row.
#[derive(Debug, Clone)]
pub struct StoredShard {
    /// Secret id.
    pub secret_id: SecretId,
    /// Epoch.
    pub epoch: u32,
    /// Shamir index.
    pub index: u8,
    /// Owner identity.
    pub owner: String,
    /// The sealed blob.
    pub blob: Vec<u8>,
    /// Key version.
    pub key_version: u32,
    /// Envelope length.
    pub size: u32,
    /// Unix seconds.
    pub created_at: i64,
}

/// What a deposit did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DepositOutcome {
    /// A new row was written.
    Stored,
    /// The identical deposit was already stored.
    AlreadyStored,
    /// Another shard is stored for this (secret, epoch).
    Conflict,
}

/// One audit event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEvent {
    /// `deposit`, `release`, `delete`, `list`, `reseal`, ...
    pub event: &'static str,
    /// The peer's identity (SPIFFE id) or `-` when unauthenticated.
    pub peer: String,
    /// Secret id (hex) or empty.
    pub secret_id: String,
    /// Shard index or -1.
    pub index: i64,
    /// `ok` or `refused` or `failed`.
    pub outcome: &'static str,
    /// Machine-readable reason (empty for ok).
    pub reason: String,
}

/// A row of the audit log as stored.
#[derive(Debug, Clone)]
pub struct AuditRow {
    /// Sequence number, from 1.
    pub seq: i64,
    /// Unix seconds.
    pub at: i64,
    /// The event.
    pub event: AuditEvent,
}

/// Result of walking the audit chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditVerdict {
    /// Every row links to the one before and hashes to its stored hash.
    Intact {
        /// Rows checked.
        rows: u64,
    },
    /// The first broken row.
    Broken {
        /// Sequence number of the first row that fails.
        seq: i64,
        /// What is wrong with it.
        problem: &'static str,
    },
}

/// Metadata of a stored shard for the admin listing (never bytes).
#[derive(Debug, Clone, serde::Serialize)]
pub struct ShardMeta {
    /// Secret id (hex).
    pub secret_id: String,
    /// Epoch.
    pub epoch: u32,
    /// Index.
    pub index: u8,
    /// Owner identity.
    pub owner: String,
    /// Envelope size in bytes.
    pub size: u32,
    /// Sealed blob size in bytes.
    pub sealed_size: u32,
    /// Key version.
    pub key_version: u32,
    /// Unix seconds.
    pub created_at: i64,
}

/// `epoch, idx, owner, blob, key_version, size, created_at` of a `shards` row.
type ShardColumns = (u32, u8, String, Vec<u8>, u32, u32, i64);

struct Writer {
    conn: Connection,
    head_seq: i64,
    head_hash: [u8; 32],
}

/// The custodian's database.
pub struct Store {
    writer: Mutex<Writer>,
    readers: Mutex<Vec<Connection>>,
    path: PathBuf,
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn open_conn(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    Ok(conn)
}

fn row_hash(prev: &[u8; 32], seq: i64, at: i64, e: &AuditEvent) -> [u8; 32] {
    chain_hash(
        prev,
        seq,
        at,
        [e.event, &e.peer, &e.secret_id, e.outcome, &e.reason],
        e.index,
    )
}

/// The audit chain's hash over one row, with every text field length-prefixed.
fn chain_hash(prev: &[u8; 32], seq: i64, at: i64, fields: [&str; 5], index: i64) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"shard-audit-v1\0");
    h.update(prev);
    h.update(seq.to_be_bytes());
    h.update(at.to_be_bytes());
    for field in fields {
        h.update((field.len() as u64).to_be_bytes());
        h.update(field.as_bytes());
    }
    h.update(index.to_be_bytes());
    h.finalize().into()
}

fn append(
    tx: &rusqlite::Transaction<'_>,
    head: (i64, [u8; 32]),
    e: &AuditEvent,
) -> Result<(i64, [u8; 32]), StoreError> {
    let seq = head.0 + 1;
    let at = now();
    let hash = row_hash(&head.1, seq, at, e);
    tx.prepare_cached(
        "INSERT INTO audit (seq, at, event, peer, secret_id, idx, outcome, reason, prev_hash, hash)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )?
    .execute(params![
        seq,
        at,
        e.event,
        e.peer,
        e.secret_id,
        e.index,
        e.outcome,
        e.reason,
        &head.1[..],
        &hash[..]
    ])?;
    Ok((seq, hash))
}

impl Store {
    /// Opens (creating if needed) the database and applies migrations.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let mut conn = open_conn(path)?;
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        let known = MIGRATIONS.len() as i64;
        if version > known {
            return Err(StoreError::TooNew {
                found: version,
                known,
            });
        }
        for (i, m) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            // Read again under the write lock: another process may have migrated meanwhile.
            let now: i64 = tx.pragma_query_value(None, "user_version", |r| r.get(0))?;
            if now <= i as i64 {
                tx.execute_batch(m)?;
                tx.pragma_update(None, "user_version", (i + 1) as i64)?;
            }
            tx.commit()?;
        }
        let head: Option<(i64, Vec<u8>)> = conn
            .query_row(
                "SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        let (head_seq, head_hash) = match head {
            Some((seq, h)) => (
                seq,
                h.try_into()
                    .map_err(|_| StoreError::Corrupt("audit hash length"))?,
            ),
            None => (0, [0u8; 32]),
        };
        let readers = (0..4)
            .map(|_| open_conn(path))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Store {
            writer: Mutex::new(Writer {
                conn,
                head_seq,
                head_hash,
            }),
            readers: Mutex::new(readers),
            path: path.to_owned(),
        })
    }

    fn writer(&self) -> std::sync::MutexGuard<'_, Writer> {
        // A panic while holding the lock cannot leave a transaction half-applied
        // (SQLite rolls back an uncommitted transaction), so a poisoned lock is usable.
        self.writer.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn with_reader<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let conn = self.readers.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let conn = match conn {
            Some(c) => c,
            None => open_conn(&self.path)?,
        };
        let out = f(&conn);
        let mut pool = self.readers.lock().unwrap_or_else(|p| p.into_inner());
        if pool.len() < 16 {
            pool.push(conn);
        }
        out
    }

    /// Stores a sealed shard and its audit row in one durable transaction.
    pub fn deposit(
        &self,
        shard: &NewShard,
        audit: AuditEvent,
    ) -> Result<DepositOutcome, StoreError> {
        let mut w = self.writer();
        let head = (w.head_seq, w.head_hash);
        let tx = w
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let existing: Option<(Vec<u8>, i64, String)> = tx
            .prepare_cached(
                "SELECT digest, idx, owner FROM shards WHERE secret_id = ?1 AND epoch = ?2",
            )?
            .query_row(params![&shard.secret_id.as_bytes()[..], shard.epoch], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .optional()?;
        let outcome = match existing {
            Some((digest, idx, owner))
                if digest == shard.digest
                    && idx == i64::from(shard.index)
                    && owner == shard.owner =>
            {
                DepositOutcome::AlreadyStored
            }
            Some(_) => DepositOutcome::Conflict,
            None => {
                tx.prepare_cached(
                    "INSERT INTO shards (secret_id, epoch, idx, owner, blob, digest, key_version, size, created_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                )?
                .execute(params![
                    &shard.secret_id.as_bytes()[..],
                    shard.epoch,
                    shard.index,
                    shard.owner,
                    shard.blob,
                    &shard.digest[..],
                    shard.key_version,
                    shard.size,
                    now()
                ])?;
                DepositOutcome::Stored
            }
        };
        let mut audit = audit;
        if outcome == DepositOutcome::Conflict {
            audit.outcome = "refused";
            audit.reason = "conflict".into();
        }
        let new_head = append(&tx, head, &audit)?;
        tx.commit()?;
        (w.head_seq, w.head_hash) = new_head;
        Ok(outcome)
    }

    /// The shard of `secret_id` at `epoch`, or at its newest epoch when `epoch` is `None`.
    pub fn fetch(
        &self,
        secret_id: &SecretId,
        epoch: Option<u32>,
    ) -> Result<Option<StoredShard>, StoreError> {
        self.with_reader(|c| {
            let map = |r: &rusqlite::Row<'_>| -> rusqlite::Result<ShardColumns> {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    r.get(6)?,
                ))
            };
            let row = match epoch {
                Some(e) => c
                    .prepare_cached(
                        "SELECT epoch, idx, owner, blob, key_version, size, created_at FROM shards
                         WHERE secret_id = ?1 AND epoch = ?2",
                    )?
                    .query_row(params![&secret_id.as_bytes()[..], e], map)
                    .optional()?,
                None => c
                    .prepare_cached(
                        "SELECT epoch, idx, owner, blob, key_version, size, created_at FROM shards
                         WHERE secret_id = ?1 ORDER BY epoch DESC LIMIT 1",
                    )?
                    .query_row(params![&secret_id.as_bytes()[..]], map)
                    .optional()?,
            };
            Ok(row.map(
                |(epoch, index, owner, blob, key_version, size, created_at)| StoredShard {
                    secret_id: *secret_id,
                    epoch,
                    index,
                    owner,
                    blob,
                    key_version,
                    size,
                    created_at,
                },
            ))
        })
    }

    /// Deletes the shard(s) of `secret_id` (one epoch, or all), with its audit row.
    /// Returns how many rows went.
    pub fn delete(
        &self,
        secret_id: &SecretId,
        epoch: Option<u32>,
        audit: AuditEvent,
    ) -> Result<usize, StoreError> {
        let mut w = self.writer();
        let head = (w.head_seq, w.head_hash);
        let tx = w
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let n = match epoch {
            Some(e) => tx.execute(
                "DELETE FROM shards WHERE secret_id = ?1 AND epoch = ?2",
                params![&secret_id.as_bytes()[..], e],
            )?,
            None => tx.execute(
                "DELETE FROM shards WHERE secret_id = ?1",
                params![&secret_id.as_bytes()[..]],
            )?,
        };
        let mut audit = audit;
        if n == 0 {
            audit.outcome = "refused";
            audit.reason = "not_found".into();
        }
        let new_head = append(&tx, head, &audit)?;
        tx.commit()?;
        (w.head_seq, w.head_hash) = new_head;
        Ok(n)
    }

    /// Replaces a shard's blob after re-sealing under a newer key version.
    pub fn replace_blob(
        &self,
        secret_id: &SecretId,
        epoch: u32,
        blob: &[u8],
        key_version: u32,
        audit: AuditEvent,
    ) -> Result<(), StoreError> {
        let mut w = self.writer();
        let head = (w.head_seq, w.head_hash);
        let tx = w
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute(
            "UPDATE shards SET blob = ?3, key_version = ?4 WHERE secret_id = ?1 AND epoch = ?2",
            params![&secret_id.as_bytes()[..], epoch, blob, key_version],
        )?;
        let new_head = append(&tx, head, &audit)?;
        tx.commit()?;
        (w.head_seq, w.head_hash) = new_head;
        Ok(())
    }

    /// Appends audit events in one transaction (group commit for concurrent releases).
    pub fn append_audit(&self, events: &[AuditEvent]) -> Result<(), StoreError> {
        if events.is_empty() {
            return Ok(());
        }
        let mut w = self.writer();
        let mut head = (w.head_seq, w.head_hash);
        let tx = w
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        for e in events {
            head = append(&tx, head, e)?;
        }
        tx.commit()?;
        (w.head_seq, w.head_hash) = head;
        Ok(())
    }

    /// Metadata of stored shards ordered by secret id, after `after`, at most `limit`.
    pub fn list(&self, after: Option<&SecretId>, limit: u32) -> Result<Vec<ShardMeta>, StoreError> {
        self.with_reader(|c| {
            let after = after.map(|a| a.as_bytes().to_vec()).unwrap_or_default();
            let mut stmt = c.prepare_cached(
                "SELECT secret_id, epoch, idx, owner, size, length(blob), key_version, created_at FROM shards
                 WHERE secret_id > ?1 ORDER BY secret_id, epoch LIMIT ?2",
            )?;
            let rows = stmt.query_map(params![after, limit], |r| {
                let id: Vec<u8> = r.get(0)?;
                Ok(ShardMeta {
                    secret_id: hex::encode(id),
                    epoch: r.get(1)?,
                    index: r.get(2)?,
                    owner: r.get(3)?,
                    size: r.get(4)?,
                    sealed_size: r.get(5)?,
                    key_version: r.get(6)?,
                    created_at: r.get(7)?,
                })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }

    /// Number of stored shards.
    pub fn count(&self) -> Result<u64, StoreError> {
        self.with_reader(|c| {
            Ok(c.query_row("SELECT count(*) FROM shards", [], |r| r.get::<_, i64>(0))? as u64)
        })
    }

    /// The device id this database's shards were sealed with, once bound.
    pub fn bound_device(&self) -> Result<Option<[u8; 16]>, StoreError> {
        self.with_reader(|c| {
            let id: Option<Vec<u8>> = c
                .query_row("SELECT device_id FROM device WHERE one = 1", [], |r| {
                    r.get(0)
                })
                .optional()?;
            Ok(id.and_then(|v| <[u8; 16]>::try_from(v.as_slice()).ok()))
        })
    }

    /// The device ids named in the headers of the stored blobs (for binding a database
    /// written before devices were recorded). A blob whose header does not decode is
    /// reported as the all-zero id, which matches no device.
    pub fn stored_device_ids(&self) -> Result<std::collections::BTreeSet<[u8; 16]>, StoreError> {
        self.with_reader(|c| {
            let mut ids = std::collections::BTreeSet::new();
            let mut stmt = c.prepare("SELECT substr(blob, 1, ?1) FROM shards")?;
            let mut rows = stmt.query(params![hsm::blob::HEADER_LEN as i64])?;
            while let Some(row) = rows.next()? {
                let head: Vec<u8> = row.get(0)?;
                let id = hsm::BlobHeader::decode(&head)
                    .map(|(h, _)| h.device_id)
                    .unwrap_or([0; 16]);
                ids.insert(id);
            }
            Ok(ids)
        })
    }

    /// Records `device_id` as the device this database's shards belong to (replacing
    /// an earlier one: the caller decides when that is allowed).
    pub fn bind_device(&self, device_id: &[u8; 16]) -> Result<(), StoreError> {
        let w = self.writer();
        w.conn.execute(
            "INSERT INTO device (one, device_id, bound_at) VALUES (1, ?1, ?2)
             ON CONFLICT (one) DO UPDATE SET device_id = excluded.device_id, bound_at = excluded.bound_at",
            params![device_id.as_slice(), now()],
        )?;
        Ok(())
    }

    /// Checks the database answers a write (for health): an empty immediate transaction.
    pub fn writable(&self) -> Result<(), StoreError> {
        let mut w = self.writer();
        let tx = w
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.commit()?;
        Ok(())
    }

    /// The newest audit rows, newest first.
    pub fn audit_tail(&self, limit: u32) -> Result<Vec<AuditRow>, StoreError> {
        self.with_reader(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT seq, at, event, peer, secret_id, idx, outcome, reason FROM audit ORDER BY seq DESC LIMIT ?1",
            )?;
            let rows = stmt.query_map(params![limit], |r| {
                let event: String = r.get(2)?;
                let outcome: String = r.get(6)?;
                Ok(AuditRow {
                    seq: r.get(0)?,
                    at: r.get(1)?,
                    event: AuditEvent {
                        event: intern(&event),
                        peer: r.get(3)?,
                        secret_id: r.get(4)?,
                        index: r.get(5)?,
                        outcome: intern(&outcome),
                        reason: r.get(7)?,
                    },
                })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }

    /// Walks the whole audit chain and reports the first broken row.
    pub fn verify_audit(&self) -> Result<AuditVerdict, StoreError> {
        self.with_reader(|c| {
            let mut stmt = c.prepare(
                "SELECT seq, at, event, peer, secret_id, idx, outcome, reason, prev_hash, hash FROM audit ORDER BY seq",
            )?;
            let mut rows = stmt.query([])?;
            let mut prev = [0u8; 32];
            let mut expected_seq = 1i64;
            let mut count = 0u64;
            while let Some(r) = rows.next()? {
                let seq: i64 = r.get(0)?;
                let event: String = r.get(2)?;
                let outcome: String = r.get(6)?;
                let e = AuditEvent {
                    event: intern(&event),
                    peer: r.get(3)?,
                    secret_id: r.get(4)?,
                    index: r.get(5)?,
                    outcome: intern(&outcome),
                    reason: r.get(7)?,
                };
                let prev_hash: Vec<u8> = r.get(8)?;
                let hash: Vec<u8> = r.get(9)?;
                if seq != expected_seq {
                    return Ok(AuditVerdict::Broken { seq: expected_seq, problem: "row missing (sequence gap)" });
                }
                if prev_hash != prev {
                    return Ok(AuditVerdict::Broken { seq, problem: "does not link to the previous row" });
                }
                // Hash the stored text exactly (not the interned form) so any edit shows.
                let fields = [event.as_str(), &e.peer, &e.secret_id, outcome.as_str(), &e.reason];
                if hash[..] != chain_hash(&prev, seq, r.get(1)?, fields, e.index)[..] {
                    return Ok(AuditVerdict::Broken { seq, problem: "contents do not match its hash" });
                }
                prev.copy_from_slice(&hash);
                expected_seq += 1;
                count += 1;
            }
            Ok(AuditVerdict::Intact { rows: count })
        })
    }
}

/// Maps stored event and outcome words to static strings (unknown words become `?`;
/// verification hashes the stored text itself, so nothing is lost).
fn intern(s: &str) -> &'static str {
    const WORDS: &[&str] = &[
        "deposit",
        "release",
        "delete",
        "list",
        "reseal",
        "health",
        "metrics",
        "ok",
        "refused",
        "failed",
        "handshake",
    ];
    WORDS.iter().find(|w| **w == s).copied().unwrap_or("?")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(event: &'static str) -> AuditEvent {
        AuditEvent {
            event,
            peer: "spiffe://t/user/alice".into(),
            secret_id: "00".repeat(16),
            index: 1,
            outcome: "ok",
            reason: String::new(),
        }
    }

    fn shard(digest: u8) -> NewShard {
        NewShard {
            secret_id: SecretId::from_bytes([1; 16]),
            epoch: 1,
            index: 2,
            owner: "spiffe://t/user/alice".into(),
            blob: vec![9; 80],
            digest: [digest; 32],
            key_version: 1,
            size: 70,
        }
    }

    #[test]
    fn deposit_is_idempotent_and_conflicts_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("db")).unwrap();
        assert_eq!(
            s.deposit(&shard(1), ev("deposit")).unwrap(),
            DepositOutcome::Stored
        );
        assert_eq!(
            s.deposit(&shard(1), ev("deposit")).unwrap(),
            DepositOutcome::AlreadyStored
        );
        assert_eq!(
            s.deposit(&shard(2), ev("deposit")).unwrap(),
            DepositOutcome::Conflict
        );
        let got = s
            .fetch(&SecretId::from_bytes([1; 16]), None)
            .unwrap()
            .unwrap();
        assert_eq!((got.index, got.blob.len()), (2, 80));
        assert_eq!(s.count().unwrap(), 1);
        assert_eq!(s.verify_audit().unwrap(), AuditVerdict::Intact { rows: 3 });
        assert_eq!(s.audit_tail(1).unwrap()[0].event.reason, "conflict");
    }

    #[test]
    fn audit_chain_detects_edits_and_deletions_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        {
            let s = Store::open(&path).unwrap();
            s.append_audit(&[ev("release"), ev("release"), ev("delete")])
                .unwrap();
        }
        let s = Store::open(&path).unwrap();
        s.append_audit(&[ev("release")]).unwrap();
        assert_eq!(s.verify_audit().unwrap(), AuditVerdict::Intact { rows: 4 });
        let raw = Connection::open(&path).unwrap();
        raw.execute(
            "UPDATE audit SET peer = 'spiffe://t/user/mallory' WHERE seq = 2",
            [],
        )
        .unwrap();
        assert_eq!(
            s.verify_audit().unwrap(),
            AuditVerdict::Broken {
                seq: 2,
                problem: "contents do not match its hash"
            }
        );
        raw.execute(
            "UPDATE audit SET peer = 'spiffe://t/user/alice' WHERE seq = 2",
            [],
        )
        .unwrap();
        assert_eq!(s.verify_audit().unwrap(), AuditVerdict::Intact { rows: 4 });
        raw.execute("DELETE FROM audit WHERE seq = 3", []).unwrap();
        assert_eq!(
            s.verify_audit().unwrap(),
            AuditVerdict::Broken {
                seq: 3,
                problem: "row missing (sequence gap)"
            }
        );
    }
}
