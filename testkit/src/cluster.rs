//! The whole system as an operator sets it up: a trust domain made with `shardctl pki`,
//! custodians on SoftHSM2 tokens and swtpm instances each on a loopback address of its own
//! (127.0.0.11, .12, ...), and an enroller (127.0.0.10) on its own token. Used by the demo,
//! the end-to-end tests and the benchmarks that need every service.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use certs::rustls::ClientConfig;
use certs::{Name, Role, SpiffeId, TrustDomain};
use mtls::Client;

use crate::custodian::{Custodian, Options, Setup};
use crate::device::Backend;
use crate::enroller::{Enroller, EnrollerApi, Peer};
use crate::pki::{Identity, Pki, TlsFiles};
use crate::scan::{needles_for_pem, Needle};
use crate::{net, Bins};

/// The trust domain of a cluster.
pub const TRUST_DOMAIN: &str = "demo.test";
/// The last octet of the enroller's address; custodian `i` (from 0) has `11 + i`.
pub const ENROLLER_OCTET: u8 = 10;

/// A trust domain with its custodians and, once started, its enroller. Dropping it stops
/// every process and device and removes the files.
pub struct Cluster {
    /// The binaries it runs.
    pub bins: Bins,
    /// Its working directory.
    pub dir: PathBuf,
    /// The `shardctl pki` directory.
    pub pki: PathBuf,
    /// The custodians (`c1`, `c2`, ...).
    pub nodes: Vec<Custodian>,
    /// The enroller, once started with [`Cluster::start_enroller`].
    pub enroller: Option<Enroller>,
    /// How many of the last custodians the enroller has on standby (in no new
    /// enrollment; a reshare may move keys to them). Set before the enroller starts.
    pub standby: usize,
}

impl Cluster {
    /// Creates the trust domain, one device and custodian per backend, provisions and
    /// starts them and checks that each answers over mutual TLS. `say` gets a line per step.
    pub fn start(backends: &[Backend], say: &dyn Fn(&str)) -> Result<Cluster, String> {
        Cluster::start_with(backends, &[], say)
    }

    /// Like [`Cluster::start`], with extra environment for every custodian process
    /// (`CUSTODIAN_*` configuration overrides, e.g. `CUSTODIAN_LOG_LEVEL`).
    pub fn start_with(
        backends: &[Backend],
        custodian_env: &[(&str, &str)],
        say: &dyn Fn(&str),
    ) -> Result<Cluster, String> {
        let bins = Bins::locate()?;
        let dir = tempfile::Builder::new()
            .prefix("shard-cluster-")
            .tempdir()
            .map_err(|e| e.to_string())?
            .keep();
        let pki = dir.join("pki");
        let mut cluster = Cluster {
            bins,
            dir: dir.clone(),
            pki: pki.clone(),
            nodes: Vec::new(),
            enroller: None,
            standby: 0,
        };
        cluster.shardctl(&["pki", "init", "--trust-domain", TRUST_DOMAIN])?;
        say(&format!(
            "trust domain {TRUST_DOMAIN}: CA created with `shardctl pki init` in {}",
            pki.display()
        ));
        let authority = Arc::new(Pki::load(&pki)?);
        for (i, backend) in backends.iter().enumerate() {
            let name = format!("c{}", i + 1);
            let ip = net::loopback(11 + i as u8);
            let ndir = dir.join(&name);
            std::fs::create_dir_all(&ndir).map_err(|e| e.to_string())?;
            let (identity, tls) = cluster.service_identity(Role::Custodian, &name, ip)?;
            let mut node = Custodian::create(Setup {
                name: name.clone(),
                ip,
                pki: authority.clone(),
                identity,
                tls,
                dir: ndir,
                options: Options {
                    backend: *backend,
                    log_level: "info".into(),
                    release_per_second: 1000.0,
                    release_burst: 1000.0,
                    tpm_parameter_encryption: false,
                    env: custodian_env
                        .iter()
                        .map(|(k, v)| ((*k).into(), (*v).into()))
                        .collect(),
                    ..Options::default()
                },
            })?;
            node.start()?;
            say(&format!(
                "custodian {name} on {}: {backend} sealing key provisioned (`custodian init`)",
                node.addr
            ));
            cluster.nodes.push(node);
        }
        cluster.check_health()?;
        say(&format!(
            "{} custodians answer over mutual TLS 1.3",
            cluster.nodes.len()
        ));
        Ok(cluster)
    }

    /// Custodians on `backends` (extra environment `custodian_env` for each) and an
    /// enroller with threshold `t` (extra environment `enroller_env`), started; panics
    /// when that fails.
    pub fn with_enroller(
        backends: &[Backend],
        custodian_env: &[(&str, &str)],
        t: u8,
        enroller_env: &[(&str, &str)],
    ) -> Cluster {
        let mut c = Cluster::start_with(backends, custodian_env, &|_| {})
            .unwrap_or_else(|e| panic!("cluster: {e}"));
        c.start_enroller_with(t, enroller_env, &|_| {})
            .unwrap_or_else(|e| panic!("enroller: {e}"));
        c
    }

