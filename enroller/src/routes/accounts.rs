//! Accounts: registration with a one-time invitation, login certificates for CSRs,
//! and the admin's invitations, user list and unlock.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use certs::{Role, SpiffeId};
use svc::Peer;
use wire::enroller::{
    Invite, InviteResponse, Login, LoginResponse, Register, RegisterResponse, UnlockResponse,
    UserInfo,
};
use wire::Reason;
use zeroize::Zeroizing;

use super::{blocking, body, internal, now, require, ApiError, JsonBody, Shared};
use crate::password::{self, PolicyError};
use crate::token::UserCaKey;
use crate::users::{Attempt, InvitationState, RegisterRefusal};

pub(crate) async fn register(
    State(s): State<Shared>,
    req: JsonBody<Register>,
) -> Result<Response, ApiError> {
    let req = body(req)?;
    let password = req.password;
    let name = certs::Name::new(&req.name)
        .map_err(|_| ApiError::new(StatusCode::BAD_REQUEST, Reason::InvalidName))?
        .to_string();
    if let Err(e) = password::check_policy(&name, &password) {
        let reason = match e {
            PolicyError::TooShort => Reason::PasswordTooShort,
            PolicyError::TooLong => Reason::PasswordTooLong,
            PolicyError::ContainsUsername => Reason::PasswordContainsName,
            _ => Reason::PasswordGuessable,
        };
        return Err(ApiError::new(StatusCode::BAD_REQUEST, reason));
    }
    if req.invitation.is_empty() || req.invitation.len() > 128 {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            Reason::InvitationUnknown,
        ));
    }
    // Spend no hashing or token work on an invitation that cannot be used.
    let db = s.db.clone();
    let (code, n) = (req.invitation.clone(), name.clone());
    let state = blocking(move || db.invitation(&code, &n, now()))
        .await?
        .map_err(|e| internal(Reason::Database, e))?;
    let refused = match state {
        InvitationState::Valid => None,
        InvitationState::Expired => Some(Reason::InvitationExpired),
        InvitationState::Used => Some(Reason::InvitationUsed),
        InvitationState::Unknown => Some(Reason::InvitationUnknown),
    };
    if let Some(reason) = refused {
        tracing::warn!(user = %name, reason = reason.as_str(), "registration refused");
        return Err(ApiError::new(StatusCode::FORBIDDEN, reason));
    }
    let token = s.token.clone();
    let (n, pw) = (name.clone(), password.clone());
    let salt = s
        .token
        .random::<16>()
        .map_err(|e| internal(Reason::TokenRandom, e))?;
    let hash = blocking(move || password::hash(&*token, &n, &pw, &salt))
        .await?
        .map_err(|e| internal(Reason::PasswordHash, e))?;
    let (totp_sealed, totp_uri) = if req.totp {
        let secret = s
            .token
            .random::<20>()
            .map_err(|e| internal(Reason::TokenRandom, e))?;
        let sealed = s
            .token
            .seal_totp(&name, &*secret)
            .map_err(|e| internal(Reason::TotpSeal, e))?;
        let issuer = format!("shard {}", s.trust_domain);
        (
            Some(sealed),
            Some(crate::totp::otpauth_uri(&issuer, &name, &*secret)),
        )
    } else {
        (None, None)
    };
    let db = s.db.clone();
    let (code, n) = (req.invitation, name.clone());
    let outcome = blocking(move || db.register(&code, &n, &hash, totp_sealed.as_deref(), now()))
        .await?
        .map_err(|e| internal(Reason::Database, e))?;
    match outcome {
        Ok(()) => {
            tracing::info!(user = %name, totp = totp_uri.is_some(), "registered");
            Ok((
                StatusCode::CREATED,
                Json(RegisterResponse {
                    name,
                    totp_uri: totp_uri.map(Zeroizing::new),
                }),
            )
                .into_response())
        }
        Err(r) => {
            let (status, reason) = match r {
                RegisterRefusal::Invitation(InvitationState::Expired) => {
                    (StatusCode::FORBIDDEN, Reason::InvitationExpired)
                }
                RegisterRefusal::Invitation(InvitationState::Used) => {
                    (StatusCode::FORBIDDEN, Reason::InvitationUsed)
                }
                RegisterRefusal::Invitation(_) => {
                    (StatusCode::FORBIDDEN, Reason::InvitationUnknown)
                }
                RegisterRefusal::UserExists => (StatusCode::CONFLICT, Reason::UserExists),
            };
            tracing::warn!(user = %name, reason = reason.as_str(), "registration refused");
            Err(ApiError::new(status, reason))
        }
    }
}

