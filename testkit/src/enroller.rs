//! An enroller: its SoftHSM2 token, configuration, database and `enroller serve` process
//! ([`Enroller`]); and the enroller as its clients see it ([`EnrollerApi`], [`UserKey`]).

use std::net::{IpAddr, SocketAddr};
use std::ops::{Deref, DerefMut};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use certs::rustls::ClientConfig;
use certs::Role;
use serde_json::json;

use crate::device::{Backend, Device};
use crate::http::{Http, Reply};
use crate::pki::{Pki, TlsFiles};
use crate::process::{Service, Spec};
use crate::Bins;

/// A custodian as the enroller's configuration names it.
#[derive(Debug, Clone)]
pub struct Peer {
    /// Its name (`c1`, ...).
    pub name: String,
    /// Its mutual-TLS address (the certificate names its IP).
    pub addr: SocketAddr,
    /// On standby at the enroller: not in new enrollments, a reshare may move keys to it.
    pub standby: bool,
}

/// The `[[custodians]]` tables of a configuration (the enroller's and `shardctl`'s have the
/// same), naming each custodian by the IP of its address.
pub fn custodians_toml(custodians: &[Peer]) -> String {
    let mut toml = String::new();
    for c in custodians {
        toml.push_str(&format!(
            "\n[[custodians]]\nname = \"{}\"\naddress = \"{}\"\nserver_name = \"{}\"\n",
            c.name,
            c.addr,
            c.addr.ip()
        ));
        if c.standby {
            toml.push_str("standby = true\n");
        }
    }
    toml
}

/// Where an enroller lives and what it is given.
pub struct Setup {
    /// Its loopback address (its certificate names it).
    pub ip: IpAddr,
    /// Its trust domain.
    pub trust_domain: String,
    /// Its TLS files (`enroller/main`, also its client certificate towards custodians).
    pub tls: TlsFiles,
    /// Where `enroller init` writes the public keys of its token (`enroller-user-ca.pub.pem`,
    /// `enroller-manifest.pub.pem`).
    pub out_dir: PathBuf,
    /// Where the user CA certificate is put.
    pub user_ca: PathBuf,
    /// Its custodians, in shard index order.
    pub custodians: Vec<Peer>,
    /// The threshold of its enrollments.
    pub threshold: u8,
    /// Extra environment (`ENROLLER_*` configuration overrides).
    pub env: Vec<(String, String)>,
    /// Its directory (configuration, profile, database, logs); must exist.
    pub dir: PathBuf,
}

/// An enroller with its token and process. Dereferences to its [`Service`].
pub struct Enroller {
    /// Its token's PKCS#11 profile (the PIN in a file, so that a test can open the token).
    pub profile: PathBuf,
    /// Its database.
    pub database: PathBuf,
    service: Service,
    device: Device,
    _temp: Option<tempfile::TempDir>,
}

impl Enroller {
    /// An enroller on its own, for the enroller's tests: a trust domain and a token of its
    /// own, two custodians in its configuration that nobody runs (nothing reaches them
    /// before an enrollment), threshold 2; extra environment `env`. Started and ready.
    pub fn start(env: &[(&str, &str)]) -> Result<Enroller, String> {
        let temp = tempfile::Builder::new()
            .prefix("enroller-it-")
            .tempdir()
            .map_err(|e| e.to_string())?;
        let dir = temp.path().to_path_buf();
        let pki = Pki::new(crate::custodian::TRUST_DOMAIN);
        let ip = crate::net::LOCALHOST;
        let me = pki.issue_server(Role::Enroller, "main", &[], &[ip]);
        let tls = pki.write_files(&dir.join("pki"), "enroller-main", &me)?;
        let custodians = (1..=2)
            .map(|i| {
                Ok(Peer {
                    name: format!("c{i}"),
                    addr: crate::net::free_addr(ip).map_err(|e| e.to_string())?,
                    standby: false,
                })
            })
            .collect::<Result<_, String>>()?;
        let setup = Setup {
            ip,
            trust_domain: crate::custodian::TRUST_DOMAIN.into(),
            tls,
            out_dir: dir.join("pki"),
            user_ca: dir.join("pki").join("user-ca.pem"),
            custodians,
            threshold: 2,
            env: env
                .iter()
                .map(|(k, v)| ((*k).into(), (*v).into()))
                .collect(),
            dir,
        };
        let mut e = Enroller::create(setup, |public_key| {
            let pem = std::fs::read_to_string(public_key).map_err(|e| e.to_string())?;
            pki.issue_user_ca(&pem)
        })?;
        e._temp = Some(temp);
        e.service.start()?;
        Ok(e)
    }

