//! A custodian: its configuration, its device (a standalone SoftHSM2 token through the
//! shipped `hsm-profiles/softhsm2.toml`, or a private swtpm through the shipped
//! `hsm-profiles/tpm2.toml`), its database, and its `custodian serve` process.
//!
//! [`Custodian::start`] makes one on its own, for the custodian's integration tests: its
//! own trust domain ([`TRUST_DOMAIN`]), name [`NAME`], address 127.0.0.1, debug logs. The
//! [`cluster`](crate::cluster) makes several in one trust domain with [`Custodian::create`].
//!
//! Dropping a custodian kills its process and stops its device. Before that, the drop
//! scans every log its runs wrote for the secrets it knows of: what the test registered
//! ([`Custodian::forbid`], [`Custodian::envelope`]), its token's PINs and the private keys
//! of its trust domain; a hit fails the test.

use std::net::IpAddr;
use std::ops::{Deref, DerefMut};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use certs::rustls::ClientConfig;
use certs::{Role, SpiffeId};
use mtls::Client;
use shard::ShardEnvelope;

use crate::device::{Backend, Device};
use crate::envelope::dealt_envelope;
use crate::pki::{Identity, Pki, TlsFiles};
use crate::process::{Output, Service, Spec};
use crate::scan::{needles_for_envelope, needles_for_pem, scan, Needle};
use crate::Bins;

/// The trust domain of a custodian made by [`Custodian::start`].
pub const TRUST_DOMAIN: &str = "example.test";
/// The name of a custodian made by [`Custodian::start`].
pub const NAME: &str = "c1";
/// The shipped SoftHSM2 profile (token "custodian", PIN in `SHARD_HSM_PIN`).
pub const SOFTHSM_PROFILE: &str =
    concat!(env!("CARGO_MANIFEST_DIR"), "/../hsm-profiles/softhsm2.toml");
/// The shipped TPM 2.0 profile (its `tcti` line is replaced by the swtpm's).
pub const TPM_PROFILE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../hsm-profiles/tpm2.toml");

/// How to run a custodian.
#[derive(Clone, Debug)]
pub struct Options {
    /// The device.
    pub backend: Backend,
    /// `log.level`.
    pub log_level: String,
    /// `log.format`.
    pub log_format: String,
    /// `limits.release_per_second`.
    pub release_per_second: f64,
    /// `limits.release_burst`.
    pub release_burst: f64,
    /// `limits.max_body_bytes`.
    pub max_body_bytes: usize,
    /// The TPM profile's `parameter_encryption` (the shipped profile says `true`).
    pub tpm_parameter_encryption: bool,
    /// Extra environment for every run (`CUSTODIAN_*` configuration overrides).
    pub env: Vec<(String, String)>,
}

impl Default for Options {
    /// What the custodian's own tests use: a SoftHSM2 token, debug logs, the release rate
    /// limit out of the way.
    fn default() -> Self {
        Options {
            backend: Backend::SoftHsm,
            log_level: "debug".into(),
            log_format: "text".into(),
            release_per_second: 100_000.0,
            release_burst: 100_000.0,
            max_body_bytes: 128 * 1024,
            tpm_parameter_encryption: true,
            env: Vec::new(),
        }
    }
}

/// Where a custodian of [`Custodian::create`] lives and who it is.
pub struct Setup {
    /// Its name (`c1`, ...).
    pub name: String,
    /// Its loopback address (its certificate names it).
    pub ip: IpAddr,
    /// Its trust domain.
    pub pki: Arc<Pki>,
    /// Its server identity.
    pub identity: Identity,
    /// Its TLS files.
    pub tls: TlsFiles,
    /// Its directory (configuration, database, logs); must exist.
    pub dir: PathBuf,
    /// How it runs.
    pub options: Options,
}

/// One audit row as the test reads it from the database.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Audit {
    /// Sequence number.
    pub seq: i64,
    /// Event.
    pub event: String,
    /// Peer identity or `tcp:<ip>`.
    pub peer: String,
    /// Secret id (hex) or empty.
    pub secret_id: String,
    /// Index or -1.
    pub idx: i64,
    /// Outcome.
    pub outcome: String,
    /// Reason.
    pub reason: String,
    /// What else the row names (a signature share: session and message digest).
    pub detail: String,
}