pub(crate) async fn login(
    State(s): State<Shared>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    req: JsonBody<Login>,
) -> Result<Response, ApiError> {
    let req = body(req)?;
    let password = req.password;
    let source = format!("ip:{}", remote.ip());
    let t = now();
    let name = certs::Name::new(&req.name)
        .map_err(|_| ApiError::new(StatusCode::BAD_REQUEST, Reason::InvalidName))?;
    // Checked and counted in one transaction before the password is looked at, so a
    // burst of attempts cannot all slip past the limits (see Db::begin_attempt).
    let db = s.db.clone();
    let (n, src, max) = (name.to_string(), source.clone(), s.backoff_max);
    let attempt = blocking(move || db.begin_attempt(&n, &src, t, max))
        .await?
        .map_err(|e| internal(Reason::Database, e))?;
    match attempt {
        Attempt::Go => {}
        Attempt::SourceBlocked => {
            tracing::warn!(%source, "login refused: too many failures from this source");
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                Reason::TooManyFailuresFromSource,
            ));
        }
        Attempt::Locked => {
            tracing::warn!(user = %name, "login refused: account locked");
            return Err(ApiError::new(StatusCode::FORBIDDEN, Reason::AccountLocked));
        }
        Attempt::RetryLater(wait) => {
            let mut e = ApiError::new(StatusCode::TOO_MANY_REQUESTS, Reason::RetryLater);
            e.retry_after = Some(wait);
            return Err(e);
        }
    }
    let db = s.db.clone();
    let n = name.to_string();
    let user = blocking(move || db.user(&n))
        .await?
        .map_err(|e| internal(Reason::Database, e))?;
    let fail = |reason: Reason| {
        let db = s.db.clone();
        let n = name.to_string();
        let (name, source) = (name.clone(), source.clone());
        async move {
            let locked = blocking(move || db.settle_failure(&n))
                .await?
                .map_err(|e| internal(Reason::Database, e))?;
            tracing::warn!(user = %name, %source, reason = reason.as_str(), "login refused");
            Err::<Response, _>(ApiError::new(
                StatusCode::UNAUTHORIZED,
                if locked && reason == Reason::InvalidCredentials {
                    Reason::AccountLocked
                } else {
                    reason
                },
            ))
        }
    };
    let Some(user) = user else {
        // Spend the same work as for a real user, so timing does not tell who exists.
        let token = s.token.clone();
        let pw = password.clone();
        let _ = blocking(move || {
            password::verify(&*token, "-", &pw, "$argon2id$v=19$m=19456,t=2,p=1$AAAAAAAAAAAAAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
        })
        .await;
        return fail(Reason::InvalidCredentials).await;
    };
    let token = s.token.clone();
    let (n, pw, stored) = (
        name.to_string(),
        password.clone(),
        user.password_hash.clone(),
    );
    let ok = blocking(move || password::verify(&*token, &n, &pw, &stored))
        .await?
        .map_err(|e| internal(Reason::PasswordCheck, e))?;
    if !ok {
        return fail(Reason::InvalidCredentials).await;
    }
    if let Some(sealed) = &user.totp_sealed {
        let Some(code) = req.totp_code.as_deref() else {
            // The password was right: asking for the code is not a failed guess.
            let db = s.db.clone();
            let (n, src) = (name.to_string(), source.clone());
            blocking(move || db.refund_attempt(&n, &src))
                .await?
                .map_err(|e| internal(Reason::Database, e))?;
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                Reason::TotpRequired,
            ));
        };
        let secret = s
            .token
            .unseal_totp(name.as_str(), sealed)
            .map_err(|e| internal(Reason::TotpUnseal, e))?;
        let Some(step) = crate::totp::verify(&secret, code, t as u64) else {
            return fail(Reason::InvalidTotp).await;
        };
        let db = s.db.clone();
        let n = name.to_string();
        if !blocking(move || db.use_totp_step(&n, step))
            .await?
            .map_err(|e| internal(Reason::Database, e))?
        {
            return fail(Reason::TotpReplayed).await;
        }
    }
    let token = s.token.clone();
    let (user_ca, td, n, csr, validity) = (
        s.user_ca_pem.clone(),
        s.trust_domain.clone(),
        name.clone(),
        req.csr,
        s.login_validity,
    );
    let issued = blocking(move || {
        certs::login::issue_login_certificate(
            &user_ca,
            &UserCaKey::new(&token),
            &td,
            &n,
            &csr,
            validity,
        )
    })
    .await?;
    let (cert, not_after) = match issued {
        Ok(c) => c,
        Err(certs::Error::InvalidCsr | certs::Error::Pem(_)) => {
            return Err(ApiError::new(StatusCode::BAD_REQUEST, Reason::InvalidCsr))
        }
        Err(certs::Error::UnsupportedKey) => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                Reason::CsrKeyNotP256,
            ))
        }
        Err(e) => return Err(internal(Reason::CertificateIssue, e)),
    };
    let db = s.db.clone();
    let n = name.to_string();
    blocking(move || db.record_success(&n, &source))
        .await?
        .map_err(|e| internal(Reason::Database, e))?;
    let identity = SpiffeId::new(s.trust_domain.clone(), Role::User, name.clone()).to_string();
    tracing::info!(user = %name, not_after, "login certificate issued");
    Ok(Json(LoginResponse {
        certificate: format!("{cert}{}", s.user_ca_pem),
        not_after,
        identity,
    })
    .into_response())
}

