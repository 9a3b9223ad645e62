//! Refusals: the one body every refusal of every service carries, and the one list of
//! reasons, each saying what it means and whether retrying can help.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Defines [`Reason`] from one table: variant, wire name, whether retrying can help, docs.
macro_rules! reasons {
    ($( $(#[doc = $doc:literal])+ $variant:ident = $name:literal, retry: $retry:literal; )+) => {
        /// Why a service refused a request: the `reason` of every refusal body.
        ///
        /// Each variant says what happened and whether sending the same request again
        /// (after a pause, or with the same credentials) can help; see [`Reason::retryable`].
        /// A reason this build does not know (a newer service) decodes as [`Reason::Unknown`].
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Reason {
            $( $(#[doc = $doc])+ $variant, )+
            /// A reason this build does not know, or a refusal without a readable body.
            /// Retrying does not help.
            Unknown,
        }

        impl Reason {
            /// Every known reason, in the order of the table.
            pub const ALL: &'static [Reason] = &[$(Reason::$variant,)+];

            /// The reason's name on the wire (snake case).
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Reason::$variant => $name,)+
                    Reason::Unknown => "unknown",
                }
            }

            /// Whether the same request can succeed later: the condition is transient
            /// (a device, a peer or the network is down, a rate or time limit). `false`
            /// means the request, the credentials or the stored data must change first.
            pub fn retryable(self) -> bool {
                match self {
                    $(Reason::$variant => $retry,)+
                    Reason::Unknown => false,
                }
            }

            /// The reason named `name` on the wire, or [`Reason::Unknown`].
            pub fn from_name(name: &str) -> Reason {
                match name {
                    $($name => Reason::$variant,)+
                    _ => Reason::Unknown,
                }
            }
        }
    };
}

reasons! {
    // ---- any route of either service ----
    /// No route has this method and path.
    NoSuchRoute = "no_such_route", retry: false;
    /// The request body exceeds the service's limit.
    BodyTooLarge = "body_too_large", retry: false;
    /// The request body is not the JSON this route takes.
    InvalidBody = "invalid_body", retry: false;
    /// The query string is malformed or out of range.
    InvalidQuery = "invalid_query", retry: false;
    /// The request (body included) did not arrive within the service's deadline.
    RequestTimeout = "request_timeout", retry: true;
    /// The route needs a client certificate and the connection presented none.
    ClientCertificateRequired = "client_certificate_required", retry: false;
    /// The client certificate has expired (a login certificate lives minutes); the
    /// connection is closed. Log in again, then retry.
    CertificateExpired = "certificate_expired", retry: false;
    /// The client certificate belongs to another trust domain.
    WrongTrustDomain = "wrong_trust_domain", retry: false;
    /// The client's role (user, admin, enroller, custodian) may not call this route.
    RoleNotAllowed = "role_not_allowed", retry: false;
    /// The secret id is not 32 hex digits.
    InvalidSecretId = "invalid_secret_id", retry: false;
    /// Nothing of that name exists for this caller (also: someone else's secret).
    NotFound = "not_found", retry: false;
    /// Too many requests from this identity; wait and retry.
    RateLimited = "rate_limited", retry: true;
    /// An unexpected failure inside the service; its log has the cause.
    Internal = "internal", retry: true;

    // ---- custodian: shards ----
    /// The deposit's owner is not a user identity of this trust domain.
    InvalidOwner = "invalid_owner", retry: false;
    /// The deposited envelope does not decode or does not match its context.
    InvalidEnvelope = "invalid_envelope", retry: false;
    /// Another shard is already stored under this secret, index and epoch.
    DifferentShardStored = "different_shard_stored", retry: false;
    /// The custodian's TPM or HSM does not answer.
    DeviceUnavailable = "device_unavailable", retry: true;
    /// The device failed on this operation.
    DeviceError = "device_error", retry: true;
    /// The stored blob fails its authentication: it was edited or damaged.
    SealedBlobIntegrity = "sealed_blob_integrity", retry: false;
    /// The stored blob was sealed for another context (custodian, secret, index, epoch).
    SealedBlobContext = "sealed_blob_context", retry: false;
    /// The stored blob was sealed by another device.
    SealedBlobForeignDevice = "sealed_blob_foreign_device", retry: false;
    /// The stored blob does not parse.
    SealedBlobMalformed = "sealed_blob_malformed", retry: false;
    /// The stored blob names a key version the device does not have.
    SealedBlobKeyVersion = "sealed_blob_key_version", retry: false;
    /// The unsealed envelope does not match its row.
    StoredEnvelopeInvalid = "stored_envelope_invalid", retry: false;
    /// The custodian's database failed.
    Storage = "storage", retry: true;
    /// The audit log could not record the release, so nothing was released.
    AuditUnavailable = "audit_unavailable", retry: true;

    // ---- custodian: threshold signing ----
    /// The id names a shard, which is released, not a signing key, which signs.
    NotASigningKey = "not_a_signing_key", retry: false;
    /// The id names a threshold-signing key, which never leaves its custodians: sign with
    /// it (`shardctl sign`) instead of recovering it.
    SigningKeyNotReleasable = "signing_key_not_releasable", retry: false;
    /// The deposited key package does not match the group's commitments (Feldman's
    /// check), or its parts disagree; nothing was stored.
    KeyPackageMismatch = "key_package_mismatch", retry: false;
    /// The session id is not 32 hex digits.
    InvalidSession = "invalid_session", retry: false;
    /// A session of this id is already open for this key: choose a fresh id.
    SessionExists = "session_exists", retry: false;
    /// No open session has this id: it was never opened, its custodian restarted (which
    /// aborts every session), or it ended. Start again from round 1.
    SessionUnknown = "session_unknown", retry: false;
    /// The session's deadline passed before round 2; its nonces are gone. Start again
    /// from round 1.
    SessionExpired = "session_expired", retry: false;
    /// Round 2 of this session was already answered: its nonces are spent and a replayed
    /// round 2 signs nothing.
    SessionSpent = "session_spent", retry: false;
    /// Too many signing sessions are open at this custodian; wait and retry.
    TooManySessions = "too_many_sessions", retry: true;
    /// The signing package does not decode as one of this key's kind.
    InvalidSigningPackage = "invalid_signing_package", retry: false;
    /// The signing package carries no commitment from this custodian; nothing was signed
    /// and the session is spent.
    CommitmentMissing = "commitment_missing", retry: false;
    /// The signing package carries another commitment for this custodian than its round
    /// 1 answered; nothing was signed and the session is spent.
    CommitmentAltered = "commitment_altered", retry: false;

    // ---- custodian: share checks ----
    /// The commitment to check against is not 64 hex digits.
    InvalidCommitment = "invalid_commitment", retry: false;
    /// A share check's `bad` verdict: the stored share does not match the manifest's
    /// commitment for it (a verdict's reason, not a refusal).
    CommitmentMismatch = "commitment_mismatch", retry: false;

    // ---- custodian: keys born distributed (DKG) and the peer channel ----
    /// The DKG's parameters are not valid: kind, threshold, holders, peers or owner.
    InvalidDkg = "invalid_dkg", retry: false;
    /// A DKG of this key id is under way with other parameters, or its key is stored.
    DkgExists = "dkg_exists", retry: false;
    /// No DKG of this key id is under way here: never started, its deadline passed, it was
    /// aborted, or the custodian restarted (which aborts every DKG). Start again.
    DkgUnknown = "dkg_unknown", retry: false;
    /// The DKG step came out of order (round 2 before round 1, a package after finish).
    DkgOutOfOrder = "dkg_out_of_order", retry: false;
    /// Too many DKGs are under way at this custodian; wait and retry.
    TooManyDkgs = "too_many_dkgs", retry: true;
    /// A round-1 package does not decode, is missing, or its proof of knowledge fails.
    InvalidRound1Package = "invalid_round1_package", retry: false;
    /// A round-2 package does not decode or is not for this holder.
    InvalidRound2Package = "invalid_round2_package", retry: false;
    /// Not every other holder's round-2 package has arrived.
    DkgIncomplete = "dkg_incomplete", retry: true;
    /// A holder's round-2 share does not match its round-1 commitment; the log names it.
    DkgCheater = "dkg_cheater", retry: false;
    /// The sender was shown other round-1 packages than this custodian: the coordinator
    /// relayed different packages to different holders.
    DkgTranscriptMismatch = "dkg_transcript_mismatch", retry: false;
    /// A holder already sent another round-2 package for this DKG.
    DkgPackageConflict = "dkg_package_conflict", retry: false;
    /// The peer channel's caller is not the custodian named for the sending holder.
    NotThePeer = "not_the_peer", retry: false;
    /// A peer could not be reached over the peer channel; the log names it.
    PeerUnreachable = "peer_unreachable", retry: true;
    /// A peer's certificate did not name the custodian given for its holder: the address
    /// is wrong (misrouted), and nothing was sent.
    PeerWrongIdentity = "peer_wrong_identity", retry: false;
    /// A peer refused its round-2 package; the log names it and its reason.
    PeerRefused = "peer_refused", retry: false;

    // ---- enroller: accounts ----
    /// The user name is not a valid name.
    InvalidName = "invalid_name", retry: false;
    /// The password is shorter than the policy allows.
    PasswordTooShort = "password_too_short", retry: false;
    /// The password is longer than the policy allows.
    PasswordTooLong = "password_too_long", retry: false;
    /// The password contains the user name.
    PasswordContainsName = "password_contains_name", retry: false;
    /// The password is too easy to guess.
    PasswordGuessable = "password_guessable", retry: false;
    /// No invitation has this code (or it is for another name).
    InvitationUnknown = "invitation_unknown", retry: false;
    /// The invitation has expired; ask for a new one.
    InvitationExpired = "invitation_expired", retry: false;
    /// The invitation was already used.
    InvitationUsed = "invitation_used", retry: false;
    /// A user of this name is already registered.
    UserExists = "user_exists", retry: false;
    /// Wrong name or password.
    InvalidCredentials = "invalid_credentials", retry: false;
    /// The account is locked after too many failures; an admin must unlock it.
    AccountLocked = "account_locked", retry: false;
    /// Failed logins back off: wait (see `Retry-After`) and retry.
    RetryLater = "retry_later", retry: true;
    /// Too many failed logins from this source address; wait and retry.
    TooManyFailuresFromSource = "too_many_failures_from_source", retry: true;
    /// The account has TOTP: send the current code too.
    TotpRequired = "totp_required", retry: false;
    /// The TOTP code is wrong.
    InvalidTotp = "invalid_totp", retry: false;
    /// That TOTP code was already used; wait for the next one.
    TotpReplayed = "totp_replayed", retry: true;
    /// The certificate signing request does not parse or is not a P-256 key's.
    InvalidCsr = "invalid_csr", retry: false;
    /// The CSR's key is not a P-256 key.
    CsrKeyNotP256 = "csr_key_not_p256", retry: false;
    /// The invitation lifetime is out of range.
    InvalidTtl = "invalid_ttl", retry: false;
    /// No user has this name.
    NoSuchUser = "no_such_user", retry: false;

    // ---- enroller: enrollment ----
    /// The enrollment kind is not one the enroller makes.
    InvalidKind = "invalid_kind", retry: false;
    /// The brought secret is not valid base64.
    InvalidSecretEncoding = "invalid_secret_encoding", retry: false;
    /// The brought secret is empty or larger than 64 KiB.
    InvalidSecretLength = "invalid_secret_length", retry: false;
    /// The private key to import is not a valid key of its kind.
    InvalidPrivateKey = "invalid_private_key", retry: false;
    /// The enroller's token produced no randomness, so no key was made.
    TokenRandomUnavailable = "token_random_unavailable", retry: true;
    /// At least one custodian did not take its shard; every shard that landed was deleted.
    CustodiansFailed = "custodians_failed", retry: true;
    /// At least one custodian did not take its shard, and a shard that landed could not be
    /// deleted; the failures name the custodians.
    CustodiansFailedCleanupIncomplete = "custodians_failed_cleanup_incomplete", retry: true;
    /// The custodians of a DKG answered different public key packages; nothing was kept.
    CustodiansDisagree = "custodians_disagree", retry: false;
    /// Refresh applies to threshold-signing keys only so far: a shard-kind secret's
    /// sharing over GF(2^8) has no commitments a custodian could check a sub-share against.
    RefreshNotForKind = "refresh_not_for_kind", retry: false;
    /// The enroller's custodians are not the ones the secret's manifest names: moving a
    /// secret to another set is a reshare, not a refresh.
    CustodianSetChanged = "custodian_set_changed", retry: false;
    /// Another epoch change of this secret is still being finished; retry shortly.
    RefreshInProgress = "refresh_in_progress", retry: true;
    /// `dkg` applies to the threshold-signing kinds only, and not to an imported key.
    DkgNotForKind = "dkg_not_for_kind", retry: false;
    /// A reshare's new set or threshold is not one the enroller can make: an unknown or
    /// repeated custodian, or a threshold outside `2 <= t <= n`.
    InvalidReshare = "invalid_reshare", retry: false;
    /// Reshare applies to threshold-signing keys only so far.
    ReshareNotForKind = "reshare_not_for_kind", retry: false;
    /// Fewer than `t` of the secret's current custodians could deal, or a new holder could
    /// not take part; nothing changed.
    ReshareTooFewHolders = "reshare_too_few_holders", retry: true;

    // ---- enroller: internal failures, named by the step that failed ----
    /// A worker thread of the enroller failed.
    Worker = "worker", retry: true;
    /// The enroller's database failed.
    Database = "database", retry: true;
    /// The token's random generator failed.
    TokenRandom = "token_random", retry: true;
    /// The operating system's random generator failed.
    OsRandom = "os_random", retry: true;
    /// Hashing the password failed.
    PasswordHash = "password_hash", retry: true;
    /// Checking the password failed.
    PasswordCheck = "password_check", retry: true;
    /// Sealing the TOTP seed with the token failed.
    TotpSeal = "totp_seal", retry: true;
    /// Unsealing the TOTP seed with the token failed.
    TotpUnseal = "totp_unseal", retry: true;
    /// Issuing the login certificate failed.
    CertificateIssue = "certificate_issue", retry: true;
    /// Making the secret failed.
    Secret = "secret", retry: true;
    /// Signing the manifest with the token failed.
    ManifestSigning = "manifest_signing", retry: true;

    // ---- one custodian's failure during an enrollment (in `custodians`) ----
    /// The custodian could not be reached.
    Unreachable = "unreachable", retry: true;
    /// The TLS handshake with the custodian failed.
    TlsHandshakeFailed = "tls_handshake_failed", retry: false;
    /// The custodian presented another identity than configured.
    WrongIdentity = "wrong_identity", retry: false;
    /// The custodian did not answer in time.
    Timeout = "timeout", retry: true;
    /// The connection to the custodian broke.
    ConnectionBroken = "connection_broken", retry: true;
    /// The custodian's answer did not parse.
    InvalidAnswer = "invalid_answer", retry: false;
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Reason {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Reason {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = std::borrow::Cow::<'de, str>::deserialize(d)?;
        Ok(Reason::from_name(&name))
    }
}

/// The class of a refusal, from its HTTP status: the `error` of every refusal body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Class {
    /// 400.
    BadRequest,
    /// 401.
    Unauthorized,
    /// 403.
    Forbidden,
    /// 404.
    NotFound,
    /// 405.
    MethodNotAllowed,
    /// 408.
    Timeout,
    /// 409.
    Conflict,
    /// 413.
    PayloadTooLarge,
    /// 429.
    RateLimited,
    /// 502.
    BadGateway,
    /// 503.
    Unavailable,
    /// Any other status (500 among them).
    #[serde(other)]
    Internal,
}

impl Class {
    /// The class's name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Class::BadRequest => "bad_request",
            Class::Unauthorized => "unauthorized",
            Class::Forbidden => "forbidden",
            Class::NotFound => "not_found",
            Class::MethodNotAllowed => "method_not_allowed",
            Class::Timeout => "timeout",
            Class::Conflict => "conflict",
            Class::PayloadTooLarge => "payload_too_large",
            Class::RateLimited => "rate_limited",
            Class::BadGateway => "bad_gateway",
            Class::Unavailable => "unavailable",
            Class::Internal => "internal",
        }
    }

    /// The class of an HTTP status.
    pub fn of_status(status: u16) -> Class {
        match status {
            400 => Class::BadRequest,
            401 => Class::Unauthorized,
            403 => Class::Forbidden,
            404 => Class::NotFound,
            405 => Class::MethodNotAllowed,
            408 => Class::Timeout,
            409 => Class::Conflict,
            413 => Class::PayloadTooLarge,
            429 => Class::RateLimited,
            502 => Class::BadGateway,
            503 => Class::Unavailable,
            _ => Class::Internal,
        }
    }
}

