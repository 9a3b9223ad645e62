//! Configuration: one TOML file; every scalar key can be overridden by an environment
//! variable `ENROLLER_` + the key path in capitals with `_` for `.` (`tls.cert` ->
//! `ENROLLER_TLS_CERT`). The custodian list is taken from the file only.
//!
//! ```toml
//! name = "main"                          # spiffe://<td>/enroller/main
//! trust_domain = "example.test"
//! listen = "127.0.0.1:7000"              # TLS 1.3; client certificates optional (login)
//! health_listen = "127.0.0.1:7100"       # optional plain HTTP /health, loopback only
//! database = "enroller.db"
//! profile = "enroller-token.toml"        # PKCS#11 profile; key_label is the base label
//! user_ca_cert = "pki/user-ca.pem"       # issued by `shardctl pki issue-user-ca`
//! threshold = 3                          # t; n is the number of custodians
//!
//! [tls]
//! ca = "pki/ca.pem"
//! cert = "pki/enroller-main.pem"
//! key = "pki/enroller-main.key"
//!
//! [[custodians]]
//! name = "c1"
//! address = "127.0.0.11:7001"
//! server_name = "127.0.0.11"             # a DNS or IP SAN of its certificate
//!
//! [limits]
//! login_validity_seconds = 600           # at most 600
//! invitation_ttl_seconds = 86400
//! deposit_timeout_ms = 5000
//! max_body_bytes = 131072
//! max_connections = 1024
//! handshake_timeout_ms = 10000
//! request_timeout_ms = 30000          # one request, body included; then 408
//! backoff_max_seconds = 300              # cap of the per-user back-off after 3 failures
//!
//! [log]
//! format = "text"
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
    #[error("cannot read config {0}: {1}")]
    Read(PathBuf, std::io::Error),
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

/// The enroller's configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// This enroller's name.
    pub name: String,
    /// Trust domain.
    pub trust_domain: String,
    /// Listen address.
    pub listen: SocketAddr,
    /// Optional plain-HTTP health address (`GET /health`); must be loopback.
    #[serde(default)]
    pub health_listen: Option<SocketAddr>,
    /// Database path.
    pub database: PathBuf,
    /// PKCS#11 profile of the token.
    pub profile: PathBuf,
    /// The user CA certificate (intermediate) PEM.
    pub user_ca_cert: PathBuf,
    /// Shards needed to recover.
    #[serde(default = "default_threshold")]
    pub threshold: u8,
    /// TLS files.
    pub tls: TlsConfig,
    /// The custodians, in shard index order.
    pub custodians: Vec<CustodianConfig>,
    /// Limits.
    #[serde(default)]
    pub limits: Limits,
    /// Logging.
    #[serde(default)]
    pub log: LogConfig,
}

fn default_threshold() -> u8 {
    3
}

/// TLS files.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// CA PEM.
    pub ca: PathBuf,
    /// Certificate chain PEM (also the client certificate towards custodians).
    pub cert: PathBuf,
    /// Key PEM.
    pub key: PathBuf,
    /// Seconds between checks for changed files (0: never).
    #[serde(default = "default_reload")]
    pub reload_seconds: u64,
}

fn default_reload() -> u64 {
    5
}

/// One custodian.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustodianConfig {
    /// Its name (`spiffe://<td>/custodian/<name>`).
    pub name: String,
    /// Its address.
    pub address: SocketAddr,
    /// A DNS or IP name in its certificate.
    pub server_name: String,
}

/// Limits.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Login certificate validity, at most 600 seconds.
    pub login_validity_seconds: u64,
    /// How long an invitation stays valid.
    pub invitation_ttl_seconds: i64,
    /// Deadline of one deposit attempt at one custodian.
    pub deposit_timeout_ms: u64,
    /// Largest request body.
    pub max_body_bytes: usize,
    /// Concurrent connections.
    pub max_connections: usize,
    /// TLS handshake deadline.
    pub handshake_timeout_ms: u64,
    /// Deadline of one request, body included (a trickled body is answered 408).
    pub request_timeout_ms: u64,
    /// Longest per-user wait after consecutive login failures (1..=300 s). The lock after
    /// 10 failures stays; a small cap only lets tests and drills reach it quickly.
    pub backoff_max_seconds: i64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            login_validity_seconds: 600,
            invitation_ttl_seconds: 86_400,
            deposit_timeout_ms: 5_000,
            max_body_bytes: 128 * 1024,
            max_connections: 1024,
            handshake_timeout_ms: 10_000,
            request_timeout_ms: 30_000,
            backoff_max_seconds: 300,
        }
    }
}

