//! Enrollment: a key from the token's randomness (or a brought secret), split, every
//! shard deposited through [`crate::distribute`], the manifest signed by the token; and
//! the owner's enrollments.

use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use base64::Engine;
use certs::Role;
use shard::{Manifest, Secret, SecretId, SecretKind};
use svc::Peer;
use wire::enroller::{Enroll, EnrollResponse, EnrollmentInfo};
use wire::Reason;
use zeroize::Zeroizing;

use super::{blocking, body, internal, now, require, ApiError, JsonBody, Shared, B64};
use crate::users::EnrollmentRow;

pub(crate) async fn enroll(
    State(s): State<Shared>,
    Extension(peer): Extension<Peer>,
    req: JsonBody<Enroll>,
) -> Result<Response, ApiError> {
    let owner = require(&s, &peer, &[Role::User])?;
    let req = body(req)?;
    // Randomness: the token's generator mixed with the OS one; either alone suffices.
    let token_entropy = s.token.random::<32>().map_err(|e| {
        tracing::error!(error = %e, "token random generator failed");
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            Reason::TokenRandomUnavailable,
        )
    })?;
    let mut os_entropy = Zeroizing::new([0u8; 32]);
    shard::rand::TryRng::try_fill_bytes(&mut shard::rand::rngs::SysRng, &mut *os_entropy)
        .map_err(|e| internal(Reason::OsRandom, e))?;
    let rng = shard::rng::mixed_rng(&token_entropy, &os_entropy);
    let random_id = s
        .token
        .random::<10>()
        .map_err(|e| internal(Reason::TokenRandom, e))?;
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let secret_id = SecretId::new_v7(now_ms, *random_id);
    let epoch = 1;
    // A job row covers the enrollment until its row is stored: should this process die
    // in between, the re-driver takes back whatever landed at the custodians.
    let job = crate::refresh::Enrolling::begin(&s, secret_id, epoch).await?;
    let made = enroll_new(&s, &owner, req, rng, secret_id, epoch).await;
    job.settle(&s, made.is_ok()).await;
    made
}

/// The enrollment of a new secret or key `secret_id`: made, distributed, recorded.
async fn enroll_new(
    s: &Shared,
    owner: &certs::SpiffeId,
    req: Enroll,
    mut rng: impl shard::rand::CryptoRng,
    secret_id: SecretId,
    epoch: u32,
) -> Result<Response, ApiError> {
    if req.dkg {
        drop(rng);
        return match (req.kind.parse::<threshold::Kind>(), req.secret) {
            (Ok(kind), None) => born_distributed(s, owner, kind, secret_id, epoch).await,
            _ => Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                Reason::DkgNotForKind,
            )),
        };
    }
    let made = match req.kind.parse::<threshold::Kind>() {
        Ok(kind) => signing_key(kind, req.secret, s.threshold, secret_id, epoch, &mut rng)?,
        Err(_) => shard_secret(
            &req.kind,
            req.secret,
            s.threshold,
            secret_id,
            epoch,
            &mut rng,
        )?,
    };
    drop(rng);
    let Made {
        kind,
        public_text,
        envelopes,
        commitments,
    } = made;
    let kind_name = kind.name();
    let manifest = Manifest {
        secret_id,
        threshold: s.threshold,
        epoch,
        created_at: now() as u64,
        owner: owner.to_string(),
        kind,
        custodians: s.custodians.iter().map(|(c, _)| c.clone()).collect(),
        commitments,
    };
    let token = s.token.clone();
    let signed = blocking(move || manifest.sign(&*token))
        .await?
        .map_err(|e| internal(Reason::ManifestSigning, e))?;

    let outcome = crate::distribute::deposit_all(&s.custodians, owner, &envelopes).await;
    drop(envelopes);
    if let Err(mut failure) = outcome {
        crate::distribute::take_back(&s.custodians, owner, secret_id, epoch, &mut failure).await;
        let mut e = ApiError::new(
            StatusCode::BAD_GATEWAY,
            if failure.cleanup_incomplete {
                Reason::CustodiansFailedCleanupIncomplete
            } else {
                Reason::CustodiansFailed
            },
        );
        e.custodians = Some(failure.failed);
        return Err(e);
    }
    #[cfg(feature = "fault-injection")]
    crate::fault::at("enroll-after-deposit");
    record(s, owner, secret_id, epoch, kind_name, public_text, signed).await
}