/// One custodian's failure during an enrollment, as the enroller reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustodianFailure {
    /// Custodian name.
    pub name: String,
    /// What went wrong there: a transport reason or the custodian's own refusal.
    pub reason: Reason,
}

/// The JSON body of every refusal: `{"error": class, "reason": reason}`, and for a failed
/// enrollment the custodians that failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusal {
    /// The class, from the status.
    pub error: Class,
    /// Why.
    pub reason: Reason,
    /// Per-custodian failures of an enrollment; from a custodian, the peers a DKG step
    /// names (the holder whose share failed its commitment, `dkg_cheater`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custodians: Option<Vec<CustodianFailure>>,
}

impl Refusal {
    /// A refusal with `status` and `reason`.
    pub fn new(status: u16, reason: Reason) -> Refusal {
        Refusal {
            error: Class::of_status(status),
            reason,
            custodians: None,
        }
    }

    /// Whether retrying can help.
    pub fn retryable(&self) -> bool {
        self.reason.retryable()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_round_trips_by_name() {
        for &r in Reason::ALL {
            assert_eq!(Reason::from_name(r.as_str()), r, "{r}");
            let json = serde_json::to_string(&r).unwrap();
            assert_eq!(json, format!("\"{}\"", r.as_str()));
            assert_eq!(serde_json::from_str::<Reason>(&json).unwrap(), r);
        }
    }

    #[test]
    fn names_are_unique_snake_case() {
        let mut seen = std::collections::HashSet::new();
        for &r in Reason::ALL {
            let n = r.as_str();
            assert!(seen.insert(n), "{n} twice");
            assert!(
                n.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
                "{n}"
            );
        }
    }

    #[test]
    fn an_unknown_reason_decodes_as_unknown_and_is_not_retryable() {
        let r: Refusal = serde_json::from_str(r#"{"error":"teapot","reason":"brewing"}"#).unwrap();
        assert_eq!(r.reason, Reason::Unknown);
        assert_eq!(r.error, Class::Internal);
        assert!(!r.retryable());
    }

    #[test]
    fn refusal_body_shape_is_unchanged() {
        let body = serde_json::to_string(&Refusal::new(404, Reason::NotFound)).unwrap();
        assert_eq!(body, r#"{"error":"not_found","reason":"not_found"}"#);
        let mut r = Refusal::new(502, Reason::CustodiansFailed);
        r.custodians = Some(vec![CustodianFailure {
            name: "c1".into(),
            reason: Reason::Unreachable,
        }]);
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            r#"{"error":"bad_gateway","reason":"custodians_failed","custodians":[{"name":"c1","reason":"unreachable"}]}"#
        );
    }

    #[test]
    fn class_names_match_serde() {
        for status in [400, 401, 403, 404, 405, 408, 409, 413, 429, 500, 502, 503] {
            let c = Class::of_status(status);
            assert_eq!(
                serde_json::to_string(&c).unwrap(),
                format!("\"{}\"", c.as_str())
            );
        }
    }

    #[test]
    fn transient_reasons_are_retryable() {
        assert!(Reason::DeviceUnavailable.retryable());
        assert!(Reason::RateLimited.retryable());
        assert!(!Reason::NotFound.retryable());
        assert!(!Reason::SealedBlobIntegrity.retryable());
    }
}
