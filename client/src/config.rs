//! The one configuration file, and the per-user directories `shardctl` keeps state in.
//!
//! The file is found by `--config FILE`, else `$SHARDCTL_CONFIG`, else
//! `$XDG_CONFIG_HOME/shardctl/config.toml` (`~/.config/shardctl/config.toml`), and read by
//! [`conf`] (a regular file of at most 1 MiB, unknown keys refused). Relative paths in it are
//! taken from the file's own directory. No key is overridden by the environment, except the
//! admin certificate and key, which `--admin-cert`/`--admin-key` (or `SHARDCTL_ADMIN_CERT`,
//! `SHARDCTL_ADMIN_KEY`) replace for one command.
//!
//! ```toml
//! trust_domain = "prod.example.org"
//! ca = "pki/ca.pem"                              # the trust domain's CA certificate
//! manifest_key = "pki/enroller-manifest.pub.pem" # pins the enroller's manifest-signing key
//!
//! [enroller]
//! address = "enroller.example.org:7000"
//! server_name = "enroller.example.org"   # optional: a DNS or IP SAN of its certificate
//! name = "main"                          # optional: spiffe://<td>/enroller/<name>
//!
//! [[custodians]]                         # as in the enroller's configuration
//! name = "c1"
//! address = "10.0.0.11:7001"
//! server_name = "10.0.0.11"
//!
//! [admin]                                # optional, for `shardctl admin ...`
//! cert = "pki/admin-ops.pem"
//! key = "pki/admin-ops.key"
//! ```
//!
//! Login credentials live in `$XDG_CONFIG_HOME/shardctl/login/<trust-domain>.pem` (mode 0600,
//! directory 0700); verified manifests are cached in
//! `$XDG_STATE_HOME/shardctl/manifests/<trust-domain>/<secret-id>` (`~/.local/state/...`).

use std::path::{Path, PathBuf};

use certs::{Name, Role, SpiffeId, TrustDomain};
use serde::Deserialize;

use crate::error::CliError;

/// The file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    trust_domain: String,
    ca: PathBuf,
    #[serde(default)]
    manifest_key: Option<PathBuf>,
    enroller: RawService,
    #[serde(default)]
    custodians: Vec<RawService>,
    #[serde(default)]
    admin: Option<RawAdmin>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawService {
    #[serde(default)]
    name: Option<String>,
    address: String,
    #[serde(default)]
    server_name: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAdmin {
    cert: PathBuf,
    key: PathBuf,
}

impl conf::Section for RawConfig {
    fn paths(&mut self) -> Vec<(&'static str, &mut PathBuf)> {
        let mut paths = vec![("ca", &mut self.ca)];
        if let Some(p) = &mut self.manifest_key {
            paths.push(("manifest_key", p));
        }
        if let Some(a) = &mut self.admin {
            paths.extend([("admin.cert", &mut a.cert), ("admin.key", &mut a.key)]);
        }
        paths
    }
}

/// A refusal of the file at `path` as the error `shardctl` reports. A missing file is
/// [`CliError::NoConfig`] when nobody named it (`explicit` false).
fn refused(e: conf::Error, explicit: bool) -> CliError {
    let conf::Error { path, kind, .. } = e;
    let unreadable = |path, source| CliError::ReadFile {
        what: "the configuration",
        path,
        source,
    };
    match kind {
        conf::ErrorKind::Read(source)
            if source.kind() == std::io::ErrorKind::NotFound && !explicit =>
        {
            CliError::NoConfig(path)
        }
        conf::ErrorKind::Read(source) => unreadable(path, source),
        conf::ErrorKind::TooLarge { .. } => {
            unreadable(path, std::io::ErrorKind::FileTooLarge.into())
        }
        conf::ErrorKind::NotRegular => {
            unreadable(path, std::io::Error::other("not a regular file"))
        }
        other => CliError::Config {
            path,
            problem: other.to_string(),
        },
    }
}

/// A service `shardctl` talks to.
#[derive(Debug, Clone)]
pub struct Service {
    /// The SPIFFE id its certificate must carry.
    pub id: SpiffeId,
    /// `host:port`.
    pub address: String,
    /// The DNS or IP name its certificate is verified against.
    pub server_name: String,
}

impl Service {
    /// The service's short name (`c1`, `main`).
    pub fn name(&self) -> &str {
        self.id.name().as_str()
    }
}

/// A parsed, validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where it was read from.
    pub path: PathBuf,
    /// The trust domain.
    pub trust_domain: TrustDomain,
    /// The CA certificate file.
    pub ca: PathBuf,
    /// The enroller's manifest-signing public key, if pinned.
    pub manifest_key: Option<PathBuf>,
    /// The enroller.
    pub enroller: Service,
    /// The custodians.
    pub custodians: Vec<Service>,
    /// The admin certificate and key, if configured.
    pub admin: Option<(PathBuf, PathBuf)>,
}

