//! Keys born distributed: the state of the DKGs this custodian takes part in, in memory
//! only, from round 1 until the key package is stored or the deadline passes.
//!
//! A DKG is keyed by its key id. Its secrets (the holder's polynomial after round 1, its
//! own share after round 2, the shares other holders sent over the peer channel) are never
//! written anywhere: a restart drops every DKG and the next step answers
//! [`Step::Unknown`], after which the coordinator aborts and nothing is left. Every step
//! is idempotent: a repeated round 1 with the same parameters answers the same package,
//! a repeated round 2 with the same round-1 packages resends the same round-2 packages, a
//! repeated finish answers what the first stored, and a repeated peer package is taken
//! once.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use shard::SecretId;
use threshold::dkg::{Round1Package, Round1Secret, Round2Package, Round2Secret};
use threshold::{HolderId, Kind};
use wire::dkg::{DkgFinishResponse, DkgPeer};

/// How long a DKG may take from round 1 to finish before its secrets are dropped.
pub const DKG_TTL: Duration = Duration::from_secs(60);
/// DKGs under way at most; round 1 beyond it is refused.
pub const MAX_DKGS: usize = 64;
/// How long a finished DKG's answer is kept for a repeated finish.
const REMEMBER: Duration = Duration::from_secs(600);

/// What round 1 was asked, compared when it is repeated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Params {
    /// The owner's SPIFFE id.
    pub owner: String,
    /// The key kind.
    pub kind: Kind,
    /// Threshold.
    pub t: u16,
    /// Holders.
    pub n: u16,
    /// This custodian's holder number.
    pub me: HolderId,
    /// Epoch of the key.
    pub epoch: u32,
    /// Every holder, in holder order.
    pub peers: Vec<DkgPeer>,
    /// A refresh of the key package stored at this epoch (into `epoch`), or a new key.
    pub refreshes: Option<u32>,
}

impl Params {
    /// The peer entry of `holder`.
    pub fn peer(&self, holder: u16) -> Option<&DkgPeer> {
        self.peers.iter().find(|p| p.holder == holder)
    }
}

/// A round-2 package another holder sent, with the round-1 transcript it was made under.
struct Received {
    transcript: [u8; 32],
    package: Round2Package,
}

enum Stage {
    /// After round 1: the polynomial.
    Round1(Round1Secret),
    /// A step is computing outside the lock.
    Busy,
    /// After round 2: this holder's own share, the round-1 packages and what was sent.
    Round2 {
        secret: Round2Secret,
        round1: BTreeMap<HolderId, Round1Package>,
        transcript: [u8; 32],
        outgoing: BTreeMap<HolderId, Round2Package>,
    },
    /// Stored; the answer is kept for a repeated finish.
    Done(DkgFinishResponse),
}

struct Dkg {
    params: Params,
    package: Round1Package,
    stage: Stage,
    received: BTreeMap<u16, Received>,
    deadline: Instant,
}

/// Why a step could not go on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// No DKG of this id: never started, expired, aborted, or lost to a restart.
    Unknown,
    /// A DKG of this id runs with other parameters or round-1 packages.
    Exists,
    /// The step does not fit the DKG's stage (or another step of it is computing).
    OutOfOrder,
    /// [`MAX_DKGS`] are under way.
    Full,
    /// Not every other holder's round-2 package has arrived.
    Incomplete,
    /// A holder's package was made under other round-1 packages than this holder's.
    TranscriptMismatch,
    /// The holder already sent another package.
    Conflict,
}

/// Round-2 packages to send: `(receiving holder, the package's bytes)`, wiped on drop.
pub type Outgoing = Vec<(HolderId, threshold::Zeroizing<Vec<u8>>)>;

/// What round 2 takes out: the polynomial, or what a repeated round 2 resends.
pub enum Round2Start {
    /// First time: compute round 2 with this secret; the holder's own round-1 package,
    /// which the relayed packages must carry unchanged.
    Fresh(Round1Secret, Params, Round1Package),
    /// Repeated with the same round-1 packages: resend these, `(peer, package bytes)`.
    Resend(Params, Outgoing),
}

/// What finish takes out to compute the key package.
pub struct FinishStart {
    /// The DKG's parameters.
    pub params: Params,
    /// This holder's own share.
    pub secret: Round2Secret,
    /// Every holder's round-1 package.
    pub round1: BTreeMap<HolderId, Round1Package>,
    /// Every other holder's round-2 package for this one.
    pub round2: BTreeMap<HolderId, Round2Package>,
    /// The round-1 transcript.
    pub transcript: [u8; 32],
}

