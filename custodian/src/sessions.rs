//! Threshold-signing sessions: the nonces of round 1, in memory only, until round 2
//! spends them or their deadline passes.
//!
//! A session is keyed by the owner, the key and the coordinator's session id. Its
//! nonces (and the key package that made them) are never written anywhere: a restart
//! drops every session, and round 2 then answers [`Taken::Unknown`]. Round 2 takes the
//! session out of the map before it signs, so the nonces sign at most once; the id is
//! remembered for a while after, so that a replayed round 2 is told apart
//! ([`Taken::Spent`]) from one that never had a session.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use shard::SecretId;
use threshold::{KeyPackage, Nonces, SigningCommitments};

/// How long round 1's nonces wait for round 2.
pub const SESSION_TTL: Duration = Duration::from_secs(30);
/// How long an ended session's id is remembered (to name a replay as one).
const REMEMBER: Duration = Duration::from_secs(600);
/// Open sessions at most, over all owners; round 1 beyond it is refused.
pub const MAX_OPEN: usize = 4096;
/// Open sessions at most of one owner, so that one user cannot take every slot.
pub const MAX_OPEN_PER_OWNER: usize = 256;
/// Ended session ids remembered at most; the oldest are forgotten first.
const MAX_ENDED: usize = 65_536;

/// Who a session belongs to: owner (SPIFFE id text), key, session id.
pub type SessionKey = (String, SecretId, [u8; 16]);

/// What round 1 left for round 2.
pub struct Open {
    /// The key package that committed (secret; wiped on drop).
    pub key: KeyPackage,
    /// The nonces (secret; wiped on drop).
    pub nonces: Nonces,
    /// Their public commitments, as answered.
    pub commitments: SigningCommitments,
    /// The key package's epoch.
    pub epoch: u32,
    deadline: Instant,
}

/// How a session ended, for the ids remembered after.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ended {
    Spent,
    Expired,
}

/// What round 2 found.
pub enum Taken {
    /// The session, now removed: its nonces are the caller's to spend.
    Open(Box<Open>),
    /// No session of that id (never opened, or dropped by a restart).
    Unknown,
    /// The deadline passed; the nonces are gone.
    Expired,
    /// Round 2 was already answered.
    Spent,
}

/// Why round 1 could not open a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenError {
    /// The id is in use (open, or recently ended) for this owner and key.
    Exists,
    /// [`MAX_OPEN`] sessions are open, or [`MAX_OPEN_PER_OWNER`] of this owner.
    Full,
}

#[derive(Default)]
struct Inner {
    open: HashMap<SessionKey, Open>,
    ended: HashMap<SessionKey, (Instant, Ended)>,
}

impl Inner {
    /// Drops expired nonces (remembering their ids) and forgets old ids.
    fn sweep(&mut self, now: Instant) {
        let expired: Vec<SessionKey> = self
            .open
            .iter()
            .filter(|(_, s)| s.deadline <= now)
            .map(|(k, _)| k.clone())
            .collect();
        for key in expired {
            self.open.remove(&key);
            self.ended.insert(key, (now, Ended::Expired));
        }
        self.ended
            .retain(|_, (at, _)| now.duration_since(*at) < REMEMBER);
        if self.ended.len() > MAX_ENDED {
            let mut ages: Vec<Instant> = self.ended.values().map(|(at, _)| *at).collect();
            ages.sort_unstable();
            let cut = ages[self.ended.len() - MAX_ENDED];
            self.ended.retain(|_, (at, _)| *at > cut);
        }
    }
}

/// Every open session of this process.
#[derive(Default)]
pub struct Sessions {
    inner: Mutex<Inner>,
}

