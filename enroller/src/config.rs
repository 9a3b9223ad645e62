//! Configuration: one TOML file, read by [`conf`]; every scalar key can be overridden by an
//! environment variable `ENROLLER_` + the key path in capitals with `_` for `.` (`tls.cert`
//! -> `ENROLLER_TLS_CERT`). The custodian list is taken from the file only. Precedence:
//! built-in defaults < file < environment. The file is `--config FILE`, else
//! `$ENROLLER_CONFIG`, else `enroller.toml`; relative paths in it (and in the variables) are
//! taken from its folder.
//!
//! ```toml
//! name = "main"                          # spiffe://<td>/enroller/main
//! trust_domain = "example.test"
//! listen = "127.0.0.1:7000"              # TLS 1.3; client certificates optional (login)
//! health_listen = "127.0.0.1:7100"       # optional plain HTTP /health, loopback only
//! database = "enroller.db"
//! profile = "enroller-token.toml"        # PKCS#11 profile; key_label is the base label
//! user_ca_cert = "pki/user-ca.pem"       # issued by `shardctl pki issue-user-ca`
//! threshold = 3                          # t; n is the number of custodians not on standby
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
//! standby = false                        # true: not in new enrollments, a reshare may move keys to it
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
//! [checks]
//! interval_seconds = 86400               # scheduled share checks; 0 turns them off
//!
//! [refresh]
//! interval_seconds = 0                   # scheduled refresh of every signing key; 0: off
//!
//! [log]
//! format = "text"
//! level = "info"
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use conf::service::{Log, Tls};
use conf::{Invalid, Kind};
use serde::Deserialize;

/// Why a configuration was refused: names the file and the key, never a value.
pub type ConfigError = conf::Error;

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
    /// TLS files; the certificate is also the client certificate towards custodians.
    pub tls: Tls,
    /// The custodians, in shard index order.
    pub custodians: Vec<CustodianConfig>,
    /// Limits.
    #[serde(default)]
    pub limits: Limits,
    /// Scheduled share checks.
    #[serde(default)]
    pub checks: Checks,
    /// Scheduled refresh of every threshold-signing key.
    #[serde(default)]
    pub refresh: Schedule,
    /// Logging.
    #[serde(default)]
    pub log: Log,
}

fn default_threshold() -> u8 {
    3
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
    /// Known to the enroller (a reshare may move keys to it, and it serves the keys it
    /// holds) but left out of new enrollments.
    #[serde(default)]
    pub standby: bool,
}

/// Scheduled share checks ([`crate::checks`]).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Checks {
    /// Seconds between two passes over every enrollment; 0 turns them off.
    pub interval_seconds: u64,
}

impl Default for Checks {
    fn default() -> Self {
        Checks {
            interval_seconds: 86_400,
        }
    }
}

/// A schedule that is off unless set (`interval_seconds`, 0 = off).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Schedule {
    /// Seconds between two passes; 0 turns it off.
    pub interval_seconds: u64,
}

/// Limits.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Login certificate validity, at most 600 seconds.
    pub login_validity_seconds: u64,
    /// How long an invitation stays valid.
    pub invitation_ttl_seconds: i64,
    /// Deadline of one deposit attempt (or one DKG step) at one custodian.
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

/// The keys only the enroller lets an environment variable override (besides
/// [`conf::service::KEYS`]), with their TOML types.
const KEYS: &[(&str, Kind)] = &[
    ("user_ca_cert", Kind::Str),
    ("threshold", Kind::Int),
    ("limits.login_validity_seconds", Kind::Int),
    ("limits.invitation_ttl_seconds", Kind::Int),
    ("limits.deposit_timeout_ms", Kind::Int),
    ("limits.backoff_max_seconds", Kind::Int),
    ("checks.interval_seconds", Kind::Int),
    ("refresh.interval_seconds", Kind::Int),
];

/// The environment variable that overrides `key`.
pub fn env_name(key: &str) -> String {
    conf::env_name("ENROLLER", key)
}

impl Config {
    /// Finds the file (`config`, else `$ENROLLER_CONFIG`, else `enroller.toml`), reads it,
    /// applies environment overrides, validates.
    pub fn load(config: Option<&Path>) -> Result<Config, ConfigError> {
        let path = conf::locate(config, "ENROLLER_CONFIG", "enroller.toml");
        loader(&path).load()
    }
}

/// The loader of the file at `path`, with the `ENROLLER_*` overrides.
fn loader(path: &Path) -> conf::Loader<'_> {
    conf::service::loader(path, "ENROLLER", KEYS)
}

impl conf::Section for Config {
    fn paths(&mut self) -> Vec<(&'static str, &mut PathBuf)> {
        let mut paths = conf::service::paths(&mut self.database, &mut self.profile, &mut self.tls);
        paths.push(("user_ca_cert", &mut self.user_ca_cert));
        paths
    }