/// Keeps a distributed enrollment (its row with the signed manifest) and answers it.
async fn record(
    s: &Shared,
    owner: &certs::SpiffeId,
    secret_id: SecretId,
    epoch: u32,
    kind_name: &'static str,
    public_text: Option<String>,
    signed: shard::SignedManifest,
) -> Result<Response, ApiError> {
    let encoded = signed.encode();
    let row = EnrollmentRow {
        secret_id: secret_id.to_string(),
        owner: owner.to_string(),
        epoch,
        kind: kind_name.into(),
        public_key: public_text.clone(),
        manifest: encoded.clone(),
        created_at: now(),
    };
    let db = s.db.clone();
    blocking(move || db.add_enrollment(&row, secret_id.as_bytes()))
        .await?
        .map_err(|e| internal(Reason::Database, e))?;
    tracing::info!(user = %owner, %secret_id, kind = kind_name, t = s.threshold.t(), n = s.threshold.n(), "enrolled");
    Ok((
        StatusCode::CREATED,
        Json(EnrollResponse {
            secret_id: secret_id.to_string(),
            public_key: public_text,
            manifest: B64.encode(&encoded),
            custodians: s.custodians.iter().map(|(c, _)| c.to_string()).collect(),
            threshold: s.threshold.t(),
        }),
    )
        .into_response())
}

/// A threshold-signing key born distributed: the custodians run FROST's DKG
/// ([`crate::dkg`]), this enroller relays only public packages, then signs the manifest of
/// the group they agree on. Any failure takes back whatever landed at every custodian.
async fn born_distributed(
    s: &Shared,
    owner: &certs::SpiffeId,
    kind: threshold::Kind,
    secret_id: SecretId,
    epoch: u32,
) -> Result<Response, ApiError> {
    let owner_text = owner.to_string();
    let key = crate::dkg::KeyRun {
        owner: &owner_text,
        kind,
        threshold: s.threshold,
        secret_id,
        epoch,
        refreshes: None,
    };
    let ran = crate::dkg::run(&s.custodians, &s.peers, &key).await;
    let signed = match ran {
        Ok(public) => dkg_manifest(s, owner, kind, secret_id, epoch, &public)
            .await
            .map(|signed| (signed, public.group_key().to_text())),
        Err(crate::dkg::DkgFailed::Custodians(failure)) => Err(failure),
        Err(crate::dkg::DkgFailed::Disagree) => Err(crate::distribute::Failed {
            failed: Vec::new(),
            landed: s.custodians.iter().map(|(c, _)| c.clone()).collect(),
            cleanup_incomplete: false,
        }),
    };
    let (signed, public_text) = match signed {
        Ok(done) => done,
        Err(mut failure) => {
            crate::distribute::take_back(&s.custodians, owner, secret_id, epoch, &mut failure)
                .await;
            let reason = match (failure.cleanup_incomplete, failure.failed.is_empty()) {
                (true, _) => Reason::CustodiansFailedCleanupIncomplete,
                (false, true) => Reason::CustodiansDisagree,
                (false, false) => Reason::CustodiansFailed,
            };
            let mut e = ApiError::new(StatusCode::BAD_GATEWAY, reason);
            e.custodians = Some(failure.failed);
            return Err(e);
        }
    };
    let kind_name = kind.as_str();
    #[cfg(feature = "fault-injection")]
    crate::fault::at("enroll-after-dkg");
    record(
        s,
        owner,
        secret_id,
        epoch,
        kind_name,
        Some(public_text),
        signed,
    )
    .await
}

