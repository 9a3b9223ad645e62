//! What the custodian's and the enroller's configurations share: the `[tls]` and `[log]`
//! sections, the keys both let the environment override, and the checks of the loopback
//! health port and the log format.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::{Invalid, Kind, Loader};

/// The loader of a service's file at `path`: the variables `<prefix>_*` override [`KEYS`]
/// and the service's `own` keys.
pub fn loader<'a>(path: &'a Path, prefix: &'a str, own: &'a [(&'a str, Kind)]) -> Loader<'a> {
    Loader::new(path).env(prefix, KEYS).env(prefix, own)
}

/// The paths both services hold, with their keys, for [`crate::Section::paths`].
pub fn paths<'a>(
    database: &'a mut PathBuf,
    profile: &'a mut PathBuf,
    tls: &'a mut Tls,
) -> Vec<(&'static str, &'a mut PathBuf)> {
    let mut paths = vec![("database", database), ("profile", profile)];
    paths.extend(tls.paths());
    paths
}

/// The keys both services let `<PREFIX>_*` variables override, with their TOML types; each
/// service adds its own.
pub const KEYS: &[(&str, Kind)] = &[
    ("name", Kind::Str),
    ("trust_domain", Kind::Str),
    ("listen", Kind::Str),
    ("health_listen", Kind::Str),
    ("database", Kind::Str),
    ("profile", Kind::Str),
    ("tls.ca", Kind::Str),
    ("tls.cert", Kind::Str),
    ("tls.key", Kind::Str),
    ("tls.reload_seconds", Kind::Int),
    ("limits.max_body_bytes", Kind::Int),
    ("limits.max_connections", Kind::Int),
    ("limits.handshake_timeout_ms", Kind::Int),
    ("limits.request_timeout_ms", Kind::Int),
    ("log.format", Kind::Str),
    ("log.level", Kind::Str),
];

/// The `[tls]` section: the files of the service's listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tls {
    /// CA certificate(s) PEM: peers must chain to one of these.
    pub ca: PathBuf,
    /// This service's certificate chain PEM (the enroller's is also its client certificate
    /// towards custodians).
    pub cert: PathBuf,
    /// This service's private key PEM.
    pub key: PathBuf,
    /// Seconds between checks of the files for changes (0 disables reloading).
    #[serde(default = "default_reload")]
    pub reload_seconds: u64,
}

fn default_reload() -> u64 {
    5
}

impl Tls {
    /// The three paths with their keys, for [`crate::Section::paths`].
    pub fn paths(&mut self) -> [(&'static str, &mut PathBuf); 3] {
        [
            ("tls.ca", &mut self.ca),
            ("tls.cert", &mut self.cert),
            ("tls.key", &mut self.key),
        ]
    }
}

/// The `[log]` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Log {
    /// `text` or `json`.
    pub format: String,
    /// A tracing filter, e.g. `info` or `custodian=debug`.
    pub level: String,
}

impl Default for Log {
    fn default() -> Self {
        Log {
            format: "text".into(),
            level: "info".into(),
        }
    }
}

impl Log {
    /// Refuses a format other than `text` and `json`.
    pub fn check(&self) -> Result<(), Invalid> {
        if !matches!(self.format.as_str(), "text" | "json") {
            return Err(Invalid::new("log.format", "must be \"text\" or \"json\""));
        }
        Ok(())
    }
}

/// Refuses a plain-HTTP health port that is not on a loopback address.
pub fn check_health_listen(addr: Option<SocketAddr>) -> Result<(), Invalid> {
    match addr {
        Some(a) if !a.ip().is_loopback() => Err(Invalid::new(
            "health_listen",
            "the plain-HTTP health port must be a loopback address",
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_sections_and_checks() {
        let t: Tls = toml::from_str("ca = \"a\"\ncert = \"c\"\nkey = \"k\"\n").unwrap();
        assert_eq!(t.reload_seconds, 5);
        let l = Log::default();
        assert_eq!((l.format.as_str(), l.level.as_str()), ("text", "info"));
        assert!(l.check().is_ok());
        let bad = Log {
            format: "xml".into(),
            ..Log::default()
        };
        assert_eq!(bad.check().unwrap_err().key, "log.format");
        assert!(check_health_listen(None).is_ok());
        assert!(check_health_listen(Some("127.0.0.1:1".parse().unwrap())).is_ok());
        assert!(check_health_listen(Some("[::1]:1".parse().unwrap())).is_ok());
        let e = check_health_listen(Some("10.0.0.1:80".parse().unwrap())).unwrap_err();
        assert_eq!(e.key, "health_listen");
    }
}
