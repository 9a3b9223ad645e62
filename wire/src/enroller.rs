//! The enroller's API. Registration and login are the only calls a client may make
//! without a certificate; everything else is authorized by the verified peer's SPIFFE id.
//!
//! | request | method and path | who | answer |
//! |---|---|---|---|
//! | [`Register`] | `POST /v1/register` | anyone with an invitation | 201 [`RegisterResponse`] |
//! | [`Login`] | `POST /v1/login` | a registered user | 200 [`LoginResponse`] |
//! | [`Invite`] | `POST /v1/admin/invitations` | admin | 201 [`InviteResponse`] |
//! | [`Unlock`] | `POST /v1/admin/users/{name}/unlock` | admin | 200 [`UnlockResponse`] |
//! | [`Users`] | `GET /v1/admin/users` | admin | 200 list of [`UserInfo`] |
//! | [`Enroll`] | `POST /v1/enroll` | user | 201 [`EnrollResponse`] |
//! | [`Enrollments`] | `GET /v1/enrollments` | the owner | 200 list of [`EnrollmentInfo`] |
//! | [`Enrollment`] | `GET /v1/enrollments/{id}` | the owner | 200 [`EnrollmentInfo`] |
//! | [`Refresh`] | `POST /v1/enrollments/{id}/refresh` | the owner | 200 [`RefreshResponse`] |
//! | [`Reshare`] | `POST /v1/enrollments/{id}/reshare` | the owner | 200 [`RefreshResponse`] |
//! | [`ManifestKey`] | `GET /v1/manifest-key` | any peer | 200 PEM of the manifest-signing key |
//! | [`Health`] | `GET /v1/health` | any peer | 200 or 503 with [`HealthResponse`] |
//!
//! Every refusal is a [`crate::Refusal`]; a failed enrollment adds the custodians that
//! failed, each with its [`crate::Reason`].

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::{json_answers, request, Text};

// ---- accounts ----

/// Registration with a one-time invitation.
#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Register {
    /// User name.
    pub name: String,
    /// One-time invitation code. Wiped on drop.
    pub invitation: Zeroizing<String>,
    /// Password. Wiped on drop.
    pub password: Zeroizing<String>,
    /// Set up a TOTP second factor.
    #[serde(default)]
    pub totp: bool,
}
request!(Register, Post, "/v1/register", RegisterResponse, json);

/// Registration answer.
#[derive(Debug, Serialize, Deserialize)]
pub struct RegisterResponse {
    /// User name.
    pub name: String,
    /// The `otpauth://` URI to import into an authenticator (shown once). Wiped on drop.
    pub totp_uri: Option<Zeroizing<String>>,
}

/// Login: password (+ TOTP) and a CSR for a key made on the user's machine.
#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Login {
    /// User name.
    pub name: String,
    /// Password. Wiped on drop.
    pub password: Zeroizing<String>,
    /// The current TOTP code, when the user has TOTP.
    #[serde(default)]
    pub totp_code: Option<Zeroizing<String>>,
    /// PKCS#10 CSR (PEM) for a P-256 key made on the user's machine.
    pub csr: String,
}
request!(Login, Post, "/v1/login", LoginResponse, json);

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

/// A one-time invitation for a user name (admin).
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Invite {
    /// The user name the invitation is for.
    pub name: String,
    /// Lifetime in seconds (default from the configuration).
    #[serde(default)]
    pub ttl_seconds: Option<i64>,
}
request!(Invite, Post, "/v1/admin/invitations", InviteResponse, json);

/// Invitation answer.
#[derive(Serialize, Deserialize)]
pub struct InviteResponse {
    /// User name.
    pub name: String,
    /// The one-time code (shown once; stored only as a digest). Wiped on drop.
    pub code: Zeroizing<String>,
    /// Unix seconds.
    pub expires_at: i64,
}

/// The user listing (admin).
#[derive(Debug, Clone, Copy, Default)]
pub struct Users;

request!(Users, Get, "/v1/admin/users", Vec<UserInfo>);

/// One user in the listing.
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

/// Unlock a locked user (admin). No body.
#[derive(Debug, Clone)]
pub struct Unlock {
    /// The user name.
    pub name: String,
}

request!(
    Unlock,
    Post,
    "/v1/admin/users/{name}/unlock",
    UnlockResponse,
    path | r | format!("/v1/admin/users/{}/unlock", r.name)
);

/// Unlock answer.
#[derive(Debug, Serialize, Deserialize)]
pub struct UnlockResponse {
    /// The user name.
    pub name: String,
    /// Always false: the user is unlocked.
    pub locked: bool,
}

// ---- enrollment ----

/// Enroll a new secret for the caller (user).
#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Enroll {
    /// `p256` (the enroller generates a key to escrow), `secret` (escrow `secret`), or a
    /// threshold-signing kind, `ed25519`, `secp256k1-tr` or `p256-schnorr` (the enroller
    /// generates the key, or splits the private key in `secret`, into one key package per
    /// custodian; the key is never recovered, only used to sign).
    pub kind: String,
    /// Base64 of the secret to escrow (1 byte to 64 KiB) for kind `secret`, or of the
    /// private key to import for a signing kind (32 bytes: the Ed25519 seed, the
    /// secp256k1 or P-256 scalar, big-endian). Wiped on drop.
    #[serde(default)]
    pub secret: Option<Zeroizing<String>>,
    /// For a threshold-signing kind: the custodians make the key among themselves (FROST's
    /// DKG) and no machine, the enroller included, ever holds it. Not with `secret`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dkg: bool,
}
request!(Enroll, Post, "/v1/enroll", EnrollResponse, json);

