//! The enroller's HTTP API. Registration and login are the only calls a client may
//! make without a certificate; everything else is authorized by the verified peer's
//! SPIFFE id.
//!
//! | call | who | answer |
//! |---|---|---|
//! | `POST /v1/register` | anyone with an invitation | 201 `{name, totp_uri}` |
//! | `POST /v1/login` | a registered user | 200 `{certificate, not_after}` |
//! | `POST /v1/admin/invitations` | admin | 201 `{name, code, expires_at}` |
//! | `POST /v1/admin/users/{name}/unlock` | admin | 200 |
//! | `GET /v1/admin/users` | admin | 200 |
//! | `POST /v1/enroll` | user | 201 `{secret_id, public_key, manifest, custodians}` |
//! | `GET /v1/enrollments`, `GET /v1/enrollments/{id}` | the owner | 200 |
//! | `GET /v1/manifest-key` | any peer | 200 PEM of the manifest-signing key |
//! | `GET /v1/health` | any peer | 200 or 503 |
//!
//! Every refusal is `{"error": ..., "reason": ...}` (enrollment failures add
//! `custodians: [{name, reason}]`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::{ConnectInfo, DefaultBodyLimit, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use base64::Engine;
use certs::{Role, SpiffeId};
use custodian::client::{ClientError, CustodianClient};
use serde::{Deserialize, Serialize};
use shard::{CustodianId, Manifest, Secret, SecretId, SecretKind, Threshold};
use svc::Peer;
use zeroize::Zeroizing;

use crate::password::{self, PolicyError};
use crate::token::{Token, UserCaKey};
use crate::users::{Attempt, Db, EnrollmentRow, InvitationState, RegisterRefusal};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// Everything the handlers share.
pub struct AppState {
    /// Trust domain.
    pub trust_domain: certs::TrustDomain,
    /// The token.
    pub token: Arc<Token>,
    /// The database.
    pub db: Arc<Db>,
    /// User CA certificate PEM (sent with every login certificate as its chain).
    pub user_ca_pem: String,
    /// Threshold.
    pub threshold: Threshold,
    /// The custodians in index order, with clients that present the enroller's certificate.
    pub custodians: Vec<(CustodianId, Arc<CustodianClient>)>,
    /// Login certificate validity.
    pub login_validity: Duration,
    /// Invitation lifetime, seconds.
    pub invitation_ttl: i64,
    /// Cap of the per-user back-off, seconds.
    pub backoff_max: i64,
}

type Shared = Arc<AppState>;

/// A refusal.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    reason: String,
    custodians: Option<Vec<CustodianFailure>>,
    retry_after: Option<i64>,
}

/// One custodian's failure during enrollment.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CustodianFailure {
    /// Custodian name.
    pub name: String,
    /// What went wrong there.
    pub reason: String,
}

impl ApiError {
    fn new(status: StatusCode, reason: impl Into<String>) -> Self {
        ApiError {
            status,
            reason: reason.into(),
            custodians: None,
            retry_after: None,
        }
    }
}

/// The JSON body of every refusal.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    /// Class.
    pub error: String,
    /// Machine-readable reason.
    pub reason: String,
    /// Per-custodian failures of an enrollment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custodians: Option<Vec<CustodianFailure>>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let error = match self.status.as_u16() {
            400 => "bad_request",
            401 => "unauthorized",
            403 => "forbidden",
            404 => "not_found",
            409 => "conflict",
            413 => "payload_too_large",
            429 => "rate_limited",
            502 => "bad_gateway",
            503 => "unavailable",
            _ => "internal",
        };
        let body = ErrorBody {
            error: error.into(),
            reason: self.reason,
            custodians: self.custodians,
        };
        let mut resp = (self.status, Json(body)).into_response();
        if let Some(s) = self.retry_after {
            if let Ok(v) = axum::http::HeaderValue::from_str(&s.max(1).to_string()) {
                resp.headers_mut()
                    .insert(axum::http::header::RETRY_AFTER, v);
            }
        }
        resp
    }
}