    /// Starts its token and writes its profile and configuration, runs `enroller init`
    /// (token keys), and has `sign_user_ca` make the user CA certificate for the public key
    /// in the file it is given (what `shardctl pki issue-user-ca` does). Does not start it.
    pub fn create(
        setup: Setup,
        sign_user_ca: impl FnOnce(&Path) -> Result<String, String>,
    ) -> Result<Enroller, String> {
        let bins = Bins::locate()?;
        let device = Device::start(Backend::SoftHsm, "enroller")?;
        let token = device.token().ok_or("the enroller's device is a token")?;
        let profile = setup.dir.join("token.toml");
        write(
            &profile,
            &format!(
                "backend = \"pkcs11\"\n[pkcs11]\nmodule = \"{}\"\ntoken_label = \"enroller\"\npin_file = \"{}\"\nkey_label = \"enroller\"\nmechanism = \"aes-gcm\"\n",
                token.module_path().display(),
                token.pin_file().display()
            ),
        )?;
        let custodians = custodians_toml(&setup.custodians);
        let config = setup.dir.join("enroller.toml");
        let database = setup.dir.join("enroller.db");
        write(
            &config,
            &format!(
                "name = \"main\"\ntrust_domain = \"{}\"\n# The addresses are given to every run in ENROLLER_LISTEN and ENROLLER_HEALTH_LISTEN.\nlisten = \"127.0.0.1:1\"\ndatabase = \"{}\"\nprofile = \"{}\"\nuser_ca_cert = \"{}\"\nthreshold = {}\n\n[tls]\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\n{custodians}",
                setup.trust_domain,
                database.display(),
                profile.display(),
                setup.user_ca.display(),
                setup.threshold,
                setup.tls.ca.display(),
                setup.tls.cert.display(),
                setup.tls.key.display(),
            ),
        )?;
        let env = [(
            "SOFTHSM2_CONF".into(),
            token.conf_path().as_os_str().to_owned(),
        )]
        .into_iter()
        .chain(setup.env.iter().map(|(k, v)| (k.into(), v.into())))
        .collect();
        let service = Service::new(Spec {
            name: "main".into(),
            program: Bins::require(bins.enroller())?,
            env_prefix: "ENROLLER",
            ip: setup.ip,
            config,
            env,
            logs: setup.dir.join("logs"),
        })?;
        let mut e = Enroller {
            profile,
            database,
            service,
            device,
            _temp: None,
        };
        let out_dir = setup.out_dir.to_string_lossy().into_owned();
        let init = e.service.run(&["init", "--out-dir", &out_dir])?;
        if !init.status.success() {
            return Err(format!("enroller init failed: {}", init.stderr.trim()));
        }
        let cert = sign_user_ca(&setup.out_dir.join("enroller-user-ca.pub.pem"))?;
        if !setup.user_ca.exists() {
            write(&setup.user_ca, &cert)?;
        }
        Ok(e)
    }

    /// Its token.
    pub fn device(&self) -> &Device {
        &self.device
    }
}

fn write(path: &Path, text: &str) -> Result<(), String> {
    std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))
}

impl Deref for Enroller {
    type Target = Service;
    fn deref(&self) -> &Service {
        &self.service
    }
}

impl DerefMut for Enroller {
    fn deref_mut(&mut self) -> &mut Service {
        &mut self.service
    }
}

/// The enroller as its clients see it.
pub struct EnrollerApi {
    /// Its address.
    pub addr: SocketAddr,
    /// The trust domain's CA certificate (PEM).
    pub ca: Vec<u8>,
    /// A client without a certificate (registration and login).
    pub anon: Http,
    /// A client with an admin certificate.
    pub admin: Http,
}

/// A password the enroller's policy accepts.
pub const GOOD_PASSWORD: &str = "correct horse battery staple";

