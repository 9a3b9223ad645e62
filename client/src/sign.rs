//! `shardctl sign ID --in FILE [--out SIG]` and `shardctl pubkey ID`: threshold signing
//! with a key whose packages stay sealed at its custodians.
//!
//! `shardctl` is the coordinator of RFC 9591: round 1 asks every custodian of the signed
//! manifest at once for nonce commitments under a fresh session id and keeps the first `t`
//! that check out (the custodian answers as its verified TLS identity, with its holder
//! number and the public key package, which must match the manifest); round 2 sends those
//! `t` the signing package and gathers their signature shares; aggregation checks every
//! share and names any custodian whose share is wrong, and the signing starts again
//! without it while enough custodians remain. The signature is verified against the
//! manifest's group key before it is printed or written. No private key exists here.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::stream::{FuturesUnordered, StreamExt};
use mtls::{Client as CustodianClient, Committed as CommitAnswer, Error as ClientError};
use serde_json::json;
use shard::{Manifest, SecretId, SecretKind};
use threshold::{
    GroupKey, HolderId, Kind, PublicKeyPackage, SignatureShare, SigningCommitments, SigningPackage,
};

use crate::config::Config;
use crate::error::CliError;
use crate::net;
use crate::outcome::{Outcome, MAX_DEADLINE_MS};
use crate::session::Login;
use crate::{Ctx, Report};

/// The largest message `shardctl sign` takes (it travels to every signer in round 2).
pub const MAX_MESSAGE: u64 = 64 * 1024;

/// A signing key's kind and group key, from its verified manifest.
fn signing_key(manifest: &Manifest) -> Result<(Kind, GroupKey), CliError> {
    let id = manifest.secret_id.to_string();
    let SecretKind::Signing { kind, group_key } = &manifest.kind else {
        return Err(CliError::NotASigningKey {
            secret_id: id,
            kind: manifest.kind.name(),
        });
    };
    let bad = |why: String| CliError::BadManifest {
        secret_id: id.clone(),
        why,
    };
    let kind: Kind = kind.parse().map_err(|e| bad(format!("{e}")))?;
    let key = GroupKey::decode(kind, group_key).map_err(|e| bad(format!("{e}")))?;
    Ok((kind, key))
}

/// What every signing command starts with: the verified manifest of a signing key and
/// a TLS configuration with the user's login.
struct Setup {
    config: Config,
    login: Login,
    tls: Arc<certs::rustls::ClientConfig>,
    manifest: Manifest,
    kind: Kind,
    group_key: GroupKey,
    report: Report,
}

fn setup(ctx: &Ctx, secret_id: &str) -> Result<Setup, CliError> {
    let secret_id: SecretId = secret_id
        .parse()
        .map_err(|_| CliError::InvalidSecretId(secret_id.to_owned()))?;
    let crate::recover::Owned {
        config,
        login,
        tls,
        signed,
        report,
    } = crate::recover::owned(ctx, &secret_id)?;
    let manifest = signed.unverified().clone();
    let (kind, group_key) = signing_key(&manifest)?;
    Ok(Setup {
        config,
        login,
        tls,
        manifest,
        kind,
        group_key,
        report,
    })
}

/// `shardctl pubkey ID`: the group key in its ecosystem's form, from the verified manifest
/// (no custodian is asked).
pub fn pubkey(ctx: &Ctx, secret_id: &str) -> Result<Report, CliError> {
    let Setup {
        manifest,
        kind,
        group_key,
        mut report,
        ..
    } = setup(ctx, secret_id)?;
    let text = group_key.to_text();
    let form = match kind {
        Kind::Ed25519 => "pem-spki",
        Kind::Secp256k1Tr => "bip340-xonly-hex",
        Kind::P256Schnorr => "sec1-compressed-hex",
    };
    if ctx.json {
        report.text = json_line(&json!({
            "secret_id": manifest.secret_id.to_string(),
            "kind": kind.as_str(),
            "format": form,
            "public_key": text,
            "epoch": manifest.epoch,
            "threshold": manifest.threshold.t(),
            "custodians": manifest.custodians.iter().map(|c| c.as_str()).collect::<Vec<_>>(),
        }));
        return Ok(report);
    }
    report.text = if text.ends_with('\n') {
        text
    } else {
        format!("{text}\n")
    };
    Ok(report)
}