/// A custodian with its directory, device and process. Dereferences to its
/// [`Service`] (address, start, stop, logs).
pub struct Custodian {
    /// Its trust domain.
    pub pki: Arc<Pki>,
    /// The options it runs with.
    pub opts: Options,
    /// Its TLS files.
    pub tls: TlsFiles,
    service: Service,
    identity: Identity,
    device: Device,
    dir: PathBuf,
    needles: Mutex<Vec<Needle>>,
    scanned: bool,
    // Last: removed after the process and the device are gone.
    _temp: Option<tempfile::TempDir>,
}

impl Custodian {
    /// Starts a custodian of its own with the default options on `backend`.
    pub fn start(backend: Backend) -> Custodian {
        Custodian::start_with(Options {
            backend,
            ..Options::default()
        })
    }

    /// Makes a trust domain, a device, a configuration and a database of its own, runs
    /// `custodian init`, then `custodian serve`, and waits until it is ready.
    pub fn start_with(options: Options) -> Custodian {
        let temp = tempfile::Builder::new()
            .prefix("custodian-it-")
            .tempdir()
            .expect("temp dir");
        let pki = Pki::new(TRUST_DOMAIN);
        let ip = crate::net::LOCALHOST;
        let identity = pki.issue_server(Role::Custodian, NAME, &["localhost".into()], &[ip]);
        let tls = pki
            .write_files(&temp.path().join("pki"), "custodian", &identity)
            .expect("PKI files");
        let setup = Setup {
            name: NAME.into(),
            ip,
            pki: Arc::new(pki),
            identity,
            tls,
            dir: temp.path().to_path_buf(),
            options,
        };
        let mut c = Custodian::create(setup).unwrap_or_else(|e| panic!("{e}"));
        c._temp = Some(temp);
        c.service.start().unwrap_or_else(|e| panic!("{e}"));
        c
    }

    /// Starts its device and writes its profile and configuration, then runs
    /// `custodian init` (which provisions the sealing key). Does not start it.
    pub fn create(setup: Setup) -> Result<Custodian, String> {
        let bins = Bins::locate()?;
        let opts = setup.options;
        let device = Device::start(opts.backend, "custodian")?;
        let profile = match &device {
            Device::Token { .. } => PathBuf::from(SOFTHSM_PROFILE),
            Device::Tpm(tpm) => {
                let path = setup.dir.join("tpm2.toml");
                std::fs::write(
                    &path,
                    tpm_profile(&tpm.tcti(), opts.tpm_parameter_encryption)?,
                )
                .map_err(|e| format!("{}: {e}", path.display()))?;
                path
            }
        };
        let config = setup.dir.join("custodian.toml");
        std::fs::write(
            &config,
            config_text(&setup.name, &setup.pki, &setup.tls, &profile, &opts),
        )
        .map_err(|e| format!("{}: {e}", config.display()))?;
        let env = device
            .env()
            .into_iter()
            .map(|(k, v)| (k.into(), v))
            .chain(opts.env.iter().map(|(k, v)| (k.into(), v.into())))
            .collect();
        let service = Service::new(Spec {
            name: setup.name.clone(),
            program: Bins::require(bins.custodian())?,
            env_prefix: "CUSTODIAN",
            ip: setup.ip,
            config,
            env,
            logs: setup.dir.join("logs"),
        })?;
        let mut c = Custodian {
            pki: setup.pki,
            opts,
            tls: setup.tls,
            service,
            identity: setup.identity,
            device,
            dir: setup.dir,
            needles: Mutex::new(Vec::new()),
            scanned: false,
            _temp: None,
        };
        let init = c.service.run(&["init"])?;
        if !init.status.success() {
            return Err(format!(
                "custodian {} init failed: {}{}",
                c.name,
                init.stdout,
                init.stderr.trim()
            ));
        }
        Ok(c)
    }

    /// Its device.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The directory holding configuration, database, profile and logs.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The SQLite database.
    pub fn db_path(&self) -> PathBuf {
        self.dir.join("custodian.db")
    }

    /// The custodian's own SPIFFE id.
    pub fn spiffe_id(&self) -> SpiffeId {
        self.identity.id.clone()
    }

    /// A client presenting `who`, verifying that it reached this custodian.
    pub fn client(&self, who: &Identity) -> Client {
        self.client_with(self.pki.client_tls(who))
    }

    /// A client with any TLS configuration, verifying that it reached this custodian.
    pub fn client_with(&self, tls: Arc<ClientConfig>) -> Client {
        self.client_of(&self.service, tls)
    }

