//! The database schema, as the ordered list of migrations that build it.

use rusqlite::{Connection, TransactionBehavior};

use super::StoreError;

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
    // 3: threshold-signing keys beside shards (`kind` is `shard` or the key's kind), and
    // the audit detail of a signature share (message digest and session id).
    "ALTER TABLE shards ADD COLUMN kind TEXT NOT NULL DEFAULT 'shard';
     ALTER TABLE audit ADD COLUMN detail TEXT NOT NULL DEFAULT '';",
    // 4: epochs. A pending row (a refresh's next epoch, before the coordinator commits it)
    // is used only when asked for by its epoch; the newest committed row is the default.
    "ALTER TABLE shards ADD COLUMN pending INTEGER NOT NULL DEFAULT 0;",
];

/// Applies the migrations `conn`'s database has not run yet, each in its own
/// transaction, refusing a database written by a newer build.
pub(super) fn apply(conn: &mut Connection) -> Result<(), StoreError> {
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
    Ok(())
}