fn internal(what: &str, e: impl std::fmt::Display) -> ApiError {
    tracing::error!(error = %e, "{what} failed");
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, what.replace(' ', "_"))
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// The router.
pub fn router(state: Shared, max_body: usize) -> Router {
    Router::new()
        .route("/v1/register", post(register))
        .route("/v1/login", post(login))
        .route("/v1/admin/invitations", post(invite))
        .route("/v1/admin/users", get(users))
        .route("/v1/admin/users/{name}/unlock", post(unlock))
        .route("/v1/enroll", post(enroll))
        .route("/v1/enrollments", get(enrollments))
        .route("/v1/enrollments/{id}", get(enrollment))
        .route("/v1/manifest-key", get(manifest_key))
        .route("/v1/health", get(health))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no_such_route") })
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(state)
}

/// The router of the optional loopback plain-HTTP health port: `GET /health` only.
pub fn health_router(state: Shared) -> Router {
    Router::new()
        .route("/health", get(health))
        .with_state(state)
}

/// The peer's identity if it has one of `roles` in our trust domain.
fn require(s: &AppState, peer: &Peer, roles: &[Role]) -> Result<SpiffeId, ApiError> {
    let Some(id) = &peer.0 else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "client_certificate_required",
        ));
    };
    if id.trust_domain() != &s.trust_domain {
        return Err(ApiError::new(StatusCode::FORBIDDEN, "wrong_trust_domain"));
    }
    if !roles.contains(&id.role()) {
        return Err(ApiError::new(StatusCode::FORBIDDEN, "role_not_allowed"));
    }
    Ok(id.clone())
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| internal("worker", e))
}

type JsonBody<T> = Result<Json<T>, axum::extract::rejection::JsonRejection>;

fn body<T>(b: JsonBody<T>) -> Result<T, ApiError> {
    b.map(|Json(v)| v).map_err(|e| match e {
        axum::extract::rejection::JsonRejection::BytesRejection(_) => {
            ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large")
        }
        _ => ApiError::new(StatusCode::BAD_REQUEST, "invalid_body"),
    })
}

// ---------------------------------------------------------------------------------------
// Registration and login
// ---------------------------------------------------------------------------------------

/// Registration request.
#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    /// User name.
    pub name: String,
    /// One-time invitation code.
    pub invitation: String,
    /// Password.
    pub password: String,
    /// Set up a TOTP second factor.
    #[serde(default)]
    pub totp: bool,
}

/// Registration answer.
#[derive(Debug, Serialize, Deserialize)]
pub struct RegisterResponse {
    /// User name.
    pub name: String,
    /// The `otpauth://` URI to import into an authenticator (shown once).
    pub totp_uri: Option<String>,
}

