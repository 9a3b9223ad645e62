//! Reshare: the state of the reshares this custodian takes part in, in memory only, from
//! open until its key package is stored or the deadline passes.
//!
//! A custodian may deal (it holds a share of the old epoch and is in the dealers' quorum),
//! receive (it is a new holder), or both. A dealer keeps what it dealt, so that a repeated
//! deal resends the same sub-shares; a new holder keeps the sub-shares the dealers sent
//! over the peer channel until finish adds them. Nothing is written anywhere before the
//! key package is stored: a restart drops every reshare and the next step answers
//! [`Step::Unknown`], after which the coordinator aborts. Every step is idempotent.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use shard::SecretId;
use threshold::reshare::SubShare;
use threshold::{HolderId, Kind, Zeroizing};
use wire::dkg::{DkgFinishResponse, DkgPeer};

pub use crate::dkg::Step;
use crate::dkg::{DKG_TTL, MAX_DKGS};

/// How long a finished reshare's answer is kept for a repeated finish.
const REMEMBER: Duration = Duration::from_secs(600);

/// What open was asked, compared when it is repeated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Params {
    /// The owner's SPIFFE id.
    pub owner: String,
    /// The key kind.
    pub kind: Kind,
    /// The new threshold.
    pub t: u16,
    /// The number of new holders.
    pub n: u16,
    /// The epoch made.
    pub epoch: u32,
    /// The epoch dealt from.
    pub from: u32,
    /// Every new holder, in holder order.
    pub peers: Vec<DkgPeer>,
    /// Every dealer, under its old holder number.
    pub dealers: Vec<DkgPeer>,
    /// This custodian's new holder number, if it is a new holder.
    pub me: Option<HolderId>,
    /// This custodian's old holder number, if it deals.
    pub dealer: Option<HolderId>,
}

impl Params {
    /// The new holder `holder`'s entry.
    pub fn peer(&self, holder: u16) -> Option<&DkgPeer> {
        self.peers.iter().find(|p| p.holder == holder)
    }

    /// The dealer under old holder number `holder`.
    pub fn dealer_entry(&self, holder: u16) -> Option<&DkgPeer> {
        self.dealers.iter().find(|p| p.holder == holder)
    }
}

/// What a dealer dealt: its public values and the sub-shares to (re)send.
pub struct Dealt {
    /// Its commitment's bytes.
    pub commitment: Vec<u8>,
    /// The old public key package's bytes.
    pub public: Vec<u8>,
    /// The sub-shares, by new holder.
    pub outgoing: BTreeMap<HolderId, SubShare>,
}

impl Dealt {
    /// The sub-shares' bytes to send, `(new holder, bytes)`, wiped on drop.
    pub fn sending(&self) -> Vec<(HolderId, Zeroizing<Vec<u8>>)> {
        self.outgoing
            .iter()
            .map(|(h, s)| (*h, Zeroizing::new(s.expose().to_vec())))
            .collect()
    }
}

enum Dealing {
    Not,
    Busy,
    Done(Dealt),
}

enum Receiving {
    Waiting,
    Busy,
    Done(DkgFinishResponse),
}

struct Reshare {
    params: Params,
    dealing: Dealing,
    receiving: Receiving,
    received: BTreeMap<u16, SubShare>,
    deadline: Instant,
}

/// What deal takes out.
pub enum DealStart {
    /// First time: deal.
    Fresh(Params),
    /// Repeated: resend these, with the public values to answer.
    Resend(
        Params,
        Vec<(HolderId, Zeroizing<Vec<u8>>)>,
        Vec<u8>,
        Vec<u8>,
    ),
}

/// What finish takes out.
pub enum FinishStart {
    /// Combine these sub-shares, by dealer.
    Start(Params, BTreeMap<HolderId, SubShare>),
    /// Already stored: the first answer.
    Done(DkgFinishResponse),
}

/// Every reshare of this process.
#[derive(Default)]
pub struct Reshares {
    inner: Mutex<HashMap<SecretId, Reshare>>,
}

