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
//!
//! The schema and its migrations are in `migrations`, the shard rows in `shards`, the
//! device binding in `device` and the audit chain in `audit`; this module holds the
//! connections they share.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, TransactionBehavior};

mod audit;
mod device;
mod migrations;
mod shards;

pub use audit::{AuditEvent, AuditRow, AuditVerdict};
pub use shards::{CommitOutcome, DepositOutcome, NewShard, StoredShard};

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

impl Store {
    /// Opens (creating if needed) the database and applies migrations.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let mut conn = open_conn(path)?;
        migrations::apply(&mut conn)?;
        let (head_seq, head_hash) = audit::chain_head(&conn)?;
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

    /// Runs `work` in one immediate write transaction. `work` appends its audit rows
    /// through the chain head it is given ([`audit::append`]); its rows and those audit
    /// rows commit together or not at all, and the head moves only on commit.
    fn write<T>(
        &self,
        work: impl FnOnce(&rusqlite::Transaction<'_>, &mut audit::Head) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut w = self.writer();
        let mut head = (w.head_seq, w.head_hash);
        let tx = w
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let out = work(&tx, &mut head)?;
        tx.commit()?;
        (w.head_seq, w.head_hash) = head;
        Ok(out)
    }

    /// Checks the database answers a write (for health): an empty immediate transaction.
    pub fn writable(&self) -> Result<(), StoreError> {
        self.write(|_, _| Ok(()))
    }
}