/// `shardctl sign`.
pub fn sign(
    ctx: &Ctx,
    secret_id: &str,
    input: &Path,
    out: Option<&Path>,
    deadline_ms: u64,
) -> Result<Report, CliError> {
    if !(1..=MAX_DEADLINE_MS).contains(&deadline_ms) {
        return Err(CliError::InvalidDeadline(deadline_ms));
    }
    if let Some(out) = out {
        crate::recover::check_out(out)?;
    }
    let message =
        crate::files::read_limited(input, MAX_MESSAGE).map_err(|source| match source.kind() {
            std::io::ErrorKind::FileTooLarge => CliError::MessageTooLarge(input.to_owned()),
            _ => CliError::ReadFile {
                what: "--in",
                path: input.to_owned(),
                source,
            },
        })?;
    let Setup {
        config,
        login,
        tls,
        manifest,
        kind,
        group_key,
        mut report,
    } = setup(ctx, secret_id)?;
    let deadline = Duration::from_millis(deadline_ms);
    let run = |manifest: &Manifest| {
        let coordinator = Coordinator {
            config: &config,
            login: &login,
            tls: &tls,
            manifest,
            kind,
            group_key: &group_key,
            deadline,
        };
        ctx.block_on(coordinator.run(&message))
    };
    let mut manifest = manifest;
    let (signature, outcomes, session) = match run(&manifest)? {
        // Too few of the manifest's epoch: a refresh may have moved the key on since the
        // manifest was cached. Once more with the enroller's, if it is newer.
        Err(e @ CliError::NotEnoughSigners { .. }) => {
            match crate::recover::newer_manifest(ctx, &config, &login, &tls, &manifest) {
                Some(newer) if signing_key(newer.unverified())?.1 == group_key => {
                    manifest = newer.unverified().clone();
                    run(&manifest)??
                }
                _ => return Err(e),
            }
        }
        done => done?,
    };
    let secret_id = manifest.secret_id.to_string();
    if let Some(out) = out {
        certs::write_new_private(out, signature.as_bytes()).map_err(|e| match e {
            certs::Error::FileExists(p) => CliError::OutExists(p),
            other => CliError::Write(other),
        })?;
    }
    let hex = hex::encode(signature.as_bytes());
    if ctx.json {
        report.text = json_line(&json!({
            "secret_id": secret_id,
            "kind": kind.as_str(),
            "signature": hex,
            "out": out,
            "session": session,
            "threshold": manifest.threshold.t(),
            "custodians": outcomes,
        }));
        return Ok(report);
    }
    let signers = outcomes.iter().filter(|o| o.result == "signed").count();
    let mut text = match out {
        Some(out) => format!(
            "signed {} with {secret_id} ({kind}, {} bytes) by {signers} of {} custodians; \
             signature written to {}\n",
            input.display(),
            signature.as_bytes().len(),
            manifest.threshold.n(),
            out.display()
        ),
        None => format!("{hex}\n"),
    };
    if out.is_some() {
        for o in &outcomes {
            text.push_str(&format!("  {}\n", o.line()));
        }
    }
    report.text = text;
    Ok(report)
}

fn json_line(v: &serde_json::Value) -> String {
    let mut s = v.to_string();
    s.push('\n');
    s
}

/// One signing, over every attempt.
struct Coordinator<'a> {
    config: &'a Config,
    login: &'a Login,
    tls: &'a Arc<certs::rustls::ClientConfig>,
    manifest: &'a Manifest,
    kind: Kind,
    group_key: &'a GroupKey,
    deadline: Duration,
}

/// One custodian's round-1 answer, checked.
struct Committed {
    index: usize,
    holder: HolderId,
    commitments: SigningCommitments,
    public: PublicKeyPackage,
}

