//! Configuration: one TOML file; every key can be overridden by an environment
//! variable named `CUSTODIAN_` plus the key path in capitals with `_` for `.`
//! (`tls.cert` -> `CUSTODIAN_TLS_CERT`, `limits.release_per_second` ->
//! `CUSTODIAN_LIMITS_RELEASE_PER_SECOND`).
//!
//! ```toml
//! name = "c1"                          # this custodian's name: spiffe://<td>/custodian/c1
//! trust_domain = "example.test"
//! listen = "127.0.0.1:7001"            # mutual TLS only
//! health_listen = "127.0.0.1:7101"     # optional plain HTTP /health and /metrics, loopback only
//! database = "/var/lib/custodian/c1.db"
//! profile = "hsm-profiles/softhsm2.toml"
//!
//! [tls]
//! ca = "pki/ca.pem"
//! cert = "pki/custodian-c1.pem"
//! key = "pki/custodian-c1.key"
//! reload_seconds = 5                   # how often the three files are checked for changes
//!
//! [limits]
//! max_body_bytes = 131072
//! release_per_second = 10              # per peer identity
//! release_burst = 20
//! max_connections = 1024
//! handshake_timeout_ms = 10000
//! request_timeout_ms = 30000          # one request, body included; then 408
//!
//! [log]
//! format = "text"                      # or "json"
//! level = "info"
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Why a configuration was refused: always names the key.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {path}: {source}")]
    Read {
        /// The path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The TOML does not parse or a key has the wrong type.
    #[error("config: {0}")]
    Parse(String),
    /// A key has a value outside its domain.
    #[error("config key `{key}`: {problem}")]
    Invalid {
        /// The key path.
        key: &'static str,
        /// What is wrong.
        problem: String,
    },
}

/// The custodian's configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// This custodian's name (the last segment of its SPIFFE id).
    pub name: String,
    /// The trust domain.
    pub trust_domain: String,
    /// Mutual-TLS listen address.
    pub listen: SocketAddr,
    /// Optional plain-HTTP health and metrics address; must be loopback.
    #[serde(default)]
    pub health_listen: Option<SocketAddr>,
    /// SQLite database path.
    pub database: PathBuf,
    /// Device profile path.
    pub profile: PathBuf,
    /// TLS files.
    pub tls: TlsConfig,
    /// Limits.
    #[serde(default)]
    pub limits: Limits,
    /// Logging.
    #[serde(default)]
    pub log: LogConfig,
}

/// TLS files.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// CA certificate(s) PEM: peers must chain to one of these.
    pub ca: PathBuf,
    /// This service's certificate chain PEM.
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

/// Request and connection limits.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest request body.
    pub max_body_bytes: usize,
    /// Sustained releases per second per peer identity.
    pub release_per_second: f64,
    /// Release burst per peer identity.
    pub release_burst: f64,
    /// Concurrent connections; more wait in the accept queue.
    pub max_connections: usize,
    /// TLS handshake deadline.
    pub handshake_timeout_ms: u64,
    /// Deadline of one request, body included (a trickled body is answered 408).
    pub request_timeout_ms: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: 128 * 1024,
            release_per_second: 10.0,
            release_burst: 20.0,
            max_connections: 1024,
            handshake_timeout_ms: 10_000,
            request_timeout_ms: 30_000,
        }
    }
}

/// Logging.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `text` or `json`.
    pub format: String,
    /// A tracing filter, e.g. `info` or `custodian=debug`.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: "text".into(),
            level: "info".into(),
        }
    }
}

/// Every key that an environment variable may override, with its TOML type.
const KEYS: &[(&str, svc::config::EnvKind)] = &[
    ("name", svc::config::EnvKind::Str),
    ("trust_domain", svc::config::EnvKind::Str),
    ("listen", svc::config::EnvKind::Str),
    ("health_listen", svc::config::EnvKind::Str),
    ("database", svc::config::EnvKind::Str),
    ("profile", svc::config::EnvKind::Str),
    ("tls.ca", svc::config::EnvKind::Str),
    ("tls.cert", svc::config::EnvKind::Str),
    ("tls.key", svc::config::EnvKind::Str),
    ("tls.reload_seconds", svc::config::EnvKind::Int),
    ("limits.max_body_bytes", svc::config::EnvKind::Int),
    ("limits.release_per_second", svc::config::EnvKind::Float),
    ("limits.release_burst", svc::config::EnvKind::Float),
    ("limits.max_connections", svc::config::EnvKind::Int),
    ("limits.handshake_timeout_ms", svc::config::EnvKind::Int),
    ("limits.request_timeout_ms", svc::config::EnvKind::Int),
    ("log.format", svc::config::EnvKind::Str),
    ("log.level", svc::config::EnvKind::Str),
];