/// The signed manifest of a DKG's key; a failure to sign counts as a failed enrollment
/// (every custodian holds a package to take back).
async fn dkg_manifest(
    s: &Shared,
    owner: &certs::SpiffeId,
    kind: threshold::Kind,
    secret_id: SecretId,
    epoch: u32,
    public: &threshold::PublicKeyPackage,
) -> Result<shard::SignedManifest, crate::distribute::Failed> {
    let failed = |what: &str, e: &dyn std::fmt::Display| {
        tracing::error!(error = %e, %secret_id, "{what} failed");
        crate::distribute::Failed {
            failed: Vec::new(),
            landed: s.custodians.iter().map(|(c, _)| c.clone()).collect(),
            cleanup_incomplete: false,
        }
    };
    let commitments = public
        .holder_digests()
        .map_err(|e| failed("holder digests", &e))?
        .into_iter()
        .map(shard::Commitment)
        .collect();
    let manifest = Manifest {
        secret_id,
        threshold: s.threshold,
        epoch,
        created_at: now() as u64,
        owner: owner.to_string(),
        kind: SecretKind::signing(kind.as_str(), public.group_key().as_bytes())
            .map_err(|e| failed("manifest kind", &e))?,
        custodians: s.custodians.iter().map(|(c, _)| c.clone()).collect(),
        commitments,
    };
    let token = s.token.clone();
    match tokio::task::spawn_blocking(move || manifest.sign(&*token)).await {
        Ok(Ok(signed)) => Ok(signed),
        Ok(Err(e)) => Err(failed("manifest signing", &e)),
        Err(e) => Err(failed("manifest signing", &e)),
    }
}

/// What an enrollment deposits and signs: the manifest's kind and commitments, each
/// custodian's encoded envelope (secret: wiped on drop), and the public key's text.
struct Made {
    kind: SecretKind,
    public_text: Option<String>,
    envelopes: Vec<Zeroizing<Vec<u8>>>,
    commitments: Vec<shard::Commitment>,
}

/// A shard-kind enrollment: a P-256 key from the generator (`p256`) or the brought
/// bytes (`secret`), split into shard envelopes.
fn shard_secret(
    kind: &str,
    brought: Option<Zeroizing<String>>,
    threshold: shard::Threshold,
    secret_id: SecretId,
    epoch: u32,
    rng: &mut impl shard::rand::CryptoRng,
) -> Result<Made, ApiError> {
    let (secret, kind, public_text) = match (kind, brought) {
        ("p256", None) => {
            let key = loop {
                let mut b = Zeroizing::new([0u8; 32]);
                shard::rand::Rng::fill_bytes(rng, &mut *b);
                if let Ok(k) = p256::SecretKey::from_slice(&*b) {
                    break k;
                }
            };
            let pem =
                crate::token::public_key_pem(&p256::ecdsa::VerifyingKey::from(key.public_key()));
            let mut scalar = key.to_bytes();
            let secret = Secret::from_slice(&scalar);
            zeroize::Zeroize::zeroize(&mut scalar[..]);
            let secret = secret.map_err(|e| internal(Reason::Secret, e))?;
            (secret, SecretKind::P256(key.public_key()), Some(pem))
        }
        ("secret", Some(b64)) => {
            let raw = decode_brought(&b64)?;
            let secret = Secret::from_slice(&raw)
                .map_err(|_| ApiError::new(StatusCode::BAD_REQUEST, Reason::InvalidSecretLength))?;
            (secret, SecretKind::Opaque, None)
        }
        _ => return Err(ApiError::new(StatusCode::BAD_REQUEST, Reason::InvalidKind)),
    };
    let envelopes = shard::deal(&secret, threshold, secret_id, epoch, rng);
    Ok(Made {
        kind,
        public_text,
        commitments: shard::commitments(&envelopes),
        envelopes: envelopes.iter().map(|e| e.encode()).collect(),
    })
}

fn decode_brought(b64: &str) -> Result<Zeroizing<Vec<u8>>, ApiError> {
    B64.decode(b64.as_bytes())
        .map(Zeroizing::new)
        .map_err(|_| ApiError::new(StatusCode::BAD_REQUEST, Reason::InvalidSecretEncoding))
}

