//! End-to-end harness: a trust domain made with `shardctl pki`, SoftHSM2 tokens and
//! swtpm instances, and real `custodian` processes on their own loopback addresses.
//! Used by the demo (`demo` binary) and by the tests that drive the binaries.
#![deny(missing_docs)]

use std::fs;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use certs::rustls::ClientConfig;
use hsm::testing::softhsm::SoftHsm;
use hsm::testing::swtpm::Swtpm;
use mtls::Client;

/// The trust domain the harness creates.
pub const TRUST_DOMAIN: &str = "demo.test";

/// Where the project's binaries are.
#[derive(Debug, Clone)]
pub struct Bins {
    dir: PathBuf,
}

impl Bins {
    /// `$SHARD_BIN_DIR`, else the directory of the running executable (or its parent
    /// when that is cargo's `deps/`).
    pub fn locate() -> Result<Bins, String> {
        if let Some(d) = std::env::var_os("SHARD_BIN_DIR") {
            return Ok(Bins {
                dir: PathBuf::from(d),
            });
        }
        let exe =
            std::env::current_exe().map_err(|e| format!("cannot find this executable: {e}"))?;
        let mut dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
        if dir.ends_with("deps") {
            dir.pop();
        }
        Ok(Bins { dir })
    }

    /// Path of `shardctl`.
    pub fn shardctl(&self) -> PathBuf {
        self.dir.join("shardctl")
    }

    /// Path of `custodian`.
    pub fn custodian(&self) -> PathBuf {
        self.dir.join("custodian")
    }

    /// Path of `enroller`.
    pub fn enroller(&self) -> PathBuf {
        self.dir.join("enroller")
    }
}

/// Which device a custodian seals with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// A SoftHSM2 token (PKCS#11, AES-GCM).
    SoftHsm,
    /// A swtpm (TPM 2.0).
    Tpm,
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Backend::SoftHsm => "SoftHSM2",
            Backend::Tpm => "swtpm",
        })
    }
}

// The devices are held only so that they live as long as their node and stop with it.
#[allow(dead_code)]
enum Device {
    Token(SoftHsm),
    Tpm(Swtpm),
}

/// One custodian process and its device.
pub struct Node {
    /// Its name (`c1`, ...).
    pub name: String,
    /// Its mutual-TLS address.
    pub addr: SocketAddr,
    /// Its device kind.
    pub backend: Backend,
    /// Its configuration file.
    pub config: PathBuf,
    /// Its database.
    pub database: PathBuf,
    /// Its log file (stderr).
    pub log: PathBuf,
    env: Vec<(String, PathBuf)>,
    child: Option<Child>,
    program: Program,
    _device: Device,
}

/// Which binary a node runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Program {
    /// `custodian`.
    Custodian,
    /// `enroller`.
    Enroller,
}

impl Node {
    fn command(&self, bins: &Bins) -> Command {
        let mut c = Command::new(match self.program {
            Program::Custodian => bins.custodian(),
            Program::Enroller => bins.enroller(),
        });
        c.arg("--config").arg(&self.config);
        for (k, v) in &self.env {
            c.env(k, v);
        }
        c
    }

    /// Starts `custodian serve` (logs appended to [`Node::log`]).
    pub fn start(&mut self, bins: &Bins) -> io::Result<()> {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let child = self
            .command(bins)
            .arg("serve")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()?;
        self.child = Some(child);
        Ok(())
    }

