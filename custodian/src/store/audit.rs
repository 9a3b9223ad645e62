//! The hash-chained audit log.
//!
//! Every audit row carries `hash = SHA-256(tag || prev_hash || seq || fields)`, so
//! an edited row breaks its own hash and a deleted row breaks the next row's link
//! (`verify_audit` reports the first broken row). The chain cannot show that its
//! newest rows were cut off by someone who can write the database file; the
//! README says so.

use rusqlite::{params, Connection, OptionalExtension};
use sha2::{Digest, Sha256};

use super::{now, Store, StoreError};

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
    /// What else the event names, as `key=value` words (a signature share: the message
    /// digest and the session id); empty for most events.
    pub detail: String,
}

impl AuditEvent {
    /// The same event, recorded as refused for `reason`.
    pub fn refused(self, reason: &str) -> AuditEvent {
        AuditEvent {
            outcome: "refused",
            reason: reason.to_owned(),
            ..self
        }
    }
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

fn row_hash(prev: &[u8; 32], seq: i64, at: i64, e: &AuditEvent) -> [u8; 32] {
    chain_hash(
        prev,
        seq,
        at,
        [e.event, &e.peer, &e.secret_id, e.outcome, &e.reason],
        e.index,
        &e.detail,
    )
}

/// The audit chain's hash over one row, with every text field length-prefixed. The
/// detail (added by migration 3) is hashed only when it is not empty, so that rows written
/// before it keep their hashes.
fn chain_hash(
    prev: &[u8; 32],
    seq: i64,
    at: i64,
    fields: [&str; 5],
    index: i64,
    detail: &str,
) -> [u8; 32] {
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
    if !detail.is_empty() {
        h.update((detail.len() as u64).to_be_bytes());
        h.update(detail.as_bytes());
    }
    h.finalize().into()
}

/// Where the chain ends: the newest row's sequence number and hash.
pub(super) type Head = (i64, [u8; 32]);

/// Appends `e` after `head` inside `tx`; returns the new head.
pub(super) fn append(
    tx: &rusqlite::Transaction<'_>,
    head: Head,
    e: &AuditEvent,
) -> Result<Head, StoreError> {
    let seq = head.0 + 1;
    let at = now();
    let hash = row_hash(&head.1, seq, at, e);
    tx.prepare_cached(
        "INSERT INTO audit (seq, at, event, peer, secret_id, idx, outcome, reason, prev_hash, hash, detail)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
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
        &hash[..],
        e.detail
    ])?;
    Ok((seq, hash))
}

/// The newest row's sequence number and hash: where the next row links to
/// (`(0, [0; 32])` for an empty log).
pub(super) fn chain_head(conn: &Connection) -> Result<Head, StoreError> {
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
    Ok((head_seq, head_hash))
}

impl Store {
    /// Appends audit events in one transaction (group commit for concurrent releases).
    pub fn append_audit(&self, events: &[AuditEvent]) -> Result<(), StoreError> {
        if events.is_empty() {
            return Ok(());
        }
        self.write(|tx, head| {
            for e in events {
                *head = append(tx, *head, e)?;
            }
            Ok(())
        })
    }

    /// The newest audit rows, newest first.
    pub fn audit_tail(&self, limit: u32) -> Result<Vec<AuditRow>, StoreError> {
        self.with_reader(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT seq, at, event, peer, secret_id, idx, outcome, reason, detail FROM audit ORDER BY seq DESC LIMIT ?1",
            )?;
            let rows = stmt.query_map(params![limit], |r| {
                let mut event = event_of(r)?;
                event.detail = r.get(8)?;
                Ok(AuditRow {
                    seq: r.get(0)?,
                    at: r.get(1)?,
                    event,
                })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }

    /// Walks the whole audit chain and reports the first broken row.
    pub fn verify_audit(&self) -> Result<AuditVerdict, StoreError> {
        self.with_reader(|c| {
            let mut stmt = c.prepare(
                "SELECT seq, at, event, peer, secret_id, idx, outcome, reason, prev_hash, hash, detail FROM audit ORDER BY seq",
            )?;
            let mut rows = stmt.query([])?;
            let mut prev = [0u8; 32];
            let mut expected_seq = 1i64;
            let mut count = 0u64;
            while let Some(r) = rows.next()? {
                let seq: i64 = r.get(0)?;
                let e = event_of(r)?;
                let prev_hash: Vec<u8> = r.get(8)?;
                let hash: Vec<u8> = r.get(9)?;
                if seq != expected_seq {
                    return Ok(AuditVerdict::Broken { seq: expected_seq, problem: "row missing (sequence gap)" });
                }
                if prev_hash != prev {
                    return Ok(AuditVerdict::Broken { seq, problem: "does not link to the previous row" });
                }
                // Hash the stored text exactly (not the interned form) so any edit shows.
                let (event, outcome): (String, String) = (r.get(2)?, r.get(6)?);
                let fields = [event.as_str(), &e.peer, &e.secret_id, outcome.as_str(), &e.reason];
                let detail: String = r.get(10)?;
                if hash[..] != chain_hash(&prev, seq, r.get(1)?, fields, e.index, &detail)[..] {
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
        "commit",
        "sign",
        "health",
        "metrics",
        "ok",
        "refused",
        "failed",
        "handshake",
    ];
    WORDS.iter().find(|w| **w == s).copied().unwrap_or("?")
}

/// The event of an audit row selected as `seq, at, event, peer, secret_id, idx,
/// outcome, reason, ...` (the detail, when selected, is set by the caller).
fn event_of(r: &rusqlite::Row<'_>) -> rusqlite::Result<AuditEvent> {
    Ok(AuditEvent {
        event: intern(&r.get::<_, String>(2)?),
        peer: r.get(3)?,
        secret_id: r.get(4)?,
        index: r.get(5)?,
        outcome: intern(&r.get::<_, String>(6)?),
        reason: r.get(7)?,
        detail: String::new(),
    })
}

/// An audit event of `event` about one shard, for tests.
#[cfg(test)]
pub(super) fn sample_event(event: &'static str) -> AuditEvent {
    AuditEvent {
        event,
        peer: "spiffe://t/user/alice".into(),
        secret_id: "00".repeat(16),
        index: 1,
        outcome: "ok",
        reason: String::new(),
        detail: String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use super::sample_event as ev;

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