    fn check(&self) -> Result<(), Invalid> {
        certs::Name::new(&self.name).map_err(|e| Invalid::new("name", e.to_string()))?;
        certs::TrustDomain::new(&self.trust_domain)
            .map_err(|e| Invalid::new("trust_domain", e.to_string()))?;
        conf::service::check_health_listen(self.health_listen)?;
        self.log.check()?;
        if self.custodians.len() > 4 * usize::from(shard::MAX_SHARDS) {
            return Err(Invalid::new("custodians", "at most 64 custodians"));
        }
        let n = self.custodians.iter().filter(|c| !c.standby).count();
        if n > usize::from(shard::MAX_SHARDS) {
            return Err(Invalid::new(
                "custodians",
                "at most 16 custodians not on standby",
            ));
        }
        // Invariant: n <= 16 was checked just above.
        shard::Threshold::new(self.threshold, n as u8).map_err(|_| {
            Invalid::new(
                "threshold",
                format!("needs 2 <= threshold <= number of custodians not on standby ({n})"),
            )
        })?;
        for (i, c) in self.custodians.iter().enumerate() {
            shard::CustodianId::new(&c.name)
                .map_err(|e| Invalid::new("custodians.name", e.to_string()))?;
            if self.custodians[..i].iter().any(|o| o.name == c.name) {
                return Err(Invalid::new(
                    "custodians.name",
                    format!("{} appears twice", c.name),
                ));
            }
        }
        let l = &self.limits;
        if !(61..=600).contains(&l.login_validity_seconds) {
            return Err(Invalid::new(
                "limits.login_validity_seconds",
                "must be 61..=600",
            ));
        }
        if l.invitation_ttl_seconds < 60 {
            return Err(Invalid::new(
                "limits.invitation_ttl_seconds",
                "must be >= 60",
            ));
        }
        if !(1..=300).contains(&l.backoff_max_seconds) {
            return Err(Invalid::new(
                "limits.backoff_max_seconds",
                "must be 1..=300",
            ));
        }
        if l.max_connections == 0 || l.deposit_timeout_ms == 0 {
            return Err(Invalid::new(
                "limits",
                "connections and timeouts must be > 0",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
name = "main"
trust_domain = "example.test"
listen = "127.0.0.1:7000"
database = "enroller.db"
profile = "token.toml"
user_ca_cert = "pki/user-ca.pem"
threshold = 2
[tls]
ca = "/pki/ca.pem"
cert = "e.pem"
key = "e.key"
[[custodians]]
name = "c1"
address = "127.0.0.11:7001"
server_name = "127.0.0.11"
[[custodians]]
name = "c2"
address = "127.0.0.12:7001"
server_name = "127.0.0.12"
"#;

    /// Parses `text` as if read from /etc/e/enroller.toml, with the variables `env`.
    fn parse(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let env = |k: &str| {
            env.iter()
                .find(|(v, _)| *v == k)
                .map(|(_, x)| x.to_string())
        };
        loader(Path::new("/etc/e/enroller.toml"))
            .text(text)
            .env_source(env)
            .load()
    }

    #[test]
    fn env_overrides_and_relative_paths() {
        let c = parse(
            BASE,
            &[
                ("ENROLLER_LIMITS_LOGIN_VALIDITY_SECONDS", "61"),
                ("ENROLLER_HEALTH_LISTEN", "127.0.0.1:7100"),
                ("ENROLLER_TLS_KEY", "/k/e.key"),
            ],
        )
        .unwrap();
        assert_eq!(c.limits.login_validity_seconds, 61);
        assert_eq!(c.health_listen, Some("127.0.0.1:7100".parse().unwrap()));
        assert_eq!(c.user_ca_cert, PathBuf::from("/etc/e/pki/user-ca.pem"));
        assert_eq!(c.tls.ca, PathBuf::from("/pki/ca.pem"));
        assert_eq!(c.tls.cert, PathBuf::from("/etc/e/e.pem"));
        assert_eq!(c.tls.key, PathBuf::from("/k/e.key"));
        assert_eq!(c.limits.backoff_max_seconds, 300);
        assert_eq!(c.custodians.len(), 2);
        assert_eq!(
            env_name("limits.deposit_timeout_ms"),
            "ENROLLER_LIMITS_DEPOSIT_TIMEOUT_MS"
        );
    }

    #[test]
    fn bad_values_name_the_key() {
        type Env = &'static [(&'static str, &'static str)];
        let cases: [(String, Env, &str); 5] = [
            (
                BASE.into(),
                &[("ENROLLER_HEALTH_LISTEN", "0.0.0.0:7100")],
                "loopback",
            ),
            (BASE.into(), &[("ENROLLER_THRESHOLD", "3")], "`threshold`"),
            (
                BASE.into(),
                &[("ENROLLER_LIMITS_BACKOFF_MAX_SECONDS", "x")],
                "ENROLLER_LIMITS_BACKOFF_MAX_SECONDS",
            ),
            (BASE.replace("\"c2\"", "\"c1\""), &[], "`custodians.name`"),
            (
                BASE.replace("server_name = \"127.0.0.12\"", "port = 1"),
                &[],
                "custodians[1].port",
            ),
        ];
        for (text, env, want) in cases {
            let e = parse(&text, env).unwrap_err().to_string();
            assert!(e.contains(want), "{e} lacks {want}");
            assert!(e.contains("/etc/e/enroller.toml"), "{e}");
        }
    }
}
