//! Talking to the services: a TLS configuration for each kind of caller, clients that insist on
//! the service's SPIFFE id, JSON calls whose refusals come back as machine-readable reasons, and
//! the words for a call that got no answer.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use certs::rustls::ClientConfig;
use mtls::{Client, Error as ClientError};
use wire::{CustodianFailure, Reason, Request};

use crate::config::{Config, Service};
use crate::error::CliError;
use crate::session::Login;

/// How long any one call to the enroller may take. Enrollment deposits at every custodian with
/// retries, so this is generous.
pub const ENROLLER_DEADLINE: Duration = Duration::from_secs(30);
/// Certificates and keys are small; larger files are a mistake.
const MAX_PEM_BYTES: u64 = 1 << 20;

/// Who `shardctl` is towards a service.
pub enum Caller<'a> {
    /// No certificate (registration, login, health).
    Anonymous,
    /// The user's login certificate.
    User(&'a Login),
    /// An admin certificate and key.
    Admin {
        /// Certificate (chain) PEM file.
        cert: &'a Path,
        /// Key PEM file.
        key: &'a Path,
    },
}

/// The TLS 1.3 client configuration for `caller`, trusting only the configured CA.
pub fn tls(config: &Config, caller: &Caller<'_>) -> Result<Arc<ClientConfig>, CliError> {
    let ca = read_pem(&config.ca, "the CA certificate (`ca`)")?;
    let built = match caller {
        Caller::Anonymous => certs::tls::client_config_anonymous(&ca),
        Caller::User(login) => certs::tls::client_config(&ca, login.pem(), login.pem()),
        Caller::Admin { cert, key } => {
            let c = read_pem(cert, "the admin certificate")?;
            let k = zeroize::Zeroizing::new(read_pem(key, "the admin key")?);
            certs::tls::client_config(&ca, &c, &k)
        }
    };
    built.map(Arc::new).map_err(|e| CliError::Credentials {
        config: config.path.clone(),
        why: e.to_string(),
    })
}

fn read_pem(path: &Path, what: &'static str) -> Result<Vec<u8>, CliError> {
    crate::files::read_limited(path, MAX_PEM_BYTES).map_err(|source| CliError::ReadFile {
        what,
        path: path.to_owned(),
        source,
    })
}

/// A client for `service` that refuses to talk to anything but its SPIFFE id.
pub fn client(
    service: &Service,
    tls: Arc<ClientConfig>,
    deadline: Duration,
) -> Result<Client, CliError> {
    let addr = resolve(&service.address).map_err(|reason| CliError::Resolve {
        service: service.id.to_string(),
        address: service.address.clone(),
        reason,
    })?;
    Client::new(addr, &service.server_name, tls)
        .map(|c| {
            c.expect_identity(service.id.clone())
                .with_deadline(deadline)
        })
        .map_err(|_| CliError::BadServerName {
            service: service.id.to_string(),
            server_name: service.server_name.clone(),
        })
}

fn resolve(address: &str) -> Result<SocketAddr, String> {
    address
        .to_socket_addrs()
        .map_err(|e| e.to_string())?
        .next()
        .ok_or_else(|| "the name has no address".to_owned())
}

/// A call that got no usable answer.
#[derive(Debug)]
pub enum Failure {
    /// No answer: unreachable, TLS, timeout, broken connection.
    Transport(ClientError),
    /// The service answered with a refusal.
    Refused {
        /// HTTP status.
        status: u16,
        /// Its machine-readable reason.
        reason: Reason,
        /// Per-custodian failures of an enrollment.
        custodians: Vec<CustodianFailure>,
    },
    /// The answer did not parse.
    Unreadable(String),
}

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Failure {
        match e {
            ClientError::Refused { status, body, .. } => Failure::Refused {
                status: status.as_u16(),
                reason: body.reason,
                custodians: body.custodians.unwrap_or_default(),
            },
            ClientError::Decode { reason, .. } => Failure::Unreadable(reason),
            other => Failure::Transport(other),
        }
    }
}

/// Sends `req` and returns its typed answer.
pub async fn call<R: Request>(client: &Client, req: &R) -> Result<R::Response, Failure> {
    client.call(req).await.map_err(Failure::from)
}