    /// Asks every custodian's health over mutual TLS, as an admin.
    fn check_health(&self) -> Result<(), String> {
        let (cert, key) = self.issue("admin", "harness")?;
        let tls = self.client_tls(&cert, &key)?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        for (i, node) in self.nodes.iter().enumerate() {
            let h = rt
                .block_on(self.client(i, tls.clone())?.health())
                .map_err(|e| format!("{}: {e}", node.name))?;
            if h.status != "ok" {
                return Err(format!(
                    "{} is unhealthy: device {} database {}",
                    node.name, h.device, h.database
                ));
            }
        }
        Ok(())
    }

    /// `shardctl pki issue ROLE NAME --ip IP` for a service: its identity and its files.
    fn service_identity(
        &self,
        role: Role,
        name: &str,
        ip: std::net::IpAddr,
    ) -> Result<(Identity, TlsFiles), String> {
        self.shardctl(&["pki", "issue", role.as_str(), name, "--ip", &ip.to_string()])?;
        let tls = TlsFiles {
            ca: self.pki.join("ca.pem"),
            cert: self.pki.join(format!("{role}-{name}.pem")),
            key: self.pki.join(format!("{role}-{name}.key")),
        };
        let td = TrustDomain::new(TRUST_DOMAIN).map_err(|e| e.to_string())?;
        let id = SpiffeId::new(td, role, Name::new(name).map_err(|e| e.to_string())?);
        Ok((Identity::read(id, &tls.cert, &tls.key)?, tls))
    }

    /// Waits until custodian `i` is ready (e.g. after [`Custodian::resume`]).
    pub fn wait_ready(&self, i: usize) -> Result<(), String> {
        self.nodes[i].wait_ready()
    }

    /// Runs `shardctl` with this cluster's PKI directory; returns its standard output.
    pub fn shardctl(&self, args: &[&str]) -> Result<String, String> {
        crate::bins::run_shardctl(&self.bins, &self.pki, args)
    }

    /// Issues a client certificate with `shardctl pki issue ROLE NAME` (once); returns the
    /// (certificate, key) paths.
    pub fn issue(&self, role: &str, name: &str) -> Result<(PathBuf, PathBuf), String> {
        let cert = self.pki.join(format!("{role}-{name}.pem"));
        let key = self.pki.join(format!("{role}-{name}.key"));
        if !cert.exists() {
            self.shardctl(&["pki", "issue", role, name])?;
        }
        Ok((cert, key))
    }

