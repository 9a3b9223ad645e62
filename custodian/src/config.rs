//! Configuration: one TOML file, read by [`conf`]; every key can be overridden by an
//! environment variable named `CUSTODIAN_` plus the key path in capitals with `_` for `.`
//! (`tls.cert` -> `CUSTODIAN_TLS_CERT`, `limits.release_per_second` ->
//! `CUSTODIAN_LIMITS_RELEASE_PER_SECOND`), and `custodian init --profile` overrides
//! `profile`. Precedence: built-in defaults < file < environment < flags. The file is
//! `--config FILE`, else `$CUSTODIAN_CONFIG`, else `custodian.toml`; relative paths in it
//! (and in the variables) are taken from its folder.
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

use conf::service::{Log, Tls};
use conf::{Invalid, Kind};
use serde::Deserialize;

/// Why a configuration was refused: names the file and the key, never a value.
pub type ConfigError = conf::Error;

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
    pub tls: Tls,
    /// Limits.
    #[serde(default)]
    pub limits: Limits,
    /// Logging.
    #[serde(default)]
    pub log: Log,
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

/// The keys only the custodian lets an environment variable override (besides
/// [`conf::service::KEYS`]), with their TOML types.
const KEYS: &[(&str, Kind)] = &[
    ("limits.release_per_second", Kind::Float),
    ("limits.release_burst", Kind::Float),
];

/// The environment variable that overrides `key`.
pub fn env_name(key: &str) -> String {
    conf::env_name("CUSTODIAN", key)
}

impl Config {
    /// Finds the file (`config`, else `$CUSTODIAN_CONFIG`, else `custodian.toml`), reads
    /// it, applies the environment and then `profile` (from `init --profile`), validates.
    pub fn load(config: Option<&Path>, profile: Option<&Path>) -> Result<Config, ConfigError> {
        let path = conf::locate(config, "CUSTODIAN_CONFIG", "custodian.toml");
        loader(&path).path_flag("profile", profile).load()
    }
}

/// The loader of the file at `path`, with the `CUSTODIAN_*` overrides.
fn loader(path: &Path) -> conf::Loader<'_> {
    conf::service::loader(path, "CUSTODIAN", KEYS)
}

impl conf::Section for Config {
    fn paths(&mut self) -> Vec<(&'static str, &mut PathBuf)> {
        conf::service::paths(&mut self.database, &mut self.profile, &mut self.tls)
    }

    fn check(&self) -> Result<(), Invalid> {
        shard::CustodianId::new(&self.name).map_err(|e| Invalid::new("name", e.to_string()))?;
        certs::TrustDomain::new(&self.trust_domain)
            .map_err(|e| Invalid::new("trust_domain", e.to_string()))?;
        conf::service::check_health_listen(self.health_listen)?;
        let l = &self.limits;
        if !(1024..=16 * 1024 * 1024).contains(&l.max_body_bytes) {
            return Err(Invalid::new(
                "limits.max_body_bytes",
                "must be 1024..=16777216",
            ));
        }
        if !(l.release_per_second > 0.0 && l.release_per_second.is_finite()) {
            return Err(Invalid::new("limits.release_per_second", "must be > 0"));
        }
        if !(l.release_burst >= 1.0 && l.release_burst.is_finite()) {
            return Err(Invalid::new("limits.release_burst", "must be >= 1"));
        }
        if l.max_connections == 0 {
            return Err(Invalid::new("limits.max_connections", "must be >= 1"));
        }
        self.log.check()
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

    /// Parses `text` as if read from `path`, with the variables `env` knows.
    fn parse(
        path: &Path,
        text: &str,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        loader(path).text(text).env_source(env).load()
    }

    #[test]
    fn env_overrides_and_relative_paths() {
        let env = |k: &str| match k {
            "CUSTODIAN_LISTEN" => Some("127.0.0.2:9000".to_owned()),
            "CUSTODIAN_LIMITS_RELEASE_PER_SECOND" => Some("250".to_owned()),
            _ => None,
        };
        let c = parse(Path::new("/etc/c/custodian.toml"), BASE, env).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.2:9000");
        assert_eq!(c.limits.release_per_second, 250.0);
        assert_eq!(c.database, PathBuf::from("/etc/c/c1.db"));
        assert_eq!(env_name("tls.cert"), "CUSTODIAN_TLS_CERT");
    }

    #[test]
    fn bad_values_name_the_key() {
        let e = parse(Path::new("/custodian.toml"), BASE, |k| {
            (k == "CUSTODIAN_NAME").then(|| "C 1".to_owned())
        })
        .unwrap_err();
        assert!(e.to_string().contains("`name`"), "{e}");
        let e = parse(Path::new("/custodian.toml"), BASE, |k| {
            (k == "CUSTODIAN_HEALTH_LISTEN").then(|| "10.0.0.1:80".to_owned())
        })
        .unwrap_err();
        assert!(e.to_string().contains("health_listen"), "{e}");
        let e = parse(
            Path::new("/custodian.toml"),
            &format!("{BASE}\nbogus = 1\n"),
            |_| None,
        )
        .unwrap_err();
        assert!(e.to_string().contains("bogus"), "{e}");
        let e = parse(Path::new("/custodian.toml"), BASE, |k| {
            (k == "CUSTODIAN_LIMITS_MAX_CONNECTIONS").then(|| "many".to_owned())
        })
        .unwrap_err();
        assert!(
            e.to_string().contains("CUSTODIAN_LIMITS_MAX_CONNECTIONS"),
            "{e}"
        );
    }

    #[test]
    fn the_profile_flag_wins_and_is_taken_as_given() {
        let env = |k: &str| (k == "CUSTODIAN_PROFILE").then(|| "env.toml".to_owned());
        let c: Config = loader(Path::new("/etc/c/custodian.toml"))
            .text(BASE)
            .env_source(env)
            .path_flag("profile", Some(Path::new("flag.toml")))
            .load()
            .unwrap();
        assert_eq!(c.profile, PathBuf::from("flag.toml"));
        let c = parse(Path::new("/etc/c/custodian.toml"), BASE, env).unwrap();
        assert_eq!(c.profile, PathBuf::from("/etc/c/env.toml"));
        assert_eq!(c.tls.key, PathBuf::from("/etc/c/c.key"));
    }
}
