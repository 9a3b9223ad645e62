//! The words for every refusal reason a service can give, in one place. Both matches below
//! name every [`Reason`] without a catch-all, so a reason added to the wire does not build
//! until `shardctl` has decided what to tell the user about it.

use std::path::Path;

use wire::Reason;

use crate::prompt;

/// Where a refusal came from, for the words that depend on it.
pub enum Site<'a> {
    /// `shardctl register NAME`.
    Register {
        /// The user name.
        name: &'a str,
    },
    /// `shardctl login NAME`.
    Login {
        /// The user name.
        name: &'a str,
    },
    /// An admin verb; `config` is the configuration file that names the admin certificate.
    Admin {
        /// The configuration file.
        config: &'a Path,
    },
    /// `shardctl admin unlock NAME`.
    Unlock {
        /// The user name.
        name: &'a str,
    },
    /// `shardctl enroll`.
    Enroll,
    /// A custodian asked for its shard during `shardctl recover`.
    Release,
    /// A custodian asked to commit or sign during `shardctl sign`.
    Sign,
}

/// What the user can do about `reason` refused at `site` (or, at [`Site::Release`], what
/// the custodian did), when there is more to say than the reason itself.
pub fn hint(reason: Reason, site: &Site<'_>) -> Option<String> {
    use Site::*;
    let name = match site {
        Register { name } | Login { name } | Unlock { name } => Some(*name),
        Admin { .. } | Enroll | Release | Sign => None,
    };
    // What a custodian did, on the per-custodian line of a recovery.
    let release = |words: &str| matches!(site, Release).then(|| words.to_owned());
    let signer = |words: &str| matches!(site, Sign).then(|| words.to_owned());
    match reason {
        Reason::InvalidReshare => Some(
            "name each new custodian once, as the enroller's configuration names it, and a \
             threshold with 2 <= t <= the number of custodians"
                .into(),
        ),
        Reason::InvitationUnknown => name.map(|name| {
            format!(
                "the invitation code is not valid for {name}; check it, or ask an administrator \
                 for a new one (`shardctl admin invite {name}`)"
            )
        }),
        Reason::InvitationExpired => name.map(|name| {
            format!(
                "the invitation for {name} has expired; ask an administrator for a new one \
                 (`shardctl admin invite {name}`)"
            )
        }),
        Reason::InvitationUsed => name.map(|name| {
            format!(
                "the invitation for {name} was already used; if that was you, run \
                 `shardctl login {name}`, else ask an administrator for a new one"
            )
        }),
        Reason::UserExists => {
            name.map(|name| format!("{name} is already registered; run `shardctl login {name}`"))
        }
        Reason::PasswordTooShort => {
            Some("the password is too short; use at least 12 characters".into())
        }
        Reason::PasswordTooLong => {
            Some("the password is too long; use at most 256 characters".into())
        }
        Reason::PasswordContainsName => {
            Some("the password contains the user name; choose another one".into())
        }
        Reason::PasswordGuessable => {
            Some("the password is too easy to guess; choose a longer, less regular one".into())
        }
        Reason::InvalidName => name.map(|name| format!("{name:?} is not a valid user name")),
        Reason::InvalidCredentials => name.map(|name| {
            format!(
                "wrong user name or password for {name}; try again (repeated failures lock the \
                 account)"
            )
        }),
        Reason::AccountLocked => name.map(|name| {
            format!(
                "the account {name} is locked after too many failed logins; ask an administrator \
                 to run `shardctl admin unlock {name}`"
            )
        }),
        Reason::RetryLater => {
            Some("too many failed logins; wait a minute before trying again".into())
        }
        Reason::TooManyFailuresFromSource => Some(
            "too many failed logins from this address; wait a while before trying again".into(),
        ),
        Reason::TotpRequired => name.map(|name| {
            format!(
                "{name} has a second factor: give the current code from your authenticator app \
                 (on the terminal, or in {})",
                prompt::TOTP_CODE
            )
        }),
        Reason::InvalidTotp => Some(
            "the TOTP code is wrong; check your authenticator's clock and try again with the \
             current code"
                .into(),
        ),
        Reason::TotpReplayed => {
            Some("that TOTP code was already used; wait for the next one and try again".into())
        }
        Reason::NoSuchUser => match site {
            Unlock { name } => Some(format!(
                "there is no user {name}; see `shardctl admin users`"
            )),
            _ => None,
        },
        Reason::CertificateExpired => Some(match name {
            Some(name) => format!("the login certificate has expired; run `shardctl login {name}`"),
            None => {
                "the login certificate has expired; log in again (`shardctl login NAME`)".into()
            }
        }),
        Reason::RoleNotAllowed | Reason::ClientCertificateRequired => match site {
            Admin { config } => Some(format!(
                "this needs an admin certificate (`shardctl pki issue admin <name>`), named \
                 under [admin] in {} or with --admin-cert and --admin-key",
                config.display()
            )),
            _ => None,
        },
        Reason::TokenRandomUnavailable => Some(
            "its token cannot produce randomness, so nothing was enrolled; tell the operator"
                .into(),
        ),
        Reason::InvalidSecretLength => {
            matches!(site, Enroll).then(|| "a secret must be 1 byte to 64 KiB".into())
        }
        Reason::NotFound => match site {
            Sign => Some("has no key package of this key for you".into()),
            _ => release("has no shard of this secret for you"),
        },
        Reason::SessionUnknown => {
            signer("lost the signing session (it restarted between the rounds)")
        }
        Reason::SessionExpired => signer("dropped the signing session: its deadline passed"),
        Reason::SessionSpent => signer("had already signed in this session"),
        Reason::SessionExists => signer("already has a session of this id"),
        Reason::TooManySessions => signer("has too many signing sessions open; try again shortly"),
        Reason::CommitmentMissing | Reason::CommitmentAltered => {
            signer("refused a signing package that does not carry its own commitment")
        }
        Reason::NotASigningKey => signer("holds a shard of this id, not a key package"),
        Reason::SigningKeyNotReleasable => {
            release("holds a signing key package, which is never released")
        }
        Reason::InvalidPrivateKey => matches!(site, Enroll)
            .then(|| "the imported key is not a valid private key of its kind".into()),
        Reason::SealedBlobIntegrity => {
            release("its stored shard is damaged (the seal's integrity check failed)")
        }
        Reason::DeviceUnavailable => {
            matches!(site, Release | Sign).then(|| "its TPM or HSM is unavailable".into())
        }
        Reason::CustodiansDisagree => matches!(site, Enroll).then(|| {
            "the custodians made different keys (a custodian or the enroller is faulty); \
             nothing was kept"
                .into()
        }),
        Reason::RateLimited => release("is rate-limiting us; try again shortly"),
        Reason::AuditUnavailable => release("cannot write its audit log, so it releases nothing"),
        Reason::SealedBlobContext | Reason::SealedBlobMalformed => {
            release("its stored shard is damaged")
        }
        // The reason alone says it, or the caller words it (a failed enrollment lists its
        // custodians; a missing secret is its own error).
        Reason::NoSuchRoute
        | Reason::BodyTooLarge
        | Reason::InvalidBody
        | Reason::InvalidQuery
        | Reason::RequestTimeout
        | Reason::WrongTrustDomain
        | Reason::InvalidSecretId
        | Reason::Internal
        | Reason::InvalidOwner
        | Reason::InvalidEnvelope
        | Reason::DifferentShardStored
        | Reason::DeviceError
        | Reason::SealedBlobForeignDevice
        | Reason::SealedBlobKeyVersion
        | Reason::StoredEnvelopeInvalid
        | Reason::Storage
        | Reason::InvalidCsr
        | Reason::CsrKeyNotP256
        | Reason::InvalidTtl
        | Reason::InvalidKind
        | Reason::InvalidSecretEncoding
        | Reason::CustodiansFailed
        | Reason::CustodiansFailedCleanupIncomplete
        | Reason::Worker
        | Reason::Database
        | Reason::TokenRandom
        | Reason::OsRandom
        | Reason::PasswordHash
        | Reason::PasswordCheck
        | Reason::TotpSeal
        | Reason::TotpUnseal
        | Reason::CertificateIssue
        | Reason::Secret
        | Reason::ManifestSigning
        | Reason::Unreachable
        | Reason::TlsHandshakeFailed
        | Reason::WrongIdentity
        | Reason::Timeout
        | Reason::ConnectionBroken
        | Reason::InvalidAnswer
        | Reason::KeyPackageMismatch
        | Reason::InvalidSession
        | Reason::InvalidSigningPackage
        | Reason::InvalidDkg
        | Reason::DkgExists
        | Reason::DkgUnknown
        | Reason::DkgOutOfOrder
        | Reason::TooManyDkgs
        | Reason::InvalidRound1Package
        | Reason::InvalidRound2Package
        | Reason::DkgIncomplete
        | Reason::DkgCheater
        | Reason::DkgTranscriptMismatch
        | Reason::DkgPackageConflict
        | Reason::NotThePeer
        | Reason::PeerUnreachable
        | Reason::PeerWrongIdentity
        | Reason::PeerRefused
        | Reason::DkgNotForKind
        | Reason::InvalidCommitment
        | Reason::RefreshNotForKind
        | Reason::ReshareNotForKind
        | Reason::ReshareTooFewHolders
        | Reason::CustodianSetChanged
        | Reason::RefreshInProgress
        | Reason::CommitmentMismatch
        | Reason::Unknown => None,
    }
}

/// What a custodian that refused to release its shard did, in words for the per-custodian
/// line of a recovery.
pub fn release_refused(reason: Reason) -> String {
    hint(reason, &Site::Release).unwrap_or_else(|| "refused".into())
}

/// What a custodian that refused a signing round did, for the per-custodian line of
/// `shardctl sign`.
pub fn sign_refused(reason: Reason) -> String {
    hint(reason, &Site::Sign).unwrap_or_else(|| "refused".into())
}