impl Sessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Opens a session with round 1's outcome; answers its deadline.
    pub fn open(
        &self,
        key: SessionKey,
        package: KeyPackage,
        nonces: Nonces,
        commitments: SigningCommitments,
        epoch: u32,
    ) -> Result<Duration, OpenError> {
        let now = Instant::now();
        let mut inner = self.lock();
        inner.sweep(now);
        if inner.open.contains_key(&key) || inner.ended.contains_key(&key) {
            return Err(OpenError::Exists);
        }
        let mine = inner
            .open
            .keys()
            .filter(|(owner, _, _)| *owner == key.0)
            .count();
        if inner.open.len() >= MAX_OPEN || mine >= MAX_OPEN_PER_OWNER {
            return Err(OpenError::Full);
        }
        inner.open.insert(
            key,
            Open {
                key: package,
                nonces,
                commitments,
                epoch,
                deadline: now + SESSION_TTL,
            },
        );
        Ok(SESSION_TTL)
    }

    /// Takes the session out for round 2 and remembers it as spent, whatever round 2
    /// then does with it.
    pub fn take(&self, key: &SessionKey) -> Taken {
        let now = Instant::now();
        let mut inner = self.lock();
        inner.sweep(now);
        if let Some(open) = inner.open.remove(key) {
            inner.ended.insert(key.clone(), (now, Ended::Spent));
            return Taken::Open(Box::new(open));
        }
        match inner.ended.get(key) {
            Some((_, Ended::Spent)) => Taken::Spent,
            Some((_, Ended::Expired)) => Taken::Expired,
            None => Taken::Unknown,
        }
    }

    /// Drops the nonces of every session past its deadline (the server runs this every
    /// two seconds, so nonces never outlive their deadline by much, requests or not).
    pub fn sweep(&self) {
        self.lock().sweep(Instant::now());
    }

    /// Sessions open now.
    pub fn open_count(&self) -> usize {
        self.lock().open.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use threshold::{deal, Kind, SeededRng, Threshold, Zeroizing};

    fn round1(seed: u8) -> (KeyPackage, Nonces, SigningCommitments) {
        let mut rng = SeededRng::from_seed(Zeroizing::new([seed; 32]));
        let dealt = deal(Kind::Ed25519, Threshold::new(2, 3).unwrap(), &mut rng).unwrap();
        let key = dealt.key_packages.into_values().next().unwrap();
        let (nonces, commitments) = threshold::commit(&key, &mut rng).unwrap();
        (key, nonces, commitments)
    }

    fn key(session: u8) -> SessionKey {
        (
            "spiffe://t/user/a".into(),
            SecretId::from_bytes([1; 16]),
            [session; 16],
        )
    }

    #[test]
    fn a_session_is_taken_once_then_named_spent() {
        let s = Sessions::default();
        let (k, n, c) = round1(1);
        s.open(key(1), k, n, c, 1).unwrap();
        let (k, n, c) = round1(2);
        assert_eq!(s.open(key(1), k, n, c, 1).unwrap_err(), OpenError::Exists);
        assert!(matches!(s.take(&key(1)), Taken::Open(_)));
        assert!(matches!(s.take(&key(1)), Taken::Spent));
        assert!(matches!(s.take(&key(2)), Taken::Unknown));
        // A spent id cannot be opened again.
        let (k, n, c) = round1(3);
        assert_eq!(s.open(key(1), k, n, c, 1).unwrap_err(), OpenError::Exists);
        assert_eq!(s.open_count(), 0);
    }

    #[test]
    fn expired_sessions_lose_their_nonces() {
        let s = Sessions::default();
        let (k, n, c) = round1(1);
        s.open(key(1), k, n, c, 1).unwrap();
        s.lock().open.get_mut(&key(1)).unwrap().deadline = Instant::now();
        assert!(matches!(s.take(&key(1)), Taken::Expired));
        assert_eq!(s.open_count(), 0);
    }

    #[test]
    fn one_owner_cannot_take_every_slot() {
        let s = Sessions::default();
        for n in 0..MAX_OPEN_PER_OWNER {
            let (k, no, c) = round1(1);
            let mut id = key(0);
            id.2[..8].copy_from_slice(&(n as u64).to_be_bytes());
            s.open(id, k, no, c, 1).unwrap();
        }
        let (k, no, c) = round1(1);
        let mut id = key(0);
        id.2 = [0xff; 16];
        assert_eq!(
            s.open(id.clone(), k, no, c, 1).unwrap_err(),
            OpenError::Full
        );
        let (k, no, c) = round1(1);
        id.0 = "spiffe://t/user/b".into();
        s.open(id, k, no, c, 1).unwrap();
    }

    #[test]
    fn sweeping_drops_expired_nonces_without_a_request() {
        let s = Sessions::default();
        let (k, n, c) = round1(1);
        s.open(key(1), k, n, c, 1).unwrap();
        s.lock().open.get_mut(&key(1)).unwrap().deadline = Instant::now();
        s.sweep();
        assert_eq!(s.open_count(), 0);
        assert!(matches!(s.take(&key(1)), Taken::Expired));
    }

    #[test]
    fn another_owner_or_key_is_another_session() {
        let s = Sessions::default();
        let (k, n, c) = round1(1);
        s.open(key(1), k, n, c, 1).unwrap();
        let mut other = key(1);
        other.0 = "spiffe://t/user/b".into();
        assert!(matches!(s.take(&other), Taken::Unknown));
        let mut other = key(1);
        other.1 = SecretId::from_bytes([2; 16]);
        assert!(matches!(s.take(&other), Taken::Unknown));
        assert!(matches!(s.take(&key(1)), Taken::Open(_)));
    }
}