impl Config {
    /// Finds and reads the configuration: `flag` (from `--config` or `$SHARDCTL_CONFIG`),
    /// else the XDG path.
    pub fn load(flag: Option<&Path>) -> Result<Config, CliError> {
        let (path, explicit) = match flag {
            Some(p) => (p.to_owned(), true),
            None => (config_home()?.join("shardctl").join("config.toml"), false),
        };
        let raw = conf::Loader::new(&path)
            .load()
            .map_err(|e| refused(e, explicit))?;
        Config::from_raw(&path, raw)
    }

    /// Parses `text`, read from `path`.
    #[cfg(test)]
    pub fn parse(path: &Path, text: &str) -> Result<Config, CliError> {
        let raw = conf::Loader::new(path)
            .text(text)
            .load()
            .map_err(|e| refused(e, true))?;
        Config::from_raw(path, raw)
    }

    /// Checks the file's values and resolves the services' identities.
    fn from_raw(path: &Path, raw: RawConfig) -> Result<Config, CliError> {
        let bad = |problem: String| CliError::Config {
            path: path.to_owned(),
            problem,
        };
        let trust_domain =
            TrustDomain::new(&raw.trust_domain).map_err(|e| bad(format!("`trust_domain`: {e}")))?;
        let service = |raw: &RawService, role: Role, key: &str| -> Result<Service, CliError> {
            let name = match (&raw.name, role) {
                (Some(n), _) => n.clone(),
                (None, Role::Enroller) => "main".to_owned(),
                (None, _) => return Err(bad(format!("`{key}.name` is missing"))),
            };
            let name = Name::new(&name).map_err(|e| bad(format!("`{key}.name`: {e}")))?;
            let host = host_of(&raw.address).ok_or_else(|| {
                bad(format!(
                    "`{key}.address` {:?} is not host:port (e.g. 10.0.0.11:7001)",
                    raw.address
                ))
            })?;
            Ok(Service {
                id: SpiffeId::new(trust_domain.clone(), role, name),
                address: raw.address.clone(),
                server_name: raw.server_name.clone().unwrap_or_else(|| host.to_owned()),
            })
        };
        let enroller = service(&raw.enroller, Role::Enroller, "enroller")?;
        let mut custodians: Vec<Service> = Vec::with_capacity(raw.custodians.len());
        for c in &raw.custodians {
            let s = service(c, Role::Custodian, "custodians")?;
            shard::CustodianId::new(s.name())
                .map_err(|e| bad(format!("`custodians.name`: {e}")))?;
            if custodians.iter().any(|o| o.name() == s.name()) {
                return Err(bad(format!(
                    "custodian {:?} is listed twice under [[custodians]]",
                    s.name()
                )));
            }
            custodians.push(s);
        }
        Ok(Config {
            path: path.to_owned(),
            trust_domain,
            ca: raw.ca,
            manifest_key: raw.manifest_key,
            enroller,
            custodians,
            admin: raw.admin.map(|a| (a.cert, a.key)),
        })
    }

    /// The custodian called `name`, if configured.
    pub fn custodian(&self, name: &str) -> Option<&Service> {
        self.custodians.iter().find(|c| c.name() == name)
    }