async fn register(
    State(s): State<Shared>,
    req: JsonBody<RegisterRequest>,
) -> Result<Response, ApiError> {
    let req = body(req)?;
    let password = Zeroizing::new(req.password);
    let name = certs::Name::new(&req.name)
        .map_err(|_| ApiError::new(StatusCode::BAD_REQUEST, "invalid_name"))?
        .to_string();
    if let Err(e) = password::check_policy(&name, &password) {
        let reason = match e {
            PolicyError::TooShort => "password_too_short",
            PolicyError::TooLong => "password_too_long",
            PolicyError::ContainsUsername => "password_contains_name",
            _ => "password_guessable",
        };
        return Err(ApiError::new(StatusCode::BAD_REQUEST, reason));
    }
    if req.invitation.is_empty() || req.invitation.len() > 128 {
        return Err(ApiError::new(StatusCode::FORBIDDEN, "invitation_unknown"));
    }
    // Spend no hashing or token work on an invitation that cannot be used.
    let db = s.db.clone();
    let (code, n) = (Zeroizing::new(req.invitation.clone()), name.clone());
    let state = blocking(move || db.invitation(&code, &n, now()))
        .await?
        .map_err(|e| internal("database", e))?;
    let refused = match state {
        InvitationState::Valid => None,
        InvitationState::Expired => Some("invitation_expired"),
        InvitationState::Used => Some("invitation_used"),
        InvitationState::Unknown => Some("invitation_unknown"),
    };
    if let Some(reason) = refused {
        tracing::warn!(user = %name, reason, "registration refused");
        return Err(ApiError::new(StatusCode::FORBIDDEN, reason));
    }
    let token = s.token.clone();
    let (n, pw) = (name.clone(), password.clone());
    let salt = s
        .token
        .random::<16>()
        .map_err(|e| internal("token random", e))?;
    let hash = blocking(move || password::hash(&*token, &n, &pw, &salt))
        .await?
        .map_err(|e| internal("password hash", e))?;
    let (totp_sealed, totp_uri) = if req.totp {
        let secret = s
            .token
            .random::<20>()
            .map_err(|e| internal("token random", e))?;
        let sealed = s
            .token
            .seal_totp(&name, &*secret)
            .map_err(|e| internal("totp seal", e))?;
        let issuer = format!("shard {}", s.trust_domain);
        (
            Some(sealed),
            Some(crate::totp::otpauth_uri(&issuer, &name, &*secret)),
        )
    } else {
        (None, None)
    };
    let db = s.db.clone();
    let (code, n) = (Zeroizing::new(req.invitation), name.clone());
    let outcome = blocking(move || db.register(&code, &n, &hash, totp_sealed.as_deref(), now()))
        .await?
        .map_err(|e| internal("database", e))?;
    match outcome {
        Ok(()) => {
            tracing::info!(user = %name, totp = totp_uri.is_some(), "registered");
            Ok((
                StatusCode::CREATED,
                Json(RegisterResponse { name, totp_uri }),
            )
                .into_response())
        }
        Err(r) => {
            let reason = match r {
                RegisterRefusal::Invitation(InvitationState::Expired) => "invitation_expired",
                RegisterRefusal::Invitation(InvitationState::Used) => "invitation_used",
                RegisterRefusal::Invitation(_) => "invitation_unknown",
                RegisterRefusal::UserExists => "user_exists",
            };
            tracing::warn!(user = %name, reason, "registration refused");
            Err(ApiError::new(
                if reason == "user_exists" {
                    StatusCode::CONFLICT
                } else {
                    StatusCode::FORBIDDEN
                },
                reason,
            ))
        }
    }
}

/// Login request.
#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    /// User name.
    pub name: String,
    /// Password.
    pub password: String,
    /// The current TOTP code, when the user has TOTP.
    #[serde(default)]
    pub totp_code: Option<String>,
    /// PKCS#10 CSR (PEM) for a P-256 key made on the user's machine.
    pub csr: String,
}

/// Login answer.
#[derive(Debug, Serialize, Deserialize)]
pub struct LoginResponse {
    /// The login certificate followed by the user CA certificate (PEM).
    pub certificate: String,
    /// Unix seconds after which the certificate is refused.
    pub not_after: i64,
    /// The identity it carries.
    pub identity: String,
}