    /// A client of `server`, another process on this custodian's configuration (see
    /// [`Custodian::serve_another`]).
    pub fn client_of(&self, server: &Service, tls: Arc<ClientConfig>) -> Client {
        Client::new(server.addr, &server.addr.ip().to_string(), tls)
            .expect("client")
            .expect_identity(self.spiffe_id())
            .with_deadline(Duration::from_secs(20))
    }

    /// Starts another `custodian serve` on this configuration and device, with extra
    /// environment (e.g. another `CUSTODIAN_DATABASE`), on addresses of its own.
    pub fn serve_another(&self, label: &str, env: &[(&str, &str)]) -> Result<Service, String> {
        let mut spec = self.service_spec(label);
        spec.env
            .extend(env.iter().map(|(k, v)| ((*k).into(), (*v).into())));
        let mut s = Service::new(spec)?;
        s.start()?;
        Ok(s)
    }

    fn service_spec(&self, label: &str) -> Spec {
        let mut spec = self.service.spec().clone();
        spec.name = format!("{}-{label}", self.name);
        spec.logs = self.dir.join("logs").join(label);
        spec
    }

    /// Registers secrets the logs must never show.
    pub fn forbid(&self, needles: Vec<Needle>) {
        self.needles.lock().expect("needles").extend(needles);
    }

    /// A dealt envelope (see [`dealt_envelope`]) whose secrets are registered for the scan.
    pub fn envelope(&self, secret_len: usize, epoch: u32) -> ShardEnvelope {
        let env = dealt_envelope(secret_len, epoch, 2);
        self.forbid(needles_for_envelope(&env));
        env
    }

    /// A read-write connection to the live database (WAL: safe next to the server).
    pub fn db(&self) -> rusqlite::Connection {
        let c = rusqlite::Connection::open(self.db_path()).expect("open db");
        c.busy_timeout(Duration::from_secs(10))
            .expect("busy timeout");
        c
    }

    /// Every audit row, oldest first.
    pub fn audit(&self) -> Vec<Audit> {
        let c = self.db();
        let mut st = c
            .prepare(
                "SELECT seq, event, peer, secret_id, idx, outcome, reason, detail FROM audit ORDER BY seq",
            )
            .expect("prepare");
        let rows = st
            .query_map([], |r| {
                Ok(Audit {
                    seq: r.get(0)?,
                    event: r.get(1)?,
                    peer: r.get(2)?,
                    secret_id: r.get(3)?,
                    idx: r.get(4)?,
                    outcome: r.get(5)?,
                    reason: r.get(6)?,
                    detail: r.get(7)?,
                })
            })
            .expect("query");
        rows.collect::<Result<_, _>>().expect("rows")
    }