    /// Where the login key and certificate of this trust domain are kept.
    pub fn login_file(&self) -> Result<PathBuf, CliError> {
        Ok(config_home()?
            .join("shardctl")
            .join("login")
            .join(format!("{}.pem", self.trust_domain)))
    }

    /// The directory verified manifests of this trust domain are cached in.
    pub fn manifest_dir(&self) -> Result<PathBuf, CliError> {
        Ok(state_home()?
            .join("shardctl")
            .join("manifests")
            .join(self.trust_domain.as_str()))
    }
}

/// `$XDG_CONFIG_HOME`, else `$HOME/.config`.
pub fn config_home() -> Result<PathBuf, CliError> {
    xdg("XDG_CONFIG_HOME", ".config")
}

/// `$XDG_STATE_HOME`, else `$HOME/.local/state`.
pub fn state_home() -> Result<PathBuf, CliError> {
    xdg("XDG_STATE_HOME", ".local/state")
}

fn xdg(var: &'static str, fallback: &str) -> Result<PathBuf, CliError> {
    // The XDG spec says to ignore a relative value.
    if let Some(dir) = std::env::var_os(var).map(PathBuf::from) {
        if dir.is_absolute() {
            return Ok(dir);
        }
    }
    match std::env::var_os("HOME").map(PathBuf::from) {
        Some(home) if home.is_absolute() => Ok(home.join(fallback)),
        _ => Err(CliError::NoHome(var)),
    }
}

/// The host of `host:port` (brackets of an IPv6 literal removed), if it has a numeric port.
fn host_of(address: &str) -> Option<&str> {
    let (host, port) = address.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    (!host.is_empty()).then_some(host)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
trust_domain = "demo.test"
ca = "pki/ca.pem"
manifest_key = "/abs/enroller-manifest.pub.pem"

[enroller]
address = "127.0.0.10:7000"

[[custodians]]
name = "c1"
address = "[::1]:7001"

[[custodians]]
name = "c2"
address = "custodian-2.example.org:7001"
server_name = "c2.example.org"

[admin]
cert = "admin.pem"
key = "admin.key"
"#;

    #[test]
    fn parses_and_resolves_paths() {
        let c = Config::parse(Path::new("/etc/shardctl/config.toml"), GOOD).unwrap();
        assert_eq!(c.trust_domain.as_str(), "demo.test");
        assert_eq!(c.ca, Path::new("/etc/shardctl/pki/ca.pem"));
        assert_eq!(
            c.manifest_key.as_deref(),
            Some(Path::new("/abs/enroller-manifest.pub.pem"))
        );
        assert_eq!(
            c.enroller.id.to_string(),
            "spiffe://demo.test/enroller/main"
        );
        assert_eq!(c.enroller.server_name, "127.0.0.10");
        assert_eq!(c.custodians[0].server_name, "::1");
        assert_eq!(c.custodians[1].server_name, "c2.example.org");
        assert_eq!(
            c.custodian("c2").unwrap().id.to_string(),
            "spiffe://demo.test/custodian/c2"
        );
        assert_eq!(
            c.admin,
            Some((
                PathBuf::from("/etc/shardctl/admin.pem"),
                PathBuf::from("/etc/shardctl/admin.key")
            ))
        );
    }

    #[test]
    fn refusals_name_the_key() {
        let p = Path::new("c.toml");
        let cases = [
            (GOOD.replace("demo.test", "Demo Test"), "`trust_domain`"),
            (
                GOOD.replace("127.0.0.10:7000", "127.0.0.10"),
                "`enroller.address`",
            ),
            (
                GOOD.replace("name = \"c2\"", "name = \"c1\""),
                "listed twice",
            ),
            (GOOD.replace("[admin]", "[admn]"), "unknown field"),
            (
                GOOD.replace("name = \"c1\"\n", ""),
                "`custodians.name` is missing",
            ),
        ];
        for (text, want) in cases {
            let e = Config::parse(p, &text).unwrap_err().to_string();
            assert!(e.contains(want), "{e} lacks {want}");
            assert!(!e.contains('\n'), "{e}");
        }
    }
}