/// The environment variable that overrides `key`.
pub fn env_name(key: &str) -> String {
    svc::config::env_name("CUSTODIAN", key)
}

impl Config {
    /// Reads the file, applies environment overrides, validates.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Config::from_toml(&text, |k| std::env::var(k).ok(), base)
    }

    /// Parses TOML text with overrides from `env`; relative paths are taken from `base`.
    pub fn from_toml(
        text: &str,
        env: impl Fn(&str) -> Option<String>,
        base: &Path,
    ) -> Result<Config, ConfigError> {
        let mut table: toml::Table =
            toml::from_str(text).map_err(|e| ConfigError::Parse(e.message().to_owned()))?;
        svc::config::apply_env_overrides(&mut table, "CUSTODIAN", KEYS, env)
            .map_err(|(key, problem)| ConfigError::Invalid { key, problem })?;
        let mut c: Config = toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError::Parse(e.message().to_owned()))?;
        for p in [
            &mut c.database,
            &mut c.profile,
            &mut c.tls.ca,
            &mut c.tls.cert,
            &mut c.tls.key,
        ] {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
        c.validate()?;
        Ok(c)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        shard::CustodianId::new(&self.name).map_err(|e| ConfigError::Invalid {
            key: "name",
            problem: e.to_string(),
        })?;
        certs::TrustDomain::new(&self.trust_domain).map_err(|e| ConfigError::Invalid {
            key: "trust_domain",
            problem: e.to_string(),
        })?;
        if let Some(h) = self.health_listen {
            if !h.ip().is_loopback() {
                return Err(ConfigError::Invalid {
                    key: "health_listen",
                    problem: "the plain-HTTP health port must be a loopback address".into(),
                });
            }
        }
        let l = &self.limits;
        if !(1024..=16 * 1024 * 1024).contains(&l.max_body_bytes) {
            return Err(ConfigError::Invalid {
                key: "limits.max_body_bytes",
                problem: "must be 1024..=16777216".into(),
            });
        }
        if !(l.release_per_second > 0.0 && l.release_per_second.is_finite()) {
            return Err(ConfigError::Invalid {
                key: "limits.release_per_second",
                problem: "must be > 0".into(),
            });
        }
        if !(l.release_burst >= 1.0 && l.release_burst.is_finite()) {
            return Err(ConfigError::Invalid {
                key: "limits.release_burst",
                problem: "must be >= 1".into(),
            });
        }
        if l.max_connections == 0 {
            return Err(ConfigError::Invalid {
                key: "limits.max_connections",
                problem: "must be >= 1".into(),
            });
        }
        if !matches!(self.log.format.as_str(), "text" | "json") {
            return Err(ConfigError::Invalid {
                key: "log.format",
                problem: "must be \"text\" or \"json\"".into(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
name = "c1"
trust_domain = "example.test"
listen = "127.0.0.1:7001"
database = "c1.db"
profile = "p.toml"
[tls]
ca = "ca.pem"
cert = "c.pem"
key = "c.key"
"#;

    #[test]
    fn env_overrides_and_relative_paths() {
        let env = |k: &str| match k {
            "CUSTODIAN_LISTEN" => Some("127.0.0.2:9000".to_owned()),
            "CUSTODIAN_LIMITS_RELEASE_PER_SECOND" => Some("250".to_owned()),
            _ => None,
        };
        let c = Config::from_toml(BASE, env, Path::new("/etc/c")).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.2:9000");
        assert_eq!(c.limits.release_per_second, 250.0);
        assert_eq!(c.database, PathBuf::from("/etc/c/c1.db"));
        assert_eq!(env_name("tls.cert"), "CUSTODIAN_TLS_CERT");
    }

    #[test]
    fn bad_values_name_the_key() {
        let e = Config::from_toml(
            BASE,
            |k| (k == "CUSTODIAN_NAME").then(|| "C 1".to_owned()),
            Path::new("/"),
        )
        .unwrap_err();
        assert!(e.to_string().contains("`name`"), "{e}");
        let e = Config::from_toml(
            BASE,
            |k| (k == "CUSTODIAN_HEALTH_LISTEN").then(|| "10.0.0.1:80".to_owned()),
            Path::new("/"),
        )
        .unwrap_err();
        assert!(e.to_string().contains("health_listen"), "{e}");
        let e = Config::from_toml(&format!("{BASE}\nbogus = 1\n"), |_| None, Path::new("/"))
            .unwrap_err();
        assert!(e.to_string().contains("bogus"), "{e}");
        let e = Config::from_toml(
            BASE,
            |k| (k == "CUSTODIAN_LIMITS_MAX_CONNECTIONS").then(|| "many".to_owned()),
            Path::new("/"),
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("CUSTODIAN_LIMITS_MAX_CONNECTIONS"),
            "{e}"
        );
    }
}