pub(crate) async fn invite(
    State(s): State<Shared>,
    Extension(peer): Extension<Peer>,
    req: JsonBody<Invite>,
) -> Result<Response, ApiError> {
    let admin = require(&s, &peer, &[Role::Admin])?;
    let req = body(req)?;
    let name = certs::Name::new(&req.name)
        .map_err(|_| ApiError::new(StatusCode::BAD_REQUEST, Reason::InvalidName))?;
    let ttl = req.ttl_seconds.unwrap_or(s.invitation_ttl);
    if !(1..=30 * 86_400).contains(&ttl) {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, Reason::InvalidTtl));
    }
    let raw = s
        .token
        .random::<15>()
        .map_err(|e| internal(Reason::TokenRandom, e))?;
    let code = crate::totp::base32(&*raw);
    let t = now();
    let db = s.db.clone();
    let (c, n, by) = (code.clone(), name.to_string(), admin.to_string());
    blocking(move || db.add_invitation(&c, &n, &by, t, ttl))
        .await?
        .map_err(|e| internal(Reason::Database, e))?;
    tracing::info!(user = %name, by = %admin, "invitation created");
    Ok((
        StatusCode::CREATED,
        Json(InviteResponse {
            name: name.to_string(),
            code: Zeroizing::new(code),
            expires_at: t + ttl,
        }),
    )
        .into_response())
}

pub(crate) async fn users(
    State(s): State<Shared>,
    Extension(peer): Extension<Peer>,
) -> Result<Response, ApiError> {
    require(&s, &peer, &[Role::Admin])?;
    let db = s.db.clone();
    let rows = blocking(move || db.users())
        .await?
        .map_err(|e| internal(Reason::Database, e))?;
    let list: Vec<UserInfo> = rows
        .into_iter()
        .map(|(name, locked, failures, totp)| UserInfo {
            name,
            locked,
            failures,
            totp,
        })
        .collect();
    Ok(Json(list).into_response())
}

pub(crate) async fn unlock(
    State(s): State<Shared>,
    Extension(peer): Extension<Peer>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let admin = require(&s, &peer, &[Role::Admin])?;
    let name = certs::Name::new(&name)
        .map_err(|_| ApiError::new(StatusCode::BAD_REQUEST, Reason::InvalidName))?;
    let db = s.db.clone();
    let n = name.to_string();
    if !blocking(move || db.unlock(&n))
        .await?
        .map_err(|e| internal(Reason::Database, e))?
    {
        return Err(ApiError::new(StatusCode::NOT_FOUND, Reason::NoSuchUser));
    }
    tracing::info!(user = %name, by = %admin, "unlocked");
    Ok(Json(UnlockResponse {
        name: name.to_string(),
        locked: false,
    })
    .into_response())
}