async fn login(
    State(s): State<Shared>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    req: JsonBody<LoginRequest>,
) -> Result<Response, ApiError> {
    let req = body(req)?;
    let password = Zeroizing::new(req.password);
    let source = format!("ip:{}", remote.ip());
    let t = now();
    let name = certs::Name::new(&req.name)
        .map_err(|_| ApiError::new(StatusCode::BAD_REQUEST, "invalid_name"))?;
    // Checked and counted in one transaction before the password is looked at, so a
    // burst of attempts cannot all slip past the limits (see Db::begin_attempt).
    let db = s.db.clone();
    let (n, src, max) = (name.to_string(), source.clone(), s.backoff_max);
    let attempt = blocking(move || db.begin_attempt(&n, &src, t, max))
        .await?
        .map_err(|e| internal("database", e))?;
    match attempt {
        Attempt::Go => {}
        Attempt::SourceBlocked => {
            tracing::warn!(%source, "login refused: too many failures from this source");
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_failures_from_source",
            ));
        }
        Attempt::Locked => {
            tracing::warn!(user = %name, "login refused: account locked");
            return Err(ApiError::new(StatusCode::FORBIDDEN, "account_locked"));
        }
        Attempt::RetryLater(wait) => {
            let mut e = ApiError::new(StatusCode::TOO_MANY_REQUESTS, "retry_later");
            e.retry_after = Some(wait);
            return Err(e);
        }
    }
    let db = s.db.clone();
    let n = name.to_string();
    let user = blocking(move || db.user(&n))
        .await?
        .map_err(|e| internal("database", e))?;
    let fail = |reason: &'static str| {
        let db = s.db.clone();
        let n = name.to_string();
        let (name, source) = (name.clone(), source.clone());
        async move {
            let locked = blocking(move || db.settle_failure(&n))
                .await?
                .map_err(|e| internal("database", e))?;
            tracing::warn!(user = %name, %source, reason, "login refused");
            Err::<Response, _>(ApiError::new(
                StatusCode::UNAUTHORIZED,
                if locked && reason == "invalid_credentials" {
                    "account_locked"
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
        return fail("invalid_credentials").await;
    };
    let token = s.token.clone();
    let (n, pw, stored) = (
        name.to_string(),
        password.clone(),
        user.password_hash.clone(),
    );
    let ok = blocking(move || password::verify(&*token, &n, &pw, &stored))
        .await?
        .map_err(|e| internal("password check", e))?;
    if !ok {
        return fail("invalid_credentials").await;
    }
    if let Some(sealed) = &user.totp_sealed {
        let Some(code) = req.totp_code.as_deref() else {
            // The password was right: asking for the code is not a failed guess.
            let db = s.db.clone();
            let (n, src) = (name.to_string(), source.clone());
            blocking(move || db.refund_attempt(&n, &src))
                .await?
                .map_err(|e| internal("database", e))?;
            return Err(ApiError::new(StatusCode::UNAUTHORIZED, "totp_required"));
        };
        let secret = s
            .token
            .unseal_totp(name.as_str(), sealed)
            .map_err(|e| internal("totp unseal", e))?;
        let Some(step) = crate::totp::verify(&secret, code, t as u64) else {
            return fail("invalid_totp").await;
        };
        let db = s.db.clone();
        let n = name.to_string();
        if !blocking(move || db.use_totp_step(&n, step))
            .await?
            .map_err(|e| internal("database", e))?
        {
            return fail("totp_replayed").await;
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
            return Err(ApiError::new(StatusCode::BAD_REQUEST, "invalid_csr"))
        }
        Err(certs::Error::UnsupportedKey) => {
            return Err(ApiError::new(StatusCode::BAD_REQUEST, "csr_key_not_p256"))
        }
        Err(e) => return Err(internal("certificate issue", e)),
    };
    let db = s.db.clone();
    let n = name.to_string();
    blocking(move || db.record_success(&n, &source))
        .await?
        .map_err(|e| internal("database", e))?;
    let identity = SpiffeId::new(s.trust_domain.clone(), Role::User, name.clone()).to_string();
    tracing::info!(user = %name, not_after, "login certificate issued");
    Ok(Json(LoginResponse {
        certificate: format!("{cert}{}", s.user_ca_pem),
        not_after,
        identity,
    })
    .into_response())
}

// ---------------------------------------------------------------------------------------
// Administration
// ---------------------------------------------------------------------------------------

/// Invitation request.
#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct InviteRequest {
    /// The user name the invitation is for.
    pub name: String,
    /// Lifetime in seconds (default from the configuration).
    #[serde(default)]
    pub ttl_seconds: Option<i64>,
}

/// Invitation answer.
#[derive(Debug, Serialize, Deserialize)]
pub struct InviteResponse {
    /// User name.
    pub name: String,
    /// The one-time code (shown once; stored only as a digest).
    pub code: String,
    /// Unix seconds.
    pub expires_at: i64,
}

async fn invite(
    State(s): State<Shared>,
    Extension(peer): Extension<Peer>,
    req: JsonBody<InviteRequest>,
) -> Result<Response, ApiError> {
    let admin = require(&s, &peer, &[Role::Admin])?;
    let req = body(req)?;
    let name = certs::Name::new(&req.name)
        .map_err(|_| ApiError::new(StatusCode::BAD_REQUEST, "invalid_name"))?;
    let ttl = req.ttl_seconds.unwrap_or(s.invitation_ttl);
    if !(1..=30 * 86_400).contains(&ttl) {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "invalid_ttl"));
    }
    let raw = s
        .token
        .random::<15>()
        .map_err(|e| internal("token random", e))?;
    let code = crate::totp::base32(&*raw);
    let t = now();
    let db = s.db.clone();
    let (c, n, by) = (code.clone(), name.to_string(), admin.to_string());
    blocking(move || db.add_invitation(&c, &n, &by, t, ttl))
        .await?
        .map_err(|e| internal("database", e))?;
    tracing::info!(user = %name, by = %admin, "invitation created");
    Ok((
        StatusCode::CREATED,
        Json(InviteResponse {
            name: name.to_string(),
            code,
            expires_at: t + ttl,
        }),
    )
        .into_response())
}

