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
    let mut rng = shard::rng::mixed_rng(&token_entropy, &os_entropy);
    let (secret, kind, public_pem) = match (req.kind.as_str(), req.secret) {
        ("p256", None) => {
            let key = loop {
                let mut b = Zeroizing::new([0u8; 32]);
                shard::rand::Rng::fill_bytes(&mut rng, &mut *b);
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
            let raw = Zeroizing::new(B64.decode(b64.as_bytes()).map_err(|_| {
                ApiError::new(StatusCode::BAD_REQUEST, Reason::InvalidSecretEncoding)
            })?);
            let secret = Secret::from_slice(&raw)
                .map_err(|_| ApiError::new(StatusCode::BAD_REQUEST, Reason::InvalidSecretLength))?;
            (secret, SecretKind::Opaque, None)
        }
        _ => return Err(ApiError::new(StatusCode::BAD_REQUEST, Reason::InvalidKind)),
    };
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
    let envelopes = shard::deal(&secret, s.threshold, secret_id, epoch, &mut rng);
    drop(secret);
    drop(rng);
    let manifest = Manifest {
        secret_id,
        threshold: s.threshold,
        epoch,
        created_at: now() as u64,
        owner: owner.to_string(),
        kind,
        custodians: s.custodians.iter().map(|(c, _)| c.clone()).collect(),
        commitments: shard::commitments(&envelopes),
    };
    let token = s.token.clone();
    let signed = blocking(move || manifest.sign(&*token))
        .await?
        .map_err(|e| internal(Reason::ManifestSigning, e))?;

    let outcome = crate::distribute::deposit_all(&s.custodians, &owner, &envelopes).await;
    drop(envelopes);
    if let Err(mut failure) = outcome {
        crate::distribute::take_back(&s.custodians, &owner, secret_id, epoch, &mut failure).await;
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
    let encoded = signed.encode();
    let row = EnrollmentRow {
        secret_id: secret_id.to_string(),
        owner: owner.to_string(),
        epoch,
        kind: if public_pem.is_some() {
            "p256"
        } else {
            "secret"
        }
        .into(),
        public_key: public_pem.clone(),
        manifest: encoded.clone(),
        created_at: now(),
    };
    let db = s.db.clone();
    blocking(move || db.add_enrollment(&row, secret_id.as_bytes()))
        .await?
        .map_err(|e| internal(Reason::Database, e))?;
    tracing::info!(user = %owner, %secret_id, t = s.threshold.t(), n = s.threshold.n(), "enrolled");
    Ok((
        StatusCode::CREATED,
        Json(EnrollResponse {
            secret_id: secret_id.to_string(),
            public_key: public_pem,
            manifest: B64.encode(&encoded),
            custodians: s.custodians.iter().map(|(c, _)| c.to_string()).collect(),
            threshold: s.threshold.t(),
        }),
    )
        .into_response())
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
    let id: SecretId = id
        .parse()
        .map_err(|_| ApiError::new(StatusCode::BAD_REQUEST, Reason::InvalidSecretId))?;
    let db = s.db.clone();
    let rows = blocking(move || db.enrollments(&owner))
        .await?
        .map_err(|e| internal(Reason::Database, e))?;
    rows.into_iter()
        .find(|r| r.secret_id == id.to_string())
        .map(|r| Json(info(r)).into_response())
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, Reason::NotFound))
}
