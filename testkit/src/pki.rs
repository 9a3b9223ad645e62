//! A trust domain made in this process: its CA, the identities tests present, the files a
//! service reads, and the TLS configurations of its clients.
//!
//! The [`cluster`](crate::cluster) makes its trust domain with `shardctl pki` as an
//! operator does and loads it here ([`Pki::load`]); a test of one binary makes its own
//! ([`Pki::new`]). Either way the files are in `shardctl pki`'s layout.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use certs::rustls::ClientConfig;
use certs::{Ca, Name, PrivateKeyPem, Role, SpiffeId, TrustDomain};

/// How long the identities of [`Pki::new`] are valid.
pub const DAY: Duration = Duration::from_secs(24 * 3600);

/// A certificate and its key, as PEM.
pub struct Identity {
    /// The SPIFFE id the certificate names.
    pub id: SpiffeId,
    /// Certificate PEM (the chain, leaf first).
    pub cert_pem: String,
    /// Key PEM (redacted in `Debug`).
    pub key_pem: PrivateKeyPem,
}

impl Identity {
    /// The identity `id` whose certificate and key are in these files.
    pub fn read(id: SpiffeId, cert: &Path, key: &Path) -> Result<Identity, String> {
        let read =
            |p: &Path| std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()));
        Ok(Identity {
            id,
            cert_pem: read(cert)?,
            key_pem: PrivateKeyPem::new(read(key)?),
        })
    }
}

/// The files a service reads for its TLS: the CA certificate, its own certificate, its key.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// CA certificate (PEM).
    pub ca: PathBuf,
    /// The service's certificate (PEM).
    pub cert: PathBuf,
    /// The service's private key (PEM, mode 0600).
    pub key: PathBuf,
}

/// The trust domain's CA and the client identities tests use.
pub struct Pki {
    /// The trust domain.
    pub td: TrustDomain,
    /// The CA (issues more on demand).
    pub ca: Ca,
    /// `enroller/main`.
    pub enroller: Identity,
    /// `admin/ops`.
    pub admin: Identity,
    /// `user/alice`.
    pub alice: Identity,
    /// `user/bob`.
    pub bob: Identity,
}

impl Pki {
    /// A new CA for trust domain `td` and the standard identities.
    pub fn new(td: &str) -> Pki {
        let td = TrustDomain::new(td).expect("trust domain");
        let ca = Ca::init(&td).expect("CA");
        Pki::with_ca(td, ca)
    }

    /// The CA that `shardctl pki init` made in `dir` (`ca.pem`, `ca.key`), and standard
    /// identities issued by it in this process.
    pub fn load(dir: &Path) -> Result<Pki, String> {
        let read = |f: &str| std::fs::read(dir.join(f)).map_err(|e| format!("{f}: {e}"));
        let ca = Ca::load(&read("ca.pem")?, &read("ca.key")?).map_err(|e| e.to_string())?;
        Ok(Pki::with_ca(ca.trust_domain().clone(), ca))
    }

    fn with_ca(td: TrustDomain, ca: Ca) -> Pki {
        let client = |role, name| issue(&ca, role, name, &[], &[], DAY);
        Pki {
            enroller: client(Role::Enroller, "main"),
            admin: client(Role::Admin, "ops"),
            alice: client(Role::User, "alice"),
            bob: client(Role::User, "bob"),
            td,
            ca,
        }
    }

    /// Issues another client identity.
    pub fn issue(&self, role: Role, name: &str, validity: Duration) -> Identity {
        issue(&self.ca, role, name, &[], &[], validity)
    }

    /// Issues a service identity that clients can verify by `dns` names and `ips`.
    pub fn issue_server(&self, role: Role, name: &str, dns: &[String], ips: &[IpAddr]) -> Identity {
        issue(&self.ca, role, name, dns, ips, DAY)
    }

    /// Signs the enroller's user CA for the public key `public_key_pem` (what
    /// `shardctl pki issue-user-ca` does); returns the certificate PEM.
    pub fn issue_user_ca(&self, public_key_pem: &str) -> Result<String, String> {
        self.ca
            .issue_user_ca(public_key_pem, Duration::from_secs(365 * 86_400))
            .map_err(|e| e.to_string())
    }

    /// Writes the CA certificate and `who`'s certificate and key into `dir` as `ca.pem`,
    /// `<stem>.pem` and `<stem>.key` (mode 0600), for a service to read.
    pub fn write_files(&self, dir: &Path, stem: &str, who: &Identity) -> Result<TlsFiles, String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let files = TlsFiles {
            ca: dir.join("ca.pem"),
            cert: dir.join(format!("{stem}.pem")),
            key: dir.join(format!("{stem}.key")),
        };
        let write = |p: &Path, text: &str| {
            std::fs::write(p, text).map_err(|e| format!("{}: {e}", p.display()))
        };
        write(&files.ca, self.ca_pem())?;
        write(&files.cert, &who.cert_pem)?;
        certs::write_new_private(&files.key, who.key_pem.as_bytes()).map_err(|e| e.to_string())?;
        Ok(files)
    }

    /// The CA certificate PEM.
    pub fn ca_pem(&self) -> &str {
        self.ca.cert_pem()
    }

    /// A mutual-TLS client configuration presenting `who`.
    pub fn client_tls(&self, who: &Identity) -> Arc<ClientConfig> {
        client_tls(self.ca_pem().as_bytes(), who).expect("client config")
    }

    /// A TLS 1.3 client configuration that trusts this CA but presents no certificate.
    pub fn anonymous_tls(&self) -> Arc<ClientConfig> {
        Arc::new(
            certs::tls::client_config_anonymous(self.ca_pem().as_bytes()).expect("client config"),
        )
    }

    /// The private keys of the standard identities (for the log scan).
    pub fn keys(&self) -> Vec<(&'static str, &PrivateKeyPem)> {
        vec![
            ("enroller key", &self.enroller.key_pem),
            ("admin key", &self.admin.key_pem),
            ("alice key", &self.alice.key_pem),
            ("bob key", &self.bob.key_pem),
        ]
    }
}

/// A mutual-TLS client configuration trusting `ca_pem` and presenting `who`.
pub fn client_tls(ca_pem: &[u8], who: &Identity) -> Result<Arc<ClientConfig>, String> {
    certs::tls::client_config(ca_pem, who.cert_pem.as_bytes(), who.key_pem.as_bytes())
        .map(Arc::new)
        .map_err(|e| e.to_string())
}

fn issue(
    ca: &Ca,
    role: Role,
    name: &str,
    dns: &[String],
    ip: &[IpAddr],
    validity: Duration,
) -> Identity {
    let issued = ca
        .issue(role, &Name::new(name).expect("name"), dns, ip, validity)
        .expect("issue");
    Identity {
        id: issued.spiffe_id,
        cert_pem: issued.cert_pem,
        key_pem: issued.key_pem,
    }
}