/// One user in the admin listing.
#[derive(Debug, Serialize, Deserialize)]
pub struct UserInfo {
    /// Name.
    pub name: String,
    /// Locked.
    pub locked: bool,
    /// Consecutive failures.
    pub failures: i64,
    /// TOTP enabled.
    pub totp: bool,
}

async fn users(
    State(s): State<Shared>,
    Extension(peer): Extension<Peer>,
) -> Result<Response, ApiError> {
    require(&s, &peer, &[Role::Admin])?;
    let db = s.db.clone();
    let rows = blocking(move || db.users())
        .await?
        .map_err(|e| internal("database", e))?;
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

async fn unlock(
    State(s): State<Shared>,
    Extension(peer): Extension<Peer>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let admin = require(&s, &peer, &[Role::Admin])?;
    let name = certs::Name::new(&name)
        .map_err(|_| ApiError::new(StatusCode::BAD_REQUEST, "invalid_name"))?;
    let db = s.db.clone();
    let n = name.to_string();
    if !blocking(move || db.unlock(&n))
        .await?
        .map_err(|e| internal("database", e))?
    {
        return Err(ApiError::new(StatusCode::NOT_FOUND, "no_such_user"));
    }
    tracing::info!(user = %name, by = %admin, "unlocked");
    Ok(Json(serde_json::json!({ "name": name.to_string(), "locked": false })).into_response())
}

// ---------------------------------------------------------------------------------------
// Enrollment
// ---------------------------------------------------------------------------------------

/// Enrollment request.
#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EnrollRequest {
    /// `p256` (the enroller generates a key) or `secret` (escrow `secret`).
    pub kind: String,
    /// Base64 of the secret to escrow (1 byte to 64 KiB), for kind `secret`.
    #[serde(default)]
    pub secret: Option<String>,
}

/// Enrollment answer.
#[derive(Debug, Serialize, Deserialize)]
pub struct EnrollResponse {
    /// Secret id (hex).
    pub secret_id: String,
    /// Public key PEM for kind `p256`.
    pub public_key: Option<String>,
    /// Base64 of the signed manifest.
    pub manifest: String,
    /// The custodians in shard index order.
    pub custodians: Vec<String>,
    /// Threshold.
    pub threshold: u8,
}

