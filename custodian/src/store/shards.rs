//! The sealed shard rows: deposit, fetch, delete, re-seal and the admin listing.

use rusqlite::{params, OptionalExtension};
use shard::SecretId;
use wire::custodian::ShardInfo;

use super::audit::{append, AuditEvent};
use super::{now, Store, StoreError};

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
    /// SHA-256 of the deposited envelope, to recognise a repeated deposit without
    /// unsealing. A shard envelope holds a 32-byte random salt and a key envelope a
    /// full-entropy signing share, so the digest reveals nothing.
    pub digest: [u8; 32],
    /// Key version that sealed it.
    pub key_version: u32,
    /// Envelope length in bytes.
    pub size: u32,
    /// `shard`, or the kind of a threshold-signing key (`ed25519`, ...).
    pub kind: String,
    /// A next epoch's row, not yet committed.
    pub pending: bool,
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
    /// `shard`, or the kind of a threshold-signing key.
    pub kind: String,
    /// A next epoch's row, not yet committed.
    pub pending: bool,
}

/// What committing an epoch did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommitOutcome {
    /// The pending row is now committed.
    Committed,
    /// It was committed already.
    AlreadyCommitted,
    /// No row of that epoch.
    Missing,
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

/// `epoch, idx, owner, blob, key_version, size, created_at, kind, pending` of a `shards` row.
type ShardColumns = (u32, u8, String, Vec<u8>, u32, u32, i64, String, bool);

impl Store {
    /// Stores a sealed shard and its audit row in one durable transaction.
    pub fn deposit(
        &self,
        shard: &NewShard,
        audit: AuditEvent,
    ) -> Result<DepositOutcome, StoreError> {
        self.write(|tx, head| {
            let existing: Option<(Vec<u8>, i64, String, String)> = tx
                .prepare_cached(
                    "SELECT digest, idx, owner, kind FROM shards WHERE secret_id = ?1 AND epoch = ?2",
                )?
                .query_row(params![&shard.secret_id.as_bytes()[..], shard.epoch], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
                })
                .optional()?;
            let outcome = match existing {
                Some((digest, idx, owner, kind))
                    if digest == shard.digest
                        && idx == i64::from(shard.index)
                        && owner == shard.owner
                        && kind == shard.kind =>
                {
                    DepositOutcome::AlreadyStored
                }
                Some(_) => DepositOutcome::Conflict,
                None => {
                    tx.prepare_cached(
                        "INSERT INTO shards (secret_id, epoch, idx, owner, blob, digest, key_version, size, created_at, kind, pending)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
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
                        now(),
                        shard.kind,
                        shard.pending
                    ])?;
                    DepositOutcome::Stored
                }
            };
            let audit = match outcome {
                DepositOutcome::Conflict => audit.refused("conflict"),
                _ => audit,
            };
            *head = append(tx, *head, &audit)?;
            Ok(outcome)
        })
    }

    /// Commits the pending row of `secret_id` at `epoch` (a refresh's next epoch), with its
    /// audit row, in one durable transaction. Idempotent.
    pub fn commit_epoch(
        &self,
        secret_id: &SecretId,
        epoch: u32,
        audit: AuditEvent,
    ) -> Result<CommitOutcome, StoreError> {
        self.write(|tx, head| {
            let id = &secret_id.as_bytes()[..];
            let n = tx.execute(
                "UPDATE shards SET pending = 0 WHERE secret_id = ?1 AND epoch = ?2 AND pending = 1",
                params![id, epoch],
            )?;
            let outcome = if n > 0 {
                CommitOutcome::Committed
            } else {
                let exists: Option<i64> = tx
                    .query_row(
                        "SELECT 1 FROM shards WHERE secret_id = ?1 AND epoch = ?2",
                        params![id, epoch],
                        |r| r.get(0),
                    )
                    .optional()?;
                match exists {
                    Some(_) => CommitOutcome::AlreadyCommitted,
                    None => CommitOutcome::Missing,
                }
            };
            let audit = match outcome {
                CommitOutcome::Missing => audit.refused("not_found"),
                _ => audit,
            };
            *head = append(tx, *head, &audit)?;
            Ok(outcome)
        })
    }

    /// The shard of `secret_id` at `epoch` (committed or pending), or at its newest
    /// committed epoch when `epoch` is `None`.
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
                    r.get(7)?,
                    r.get(8)?,
                ))
            };
            let row = match epoch {
                Some(e) => c
                    .prepare_cached(
                        "SELECT epoch, idx, owner, blob, key_version, size, created_at, kind, pending FROM shards
                         WHERE secret_id = ?1 AND epoch = ?2",
                    )?
                    .query_row(params![&secret_id.as_bytes()[..], e], map)
                    .optional()?,
                None => c
                    .prepare_cached(
                        "SELECT epoch, idx, owner, blob, key_version, size, created_at, kind, pending FROM shards
                         WHERE secret_id = ?1 AND pending = 0 ORDER BY epoch DESC LIMIT 1",
                    )?
                    .query_row(params![&secret_id.as_bytes()[..]], map)
                    .optional()?,
            };
            Ok(row.map(
                |(epoch, index, owner, blob, key_version, size, created_at, kind, pending)| StoredShard {
                    secret_id: *secret_id,
                    epoch,
                    index,
                    owner,
                    blob,
                    key_version,
                    size,
                    created_at,
                    kind,
                    pending,
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
        self.write(|tx, head| {
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
            let audit = if n == 0 {
                audit.refused("not_found")
            } else {
                audit
            };
            *head = append(tx, *head, &audit)?;
            Ok(n)
        })
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
        self.write(|tx, head| {
            tx.execute(
                "UPDATE shards SET blob = ?3, key_version = ?4 WHERE secret_id = ?1 AND epoch = ?2",
                params![&secret_id.as_bytes()[..], epoch, blob, key_version],
            )?;
            *head = append(tx, *head, &audit)?;
            Ok(())
        })
    }

    /// Metadata of stored shards ordered by secret id, after `after`, at most `limit`.
    pub fn list(&self, after: Option<&SecretId>, limit: u32) -> Result<Vec<ShardInfo>, StoreError> {
        self.with_reader(|c| {
            let after = after.map(|a| a.as_bytes().to_vec()).unwrap_or_default();
            let mut stmt = c.prepare_cached(
                "SELECT secret_id, epoch, idx, owner, size, length(blob), key_version, created_at, kind, pending FROM shards
                 WHERE secret_id > ?1 ORDER BY secret_id, epoch LIMIT ?2",
            )?;
            let rows = stmt.query_map(params![after, limit], |r| {
                let id: Vec<u8> = r.get(0)?;
                Ok(ShardInfo {
                    secret_id: hex::encode(id),
                    epoch: r.get(1)?,
                    index: r.get(2)?,
                    owner: r.get(3)?,
                    size: r.get(4)?,
                    sealed_size: r.get(5)?,
                    key_version: r.get(6)?,
                    created_at: r.get(7)?,
                    kind: r.get(8)?,
                    pending: r.get(9)?,
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::AuditVerdict;

    use crate::store::audit::sample_event as ev;

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
            kind: "shard".into(),
            pending: false,
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
}