    /// Waits until an audit row satisfies `pred` (handshake refusals are written
    /// after the client has already seen the failure) and returns it.
    pub fn wait_audit(&self, what: &str, pred: impl Fn(&Audit) -> bool) -> Audit {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(a) = self.audit().into_iter().find(|a| pred(a)) {
                return a;
            }
            assert!(
                Instant::now() < deadline,
                "no audit row for {what}; rows: {:#?}",
                self.audit()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Flips the last byte of the sealed blob stored for `secret_id` (hex), as a disk
    /// fault or a tampering would.
    pub fn corrupt_blob(&self, secret_id: &str) {
        let id = hex::decode(secret_id).expect("hex secret id");
        let db = self.db();
        let mut blob: Vec<u8> = db
            .query_row("SELECT blob FROM shards WHERE secret_id = ?1", [&id], |r| {
                r.get(0)
            })
            .expect("stored blob");
        let last = blob.len() - 1;
        blob[last] ^= 0x01;
        let n = db
            .execute(
                "UPDATE shards SET blob = ?1 WHERE secret_id = ?2",
                rusqlite::params![blob, id],
            )
            .expect("update");
        assert_eq!(n, 1);
    }

    /// `custodian audit verify`.
    pub fn audit_verify(&mut self) -> Output {
        self.service
            .run(&["audit", "verify"])
            .expect("audit verify")
    }

    /// Every needle of this custodian: the registered secrets, its token's PINs, its own
    /// key and every key of its trust domain's standard identities.
    pub fn all_needles(&self) -> Vec<Needle> {
        let mut v = self.needles.lock().expect("needles").clone();
        v.extend(needles_for_pem(
            "custodian server key",
            self.identity.key_pem.as_str(),
        ));
        for (what, key) in self.pki.keys() {
            v.extend(needles_for_pem(what, key.as_str()));
        }
        v.extend(self.device.needles());
        v
    }

    /// Scans every log for every needle; returns `file: what` for each hit.
    pub fn scan_logs(&self) -> Vec<String> {
        let needles = self.all_needles();
        let logs = self.every_log();
        // One pass over all logs (each file framed by its name), so that the needle
        // index is built once; the files are named only when something was found.
        let mut all = String::new();
        for (path, text) in &logs {
            all.push_str(&format!("\n=== {}\n", path.display()));
            all.push_str(text);
        }
        if scan(&all, &needles).is_empty() {
            return Vec::new();
        }
        let mut named = Vec::new();
        for (path, text) in &logs {
            for what in scan(text, &needles) {
                named.push(format!(
                    "{}: {what}",
                    path.file_name().unwrap_or_default().to_string_lossy()
                ));
            }
        }
        named
    }

    /// The logs of its own runs and of every [`Custodian::serve_another`] process.
    fn every_log(&self) -> Vec<(PathBuf, String)> {
        let mut logs = self.service.logs();
        let dirs = std::fs::read_dir(self.dir.join("logs"))
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.path())
                    .filter(|p| p.is_dir())
                    .collect()
            })
            .unwrap_or_else(|_| Vec::new());
        for dir in dirs {
            let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
                .map(|rd| rd.flatten().map(|e| e.path()).collect())
                .unwrap_or_default();
            files.sort();
            for f in files {
                let text =
                    String::from_utf8_lossy(&std::fs::read(&f).unwrap_or_default()).into_owned();
                logs.push((f, text));
            }
        }
        logs
    }

    /// Kills the process and scans the logs now; panics on a leak.
    pub fn finish(mut self) {
        self.service.kill9();
        self.check_logs();
    }

    fn check_logs(&mut self) {
        self.scanned = true;
        let hits = self.scan_logs();
        assert!(
            hits.is_empty(),
            "secret material in the logs of custodian {}: {hits:#?}",
            self.name
        );
    }
}

impl Deref for Custodian {
    type Target = Service;
    fn deref(&self) -> &Service {
        &self.service
    }
}

impl DerefMut for Custodian {
    fn deref_mut(&mut self) -> &mut Service {
        &mut self.service
    }
}

impl Drop for Custodian {
    fn drop(&mut self) {
        self.service.kill9();
        if !self.scanned && !std::thread::panicking() {
            self.check_logs();
        }
    }
}

/// The shipped TPM profile with the swtpm's TCTI (and `parameter_encryption` as given).
fn tpm_profile(tcti: &str, parameter_encryption: bool) -> Result<String, String> {
    let shipped =
        std::fs::read_to_string(TPM_PROFILE).map_err(|e| format!("{TPM_PROFILE}: {e}"))?;
    let text: String = shipped
        .lines()
        .map(|l| {
            if l.trim_start().starts_with("tcti =") {
                format!("tcti = \"{tcti}\"")
            } else if l.trim_start().starts_with("parameter_encryption =") {
                format!("parameter_encryption = {parameter_encryption}")
            } else {
                l.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    if !text.contains(tcti) {
        return Err(format!("{TPM_PROFILE} has no tcti line"));
    }
    Ok(text)
}

fn config_text(name: &str, pki: &Pki, tls: &TlsFiles, profile: &Path, opts: &Options) -> String {
    format!(
        r#"# written by the test harness
name = "{name}"
trust_domain = "{td}"
# Both addresses are given to every run in CUSTODIAN_LISTEN and CUSTODIAN_HEALTH_LISTEN.
listen = "127.0.0.1:1"
health_listen = "127.0.0.1:2"
database = "custodian.db"
profile = "{profile}"

[tls]
ca = "{ca}"
cert = "{cert}"
key = "{key}"

[limits]
max_body_bytes = {max_body}
release_per_second = {rps:?}
release_burst = {burst:?}

[log]
format = "{format}"
level = "{level}"
"#,
        td = pki.td,
        profile = profile.display(),
        ca = tls.ca.display(),
        cert = tls.cert.display(),
        key = tls.key.display(),
        max_body = opts.max_body_bytes,
        rps = opts.release_per_second,
        burst = opts.release_burst,
        format = opts.log_format,
        level = opts.log_level,
    )
}