/// What finish found.
pub enum Finish {
    /// Compute and store.
    Start(Box<FinishStart>),
    /// Already stored: the first answer.
    Done(DkgFinishResponse),
}

/// Every DKG of this process.
#[derive(Default)]
pub struct Dkgs {
    inner: Mutex<HashMap<SecretId, Dkg>>,
}

impl Dkgs {
    fn lock(&self) -> MutexGuard<'_, HashMap<SecretId, Dkg>> {
        let mut map = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        map.retain(|_, d| d.deadline > now);
        map
    }

    /// Round 1: opens the DKG with `package` (and its secret), or, repeated with the same
    /// parameters, answers the package already made (the new one is dropped). Answers the
    /// round-1 package and the time left.
    pub fn begin(
        &self,
        id: SecretId,
        params: Params,
        secret: Round1Secret,
        package: Round1Package,
    ) -> Result<(Round1Package, Duration), Step> {
        let mut map = self.lock();
        let now = Instant::now();
        match map.get(&id) {
            Some(d) if d.params == params && matches!(d.stage, Stage::Round1(_)) => {
                return Ok((d.package.clone(), d.deadline.saturating_duration_since(now)));
            }
            // A finished DKG is remembered only to answer a repeated finish; a new one of
            // this key (its refresh) takes its place.
            Some(d) if matches!(d.stage, Stage::Done(_)) && d.params != params => {}
            Some(_) => return Err(Step::Exists),
            None => {}
        }
        if map.len() >= MAX_DKGS {
            return Err(Step::Full);
        }
        map.insert(
            id,
            Dkg {
                params,
                package: package.clone(),
                stage: Stage::Round1(secret),
                received: BTreeMap::new(),
                deadline: now + DKG_TTL,
            },
        );
        Ok((package, DKG_TTL))
    }

    /// Round 2's start: the polynomial to compute with, or, when round 2 already ran with
    /// the same `transcript`, the packages to resend.
    pub fn round2(&self, id: &SecretId, transcript: &[u8; 32]) -> Result<Round2Start, Step> {
        let mut map = self.lock();
        let d = map.get_mut(id).ok_or(Step::Unknown)?;
        match std::mem::replace(&mut d.stage, Stage::Busy) {
            Stage::Round1(secret) => Ok(Round2Start::Fresh(
                secret,
                d.params.clone(),
                d.package.clone(),
            )),
            Stage::Round2 {
                secret,
                round1,
                transcript: ran,
                outgoing,
            } => {
                let resend = (ran == *transcript).then(|| {
                    outgoing
                        .iter()
                        .map(|(h, p)| (*h, threshold::Zeroizing::new(p.expose().to_vec())))
                        .collect()
                });
                d.stage = Stage::Round2 {
                    secret,
                    round1,
                    transcript: ran,
                    outgoing,
                };
                resend
                    .map(|r| Round2Start::Resend(d.params.clone(), r))
                    .ok_or(Step::Exists)
            }
            other => {
                d.stage = other;
                Err(Step::OutOfOrder)
            }
        }
    }

    /// Round 2 computed: keeps this holder's share and what it sends. Refuses packages
    /// that already arrived under another transcript.
    pub fn round2_done(
        &self,
        id: &SecretId,
        secret: Round2Secret,
        round1: BTreeMap<HolderId, Round1Package>,
        transcript: [u8; 32],
        outgoing: BTreeMap<HolderId, Round2Package>,
    ) -> Result<(), Step> {
        let mut map = self.lock();
        let d = map.get_mut(id).ok_or(Step::Unknown)?;
        if !matches!(d.stage, Stage::Busy) {
            return Err(Step::OutOfOrder);
        }
        if d.received.values().any(|r| r.transcript != transcript) {
            map.remove(id);
            return Err(Step::TranscriptMismatch);
        }
        d.stage = Stage::Round2 {
            secret,
            round1,
            transcript,
            outgoing,
        };
        Ok(())
    }

    /// A package from the peer channel: holder `from`'s share for this holder. Answers
    /// whether the same package had already been taken.
    pub fn receive(
        &self,
        id: &SecretId,
        from: u16,
        transcript: [u8; 32],
        package: Round2Package,
    ) -> Result<bool, Step> {
        let mut map = self.lock();
        let d = map.get_mut(id).ok_or(Step::Unknown)?;
        if let Some(had) = d.received.get(&from) {
            return if had.transcript == transcript && had.package.expose() == package.expose() {
                Ok(true)
            } else {
                Err(Step::Conflict)
            };
        }
        match &d.stage {
            Stage::Round2 { transcript: t, .. } if *t != transcript => {
                return Err(Step::TranscriptMismatch)
            }
            Stage::Done(_) => return Err(Step::OutOfOrder),
            _ => {}
        }
        d.received.insert(
            from,
            Received {
                transcript,
                package,
            },
        );
        Ok(false)
    }

    /// The DKG's parameters, to check a peer package's sender against.
    pub fn params(&self, id: &SecretId) -> Option<Params> {
        self.lock().get(id).map(|d| d.params.clone())
    }

    /// Finish's start: everything part 3 needs, once every other holder's package is in.
    pub fn finish(&self, id: &SecretId) -> Result<Finish, Step> {
        let mut map = self.lock();
        let d = map.get_mut(id).ok_or(Step::Unknown)?;
        let complete = HolderId::all(d.params.n)
            .filter(|h| *h != d.params.me)
            .all(|h| d.received.contains_key(&h.get()));
        match &d.stage {
            Stage::Done(answer) => return Ok(Finish::Done(answer.clone())),
            Stage::Round2 { .. } if complete => {}
            Stage::Round2 { .. } => return Err(Step::Incomplete),
            _ => return Err(Step::OutOfOrder),
        }
        let Stage::Round2 {
            secret,
            round1,
            transcript,
            ..
        } = std::mem::replace(&mut d.stage, Stage::Busy)
        else {
            return Err(Step::OutOfOrder);
        };
        let mut round2 = BTreeMap::new();
        for (from, r) in std::mem::take(&mut d.received) {
            if r.transcript != transcript {
                map.remove(id);
                return Err(Step::TranscriptMismatch);
            }
            let holder = HolderId::new(from).map_err(|_| Step::OutOfOrder)?;
            round2.insert(holder, r.package);
        }
        Ok(Finish::Start(Box::new(FinishStart {
            params: d.params.clone(),
            secret,
            round1,
            round2,
            transcript,
        })))
    }

    /// Finish stored the key package: keeps its answer for a repeated finish.
    pub fn done(&self, id: &SecretId, answer: DkgFinishResponse) {
        if let Some(d) = self.lock().get_mut(id) {
            d.stage = Stage::Done(answer);
            d.deadline = Instant::now() + REMEMBER;
        }
    }

    /// Drops a DKG and every secret of it (a failed step, or the coordinator's abort).
    /// Answers whether there was one.
    pub fn abort(&self, id: &SecretId) -> bool {
        self.lock().remove(id).is_some()
    }

    /// Drops expired DKGs; run periodically so that secrets go on time without requests.
    pub fn sweep(&self) {
        drop(self.lock());
    }

    /// DKGs under way (finished ones excluded).
    pub fn open_count(&self) -> usize {
        self.lock()
            .values()
            .filter(|d| !matches!(d.stage, Stage::Done(_)))
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use threshold::{SeededRng, Threshold};

    fn params(me: u16) -> Params {
        Params {
            owner: "spiffe://td/user/alice".into(),
            kind: Kind::Ed25519,
            t: 2,
            n: 3,
            me: HolderId::new(me).unwrap(),
            epoch: 1,
            peers: (1..=3)
                .map(|h| DkgPeer {
                    holder: h,
                    name: format!("c{h}"),
                    address: format!("127.0.0.1:{}", 7000 + h),
                    server_name: "127.0.0.1".into(),
                })
                .collect(),
            refreshes: None,
        }
    }

    fn round1(me: u16, seed: u8) -> (Round1Secret, Round1Package) {
        let mut rng = SeededRng::from_seed(threshold::Zeroizing::new([seed; 32]));
        threshold::dkg::part1(
            Kind::Ed25519,
            HolderId::new(me).unwrap(),
            Threshold::new(2, 3).unwrap(),
            &mut rng,
        )
        .unwrap()
    }

    /// Three holders' DKGs in three maps, as three custodians would run them.
    #[test]
    fn three_holders_agree_and_every_step_repeats() {
        let id = SecretId::from_bytes([7; 16]);
        let dkgs: Vec<Dkgs> = (0..3).map(|_| Dkgs::default()).collect();
        let mut packages = BTreeMap::new();
        for (i, d) in dkgs.iter().enumerate() {
            let me = i as u16 + 1;
            let (secret, package) = round1(me, me as u8);
            let (answered, _) = d.begin(id, params(me), secret, package.clone()).unwrap();
            assert_eq!(answered, package);
            // Repeated with the same parameters: the same package, not a new polynomial.
            let (secret, other) = round1(me, 100 + me as u8);
            assert_eq!(d.begin(id, params(me), secret, other).unwrap().0, package);
            let (secret, other) = round1(me, 1);
            let mut changed = params(me);
            changed.epoch = 2;
            assert_eq!(d.begin(id, changed, secret, other), Err(Step::Exists));
            packages.insert(HolderId::new(me).unwrap(), package);
        }
        let transcript = [9u8; 32];
        let mut sent = Vec::new();
        for d in &dkgs {
            let Ok(Round2Start::Fresh(secret, p, _)) = d.round2(&id, &transcript) else {
                panic!("round 2 should start fresh");
            };
            let (secret2, outgoing) = threshold::dkg::part2(secret, &packages).unwrap();
            for (to, pkg) in &outgoing {
                sent.push((p.me.get(), to.get(), pkg.expose().to_vec()));
            }
            d.round2_done(&id, secret2, packages.clone(), transcript, outgoing)
                .unwrap();
            // Repeated: the same packages to resend; under other packages: refused.
            let Ok(Round2Start::Resend(_, again)) = d.round2(&id, &transcript) else {
                panic!("a repeated round 2 should resend");
            };
            assert_eq!(again.len(), 2);
            assert!(matches!(d.round2(&id, &[0; 32]), Err(Step::Exists)));
        }
        assert!(matches!(dkgs[0].finish(&id), Err(Step::Incomplete)));
        for (from, to, bytes) in &sent {
            let d = &dkgs[usize::from(*to) - 1];
            let pkg = || Round2Package::decode(Kind::Ed25519, bytes).unwrap();
            assert_eq!(d.receive(&id, *from, transcript, pkg()), Ok(false));
            assert_eq!(d.receive(&id, *from, transcript, pkg()), Ok(true));
            assert_eq!(
                d.receive(&id, *from, [1; 32], pkg()),
                Err(Step::Conflict),
                "another transcript from the same sender"
            );
        }
        let mut publics = Vec::new();
        for d in &dkgs {
            let Ok(Finish::Start(start)) = d.finish(&id) else {
                panic!("finish should start");
            };
            let start = *start;
            let share = threshold::dkg::part3(start.secret, &start.round1, &start.round2).unwrap();
            publics.push(share.public.as_bytes().to_vec());
            assert_eq!(d.open_count(), 1);
            d.done(
                &id,
                DkgFinishResponse {
                    holder: start.params.me.get(),
                    epoch: 1,
                    public: "p".into(),
                    key_version: 1,
                    already_stored: false,
                },
            );
            assert_eq!(d.open_count(), 0);
            assert!(matches!(d.finish(&id), Ok(Finish::Done(_))));
        }
        assert!(publics.windows(2).all(|w| w[0] == w[1]));
        assert!(dkgs[0].abort(&id));
        assert!(matches!(dkgs[0].finish(&id), Err(Step::Unknown)));
    }

    #[test]
    fn a_package_under_another_transcript_is_refused_and_steps_keep_order() {
        let id = SecretId::from_bytes([8; 16]);
        let d = Dkgs::default();
        assert!(matches!(d.finish(&id), Err(Step::Unknown)));
        assert!(matches!(d.round2(&id, &[0; 32]), Err(Step::Unknown)));
        let (secret, package) = round1(1, 1);
        d.begin(id, params(1), secret, package.clone()).unwrap();
        assert!(matches!(d.finish(&id), Err(Step::OutOfOrder)));
        // Another holder's package arrives before this one's round 2, under transcript A.
        let mut packages = BTreeMap::new();
        packages.insert(HolderId::new(1).unwrap(), package);
        for h in [2u16, 3] {
            packages.insert(HolderId::new(h).unwrap(), round1(h, h as u8).1);
        }
        let (s2, _) = round1(2, 2);
        let (_, from2) = threshold::dkg::part2(s2, &packages).unwrap();
        let for_me = from2.get(&HolderId::new(1).unwrap()).unwrap();
        let copy = Round2Package::decode(Kind::Ed25519, for_me.expose()).unwrap();
        assert_eq!(d.receive(&id, 2, [1; 32], copy), Ok(false));
        // This holder's round 2 runs under transcript B: the DKG is dropped.
        let Ok(Round2Start::Fresh(secret, _, _)) = d.round2(&id, &[2; 32]) else {
            panic!("fresh");
        };
        let (secret2, outgoing) = threshold::dkg::part2(secret, &packages).unwrap();
        assert_eq!(
            d.round2_done(&id, secret2, packages, [2; 32], outgoing),
            Err(Step::TranscriptMismatch)
        );
        assert!(d.params(&id).is_none());
    }
}
