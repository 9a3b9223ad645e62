//! The pool of logged-in sessions and the key copies each one caches.

use std::sync::{Condvar, Mutex, PoisonError};

use cryptoki::error::Error as CkError;
use cryptoki::object::{Attribute, ObjectHandle};
use cryptoki::session::Session;
use tracing::debug;

use super::keyring::{find_token_key, Role, VersionKeys};
use super::rc::{ck_text, map_ck, session_dead, CkOrErr};
use super::{lock, Pkcs11Sealer};
use crate::Error;

/// Serializes finding a token key with making its session copy, across every sealer of
/// this process (see [`Conn::key`]).
static KEY_COPY: Mutex<()> = Mutex::new(());

/// Up to `max` logged-in sessions, opened on demand and reused most-recent-first.
pub(super) struct Pool {
    state: Mutex<PoolState>,
    freed: Condvar,
    max: usize,
}

struct PoolState {
    idle: Vec<Conn>,
    /// Sessions open, idle or leased.
    open: usize,
    /// Bumped to retire every session opened before (and its cached key copies).
    generation: u64,
}

/// A pooled session and the session-object copies of keys it has made.
pub(super) struct Conn {
    pub(super) session: Session,
    pub(super) keys: Vec<(u32, Role, ObjectHandle)>,
    pub(super) generation: u64,
}

impl Conn {
    /// The key of `role` in `keys`: its session copy, made now on first use.
    pub(super) fn key(
        &mut self,
        keys: VersionKeys<'_>,
        role: Role,
    ) -> Result<ObjectHandle, CkOrErr> {
        if let Some(&(_, _, h)) = self
            .keys
            .iter()
            .find(|(v, r, _)| *v == keys.version && *r == role)
        {
            return Ok(h);
        }
        let label = keys.label(role);
        // One lookup-and-copy at a time in this process: while SoftHSM copies a key into
        // a session object, a search from another session can see the copy as a second
        // token key (seen once under load as "several token keys are labelled ..."). It
        // runs once per session and key, so holding a lock costs nothing on the seal path.
        let _one_at_a_time = KEY_COPY.lock().unwrap_or_else(PoisonError::into_inner);
        let token_key = find_token_key(&self.session, &label, keys.device_id)?;
        let handle = match self
            .session
            .copy_object(token_key, &[Attribute::Token(false)])
        {
            Ok(copy) => copy,
            Err(e) if session_dead(&e) => return Err(CkOrErr::Ck(e)),
            Err(e) => {
                debug!(key = %label, error = %ck_text(&e), "no session copy; using the token key");
                token_key
            }
        };
        self.keys.push((keys.version, role, handle));
        Ok(handle)
    }
}

impl Pool {
    pub(super) fn new(max: usize) -> Pool {
        Pool {
            state: Mutex::new(PoolState {
                idle: Vec::new(),
                open: 0,
                generation: 0,
            }),
            freed: Condvar::new(),
            max: max.max(1),
        }
    }

    /// Adds a session opened outside `acquire` (the one `open` logged in with).
    pub(super) fn put_new(&self, mut conn: Conn) {
        let mut st = lock(&self.state);
        conn.generation = st.generation;
        st.open += 1;
        st.idle.push(conn);
    }

    pub(super) fn acquire<'a>(&'a self, sealer: &Pkcs11Sealer) -> Result<Lease<'a>, Error> {
        let mut st = lock(&self.state);
        loop {
            while let Some(conn) = st.idle.pop() {
                if conn.generation == st.generation {
                    return Ok(Lease::new(self, conn));
                }
                st.open -= 1;
                drop(conn);
            }
            if st.open < self.max {
                st.open += 1;
                let generation = st.generation;
                drop(st);
                return match sealer.open_conn(generation) {
                    Ok(conn) => Ok(Lease::new(self, conn)),
                    Err(e) => {
                        lock(&self.state).open -= 1;
                        self.freed.notify_one();
                        Err(e)
                    }
                };
            }
            st = self.freed.wait(st).unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// Retires every session: idle ones now, leased ones when they come back.
    pub(super) fn invalidate(&self) {
        let retired = {
            let mut st = lock(&self.state);
            st.generation += 1;
            let retired = std::mem::take(&mut st.idle);
            st.open -= retired.len();
            retired
        };
        drop(retired);
        self.freed.notify_all();
    }

    fn give_back(&self, conn: Conn, broken: bool) {
        let mut st = lock(&self.state);
        if broken || conn.generation != st.generation {
            st.open -= 1;
            drop(st);
            drop(conn);
        } else {
            st.idle.push(conn);
            drop(st);
        }
        self.freed.notify_one();
    }
}

/// One session borrowed from the pool; returned (or closed, if it broke) on drop.
pub(super) struct Lease<'a> {
    pool: &'a Pool,
    conn: Option<Conn>,
    broken: std::cell::Cell<bool>,
}

impl<'a> Lease<'a> {
    fn new(pool: &'a Pool, conn: Conn) -> Self {
        Lease {
            pool,
            conn: Some(conn),
            broken: std::cell::Cell::new(false),
        }
    }

    fn conn(&self) -> &Conn {
        // Invariant: `conn` is Some from construction until drop.
        self.conn
            .as_ref()
            .expect("lease holds a session until dropped")
    }

    pub(super) fn session(&self) -> &Session {
        &self.conn().session
    }

    /// The key of `role` in `keys`, through this session's copies.
    pub(super) fn key(&mut self, keys: VersionKeys<'_>, role: Role) -> Result<ObjectHandle, Error> {
        // Invariant: `conn` is Some from construction until drop.
        let conn = self
            .conn
            .as_mut()
            .expect("lease holds a session until dropped");
        conn.key(keys, role).map_err(|e| self.note_err(e))
    }

    /// Maps a device error, remembering whether it killed the session.
    pub(super) fn note(&self, e: CkError) -> Error {
        if session_dead(&e) {
            self.broken.set(true);
        }
        map_ck(e)
    }

    pub(super) fn note_err(&self, e: CkOrErr) -> Error {
        match e {
            CkOrErr::Ck(e) => self.note(e),
            CkOrErr::Err(e) => e,
        }
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            self.pool.give_back(conn, self.broken.get());
        }
    }
}