    /// A TLS client configuration from certificate and key files.
    pub fn client_tls(&self, cert: &Path, key: &Path) -> Result<Arc<ClientConfig>, String> {
        let read = |p: &Path| std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()));
        certs::tls::client_config(&read(&self.pki.join("ca.pem"))?, &read(cert)?, &read(key)?)
            .map(Arc::new)
            .map_err(|e| e.to_string())
    }

    /// A client for custodian `i` that also checks the custodian's identity.
    pub fn client(&self, i: usize, tls: Arc<ClientConfig>) -> Result<Client, String> {
        let node = self
            .nodes
            .get(i)
            .ok_or_else(|| format!("no custodian {i}"))?;
        Ok(node.client_with(tls))
    }

    /// Provisions an enroller on its own SoftHSM2 token (`enroller init`), has the CA sign
    /// its user CA (`shardctl pki issue-user-ca`), issues its certificate, and starts it
    /// with every custodian of the cluster, threshold `t`.
    pub fn start_enroller(&mut self, t: u8, say: &dyn Fn(&str)) -> Result<(), String> {
        self.start_enroller_with(t, &[], say)
    }

    /// Like [`Cluster::start_enroller`], with extra environment for the enroller process
    /// (`ENROLLER_*` configuration overrides, e.g. `ENROLLER_LIMITS_LOGIN_VALIDITY_SECONDS`
    /// or `ENROLLER_LOG_LEVEL`).
    pub fn start_enroller_with(
        &mut self,
        t: u8,
        env: &[(&str, &str)],
        say: &dyn Fn(&str),
    ) -> Result<(), String> {
        let ip = net::loopback(ENROLLER_OCTET);
        let dir = self.dir.join("enroller");
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let (_, tls) = self.service_identity(Role::Enroller, "main", ip)?;
        let setup = crate::enroller::Setup {
            ip,
            trust_domain: TRUST_DOMAIN.into(),
            tls,
            out_dir: self.pki.clone(),
            user_ca: self.pki.join("user-ca.pem"),
            custodians: self.peers(),
            threshold: t,
            env: env
                .iter()
                .map(|(k, v)| ((*k).into(), (*v).into()))
                .collect(),
            dir,
        };
        let mut enroller = Enroller::create(setup, |public_key| {
            let key = public_key.to_string_lossy();
            self.shardctl(&["pki", "issue-user-ca", "--public-key", &key])?;
            std::fs::read_to_string(self.pki.join("user-ca.pem")).map_err(|e| e.to_string())
        })?;
        enroller.start()?;
        say(&format!("enroller on {}: token keys provisioned (`enroller init`), user CA issued by the trust domain's CA", enroller.addr));
        self.enroller = Some(enroller);
        Ok(())
    }

    /// The custodians as configurations name them.
    pub fn peers(&self) -> Vec<Peer> {
        let active = self.nodes.len().saturating_sub(self.standby);
        self.nodes
            .iter()
            .enumerate()
            .map(|(i, n)| Peer {
                name: n.name.clone(),
                addr: n.addr,
                standby: i >= active,
            })
            .collect()
    }

    /// The enroller as its clients see it (the admin is `admin/ops`).
    pub fn enroller_api(&self) -> Result<EnrollerApi, String> {
        let e = self
            .enroller
            .as_ref()
            .ok_or("the enroller is not started")?;
        let ca = std::fs::read(self.pki.join("ca.pem")).map_err(|e| e.to_string())?;
        let (cert, key) = self.issue("admin", "ops")?;
        Ok(EnrollerApi::new(e.addr, ca, self.client_tls(&cert, &key)?))
    }

    /// The logs of every service (custodians, then the enroller): name and text.
    pub fn logs(&self) -> Vec<(String, String)> {
        self.nodes
            .iter()
            .map(|n| (n.name.clone(), n.log_text()))
            .chain(
                self.enroller
                    .iter()
                    .map(|e| ("enroller".to_owned(), e.log_text())),
            )
            .collect()
    }

    /// What the services themselves hold, which no log may show: every token PIN and
    /// every private key in the PKI directory.
    pub fn secrets(&self) -> Vec<Needle> {
        let mut v: Vec<Needle> = self
            .nodes
            .iter()
            .flat_map(|n| n.device().needles())
            .chain(self.enroller.iter().flat_map(|e| e.device().needles()))
            .collect();
        if let Ok(rd) = std::fs::read_dir(&self.pki) {
            for f in rd.flatten().map(|e| e.path()) {
                if f.extension().is_some_and(|x| x == "key") {
                    let name = f.file_name().unwrap_or_default().to_string_lossy();
                    let pem = std::fs::read_to_string(&f).unwrap_or_default();
                    v.extend(needles_for_pem(&format!("TLS key {name}"), &pem));
                }
            }
        }
        v
    }

    /// Custodian clients presenting `tls`, one per custodian.
    pub fn clients(&self, tls: &Arc<ClientConfig>) -> Vec<Client> {
        self.nodes
            .iter()
            .map(|n| n.client_with(tls.clone()))
            .collect()
    }

    /// The secret ids of `owner`'s shards at custodian `i` (the admin's listing).
    pub async fn shards_of(&self, i: usize, owner: &str) -> Vec<String> {
        let (cert, key) = self.issue("admin", "ops").expect("admin certificate");
        let c = self.nodes[i].client_with(self.client_tls(&cert, &key).expect("TLS"));
        let mut out = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = c
                .list(after.as_deref(), 100)
                .await
                .unwrap_or_else(|e| panic!("listing at {}: {e}", self.nodes[i].name));
            out.extend(
                page.shards
                    .into_iter()
                    .filter(|s| s.owner == owner)
                    .map(|s| s.secret_id),
            );
            match page.next_after {
                Some(next) => after = Some(next),
                None => return out,
            }
        }
    }

    /// Recovers the secret of the enrollment answer `enr` from custodians `which`
    /// (released to the owner's `user_tls`), verifying the manifest with `manifest_key`
    /// and every shard against it.
    pub async fn recover(
        &self,
        user_tls: &Arc<ClientConfig>,
        which: &[usize],
        enr: &serde_json::Value,
        manifest_key: &p256::ecdsa::VerifyingKey,
    ) -> Vec<u8> {
        use base64::Engine;
        let raw = base64::engine::general_purpose::STANDARD
            .decode(enr["manifest"].as_str().expect("manifest"))
            .expect("base64");
        let signed = shard::SignedManifest::decode(&raw).expect("manifest decodes");
        let manifest = signed
            .verify(manifest_key)
            .expect("manifest verifies")
            .clone();
        let secret_id: shard::SecretId = enr["secret_id"]
            .as_str()
            .expect("secret_id")
            .parse()
            .expect("id");
        let mut returned = Vec::new();
        for &i in which {
            let node = &self.nodes[i];
            let r = node
                .client_with(user_tls.clone())
                .release(&secret_id, None)
                .await
                .unwrap_or_else(|e| panic!("release at {}: {e}", node.name));
            returned.push(shard::Returned {
                custodian: shard::CustodianId::new(&node.name).expect("name"),
                envelope: r.envelope,
            });
        }
        let rec = shard::combine_verified(&manifest, returned).expect("combine");
        rec.secret.expose().to_vec()
    }
}

/// The identity of user `name` in a cluster's trust domain.
pub fn user_id(name: &str) -> String {
    format!("spiffe://{TRUST_DOMAIN}/user/{name}")
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.enroller = None;
        self.nodes.clear();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