impl EnrollerApi {
    /// The clients of the enroller at `addr` (its certificate names the address's IP),
    /// trusting `ca`; the admin presents `admin_tls`.
    pub fn new(addr: SocketAddr, ca: Vec<u8>, admin_tls: Arc<ClientConfig>) -> EnrollerApi {
        let ip = addr.ip().to_string();
        let anon = Arc::new(certs::tls::client_config_anonymous(&ca).expect("TLS"));
        EnrollerApi {
            addr,
            anon: Http::new(addr, &ip, anon),
            admin: Http::new(addr, &ip, admin_tls),
            ca,
        }
    }

    /// The manifest-signing public key (`GET /v1/manifest-key`).
    pub fn manifest_key(&self) -> p256::ecdsa::VerifyingKey {
        use p256::pkcs8::DecodePublicKey;
        let r = self.admin.get("/v1/manifest-key");
        assert_eq!(r.status, 200);
        p256::ecdsa::VerifyingKey::from_public_key_pem(std::str::from_utf8(&r.raw).expect("PEM"))
            .expect("manifest key")
    }

    /// A client presenting `tls`.
    pub fn with(&self, tls: Arc<ClientConfig>) -> Http {
        Http::new(self.addr, &self.addr.ip().to_string(), tls)
    }

    /// An invitation code for `name` (admin), valid `ttl` seconds or the default.
    pub fn invite(&self, name: &str, ttl: Option<i64>) -> String {
        let mut req = json!({ "name": name });
        if let Some(t) = ttl {
            req["ttl_seconds"] = json!(t);
        }
        let r = self.admin.post("/v1/admin/invitations", &req);
        assert_eq!(r.status, 201, "invite {name}: {:?}", r.body);
        r.body["code"].as_str().expect("code").to_owned()
    }

    /// `POST /v1/register`.
    pub fn register(&self, name: &str, invitation: &str, password: &str, totp: bool) -> Reply {
        self.anon.post(
            "/v1/register",
            &json!({ "name": name, "invitation": invitation, "password": password, "totp": totp }),
        )
    }

    /// Invites and registers `name`; returns the TOTP secret when `totp`.
    pub fn new_user(&self, name: &str, password: &str, totp: bool) -> Option<Vec<u8>> {
        let code = self.invite(name, None);
        let r = self.register(name, &code, password, totp);
        assert_eq!(r.status, 201, "register {name}: {:?}", r.body);
        r.body["totp_uri"].as_str().map(crate::totp::secret_of)
    }

    /// `POST /v1/login` with a CSR for `key`.
    pub fn login(
        &self,
        name: &str,
        password: &str,
        totp_code: Option<&str>,
        key: &UserKey,
    ) -> Reply {
        let mut req = json!({ "name": name, "password": password, "csr": key.csr });
        if let Some(c) = totp_code {
            req["totp_code"] = json!(c);
        }
        self.anon.post("/v1/login", &req)
    }

    /// Logs in (must succeed); returns a client TLS configuration with the login
    /// certificate, and the answer.
    pub fn session(
        &self,
        name: &str,
        password: &str,
        totp_code: Option<&str>,
        key: &UserKey,
    ) -> (Arc<ClientConfig>, Reply) {
        let r = self.login(name, password, totp_code, key);
        assert_eq!(r.status, 200, "login {name}: {:?}", r.body);
        (key.tls(&self.ca, &r), r)
    }
}

/// A user's key pair, made on the user's side, and a CSR for it.
pub struct UserKey {
    /// The key pair.
    pub key: rcgen::KeyPair,
    /// CSR (PEM).
    pub csr: String,
}

impl Default for UserKey {
    fn default() -> Self {
        UserKey::new()
    }
}

impl UserKey {
    /// A fresh P-256 key and CSR.
    pub fn new() -> UserKey {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
        let csr = rcgen::CertificateParams::default()
            .serialize_request(&key)
            .expect("CSR")
            .pem()
            .expect("PEM");
        UserKey { key, csr }
    }

    /// The TLS configuration presenting the certificate of a login answer.
    pub fn tls(&self, ca: &[u8], login: &Reply) -> Arc<ClientConfig> {
        let chain = login.body["certificate"].as_str().expect("certificate");
        Arc::new(
            certs::tls::client_config(ca, chain.as_bytes(), self.key.serialize_pem().as_bytes())
                .expect("user TLS"),
        )
    }
}