/// A threshold-signing enrollment (dealer mode): a fresh key of `kind` from the
/// generator, or the brought private key (`secret`, its ecosystem's 32 bytes), split into
/// one key package per custodian. The dealer's generator is seeded from the token-mixed
/// one; everything secret is dropped (and wiped) when the envelopes are encoded.
fn signing_key(
    kind: threshold::Kind,
    brought: Option<Zeroizing<String>>,
    threshold: shard::Threshold,
    secret_id: SecretId,
    epoch: u32,
    rng: &mut impl shard::rand::CryptoRng,
) -> Result<Made, ApiError> {
    let split = threshold::Threshold::new(u16::from(threshold.t()), u16::from(threshold.n()))
        .map_err(|e| internal(Reason::Secret, e))?;
    let mut seed = Zeroizing::new([0u8; 32]);
    shard::rand::Rng::fill_bytes(rng, &mut *seed);
    let mut dealer = threshold::SeededRng::from_seed(seed);
    let dealt = match brought {
        None => {
            threshold::deal(kind, split, &mut dealer).map_err(|e| internal(Reason::Secret, e))?
        }
        Some(b64) => {
            let key = decode_brought(&b64)?;
            threshold::import(kind, &key, split, &mut dealer).map_err(|e| match e {
                threshold::Error::InvalidPrivateKey(_) => {
                    ApiError::new(StatusCode::BAD_REQUEST, Reason::InvalidPrivateKey)
                }
                e => internal(Reason::Secret, e),
            })?
        }
    };
    drop(dealer);
    let group_key = dealt.public.group_key().clone();
    let commitments = dealt
        .public
        .holder_digests()
        .map_err(|e| internal(Reason::Secret, e))?
        .into_iter()
        .map(shard::Commitment)
        .collect();
    let envelopes = dealt
        .key_packages
        .into_values()
        .map(|package| {
            threshold::KeyEnvelope::new(
                *secret_id.as_bytes(),
                epoch,
                package,
                dealt.public.clone(),
                dealt.commitment.clone(),
            )
            .map(|e| e.encode())
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| internal(Reason::Secret, e))?;
    let manifest_kind = SecretKind::signing(kind.as_str(), group_key.as_bytes())
        .map_err(|e| internal(Reason::Secret, e))?;
    Ok(Made {
        kind: manifest_kind,
        public_text: Some(group_key.to_text()),
        envelopes,
        commitments,
    })
}

fn info(r: EnrollmentRow) -> EnrollmentInfo {
    EnrollmentInfo {
        secret_id: r.secret_id,
        kind: r.kind,
        public_key: r.public_key,
        epoch: r.epoch,
        created_at: r.created_at,
        manifest: B64.encode(&r.manifest),
    }
}

pub(crate) async fn enrollments(
    State(s): State<Shared>,
    Extension(peer): Extension<Peer>,
) -> Result<Response, ApiError> {
    let owner = require(&s, &peer, &[Role::User])?.to_string();
    let db = s.db.clone();
    let rows = blocking(move || db.enrollments(&owner))
        .await?
        .map_err(|e| internal(Reason::Database, e))?;
    Ok(Json(rows.into_iter().map(info).collect::<Vec<_>>()).into_response())
}

pub(crate) async fn enrollment(
    State(s): State<Shared>,
    Extension(peer): Extension<Peer>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let owner = require(&s, &peer, &[Role::User])?.to_string();
    let id = secret_id(&id)?;
    let db = s.db.clone();
    let row = blocking(move || db.enrollment(id.as_bytes()))
        .await?
        .map_err(|e| internal(Reason::Database, e))?;
    // Another owner's enrollment is answered like a missing one.
    row.filter(|r| r.owner == owner)
        .map(|r| Json(info(r)).into_response())
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, Reason::NotFound))
}

/// `POST /v1/enrollments/{id}/refresh`: a proactive refresh of the owner's signing key
/// ([`crate::refresh`]).
pub(crate) async fn refresh(
    State(s): State<Shared>,
    Extension(peer): Extension<Peer>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let owner = require(&s, &peer, &[Role::User])?;
    let id = secret_id(&id)?;
    let answer = crate::refresh::refresh(&s, Some(&owner), id).await?;
    Ok(Json(answer).into_response())
}

/// `POST /v1/enrollments/{id}/reshare`: the owner's signing key moved to another set of
/// custodians or another threshold ([`crate::reshare`]).
pub(crate) async fn reshare(
    State(s): State<Shared>,
    Extension(peer): Extension<Peer>,
    Path(id): Path<String>,
    req: JsonBody<wire::enroller::Reshare>,
) -> Result<Response, ApiError> {
    let owner = require(&s, &peer, &[Role::User])?;
    let id = secret_id(&id)?;
    let req = body(req)?;
    let answer = crate::reshare::reshare(&s, &owner, id, &req.custodians, req.threshold).await?;
    Ok(Json(answer).into_response())
}

/// A secret id from the path, or its refusal.
fn secret_id(text: &str) -> Result<SecretId, ApiError> {
    text.parse()
        .map_err(|_| ApiError::new(StatusCode::BAD_REQUEST, Reason::InvalidSecretId))
}
