//! The stored login: the key made on this machine and the short-lived certificate the enroller
//! issued for it, kept together in one 0600 file so that a re-login replaces both at once.

use std::path::{Path, PathBuf};

use certs::{Role, SpiffeId};
use time::OffsetDateTime;
use zeroize::Zeroizing;

use crate::config::Config;
use crate::error::CliError;

/// A login file is a key and two certificates; anything larger is not one.
const MAX_LOGIN_BYTES: u64 = 64 * 1024;

/// How far ahead of ours a service's clock may plausibly run.
const SKEW_SECONDS: i64 = 30;

/// A stored login.
pub struct Login {
    /// The file it was read from.
    pub path: PathBuf,
    /// Key PEM followed by the certificate chain PEM (leaf, then the user CA).
    pem: Zeroizing<Vec<u8>>,
    /// The identity the certificate carries.
    pub id: SpiffeId,
    /// When the certificate stops being accepted.
    pub not_after: OffsetDateTime,
}

impl Login {
    /// Reads the login of `config`'s trust domain; fails with a hint to log in when there is
    /// none.
    pub fn load(config: &Config) -> Result<Login, CliError> {
        let path = config.login_file()?;
        let pem = match crate::files::read_limited(&path, MAX_LOGIN_BYTES) {
            Ok(b) => Zeroizing::new(b),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(CliError::NotLoggedIn(config.trust_domain.to_string()))
            }
            Err(source) => {
                return Err(CliError::ReadFile {
                    what: "your login",
                    path,
                    source,
                })
            }
        };
        Login::parse(path, pem)
    }

    /// Reads `pem` (key and chain) as a login stored at `path`.
    pub fn parse(path: PathBuf, pem: Zeroizing<Vec<u8>>) -> Result<Login, CliError> {
        let bad = |why: String| CliError::BadLogin {
            path: path.clone(),
            why,
        };
        let summary = certs::summary(&pem).map_err(|e| bad(e.to_string()))?;
        let id = summary
            .spiffe_id
            .ok_or_else(|| bad("its certificate carries no SPIFFE id".into()))?;
        if id.role() != Role::User {
            return Err(bad(format!("its certificate is for {id}, not a user")));
        }
        Ok(Login {
            path,
            pem,
            id,
            not_after: summary.not_after,
        })
    }

    /// The user's name.
    pub fn user(&self) -> &str {
        self.id.name().as_str()
    }

    /// Whether the certificate is past its end.
    pub fn expired(&self) -> bool {
        OffsetDateTime::now_utc() >= self.not_after
    }

    /// Whether the certificate has expired or will within a clock skew's margin: a service
    /// that then drops the TLS connection has most likely refused it as expired.
    pub fn near_expiry(&self) -> bool {
        OffsetDateTime::now_utc() + time::Duration::seconds(SKEW_SECONDS) >= self.not_after
    }

    /// Fails with "expired ...; run `shardctl login <name>`" when the certificate is past its
    /// end, so nobody learns that from a TLS alert.
    pub fn require_fresh(&self) -> Result<(), CliError> {
        if self.expired() {
            Err(self.expired_error())
        } else {
            Ok(())
        }
    }

    /// The error for a certificate past its end (or refused as such by a service).
    pub fn expired_error(&self) -> CliError {
        CliError::LoginExpired {
            at: rfc3339(self.not_after),
            user: self.user().to_owned(),
        }
    }

    /// The PEM to build a TLS identity from (holds the key: zeroized on drop).
    pub fn pem(&self) -> &[u8] {
        &self.pem
    }

    /// Stores a new login for `config`'s trust domain, replacing any earlier one atomically.
    pub fn store(config: &Config, key_pem: &str, chain_pem: &str) -> Result<PathBuf, CliError> {
        let path = config.login_file()?;
        let dir = path.parent().unwrap_or(Path::new("."));
        crate::files::create_private_dir(dir).map_err(|source| CliError::CreateDir {
            path: dir.to_owned(),
            source,
        })?;
        let mut bytes = Zeroizing::new(Vec::with_capacity(key_pem.len() + chain_pem.len()));
        bytes.extend_from_slice(key_pem.as_bytes());
        bytes.extend_from_slice(chain_pem.as_bytes());
        crate::files::replace_private(&path, &bytes).map_err(CliError::Write)?;
        Ok(path)
    }
}

/// A timestamp the way every `shardctl` message shows it.
pub fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.unix_timestamp().to_string())
}

/// Unix seconds the way every `shardctl` message shows them.
pub fn rfc3339_unix(secs: i64) -> String {
    OffsetDateTime::from_unix_timestamp(secs)
        .map(rfc3339)
        .unwrap_or_else(|_| secs.to_string())
}
