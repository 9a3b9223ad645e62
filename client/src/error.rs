//! What can go wrong in a `shardctl` command, worded for the person who ran it.
//!
//! Every message is one line that says what happened and, where it is not obvious, what to do
//! next. `main` prefixes it with `shardctl: ` and exits with status 1. No message ever contains
//! key material: the library errors wrapped here carry none.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

/// A failed `shardctl` command.
#[derive(Debug)]
pub enum CliError {
    /// An argument was rejected by the PKI library (trust domain, role, name, DNS name, ...).
    InvalidArgument(certs::Error),
    /// `--ip` was not an IPv4 or IPv6 address.
    InvalidIp(String),
    /// `--days` was outside 1..=3650.
    InvalidDays(u32),
    /// Files this command would create exist already; nothing was written.
    AlreadyExists(Vec<PathBuf>),
    /// The CA's files could not be read.
    ReadCa {
        /// The file that could not be read.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The CA's files were read but do not form a usable CA.
    BadCa {
        /// The CA directory.
        dir: PathBuf,
        /// Why.
        source: certs::Error,
    },
    /// Issuing the certificate failed.
    Issue(certs::Error),
    /// A certificate file to show could not be read.
    ReadCert {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// A file to show is larger than any certificate.
    TooLarge(PathBuf),
    /// A file to show holds no usable certificate.
    BadCert {
        /// The file.
        path: PathBuf,
        /// Why.
        source: certs::Error,
    },
    /// The PKI directory could not be created.
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// Writing an output file failed (after which files this run created were removed).
    Write(certs::Error),
    /// No configuration file at the default path.
    NoConfig(PathBuf),
    /// The configuration file is not valid.
    Config {
        /// The file.
        path: PathBuf,
        /// What is wrong, naming the key.
        problem: String,
    },
    /// Neither the XDG variable nor `$HOME` gives a directory.
    NoHome(&'static str),
    /// A file could not be read.
    ReadFile {
        /// What the file is, as the user knows it.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// No stored login for the trust domain.
    NotLoggedIn(String),
    /// The stored login file is not usable.
    BadLogin {
        /// The file.
        path: PathBuf,
        /// Why.
        why: String,
    },
    /// The login certificate is past its end (seen locally or refused by a service).
    LoginExpired {
        /// When it expired, RFC 3339.
        at: String,
        /// The user, for the hint.
        user: String,
    },
    /// The CA, certificate and key do not make a TLS configuration.
    Credentials {
        /// The configuration naming them.
        config: PathBuf,
        /// Why.
        why: String,
    },
    /// A service address does not resolve.
    Resolve {
        /// The service's identity.
        service: String,
        /// Its configured address.
        address: String,
        /// Why.
        reason: String,
    },
    /// A configured `server_name` is neither a DNS name nor an IP address.
    BadServerName {
        /// The service's identity.
        service: String,
        /// The configured name.
        server_name: String,
    },
    /// A service did not answer within its deadline (retry later).
    NoAnswer {
        /// "the enroller", "custodian c1".
        service: String,
        /// Its address.
        address: String,
        /// The deadline.
        deadline: std::time::Duration,
    },
    /// The service at the address presented another identity.
    WrongPeer {
        /// Expected service.
        service: String,
        /// Its address.
        address: String,
        /// The identity presented.
        found: String,
        /// The configuration.
        config: PathBuf,
    },
    /// The TLS handshake failed.
    Tls {
        /// The service.
        service: String,
        /// Its address.
        address: String,
        /// Why.
        reason: String,
        /// The configuration.
        config: PathBuf,
    },
    /// The service could not be reached (retry when it is back).
    Unreachable {
        /// The service.
        service: String,
        /// Its address.
        address: String,
        /// Why.
        reason: String,
        /// The configuration.
        config: PathBuf,
    },
    /// The service refused, with its machine-readable reason.
    Refused {
        /// The service.
        service: String,
        /// Its machine-readable reason.
        reason: String,
        /// The HTTP status, when it says more than the reason.
        status: Option<u16>,
        /// What it means for the user and what to do, when known.
        hint: Option<String>,
    },
    /// The service's answer could not be understood.
    Unreadable {
        /// The service.
        service: String,
        /// Why.
        reason: String,
    },
    /// A secret input was needed and there is no terminal to ask on.
    NoTerminal {
        /// What was needed.
        what: &'static str,
        /// How to give it instead.
        how: String,
    },
    /// The two entries of a new password differ.
    Mismatch(&'static str),
    /// Reading from the terminal failed.
    ReadInput {
        /// What was being read.
        what: &'static str,
        /// Why.
        source: io::Error,
    },
    /// An empty answer on the terminal.
    Empty(&'static str),
    /// A secret file (password, invitation) holds no usable first line.
    BadSecretFile {
        /// The variable naming it.
        env: &'static str,
        /// The file.
        path: PathBuf,
    },
    /// Making the login key or its CSR failed.
    KeyGeneration(String),
    /// No admin certificate configured or given.
    NoAdmin(PathBuf),
    /// Only one of --admin-cert and --admin-key given.
    AdminFlags,
    /// `--valid-hours` out of range.
    InvalidTtl(u32),
    /// The configuration pins no manifest key.
    NoManifestKey(PathBuf),
    /// The pinned manifest key file is not a P-256 public key.
    BadManifestKey(PathBuf),
    /// A manifest failed verification: nothing may be built on it.
    BadManifest {
        /// The secret.
        secret_id: String,
        /// Why.
        why: String,
    },
    /// The manifest names another owner than the logged-in user.
    NotOwner {
        /// The secret.
        secret_id: String,
        /// Its owner.
        owner: String,
        /// The logged-in identity.
        you: String,
    },
    /// `--secret-file` is empty or larger than 64 KiB.
    SecretFileSize(PathBuf),
    /// Enrollment failed at some custodians; nothing was kept.
    EnrollFailed {
        /// (custodian, reason).
        custodians: Vec<(String, String)>,
        /// Some shards that landed could not be deleted again.
        cleanup_incomplete: bool,
    },
    /// A refresh that did not reach (or was refused by) some custodians; the key stays at
    /// its epoch.
    RefreshFailed {
        /// `refresh` or `reshare`.
        what: &'static str,
        /// (custodian, reason).
        custodians: Vec<(String, String)>,
    },
    /// Not a secret id.
    InvalidSecretId(String),
    /// `--deadline-ms` out of range.
    InvalidDeadline(u64),
    /// Fewer than `t` shards verified; nothing was written.
    NotEnoughShards {
        /// The secret.
        secret_id: String,
        /// Shards that verified.
        valid: usize,
        /// The threshold.
        needed: usize,
        /// Every custodian's outcome.
        outcomes: Vec<crate::outcome::Outcome>,
    },
    /// The combined key does not match the signed public key.
    KeyMismatch(String),
    /// Combining verified shards failed.
    Combine(String),
    /// The enroller knows no such secret of the user.
    UnknownSecret(String),
    /// No cached manifest and the enroller could not give one.
    NoManifest {
        /// The secret.
        secret_id: String,
        /// Why the enroller could not.
        why: String,
    },
    /// Some services did not answer (`status`).
    ServicesDown {
        /// How many.
        down: usize,
        /// Of how many.
        total: usize,
    },
    /// `--kind` names no kind.
    InvalidKind(String),
    /// `--import` without a signing `--kind`.
    ImportNeedsKind,
    /// `--dkg` without a signing `--kind`.
    DkgNeedsKind,
    /// The `--import` file holds no private key of the kind in a form we read.
    BadImport {
        /// The file.
        path: PathBuf,
        /// The kind.
        kind: &'static str,
    },
    /// `sign` or `pubkey` of a secret that is not a signing key.
    NotASigningKey {
        /// The secret.
        secret_id: String,
        /// Its kind.
        kind: &'static str,
    },
    /// `recover` of a threshold-signing key, which is never recovered.
    SigningKeyNotRecoverable {
        /// The key.
        secret_id: String,
        /// Its kind.
        kind: &'static str,
    },
    /// The `--in` message is larger than 64 KiB.
    MessageTooLarge(PathBuf),
    /// Fewer than `t` custodians committed or signed; nothing was written.
    NotEnoughSigners {
        /// The key.
        secret_id: String,
        /// How many did.
        got: usize,
        /// The threshold.
        needed: usize,
        /// `committed` (round 1) or `signed` (round 2).
        step: &'static str,
        /// Every custodian's outcome.
        outcomes: Vec<crate::outcome::Outcome>,
    },
    /// Not every custodian's share checked (`shardctl verify`).
    NotVerified {
        /// The secret.
        secret_id: String,
        /// How many checked.
        ok: usize,
        /// Every custodian's outcome.
        outcomes: Vec<crate::outcome::Outcome>,
    },
    /// The aggregated signature does not verify against the manifest's group key.
    SignatureInvalid(String),
    /// A signing step failed locally.
    Sign(String),
    /// The --out file exists; nothing was fetched or written.
    OutExists(PathBuf),
    /// The --out file's directory does not exist.
    NoOutDir(PathBuf),
    /// A command has no JSON output.
    NoJson(&'static str),
    /// The async runtime could not start.
    Runtime(io::Error),
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CliError::InvalidArgument(e) => write!(f, "{e}"),
            CliError::InvalidIp(ip) => write!(
                f,
                "--ip {ip:?} is not an IP address (use e.g. --ip 10.0.0.5 or --ip ::1)"
            ),
            CliError::InvalidDays(days) => {
                write!(f, "--days {days} is out of range (use 1 to 3650)")
            }
            CliError::AlreadyExists(paths) => write!(
                f,
                "{} already exist{}; refusing to overwrite (move {} away or use another --dir)",
                join(paths),
                if paths.len() == 1 { "s" } else { "" },
                if paths.len() == 1 { "it" } else { "them" },
            ),
            CliError::ReadCa { path, source } if source.kind() == io::ErrorKind::NotFound => {
                write!(
                    f,
                    "no CA at {}: run `shardctl pki init --trust-domain <DOMAIN>` first, \
                     or point --dir or SHARDCTL_PKI_DIR at the CA's directory",
                    path.display()
                )
            }
            CliError::ReadCa { path, source } => {
                write!(f, "cannot read the CA file {}: {source}", path.display())
            }
            CliError::BadCa { dir, source } => write!(
                f,
                "the CA in {} is not usable: {source} (check ca.pem and ca.key there)",
                dir.display()
            ),
            CliError::Issue(e) => write!(f, "cannot issue the certificate: {e}"),
            CliError::ReadCert { path, source } => {
                write!(f, "cannot read {}: {source}", path.display())
            }
            CliError::TooLarge(path) => write!(
                f,
                "{} is too large to be a certificate; pass a PEM certificate file",
                path.display()
            ),
            CliError::BadCert { path, source } => write!(
                f,
                "{}: {source}; pass a PEM certificate file (a .pem, not a .key)",
                path.display()
            ),
            CliError::CreateDir { path, source } => {
                write!(f, "cannot create directory {}: {source}", path.display())
            }
            CliError::Write(e) => write!(f, "{e}; nothing was written"),
            CliError::NoConfig(path) => write!(
                f,
                "no configuration at {}; create it (see the README), or name one with \
                 --config or SHARDCTL_CONFIG",
                path.display()
            ),
            CliError::Config { path, problem } => {
                write!(f, "configuration {}: {problem}", path.display())
            }
            CliError::NoHome(var) => write!(
                f,
                "neither {var} nor HOME names a directory; set one of them, or pass --config"
            ),
            CliError::ReadFile { what, path, source } => {
                write!(f, "cannot read {what} at {}: {source}", path.display())
            }
            CliError::NotLoggedIn(td) => write!(
                f,
                "you are not logged in to {td}; run `shardctl login <name>`"
            ),
            CliError::BadLogin { path, why } => write!(
                f,
                "the stored login {} is not usable ({why}); run `shardctl login <name>`",
                path.display()
            ),
            CliError::LoginExpired { at, user } => write!(
                f,
                "your login certificate expired at {at}; run `shardctl login {user}`"
            ),
            CliError::Credentials { config, why } => write!(
                f,
                "cannot use the CA or certificate named in {}: {why}",
                config.display()
            ),
            CliError::Resolve {
                service,
                address,
                reason,
            } => write!(f, "cannot resolve {address} ({service}): {reason}"),
            CliError::BadServerName {
                service,
                server_name,
            } => write!(
                f,
                "server_name {server_name:?} of {service} is neither a DNS name nor an IP address"
            ),
            CliError::NoAnswer {
                service,
                address,
                deadline,
            } => write!(
                f,
                "{service} at {address} did not answer within {} s; try again, or see \
                 `shardctl status`",
                deadline.as_secs_f32()
            ),
            CliError::WrongPeer {
                service,
                address,
                found,
                config,
            } => write!(
                f,
                "{address} presented {found}, not {service}; check its address in {}",
                config.display()
            ),
            CliError::Tls {
                service,
                address,
                reason,
                config,
            } => write!(
                f,
                "TLS with {service} at {address} failed ({reason}); check `ca` and the \
                 address in {}",
                config.display()
            ),
            CliError::Unreachable {
                service,
                address,
                reason,
                config,
            } => write!(
                f,
                "cannot reach {service} at {address} ({reason}); check that it runs and its \
                 address in {}",
                config.display()
            ),
            CliError::Refused {
                service,
                reason,
                status,
                hint,
            } => match (hint, status) {
                (Some(hint), _) => write!(f, "{hint} ({reason})"),
                (None, Some(status)) => write!(f, "{service} refused: {reason}, status {status}"),
                (None, None) => write!(f, "{service} refused: {reason}"),
            },
            CliError::Unreadable { service, reason } => write!(
                f,
                "{service} sent an answer shardctl cannot use ({reason}); check that both \
                 are the same version"
            ),
            CliError::NoTerminal { what, how } => {
                write!(f, "no terminal to ask for the {what}; {how}")
            }
            CliError::Mismatch(what) => write!(f, "the two {what}s differ; try again"),
            CliError::ReadInput { what, source } => {
                write!(f, "cannot read the {what} from the terminal: {source}")
            }
            CliError::Empty(what) => write!(f, "no {what} given; try again"),
            CliError::BadSecretFile { env, path } => write!(
                f,
                "{env} names {}, whose first line is empty or not text; put the value on \
                 its first line",
                path.display()
            ),
            CliError::KeyGeneration(why) => write!(f, "cannot make the login key: {why}"),
            CliError::NoAdmin(config) => write!(
                f,
                "no admin certificate: name one under [admin] (cert, key) in {}, or pass \
                 --admin-cert and --admin-key",
                config.display()
            ),
            CliError::AdminFlags => {
                write!(f, "give both --admin-cert and --admin-key, or neither")
            }
            CliError::InvalidTtl(h) => {
                write!(f, "--valid-hours {h} is out of range (use 1 to 720)")
            }
            CliError::NoManifestKey(config) => write!(
                f,
                "{} pins no manifest key: set `manifest_key` to the enroller's \
                 enroller-manifest.pub.pem (written by `enroller init`)",
                config.display()
            ),
            CliError::BadManifestKey(path) => write!(
                f,
                "{} is not a P-256 public key (PEM); point `manifest_key` at the enroller's \
                 enroller-manifest.pub.pem",
                path.display()
            ),
            CliError::BadManifest { secret_id, why } => write!(
                f,
                "the manifest of {secret_id} is not trustworthy: {why}; nothing was written, \
                 tell the operator"
            ),
            CliError::NotOwner {
                secret_id,
                owner,
                you,
            } => write!(
                f,
                "secret {secret_id} belongs to {owner}, and you are logged in as {you}; log \
                 in as its owner"
            ),
            CliError::SecretFileSize(path) => write!(
                f,
                "{} must hold 1 byte to 64 KiB to be escrowed",
                path.display()
            ),
            CliError::RefreshFailed { what, custodians } => {
                let list = custodians
                    .iter()
                    .map(|(n, r)| format!("{n}: {r}"))
                    .collect::<Vec<_>>()
                    .join("; ");
                write!(
                    f,
                    "{what} failed at {list}; the key stays at its epoch with its custodians \
                     and nothing of the attempt is kept"
                )
            }
            CliError::EnrollFailed {
                custodians,
                cleanup_incomplete,
            } => {
                let list = custodians
                    .iter()
                    .map(|(n, r)| format!("{n}: {r}"))
                    .collect::<Vec<_>>()
                    .join("; ");
                if *cleanup_incomplete {
                    write!(
                        f,
                        "enrollment failed at {list}; some shards that landed could not be \
                         deleted, tell the operator"
                    )
                } else {
                    write!(
                        f,
                        "enrollment failed at {list}; nothing was kept, try again when every \
                         custodian answers (`shardctl status`)"
                    )
                }
            }
            CliError::InvalidSecretId(id) => write!(
                f,
                "{id:?} is not a secret id (32 hex digits); see `shardctl secrets`"
            ),
            CliError::InvalidDeadline(ms) => {
                write!(f, "--deadline-ms {ms} is out of range (use 1 to 600000)")
            }
            CliError::NotEnoughShards {
                secret_id,
                valid,
                needed,
                outcomes,
            } => {
                let missing = outcomes
                    .iter()
                    .filter(|o| o.result != "verified")
                    .map(|o| o.line())
                    .collect::<Vec<_>>()
                    .join("; ");
                write!(
                    f,
                    "{valid} of {needed} shards verified for {secret_id}, so nothing was \
                     written: {missing}; try again when enough custodians answer \
                     (`shardctl status`)"
                )
            }
            CliError::KeyMismatch(id) => write!(
                f,
                "the shards of {id} verified but combine to a key that does not match the \
                 signed public key; nothing was written, tell the operator"
            ),
            CliError::Combine(why) => {
                write!(
                    f,
                    "combining the verified shards failed: {why}; nothing was written"
                )
            }
            CliError::UnknownSecret(id) => write!(
                f,
                "the enroller knows no secret {id} of yours; see `shardctl secrets`"
            ),
            CliError::NoManifest { secret_id, why } => write!(
                f,
                "no cached manifest for {secret_id} and none from the enroller: {why}"
            ),
            CliError::ServicesDown { down, total } => write!(
                f,
                "{down} of {total} services did not answer as expected (see above)"
            ),
            CliError::OutExists(path) => write!(
                f,
                "{} already exists; refusing to overwrite it (choose another --out, or move \
                 it away)",
                path.display()
            ),
            CliError::NoOutDir(dir) => write!(
                f,
                "{} is not a directory; create it first or choose another --out",
                dir.display()
            ),
            CliError::InvalidKind(kind) => write!(
                f,
                "--kind {kind:?} is not a kind; use p256, ed25519, secp256k1-tr or p256-schnorr"
            ),
            CliError::ImportNeedsKind => write!(
                f,
                "--import needs a signing --kind (ed25519, secp256k1-tr or p256-schnorr)"
            ),
            CliError::DkgNeedsKind => write!(
                f,
                "--dkg needs a signing --kind (ed25519, secp256k1-tr or p256-schnorr): a p256 \
                 key is recovered whole, so it is dealt, never generated distributed"
            ),
            CliError::BadImport { path, kind } => write!(
                f,
                "{} holds no {kind} private key shardctl reads (PKCS#8 PEM for ed25519 and \
                 p256-schnorr, or the 32 bytes raw or as 64 hex digits); nothing was sent",
                path.display()
            ),
            CliError::NotASigningKey { secret_id, kind } => write!(
                f,
                "{secret_id} is an escrowed secret ({kind}), which is recovered, not used to \
                 sign; enroll a signing key with `shardctl enroll --kind ed25519` (or \
                 secp256k1-tr, p256-schnorr)"
            ),
            CliError::SigningKeyNotRecoverable { secret_id, kind } => write!(
                f,
                "{secret_id} is a threshold-signing key ({kind}), which never leaves its \
                 custodians; sign with `shardctl sign {secret_id} --in <file>`"
            ),
            CliError::MessageTooLarge(path) => write!(
                f,
                "{} is larger than 64 KiB; sign a digest of it instead",
                path.display()
            ),
            CliError::NotVerified {
                secret_id,
                ok,
                outcomes,
            } => {
                let failed = outcomes
                    .iter()
                    .filter(|o| o.result != "ok")
                    .map(|o| o.line())
                    .collect::<Vec<_>>()
                    .join("; ");
                write!(
                    f,
                    "{secret_id}: {ok} of {} custodians' shares check; {failed}",
                    outcomes.len()
                )
            }
            CliError::NotEnoughSigners {
                secret_id,
                got,
                needed,
                step,
                outcomes,
            } => {
                let missing = outcomes
                    .iter()
                    .filter(|o| !matches!(o.result, "signed" | "committed" | "not_needed"))
                    .map(|o| o.line())
                    .collect::<Vec<_>>()
                    .join("; ");
                write!(
                    f,
                    "only {got} of the {needed} custodians needed {step} for {secret_id}, so \
                     nothing was signed: {missing}; try again when enough custodians answer \
                     (`shardctl status`)"
                )
            }
            CliError::SignatureInvalid(id) => write!(
                f,
                "the signature made with {id} does not verify against its group key; nothing \
                 was written, tell the operator"
            ),
            CliError::Sign(why) => write!(f, "signing failed: {why}; nothing was written"),
            CliError::NoJson(verb) => {
                write!(
                    f,
                    "`shardctl {verb}` has no --json output; run it without --json"
                )
            }
            CliError::Runtime(e) => write!(f, "cannot start the network runtime: {e}"),
        }
    }
}

impl std::error::Error for CliError {}

impl CliError {
    /// A stable, machine-readable name for scripts (`--json`).
    pub fn code(&self) -> &'static str {
        match self {
            CliError::NoConfig(_)
            | CliError::Config { .. }
            | CliError::NoHome(_)
            | CliError::BadServerName { .. } => "config",
            CliError::NotLoggedIn(_) | CliError::BadLogin { .. } => "not_logged_in",
            CliError::LoginExpired { .. } => "login_expired",
            CliError::NoAnswer { .. } => "timeout",
            CliError::Unreachable { .. } | CliError::Resolve { .. } => "unreachable",
            CliError::WrongPeer { .. } | CliError::Tls { .. } => "tls",
            CliError::Refused { .. } => "refused",
            CliError::BadManifest { .. }
            | CliError::KeyMismatch(_)
            | CliError::SignatureInvalid(_) => "integrity",
            CliError::NotASigningKey { .. } | CliError::SigningKeyNotRecoverable { .. } => {
                "wrong_kind"
            }
            CliError::NotEnoughSigners { .. } => "not_enough_signers",
            CliError::NotVerified { outcomes, .. }
                if outcomes.iter().any(|o| o.result == "bad") =>
            {
                "shares_bad"
            }
            CliError::NotVerified { .. } => "not_verified",
            CliError::NotEnoughShards { .. } => "not_enough_shards",
            CliError::EnrollFailed { .. } => "enroll_failed",
            CliError::RefreshFailed {
                what: "reshare", ..
            } => "reshare_failed",
            CliError::RefreshFailed { .. } => "refresh_failed",
            CliError::AlreadyExists(_) | CliError::OutExists(_) => "already_exists",
            CliError::ServicesDown { .. } => "services_down",
            _ => "error",
        }
    }

    /// The error as one JSON object for `--json`: `{"error": code, "message": ..., ...}`.
    pub fn json(&self) -> serde_json::Value {
        let mut v = serde_json::json!({ "error": self.code(), "message": self.to_string() });
        match self {
            CliError::Refused { reason, .. } => v["reason"] = reason.clone().into(),
            CliError::NotEnoughShards {
                valid,
                needed,
                outcomes,
                ..
            } => {
                v["valid"] = (*valid).into();
                v["needed"] = (*needed).into();
                v["custodians"] = serde_json::to_value(outcomes).unwrap_or_default();
            }
            CliError::NotEnoughSigners {
                got,
                needed,
                step,
                outcomes,
                ..
            } => {
                v["got"] = (*got).into();
                v["needed"] = (*needed).into();
                v["step"] = (*step).into();
                v["custodians"] = serde_json::to_value(outcomes).unwrap_or_default();
            }
            CliError::NotVerified { ok, outcomes, .. } => {
                v["ok"] = (*ok).into();
                v["custodians"] = serde_json::to_value(outcomes).unwrap_or_default();
            }
            CliError::EnrollFailed { custodians, .. }
            | CliError::RefreshFailed { custodians, .. } => {
                v["custodians"] = custodians
                    .iter()
                    .map(|(n, r)| serde_json::json!({ "name": n, "reason": r }))
                    .collect();
            }
            _ => {}
        }
        v
    }
}

fn join(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| Path::display(p).to_string())
        .collect::<Vec<_>>()
        .join(" and ")
}