/// Logging.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `text` or `json`.
    pub format: String,
    /// Tracing filter.
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

const KEYS: &[(&str, svc::config::EnvKind)] = &[
    ("name", svc::config::EnvKind::Str),
    ("trust_domain", svc::config::EnvKind::Str),
    ("listen", svc::config::EnvKind::Str),
    ("health_listen", svc::config::EnvKind::Str),
    ("database", svc::config::EnvKind::Str),
    ("profile", svc::config::EnvKind::Str),
    ("user_ca_cert", svc::config::EnvKind::Str),
    ("threshold", svc::config::EnvKind::Int),
    ("tls.ca", svc::config::EnvKind::Str),
    ("tls.cert", svc::config::EnvKind::Str),
    ("tls.key", svc::config::EnvKind::Str),
    ("tls.reload_seconds", svc::config::EnvKind::Int),
    ("limits.login_validity_seconds", svc::config::EnvKind::Int),
    ("limits.invitation_ttl_seconds", svc::config::EnvKind::Int),
    ("limits.deposit_timeout_ms", svc::config::EnvKind::Int),
    ("limits.max_body_bytes", svc::config::EnvKind::Int),
    ("limits.max_connections", svc::config::EnvKind::Int),
    ("limits.handshake_timeout_ms", svc::config::EnvKind::Int),
    ("limits.request_timeout_ms", svc::config::EnvKind::Int),
    ("limits.backoff_max_seconds", svc::config::EnvKind::Int),
    ("log.format", svc::config::EnvKind::Str),
    ("log.level", svc::config::EnvKind::Str),
];

/// The environment variable that overrides `key`.
pub fn env_name(key: &str) -> String {
    svc::config::env_name("ENROLLER", key)
}

impl Config {
    /// Reads the file, applies environment overrides, validates.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|e| ConfigError::Read(path.to_owned(), e))?;
        Config::from_toml(
            &text,
            |k| std::env::var(k).ok(),
            path.parent().unwrap_or(Path::new(".")),
        )
    }

    /// Parses with overrides from `env`; relative paths are taken from `base`.
    pub fn from_toml(
        text: &str,
        env: impl Fn(&str) -> Option<String>,
        base: &Path,
    ) -> Result<Config, ConfigError> {
        let mut table: toml::Table =
            toml::from_str(text).map_err(|e| ConfigError::Parse(e.message().to_owned()))?;
        svc::config::apply_env_overrides(&mut table, "ENROLLER", KEYS, env)
            .map_err(|(key, problem)| ConfigError::Invalid { key, problem })?;
        let mut c: Config = toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError::Parse(e.message().to_owned()))?;
        for p in [
            &mut c.database,
            &mut c.profile,
            &mut c.user_ca_cert,
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
        certs::Name::new(&self.name).map_err(|e| ConfigError::Invalid {
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
        let n = self.custodians.len();
        if n > usize::from(shard::MAX_SHARDS) {
            return Err(ConfigError::Invalid {
                key: "custodians",
                problem: "at most 16 custodians".into(),
            });
        }
        // Invariant: n <= 16 was checked just above.
        shard::Threshold::new(self.threshold, n as u8).map_err(|_| ConfigError::Invalid {
            key: "threshold",
            problem: format!("needs 2 <= threshold <= number of custodians ({n})"),
        })?;
        for (i, c) in self.custodians.iter().enumerate() {
            shard::CustodianId::new(&c.name).map_err(|e| ConfigError::Invalid {
                key: "custodians.name",
                problem: e.to_string(),
            })?;
            if self.custodians[..i].iter().any(|o| o.name == c.name) {
                return Err(ConfigError::Invalid {
                    key: "custodians.name",
                    problem: format!("{} appears twice", c.name),
                });
            }
        }
        let l = &self.limits;
        if !(61..=600).contains(&l.login_validity_seconds) {
            return Err(ConfigError::Invalid {
                key: "limits.login_validity_seconds",
                problem: "must be 61..=600".into(),
            });
        }
        if l.invitation_ttl_seconds < 60 {
            return Err(ConfigError::Invalid {
                key: "limits.invitation_ttl_seconds",
                problem: "must be >= 60".into(),
            });
        }
        if !(1..=300).contains(&l.backoff_max_seconds) {
            return Err(ConfigError::Invalid {
                key: "limits.backoff_max_seconds",
                problem: "must be 1..=300".into(),
            });
        }
        if l.max_connections == 0 || l.deposit_timeout_ms == 0 {
            return Err(ConfigError::Invalid {
                key: "limits",
                problem: "connections and timeouts must be > 0".into(),
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