impl Reshares {
    fn lock(&self) -> MutexGuard<'_, HashMap<SecretId, Reshare>> {
        let mut map = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        map.retain(|_, r| r.deadline > now);
        map
    }

    /// Open: starts the reshare, or, repeated with the same parameters, answers the time
    /// left. A finished reshare is remembered only for a repeated finish; a new one of
    /// the key takes its place.
    pub fn open(&self, id: SecretId, params: Params) -> Result<Duration, Step> {
        let mut map = self.lock();
        let now = Instant::now();
        match map.get(&id) {
            Some(r) if r.params == params && !matches!(r.receiving, Receiving::Done(_)) => {
                return Ok(r.deadline.saturating_duration_since(now));
            }
            Some(r) if matches!(r.receiving, Receiving::Done(_)) && r.params != params => {}
            Some(_) => return Err(Step::Exists),
            None => {}
        }
        if map.len() >= MAX_DKGS {
            return Err(Step::Full);
        }
        map.insert(
            id,
            Reshare {
                params,
                dealing: Dealing::Not,
                receiving: Receiving::Waiting,
                received: BTreeMap::new(),
                deadline: now + DKG_TTL,
            },
        );
        Ok(DKG_TTL)
    }

    /// The reshare's parameters.
    pub fn params(&self, id: &SecretId) -> Option<Params> {
        self.lock().get(id).map(|r| r.params.clone())
    }

    /// Deal's start: deal for the first time, or resend what was dealt.
    pub fn deal(&self, id: &SecretId) -> Result<DealStart, Step> {
        let mut map = self.lock();
        let r = map.get_mut(id).ok_or(Step::Unknown)?;
        if r.params.dealer.is_none() {
            return Err(Step::OutOfOrder);
        }
        match &r.dealing {
            Dealing::Not => {
                r.dealing = Dealing::Busy;
                Ok(DealStart::Fresh(r.params.clone()))
            }
            Dealing::Busy => Err(Step::OutOfOrder),
            Dealing::Done(dealt) => Ok(DealStart::Resend(
                r.params.clone(),
                dealt.sending(),
                dealt.commitment.clone(),
                dealt.public.clone(),
            )),
        }
    }

    /// Deal computed: keeps what was dealt for a repeated deal.
    pub fn dealt(&self, id: &SecretId, dealt: Dealt) -> Result<(), Step> {
        let mut map = self.lock();
        let r = map.get_mut(id).ok_or(Step::Unknown)?;
        if !matches!(r.dealing, Dealing::Busy) {
            return Err(Step::OutOfOrder);
        }
        r.dealing = Dealing::Done(dealt);
        Ok(())
    }

    /// A sub-share from the peer channel, from the dealer under old holder number `from`.
    /// Answers whether the same sub-share had already been taken.
    pub fn receive(&self, id: &SecretId, from: u16, share: SubShare) -> Result<bool, Step> {
        let mut map = self.lock();
        let r = map.get_mut(id).ok_or(Step::Unknown)?;
        if let Some(had) = r.received.get(&from) {
            return if had.expose() == share.expose() {
                Ok(true)
            } else {
                Err(Step::Conflict)
            };
        }
        if !matches!(r.receiving, Receiving::Waiting) {
            return Err(Step::OutOfOrder);
        }
        r.received.insert(from, share);
        Ok(false)
    }

    /// Finish's start: every dealer's sub-share, once all are in.
    pub fn finish(&self, id: &SecretId) -> Result<FinishStart, Step> {
        let mut map = self.lock();
        let r = map.get_mut(id).ok_or(Step::Unknown)?;
        match &r.receiving {
            Receiving::Done(answer) => return Ok(FinishStart::Done(answer.clone())),
            Receiving::Busy => return Err(Step::OutOfOrder),
            Receiving::Waiting if r.params.me.is_none() => return Err(Step::OutOfOrder),
            Receiving::Waiting => {}
        }
        let complete = r
            .params
            .dealers
            .iter()
            .all(|d| r.received.contains_key(&d.holder));
        if !complete {
            return Err(Step::Incomplete);
        }
        let mut shares = BTreeMap::new();
        for (from, share) in std::mem::take(&mut r.received) {
            shares.insert(HolderId::new(from).map_err(|_| Step::OutOfOrder)?, share);
        }
        r.receiving = Receiving::Busy;
        Ok(FinishStart::Start(r.params.clone(), shares))
    }

    /// Finish stored the key package: keeps its answer for a repeated finish.
    pub fn done(&self, id: &SecretId, answer: DkgFinishResponse) {
        if let Some(r) = self.lock().get_mut(id) {
            r.receiving = Receiving::Done(answer);
            r.dealing = Dealing::Not;
            r.deadline = Instant::now() + REMEMBER;
        }
    }

    /// Drops a reshare and every secret of it. Answers whether there was one.
    pub fn abort(&self, id: &SecretId) -> bool {
        self.lock().remove(id).is_some()
    }

    /// Drops expired reshares.
    pub fn sweep(&self) {
        drop(self.lock());
    }

    /// Reshares under way (finished ones excluded).
    pub fn open_count(&self) -> usize {
        self.lock()
            .values()
            .filter(|r| !matches!(r.receiving, Receiving::Done(_)))
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;
    use threshold::{SeededRng, Threshold};

    fn peers(n: u16) -> Vec<DkgPeer> {
        (1..=n)
            .map(|h| DkgPeer {
                holder: h,
                name: format!("c{h}"),
                address: format!("127.0.0.1:{}", 7000 + h),
                server_name: "127.0.0.1".into(),
            })
            .collect()
    }

    fn params(me: Option<u16>, dealer: Option<u16>) -> Params {
        Params {
            owner: "spiffe://td/user/alice".into(),
            kind: Kind::Ed25519,
            t: 2,
            n: 3,
            epoch: 2,
            from: 1,
            peers: peers(3),
            dealers: peers(2),
            me: me.map(|h| HolderId::new(h).unwrap()),
            dealer: dealer.map(|h| HolderId::new(h).unwrap()),
        }
    }

    fn sub(seed: u8) -> SubShare {
        let mut rng = SeededRng::from_seed(Zeroizing::new([seed; 32]));
        let split = Threshold::new(2, 2).unwrap();
        let dealt = threshold::deal(Kind::Ed25519, split, &mut rng).unwrap();
        let one = HolderId::new(1).unwrap();
        let quorum: BTreeSet<_> = HolderId::all(2).collect();
        let to = Threshold::new(2, 3).unwrap();
        let dealing =
            threshold::reshare::deal(&dealt.key_packages[&one], &quorum, to, &mut rng).unwrap();
        SubShare::decode(Kind::Ed25519, dealing.shares[&one].expose()).unwrap()
    }

    #[test]
    fn steps_repeat_keep_order_and_refuse_conflicts() {
        let id = SecretId::from_bytes([3; 16]);
        let r = Reshares::default();
        assert!(matches!(r.finish(&id), Err(Step::Unknown)));
        r.open(id, params(Some(1), Some(1))).unwrap();
        r.open(id, params(Some(1), Some(1))).unwrap();
        assert_eq!(r.open(id, params(Some(2), None)), Err(Step::Exists));
        let Ok(DealStart::Fresh(_)) = r.deal(&id) else {
            panic!("deal should start fresh");
        };
        assert!(matches!(r.deal(&id), Err(Step::OutOfOrder)), "busy");
        r.dealt(
            &id,
            Dealt {
                commitment: vec![1],
                public: vec![2],
                outgoing: BTreeMap::new(),
            },
        )
        .unwrap();
        let Ok(DealStart::Resend(_, _, commitment, _)) = r.deal(&id) else {
            panic!("a repeated deal resends");
        };
        assert_eq!(commitment, vec![1]);
        assert!(matches!(r.finish(&id), Err(Step::Incomplete)));
        assert_eq!(r.receive(&id, 1, sub(1)), Ok(false));
        assert_eq!(r.receive(&id, 1, sub(1)), Ok(true));
        assert_eq!(r.receive(&id, 1, sub(2)), Err(Step::Conflict));
        assert!(matches!(r.finish(&id), Err(Step::Incomplete)));
        assert_eq!(r.receive(&id, 2, sub(3)), Ok(false));
        let Ok(FinishStart::Start(_, shares)) = r.finish(&id) else {
            panic!("finish should start");
        };
        assert_eq!(shares.len(), 2);
        assert!(matches!(r.finish(&id), Err(Step::OutOfOrder)), "busy");
        assert_eq!(r.open_count(), 1);
        r.done(
            &id,
            DkgFinishResponse {
                holder: 1,
                epoch: 2,
                public: "p".into(),
                key_version: 1,
                already_stored: false,
            },
        );
        assert_eq!(r.open_count(), 0);
        assert!(matches!(r.finish(&id), Ok(FinishStart::Done(_))));
        // A new reshare of the key replaces the finished one.
        r.open(id, params(Some(2), None)).unwrap();
        assert!(matches!(r.deal(&id), Err(Step::OutOfOrder)), "not a dealer");
        assert!(r.abort(&id));
        assert!(r.params(&id).is_none());
    }
}