    /// The value of an environment variable the harness gives this node's process
    /// (e.g. `SOFTHSM2_CONF` of its token).
    pub fn env_var(&self, key: &str) -> Option<&Path> {
        self.env
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_path())
    }

    /// The process id, while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    fn signal(&self, sig: libc::c_int) -> io::Result<()> {
        let pid = self.pid().ok_or_else(|| io::Error::other("not running"))?;
        // SAFETY: kill(2) with a pid we spawned and still own (not yet reaped).
        let rc = unsafe { libc::kill(pid as libc::pid_t, sig) };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    /// SIGTERM and wait for the process to drain and exit; returns its exit status.
    pub fn stop(&mut self) -> io::Result<Option<std::process::ExitStatus>> {
        if self.child.is_none() {
            return Ok(None);
        }
        let _ = self.signal(libc::SIGCONT);
        self.signal(libc::SIGTERM)?;
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut child = self
            .child
            .take()
            .ok_or_else(|| io::Error::other("not running"))?;
        loop {
            if let Some(status) = child.try_wait()? {
                return Ok(Some(status));
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                return Ok(Some(child.wait()?));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL, as a crash would.
    pub fn kill9(&mut self) -> io::Result<()> {
        if let Some(mut c) = self.child.take() {
            c.kill()?;
            c.wait()?;
        }
        Ok(())
    }

    /// SIGSTOP: the process hangs with its sockets open.
    pub fn pause(&self) -> io::Result<()> {
        self.signal(libc::SIGSTOP)
    }

    /// SIGCONT after [`Node::pause`].
    pub fn resume(&self) -> io::Result<()> {
        self.signal(libc::SIGCONT)
    }

    /// Runs the node's program with `<args>`, its configuration and environment.
    pub fn run(&self, bins: &Bins, args: &[&str]) -> io::Result<std::process::Output> {
        self.command(bins).args(args).output()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = self.signal(libc::SIGCONT);
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A trust domain with `n` custodians.
pub struct Cluster {
    /// Binaries used.
    pub bins: Bins,
    /// Working directory (removed on drop unless kept).
    pub dir: PathBuf,
    /// The PKI directory (`shardctl pki` files).
    pub pki: PathBuf,
    /// The custodians.
    pub nodes: Vec<Node>,
    /// The enroller, once started with [`Cluster::start_enroller`].
    pub enroller: Option<Node>,
    keep: bool,
}

/// A free TCP port on `ip`.
pub fn free_port(ip: &str) -> io::Result<SocketAddr> {
    let l = TcpListener::bind((ip, 0))?;
    l.local_addr()
}

fn run_ok(cmd: &mut Command) -> Result<String, String> {
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{:?} failed: {}",
            cmd.get_program(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

impl Cluster {
    /// Creates the trust domain, the devices and one custodian per backend, starts them
    /// and waits until each answers its health check. `say` receives a line per step.
    pub fn start(bins: Bins, backends: &[Backend], say: &dyn Fn(&str)) -> Result<Cluster, String> {
        Cluster::start_with(bins, backends, &[], say)
    }

    /// Like [`Cluster::start`], with extra environment variables for every custodian
    /// process (`CUSTODIAN_*` configuration overrides, e.g. `CUSTODIAN_LOG_LEVEL`).
    pub fn start_with(
        bins: Bins,
        backends: &[Backend],
        custodian_env: &[(&str, &str)],
        say: &dyn Fn(&str),
    ) -> Result<Cluster, String> {
        let dir =
            std::env::temp_dir().join(format!("shard-cluster-{}-{}", std::process::id(), unique()));
        fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let pki = dir.join("pki");
        let mut cluster = Cluster {
            bins,
            dir: dir.clone(),
            pki: pki.clone(),
            nodes: Vec::new(),
            enroller: None,
            keep: false,
        };
        cluster.shardctl(&["pki", "init", "--trust-domain", TRUST_DOMAIN])?;
        say(&format!(
            "trust domain {TRUST_DOMAIN}: CA created with `shardctl pki init` in {}",
            pki.display()
        ));

        for (i, backend) in backends.iter().enumerate() {
            let name = format!("c{}", i + 1);
            let ip = format!("127.0.0.{}", 11 + i);
            let addr = free_port(&ip).map_err(|e| format!("no free port on {ip}: {e}"))?;
            cluster.shardctl(&["pki", "issue", "custodian", &name, "--ip", &ip])?;
            let ndir = dir.join(&name);
            fs::create_dir_all(&ndir).map_err(|e| e.to_string())?;
            let profile = ndir.join("profile.toml");
            let mut env: Vec<(String, PathBuf)> = custodian_env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), PathBuf::from(v)))
                .collect();
            let device = match backend {
                Backend::SoftHsm => {
                    let token = SoftHsm::start_standalone("custodian")
                        .map_err(|e| format!("SoftHSM2 token: {e}"))?;
                    fs::write(
                        &profile,
                        format!(
                            "backend = \"pkcs11\"\n[pkcs11]\nmodule = \"{}\"\ntoken_label = \"custodian\"\npin_file = \"{}\"\nkey_label = \"shard-seal\"\nmechanism = \"aes-gcm\"\n",
                            token.module_path().display(),
                            token.pin_file().display()
                        ),
                    )
                    .map_err(|e| e.to_string())?;
                    env.push(("SOFTHSM2_CONF".to_owned(), token.conf_path().to_path_buf()));
                    Device::Token(token)
                }
                Backend::Tpm => {
                    let tpm = Swtpm::start().map_err(|e| format!("swtpm: {e}"))?;
                    fs::write(
                        &profile,
                        format!(
                            "backend = \"tpm\"\n[tpm]\ntcti = \"{}\"\nprimary_handle = 0x81000100\nparameter_encryption = false\n",
                            tpm.tcti()
                        ),
                    )
                    .map_err(|e| e.to_string())?;
                    Device::Tpm(tpm)
                }
            };
            let config = ndir.join("custodian.toml");
            let database = ndir.join("custodian.db");
            fs::write(
                &config,
                format!(
                    "name = \"{name}\"\ntrust_domain = \"{TRUST_DOMAIN}\"\nlisten = \"{addr}\"\ndatabase = \"{}\"\nprofile = \"{}\"\n\n[tls]\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\n\n[limits]\nrelease_per_second = 1000\nrelease_burst = 1000\n",
                    database.display(),
                    profile.display(),
                    pki.join("ca.pem").display(),
                    pki.join(format!("custodian-{name}.pem")).display(),
                    pki.join(format!("custodian-{name}.key")).display(),
                ),
            )
            .map_err(|e| e.to_string())?;
            let mut node = Node {
                name: name.clone(),
                addr,
                backend: *backend,
                config,
                database,
                log: ndir.join("custodian.log"),
                env,
                child: None,
                program: Program::Custodian,
                _device: device,
            };
            let out = node
                .run(&cluster.bins, &["init"])
                .map_err(|e| e.to_string())?;
            if !out.status.success() {
                return Err(format!(
                    "custodian {name} init failed: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                ));
            }
            say(&format!(
                "custodian {name} on {addr}: {backend} sealing key provisioned (`custodian init`)"
            ));
            node.start(&cluster.bins).map_err(|e| e.to_string())?;
            cluster.nodes.push(node);
        }
        for i in 0..cluster.nodes.len() {
            cluster.wait_ready(i)?;
        }
        say(&format!(
            "{} custodians answer over mutual TLS 1.3",
            cluster.nodes.len()
        ));
        Ok(cluster)
    }

    /// Waits (at most 30 s) until custodian `i` answers its health check with `ok`,
    /// e.g. after [`Node::start`] restarted it.
    pub fn wait_ready(&self, i: usize) -> Result<(), String> {
        let (cert, key) = self.issue("admin", "harness")?;
        let client = self.client(i, self.client_tls(&cert, &key)?)?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match rt.block_on(client.health()) {
                Ok(h) if h.status == "ok" => return Ok(()),
                Ok(h) => {
                    return Err(format!(
                        "{} is unhealthy: device {} database {}",
                        self.nodes[i].name, h.device, h.database
                    ))
                }
                Err(e) if Instant::now() > deadline => {
                    return Err(format!("{} did not come up: {e}", self.nodes[i].name))
                }
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    /// Runs `shardctl` with this cluster's PKI directory.
    pub fn shardctl(&self, args: &[&str]) -> Result<String, String> {
        run_ok(
            Command::new(self.bins.shardctl())
                .args(args)
                .env("SHARDCTL_PKI_DIR", &self.pki),
        )
    }

    /// Issues a certificate with `shardctl pki issue ROLE NAME`; returns (cert, key) paths.
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
        let ca = fs::read(self.pki.join("ca.pem")).map_err(|e| e.to_string())?;
        let c = fs::read(cert).map_err(|e| e.to_string())?;
        let k = fs::read(key).map_err(|e| e.to_string())?;
        certs::tls::client_config(&ca, &c, &k)
            .map(Arc::new)
            .map_err(|e| e.to_string())
    }

    /// A client for custodian `i` that also checks the custodian's identity.
    pub fn client(&self, i: usize, tls: Arc<ClientConfig>) -> Result<Client, String> {
        let node = &self.nodes[i];
        let id: certs::SpiffeId = format!("spiffe://{TRUST_DOMAIN}/custodian/{}", node.name)
            .parse()
            .map_err(|e: certs::Error| e.to_string())?;
        Client::new(node.addr, &node.addr.ip().to_string(), tls)
            .map(|c| c.expect_identity(id))
            .map_err(|e| e.to_string())
    }

    /// Provisions an enroller on its own SoftHSM2 token (`enroller init`), has the CA issue
    /// its user CA (`shardctl pki issue-user-ca`) and its certificate, and starts it on
    /// 127.0.0.10 with every custodian of the cluster, threshold `t`.
    pub fn start_enroller(&mut self, t: u8, say: &dyn Fn(&str)) -> Result<(), String> {
        self.start_enroller_with(t, &[], say)
    }

    /// Like [`Cluster::start_enroller`], with extra environment variables for the
    /// enroller process (`ENROLLER_*` configuration overrides, e.g.
    /// `ENROLLER_LIMITS_LOGIN_VALIDITY_SECONDS` or `ENROLLER_LOG_LEVEL`).
    pub fn start_enroller_with(
        &mut self,
        t: u8,
        env: &[(&str, &str)],
        say: &dyn Fn(&str),
    ) -> Result<(), String> {
        let ip = "127.0.0.10";
        let addr = free_port(ip).map_err(|e| format!("no free port on {ip}: {e}"))?;
        let ndir = self.dir.join("enroller");
        fs::create_dir_all(&ndir).map_err(|e| e.to_string())?;
        let token =
            SoftHsm::start_standalone("enroller").map_err(|e| format!("SoftHSM2 token: {e}"))?;
        let profile = ndir.join("token.toml");
        fs::write(
            &profile,
            format!(
                "backend = \"pkcs11\"\n[pkcs11]\nmodule = \"{}\"\ntoken_label = \"enroller\"\npin_file = \"{}\"\nkey_label = \"enroller\"\nmechanism = \"aes-gcm\"\n",
                token.module_path().display(),
                token.pin_file().display()
            ),
        )
        .map_err(|e| e.to_string())?;
        self.shardctl(&["pki", "issue", "enroller", "main", "--ip", ip])?;
        let mut custodians = String::new();
        for n in &self.nodes {
            custodians.push_str(&format!(
                "\n[[custodians]]\nname = \"{}\"\naddress = \"{}\"\nserver_name = \"{}\"\n",
                n.name,
                n.addr,
                n.addr.ip()
            ));
        }
        let config = ndir.join("enroller.toml");
        let database = ndir.join("enroller.db");
        fs::write(
            &config,
            format!(
                "name = \"main\"\ntrust_domain = \"{TRUST_DOMAIN}\"\nlisten = \"{addr}\"\ndatabase = \"{}\"\nprofile = \"{}\"\nuser_ca_cert = \"{}\"\nthreshold = {t}\n\n[tls]\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\n{custodians}",
                database.display(),
                profile.display(),
                self.pki.join("user-ca.pem").display(),
                self.pki.join("ca.pem").display(),
                self.pki.join("enroller-main.pem").display(),
                self.pki.join("enroller-main.key").display(),
            ),
        )
        .map_err(|e| e.to_string())?;
        let mut node = Node {
            name: "main".into(),
            addr,
            backend: Backend::SoftHsm,
            config,
            database,
            log: ndir.join("enroller.log"),
            env: std::iter::once(("SOFTHSM2_CONF".to_owned(), token.conf_path().to_path_buf()))
                .chain(env.iter().map(|(k, v)| ((*k).to_owned(), PathBuf::from(v))))
                .collect(),
            child: None,
            program: Program::Enroller,
            _device: Device::Token(token),
        };
        let pki = self.pki.to_string_lossy().into_owned();
        let out = node
            .run(&self.bins, &["init", "--out-dir", &pki])
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(format!(
                "enroller init failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        let key = self
            .pki
            .join("enroller-user-ca.pub.pem")
            .to_string_lossy()
            .into_owned();
        self.shardctl(&["pki", "issue-user-ca", "--public-key", &key])?;
        say(&format!("enroller on {addr}: token keys provisioned (`enroller init`), user CA issued by the trust domain's CA"));
        node.start(&self.bins).map_err(|e| e.to_string())?;
        let deadline = Instant::now() + Duration::from_secs(30);
        let tls = Arc::new(
            certs::tls::client_config_anonymous(
                &fs::read(self.pki.join("ca.pem")).map_err(|e| e.to_string())?,
            )
            .map_err(|e| e.to_string())?,
        );
        let client = Client::new(addr, ip, tls).map_err(|e| e.to_string())?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        loop {
            match rt.block_on(client.request(hyper_method_get(), "/v1/health", None)) {
                Ok((status, _)) if status.is_success() => break,
                _ if Instant::now() > deadline => return Err("the enroller did not come up".into()),
                _ => std::thread::sleep(Duration::from_millis(50)),
            }
        }
        self.enroller = Some(node);
        Ok(())
    }

    /// Keep the working directory after drop (processes are still stopped).
    pub fn keep_files(&mut self) {
        self.keep = true;
    }
}

fn hyper_method_get() -> mtls::Method {
    mtls::Method::GET
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.enroller = None;
        self.nodes.clear();
        if !self.keep {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

fn unique() -> u64 {
    use std::time::{SystemTime, UNIX_EPOCH};
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos() as u64)
        .unwrap_or(0)
}

/// RFC 4648 base32 without padding (the TOTP secret in an `otpauth://` URI), for tests
/// that play an authenticator app. `None` on a character outside the alphabet.
pub fn base32_decode(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let (mut buf, mut bits) = (0u32, 0u32);
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'2'..=b'7' => c - b'2' + 26,
            _ => return None,
        };
        buf = (buf << 5) | u32::from(v);
        bits += 5;
        if bits >= 8 {
            out.push((buf >> (bits - 8)) as u8);
            bits -= 8;
        }
    }
    Some(out)
}