/// Enrollment answer.
#[derive(Debug, Serialize, Deserialize)]
pub struct EnrollResponse {
    /// Secret id (hex).
    pub secret_id: String,
    /// The public key: PEM for `p256` and `ed25519` (SubjectPublicKeyInfo), lowercase hex
    /// for `secp256k1-tr` (BIP340 x-only) and `p256-schnorr` (SEC1 compressed); none for
    /// `secret`.
    pub public_key: Option<String>,
    /// Base64 of the signed manifest.
    pub manifest: String,
    /// The custodians in shard index order.
    pub custodians: Vec<String>,
    /// Threshold.
    pub threshold: u8,
}

/// The caller's enrollments.
#[derive(Debug, Clone, Copy, Default)]
pub struct Enrollments;

request!(Enrollments, Get, "/v1/enrollments", Vec<EnrollmentInfo>);

/// One of the caller's enrollments.
#[derive(Debug, Clone)]
pub struct Enrollment {
    /// Secret id (hex).
    pub secret_id: String,
}

request!(
    Enrollment,
    Get,
    "/v1/enrollments/{id}",
    EnrollmentInfo,
    path | r | format!("/v1/enrollments/{}", r.secret_id)
);

/// A proactive refresh of one of the caller's keys: epoch `e` to `e + 1`, same key, same
/// `t` and `n`, new shares at every custodian (each deals a sharing of zero to the others
/// over the peer channel); old shares stop combining with new ones.
#[derive(Debug, Clone)]
pub struct Refresh {
    /// Secret id (hex).
    pub secret_id: String,
}

request!(
    Refresh,
    Post,
    "/v1/enrollments/{id}/refresh",
    RefreshResponse,
    path | r | format!("/v1/enrollments/{}/refresh", r.secret_id)
);

/// Moves a threshold-signing key to another set of custodians, or another threshold: the
/// new holders, in holder order, and `t` of them.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reshare {
    /// Secret id (hex).
    #[serde(skip)]
    pub secret_id: String,
    /// The new custodians by name, in holder order (any the enroller is configured with).
    pub custodians: Vec<String>,
    /// The new threshold.
    pub threshold: u8,
}

impl crate::Request for Reshare {
    const METHOD: crate::Method = crate::Method::Post;
    const ROUTE: &'static str = "/v1/enrollments/{id}/reshare";
    type Response = RefreshResponse;
    fn path(&self) -> String {
        format!("/v1/enrollments/{}/reshare", self.secret_id)
    }
    fn body(&self) -> Result<Option<Vec<u8>>, serde_json::Error> {
        crate::json_body(self)
    }
}

/// A refresh's (or a reshare's) answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RefreshResponse {
    /// Secret id (hex).
    pub secret_id: String,
    /// The new epoch.
    pub epoch: u32,
    /// Base64 of the new signed manifest.
    pub manifest: String,
    /// False when a custodian has not committed the new epoch or deleted the old one yet;
    /// the enroller finishes that on its own (the new manifest is in force already).
    pub complete: bool,
}

/// One enrollment in a listing.
#[derive(Debug, Serialize, Deserialize)]
pub struct EnrollmentInfo {
    /// Secret id.
    pub secret_id: String,
    /// `p256`, `secret`, `ed25519`, `secp256k1-tr` or `p256-schnorr`.
    pub kind: String,
    /// The public key, as in [`EnrollResponse::public_key`].
    pub public_key: Option<String>,
    /// Epoch.
    pub epoch: u32,
    /// Unix seconds.
    pub created_at: i64,
    /// Base64 of the signed manifest.
    pub manifest: String,
}

/// The enroller's manifest-signing public key (PEM), for pinning.
#[derive(Debug, Clone, Copy, Default)]
pub struct ManifestKey;

request!(ManifestKey, Get, "/v1/manifest-key", Text);

/// The enroller's health. A degraded enroller answers 503 with the same body.
#[derive(Debug, Clone, Copy, Default)]
pub struct Health;

request!(Health, Get, "/v1/health", HealthResponse);

/// Health answer.
#[derive(Debug, Serialize, Deserialize)]
pub struct HealthResponse {
    /// `ok` or `degraded`.
    pub status: String,
    /// `ok` or `unavailable`.
    #[serde(default)]
    pub token: Option<String>,
    /// Build version.
    #[serde(default)]
    pub version: Option<String>,
}

/// The path of the loopback plain-HTTP health port (no TLS; `GET` only).
pub const PLAIN_HEALTH_PATH: &str = "/health";

json_answers!(
    RefreshResponse,
    RegisterResponse,
    LoginResponse,
    InviteResponse,
    UnlockResponse,
    EnrollResponse,
    EnrollmentInfo,
    HealthResponse,
);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Request;

    #[test]
    fn paths_and_bodies() {
        assert_eq!(
            Unlock {
                name: "alice".into()
            }
            .path(),
            "/v1/admin/users/alice/unlock"
        );
        assert!(Unlock { name: "a".into() }.body().unwrap().is_none());
        let id = "ab".repeat(16);
        assert_eq!(
            Enrollment {
                secret_id: id.clone()
            }
            .path(),
            format!("/v1/enrollments/{id}")
        );
        let e = Enroll {
            kind: "p256".into(),
            secret: None,
            dkg: false,
        };
        assert_eq!(
            e.body().unwrap().unwrap(),
            br#"{"kind":"p256","secret":null}"#.to_vec()
        );
    }

    #[test]
    fn unknown_fields_are_refused() {
        assert!(serde_json::from_str::<Invite>(r#"{"name":"a","admin":true}"#).is_err());
    }
}