fn client_reason(e: &ClientError) -> String {
    match e {
        ClientError::Connect { .. } => "unreachable".into(),
        ClientError::Handshake { .. } => "tls_handshake_failed".into(),
        ClientError::WrongPeer { .. } => "wrong_identity".into(),
        ClientError::Timeout { .. } => "timeout".into(),
        ClientError::Refused { body, .. } => body.reason.clone(),
        ClientError::Transport { .. } => "connection_broken".into(),
        _ => "invalid_answer".into(),
    }
}

fn retryable(e: &ClientError) -> bool {
    matches!(
        e,
        ClientError::Connect { .. } | ClientError::Transport { .. } | ClientError::Timeout { .. }
    )
}

async fn enroll(
    State(s): State<Shared>,
    Extension(peer): Extension<Peer>,
    req: JsonBody<EnrollRequest>,
) -> Result<Response, ApiError> {
    let owner = require(&s, &peer, &[Role::User])?;
    let req = body(req)?;
    // Randomness: the token's generator mixed with the OS one; either alone suffices.
    let token_entropy = s.token.random::<32>().map_err(|e| {
        tracing::error!(error = %e, "token random generator failed");
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "token_random_unavailable")
    })?;
    let mut os_entropy = Zeroizing::new([0u8; 32]);
    shard::rand::TryRng::try_fill_bytes(&mut shard::rand::rngs::SysRng, &mut *os_entropy)
        .map_err(|e| internal("os random", e))?;
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
            let secret = secret.map_err(|e| internal("secret", e))?;
            (secret, SecretKind::P256(key.public_key()), Some(pem))
        }
        ("secret", Some(b64)) => {
            let b64 = Zeroizing::new(b64);
            let raw =
                Zeroizing::new(B64.decode(b64.as_bytes()).map_err(|_| {
                    ApiError::new(StatusCode::BAD_REQUEST, "invalid_secret_encoding")
                })?);
            let secret = Secret::from_slice(&raw)
                .map_err(|_| ApiError::new(StatusCode::BAD_REQUEST, "invalid_secret_length"))?;
            (secret, SecretKind::Opaque, None)
        }
        _ => return Err(ApiError::new(StatusCode::BAD_REQUEST, "invalid_kind")),
    };
    let random_id = s
        .token
        .random::<10>()
        .map_err(|e| internal("token random", e))?;
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
        .map_err(|e| internal("manifest signing", e))?;

    // Deposit everywhere at once; a deposit is idempotent, so transient failures are retried.
    let owner_text = owner.to_string();
    let results = futures_util::future::join_all(s.custodians.iter().zip(&envelopes).map(
        |((name, client), env)| {
            let encoded = env.encode();
            let owner = owner_text.clone();
            async move {
                let mut last = None;
                for attempt in 0..3u32 {
                    match client.deposit(&owner, &encoded).await {
                        Ok(r) => return (name.clone(), Ok(r)),
                        Err(e) if retryable(&e) && attempt < 2 => {
                            tokio::time::sleep(Duration::from_millis(100 << attempt)).await;
                            last = Some(e);
                        }
                        Err(e) => return (name.clone(), Err(e)),
                    }
                }
                (
                    name.clone(),
                    Err(last.unwrap_or(ClientError::Decode {
                        addr: client.addr(),
                        reason: "no attempt".into(),
                    })),
                )
            }
        },
    ))
    .await;
    drop(envelopes);
    let failed: Vec<CustodianFailure> = results
        .iter()
        .filter_map(|(n, r)| {
            r.as_ref().err().map(|e| CustodianFailure {
                name: n.to_string(),
                reason: client_reason(e),
            })
        })
        .collect();
    if !failed.is_empty() {
        // Take back every shard that may have landed: ask every custodian, also those
        // whose deposit failed (an answer lost after the shard was stored counts as a
        // failure too). Deleting is idempotent; "not found" means nothing to take back.
        let landed: Vec<&CustodianId> = results
            .iter()
            .filter(|(_, r)| r.is_ok())
            .map(|(n, _)| n)
            .collect();
        let deletions =
            futures_util::future::join_all(s.custodians.iter().map(|(name, client)| async move {
                (name, client.delete(&secret_id, Some(epoch)).await)
            }))
            .await;
        let mut cleanup_failed = Vec::new();
        for (name, outcome) in deletions {
            match outcome {
                Ok(_) => {}
                Err(ClientError::Refused { status, .. })
                    if status == axum::http::StatusCode::NOT_FOUND => {}
                Err(e) if landed.contains(&name) => {
                    tracing::error!(custodian = %name, %secret_id, error = %e, "could not delete a shard of a failed enrollment");
                    cleanup_failed.push(name.to_string());
                }
                Err(e) => {
                    tracing::warn!(custodian = %name, %secret_id, error = %e, "could not confirm that a failed deposit left nothing behind");
                }
            }
        }
        tracing::warn!(user = %owner, %secret_id, failed = ?failed.iter().map(|f| (&f.name, &f.reason)).collect::<Vec<_>>(), removed = landed.len() - cleanup_failed.len(), "enrollment failed");
        let mut e = ApiError::new(
            StatusCode::BAD_GATEWAY,
            if cleanup_failed.is_empty() {
                "custodians_failed"
            } else {
                "custodians_failed_cleanup_incomplete"
            },
        );
        e.custodians = Some(failed);
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
        .map_err(|e| internal("database", e))?;
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

/// One enrollment in a listing.
#[derive(Debug, Serialize, Deserialize)]
pub struct EnrollmentInfo {
    /// Secret id.
    pub secret_id: String,
    /// `p256` or `secret`.
    pub kind: String,
    /// Public key PEM for `p256`.
    pub public_key: Option<String>,
    /// Epoch.
    pub epoch: u32,
    /// Unix seconds.
    pub created_at: i64,
    /// Base64 of the signed manifest.
    pub manifest: String,
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

async fn enrollments(
    State(s): State<Shared>,
    Extension(peer): Extension<Peer>,
) -> Result<Response, ApiError> {
    let owner = require(&s, &peer, &[Role::User])?.to_string();
    let db = s.db.clone();
    let rows = blocking(move || db.enrollments(&owner))
        .await?
        .map_err(|e| internal("database", e))?;
    Ok(Json(rows.into_iter().map(info).collect::<Vec<_>>()).into_response())
}

async fn enrollment(
    State(s): State<Shared>,
    Extension(peer): Extension<Peer>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let owner = require(&s, &peer, &[Role::User])?.to_string();
    let id: SecretId = id
        .parse()
        .map_err(|_| ApiError::new(StatusCode::BAD_REQUEST, "invalid_secret_id"))?;
    let db = s.db.clone();
    let rows = blocking(move || db.enrollments(&owner))
        .await?
        .map_err(|e| internal("database", e))?;
    rows.into_iter()
        .find(|r| r.secret_id == id.to_string())
        .map(|r| Json(info(r)).into_response())
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "not_found"))
}

async fn manifest_key(
    State(s): State<Shared>,
    Extension(peer): Extension<Peer>,
) -> Result<Response, ApiError> {
    require(
        &s,
        &peer,
        &[Role::User, Role::Admin, Role::Custodian, Role::Enroller],
    )?;
    Ok(crate::token::public_key_pem(&s.token.info().manifest_key).into_response())
}

async fn health(State(s): State<Shared>) -> Response {
    let token = s.token.clone();
    let ok = blocking(move || token.health())
        .await
        .map(|r| r.is_ok())
        .unwrap_or(false);
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(serde_json::json!({ "status": if ok { "ok" } else { "degraded" }, "token": if ok { "ok" } else { "unavailable" }, "version": env!("CARGO_PKG_VERSION") })))
        .into_response()
}