impl Coordinator<'_> {
    fn outcome(
        &self,
        index: usize,
        result: &'static str,
        detail: String,
        took: Option<Duration>,
    ) -> Outcome {
        Outcome {
            name: self.manifest.custodians[index].to_string(),
            result,
            detail,
            ms: took.map(|d| d.as_millis() as u64),
        }
    }

    /// The clients of the custodians still in the running; those that cannot even be
    /// addressed get their outcome at once.
    fn clients(&self, outcomes: &mut [Option<Outcome>]) -> Vec<(usize, CustodianClient)> {
        let mut clients = Vec::new();
        for (i, name) in self.manifest.custodians.iter().enumerate() {
            if outcomes[i].is_some() {
                continue;
            }
            match self.config.custodian(name.as_str()) {
                None => {
                    outcomes[i] = Some(self.outcome(
                        i,
                        "not_configured",
                        format!(
                            "not in your configuration (add it under [[custodians]] in {})",
                            self.config.path.display()
                        ),
                        None,
                    ))
                }
                Some(svc) => match net::client(svc, self.tls.clone(), self.deadline) {
                    Ok(c) => clients.push((i, c)),
                    Err(CliError::Resolve { .. }) => {
                        outcomes[i] = Some(self.outcome(
                            i,
                            "unreachable",
                            "its address does not resolve".into(),
                            None,
                        ))
                    }
                    Err(e) => {
                        outcomes[i] = Some(self.outcome(i, "not_configured", e.to_string(), None))
                    }
                },
            }
        }
        clients
    }

    /// Checks a round-1 answer against the manifest: the holder is the one the manifest
    /// gives this custodian, and the public key package is the manifest's.
    fn check_commit(&self, index: usize, answer: &CommitAnswer) -> Result<Committed, String> {
        let expected = index + 1;
        if usize::from(answer.holder) != expected {
            return Err(format!(
                "answered as holder {} of the key, but the manifest gives it holder {expected}",
                answer.holder
            ));
        }
        if answer.kind != self.kind.as_str() || answer.epoch != self.manifest.epoch {
            return Err(format!(
                "answered for a {} key of epoch {}, but the manifest names a {} key of epoch {}",
                answer.kind, answer.epoch, self.kind, self.manifest.epoch
            ));
        }
        let public = PublicKeyPackage::decode(self.kind, &answer.public)
            .map_err(|e| format!("a public key package that does not decode ({e})"))?;
        let digests = public
            .holder_digests()
            .map_err(|e| format!("a public key package that does not decode ({e})"))?;
        let expected_digests: Vec<[u8; 32]> =
            self.manifest.commitments.iter().map(|c| c.0).collect();
        if public.group_key() != self.group_key
            || usize::from(public.min_signers()) != usize::from(self.manifest.threshold.t())
            || digests != expected_digests
        {
            return Err("a public key package that is not the one the manifest names".into());
        }
        let commitments = SigningCommitments::decode(self.kind, &answer.commitments)
            .map_err(|e| format!("commitments that do not decode ({e})"))?;
        let holder = HolderId::new(answer.holder).map_err(|e| e.to_string())?;
        Ok(Committed {
            index,
            holder,
            commitments,
            public,
        })
    }

    /// Signs, retrying without custodians whose signature share was wrong; answers the
    /// signature, every custodian's outcome and the last session id.
    async fn run(
        &self,
        message: &[u8],
    ) -> Result<(threshold::Signature, Vec<Outcome>, String), CliError> {
        let t = usize::from(self.manifest.threshold.t());
        let n = self.manifest.custodians.len();
        // Outcomes that exclude a custodian from further attempts (it lied, or cannot be
        // used at all); the others are per attempt.
        let mut excluded: Vec<Option<Outcome>> = vec![None; n];
        loop {
            let mut outcomes = excluded.clone();
            let clients = self.clients(&mut outcomes);
            let session = fresh_session()?;
            let started = Instant::now();
            // Round 1: every custodian in the running at once; the first t that check out.
            let mut pending: FuturesUnordered<_> = clients
                .iter()
                .map(|(i, client)| {
                    let (id, session) = (&self.manifest.secret_id, &session);
                    let epoch = Some(self.manifest.epoch);
                    async move {
                        let answer = client.commit(id, epoch, session).await;
                        (*i, answer, started.elapsed())
                    }
                })
                .collect();
            let mut committed: Vec<Committed> = Vec::new();
            while committed.len() < t {
                let Some((i, result, took)) = pending.next().await else {
                    break;
                };
                match result {
                    Ok(answer) => match self.check_commit(i, &answer) {
                        Ok(c) => committed.push(c),
                        Err(why) => {
                            let o = self.outcome(
                                i,
                                "bad_answer",
                                format!("answered {why}"),
                                Some(took),
                            );
                            excluded[i] = Some(o.clone());
                            outcomes[i] = Some(o);
                        }
                    },
                    Err(e) => outcomes[i] = Some(self.failed(i, &e, Some(took))),
                }
            }
            drop(pending);
            if committed.len() < t {
                for c in &committed {
                    outcomes[c.index] = Some(self.outcome(
                        c.index,
                        "committed",
                        "committed, but too few others did".into(),
                        None,
                    ));
                }
                return Err(self.not_enough(committed.len(), outcomes, "committed"));
            }
            let chosen: BTreeMap<HolderId, SigningCommitments> = committed
                .iter()
                .map(|c| (c.holder, c.commitments.clone()))
                .collect();
            let package = SigningPackage::new(self.kind, &chosen, message)
                .map_err(|e| CliError::Sign(e.to_string()))?;
            // Round 2: exactly the chosen t.
            let by_index: BTreeMap<usize, &CustodianClient> =
                clients.iter().map(|(i, c)| (*i, c)).collect();
            let mut pending: FuturesUnordered<_> = committed
                .iter()
                .map(|c| {
                    let client = by_index[&c.index];
                    let (index, holder) = (c.index, c.holder);
                    let (id, session, package) = (&self.manifest.secret_id, &session, &package);
                    async move {
                        let r = client.sign(id, session, package.as_bytes()).await;
                        (index, holder, r, started.elapsed())
                    }
                })
                .collect();
            let mut shares: BTreeMap<HolderId, SignatureShare> = BTreeMap::new();
            let mut took_of: BTreeMap<usize, Duration> = BTreeMap::new();
            while let Some((i, holder, result, took)) = pending.next().await {
                took_of.insert(i, took);
                match result {
                    Ok(answer) => {
                        let share = (answer.holder == holder.get())
                            .then(|| SignatureShare::decode(self.kind, &answer.share).ok())
                            .flatten();
                        match share {
                            Some(share) => {
                                shares.insert(holder, share);
                            }
                            None => {
                                let o = self.outcome(
                                    i,
                                    "bad_answer",
                                    "answered a signature share that does not decode".into(),
                                    Some(took),
                                );
                                excluded[i] = Some(o.clone());
                                outcomes[i] = Some(o);
                            }
                        }
                    }
                    Err(e) => {
                        // A signer that fell away between the rounds sits out the next
                        // attempt, so that every attempt has one custodian fewer to wait on.
                        let o = self.failed(i, &e, Some(took));
                        excluded[i] = Some(o.clone());
                        outcomes[i] = Some(o);
                    }
                }
            }
            drop(pending);
            if shares.len() < t {
                if excluded.iter().filter(|o| o.is_none()).count() >= t {
                    continue;
                }
                return Err(self.not_enough(shares.len(), outcomes, "signed"));
            }
            let public = &committed[0].public;
            match threshold::aggregate(public, &package, &shares) {
                Ok(signature) => {
                    self.group_key.verify(message, &signature).map_err(|_| {
                        CliError::SignatureInvalid(self.manifest.secret_id.to_string())
                    })?;
                    for c in &committed {
                        outcomes[c.index] = Some(self.outcome(
                            c.index,
                            "signed",
                            "signature share verified".into(),
                            took_of.get(&c.index).copied(),
                        ));
                    }
                    let outcomes = outcomes
                        .into_iter()
                        .enumerate()
                        .map(|(i, o)| {
                            o.unwrap_or_else(|| {
                                self.outcome(
                                    i,
                                    "not_needed",
                                    format!("not needed ({t} had committed)"),
                                    None,
                                )
                            })
                        })
                        .collect();
                    return Ok((signature, outcomes, session));
                }
                Err(threshold::Error::InvalidShares { culprits }) if !culprits.is_empty() => {
                    for holder in culprits {
                        let i = usize::from(holder.get()) - 1;
                        if i < n {
                            excluded[i] = Some(self.outcome(
                                i,
                                "bad_share",
                                "answered a signature share that does not verify against its public share".into(),
                                took_of.get(&i).copied(),
                            ));
                        }
                    }
                    if excluded.iter().filter(|o| o.is_none()).count() < t {
                        let outcomes = excluded.clone();
                        return Err(self.not_enough(0, outcomes, "signed"));
                    }
                }
                Err(e) => return Err(CliError::Sign(e.to_string())),
            }
        }
    }

    fn failed(&self, i: usize, e: &ClientError, took: Option<Duration>) -> Outcome {
        let (result, detail) = classify(e, self.login);
        self.outcome(i, result, detail, took)
    }

    fn not_enough(
        &self,
        got: usize,
        outcomes: Vec<Option<Outcome>>,
        step: &'static str,
    ) -> CliError {
        let outcomes: Vec<Outcome> = outcomes
            .into_iter()
            .enumerate()
            .map(|(i, o)| {
                o.unwrap_or_else(|| self.outcome(i, "not_needed", "did not take part".into(), None))
            })
            .collect();
        if outcomes.iter().any(|o| o.result == "expired") {
            return self.login.expired_error();
        }
        CliError::NotEnoughSigners {
            secret_id: self.manifest.secret_id.to_string(),
            got,
            needed: usize::from(self.manifest.threshold.t()),
            step,
            outcomes,
        }
    }
}

/// A fresh session id: 16 bytes from the operating system, as 32 hex digits.
fn fresh_session() -> Result<String, CliError> {
    let mut id = [0u8; 16];
    shard::rand::TryRng::try_fill_bytes(&mut shard::rand::rngs::SysRng, &mut id)
        .map_err(|e| CliError::Sign(format!("the operating system gave no randomness ({e})")))?;
    Ok(hex::encode(id))
}

/// The result word and the reason for a custodian that did not take part.
fn classify(e: &ClientError, login: &Login) -> (&'static str, String) {
    net::classify(e, login, crate::reasons::sign_refused)
}