/// Whether a failure is most likely a service refusing our login certificate as expired: its
/// TLS alert says so, or (as long as the client's errors do not carry the alert) the
/// connection broke while the certificate is within a clock skew of its end.
pub fn refused_as_expired(e: &ClientError, login: Option<&Login>) -> bool {
    let Some(login) = login else { return false };
    e.to_string().contains("CertificateExpired")
        || (login.near_expiry()
            && matches!(
                e,
                ClientError::Transport { .. } | ClientError::Handshake { .. }
            ))
}

/// The words for a call to `service` that got no answer, or an unreadable one. `login` is the
/// certificate presented, so that a service refusing it as expired is told as such.
pub fn failure_error(
    config: &Config,
    service: &Service,
    login: Option<&Login>,
    failure: Failure,
) -> CliError {
    let who = describe_service(service);
    match failure {
        Failure::Transport(e) => {
            if let (Some(login), true) = (login, refused_as_expired(&e, login)) {
                return login.expired_error();
            }
            match e {
                ClientError::Timeout { deadline, .. } => CliError::NoAnswer {
                    service: who,
                    address: service.address.clone(),
                    deadline,
                },
                ClientError::WrongPeer { found, .. } => CliError::WrongPeer {
                    service: who,
                    address: service.address.clone(),
                    found,
                    config: config.path.clone(),
                },
                ClientError::Handshake { reason, .. } => CliError::Tls {
                    service: who,
                    address: service.address.clone(),
                    reason,
                    config: config.path.clone(),
                },
                ClientError::Connect { reason, .. } | ClientError::Transport { reason, .. } => {
                    CliError::Unreachable {
                        service: who,
                        address: service.address.clone(),
                        reason,
                        config: config.path.clone(),
                    }
                }
                other => CliError::Unreadable {
                    service: who,
                    reason: short_reason(&other),
                },
            }
        }
        Failure::Refused { reason, status, .. } => CliError::Refused {
            service: who,
            reason: reason.to_string(),
            status: Some(status),
            hint: None,
        },
        Failure::Unreadable(reason) => CliError::Unreadable {
            service: who,
            reason,
        },
    }
}

/// "the enroller" or "custodian c1".
pub fn describe_service(service: &Service) -> String {
    match service.id.role() {
        certs::Role::Enroller => "the enroller".to_owned(),
        role => format!("{role} {}", service.name()),
    }
}

/// A short reason for a per-custodian line: "connection refused", "TLS handshake failed: ...".
pub fn short_reason(e: &ClientError) -> String {
    match e {
        ClientError::Connect { reason, .. } => {
            if reason.contains("refused") {
                "unreachable (connection refused)".to_owned()
            } else {
                format!("unreachable ({reason})")
            }
        }
        ClientError::Handshake { reason, .. } => format!("TLS handshake failed ({reason})"),
        ClientError::WrongPeer { found, .. } => format!("presented {found}"),
        ClientError::Timeout { deadline, .. } => {
            format!("did not answer within {} ms", deadline.as_millis())
        }
        ClientError::Refused { status, body, .. } => {
            format!("refused: {} (status {})", body.reason, status.as_u16())
        }
        ClientError::Transport { reason, .. } => format!("connection broke ({reason})"),
        ClientError::Decode { reason, .. } => format!("unreadable answer ({reason})"),
    }
}

/// The result word and the reason for a custodian that did not help (a recovery's or a
/// signing's), with `refused` wording a refusal's reason.
pub fn classify(
    e: &ClientError,
    login: &Login,
    refused: fn(Reason) -> String,
) -> (&'static str, String) {
    if refused_as_expired(e, Some(login)) {
        return ("expired", "refused our login certificate as expired".into());
    }
    match e {
        ClientError::Timeout { deadline, .. } => (
            "timeout",
            format!("did not answer within {} ms", deadline.as_millis()),
        ),
        ClientError::Refused { status, body, .. } => {
            let words = refused(body.reason);
            (
                "refused",
                format!("{words} ({}, status {})", body.reason, status.as_u16()),
            )
        }
        ClientError::Connect { .. } | ClientError::Transport { .. } => {
            ("unreachable", short_reason(e))
        }
        ClientError::Handshake { .. } | ClientError::WrongPeer { .. } => ("tls", short_reason(e)),
        _ => ("bad_answer", short_reason(e)),
    }
}
