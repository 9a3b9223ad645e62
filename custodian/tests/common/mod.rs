//! Harness for the custodian integration tests: a private PKI, a private device
//! (a standalone SoftHSM2 token or a private swtpm), and the real `custodian` binary
//! as a child process on free loopback ports, over real mutual TLS.
//!
//! Every [`Custodian`] owns its temporary directory (configuration, database, PKI
//! files, logs), its device and its child process; dropping it kills the child,
//! stops the device and removes the files. Before that, the drop scans every log
//! the child wrote (stdout and stderr of every run, at debug level or finer) for
//! the secrets the test handed it: envelopes, salts and shares (hex, base64 at
//! every alignment, `Debug` byte lists), the token PINs and the private keys, and
//! fails the test when one shows up. Tests run on parallel threads; nothing here is
//! shared between them.
#![allow(dead_code)] // each test binary uses a different part of the harness

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use certs::{Ca, Name, PrivateKeyPem, Role, SpiffeId, TrustDomain};
use hsm::testing::softhsm::SoftHsm;
use hsm::testing::swtpm::Swtpm;
use mtls::Client;
use rustls::ClientConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use shard::rand::rngs::{StdRng, SysRng};
use shard::rand::{Rng, SeedableRng, TryRng};
use shard::{SecretId, ShardEnvelope, Threshold};

/// The custodian binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_custodian");
/// The shipped SoftHSM2 profile (token "custodian", PIN in `SHARD_HSM_PIN`).
pub const SOFTHSM_PROFILE: &str =
    concat!(env!("CARGO_MANIFEST_DIR"), "/../hsm-profiles/softhsm2.toml");
/// The shipped TPM 2.0 profile (its `tcti` line is replaced by the swtpm's).
pub const TPM_PROFILE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../hsm-profiles/tpm2.toml");
/// This custodian's name in every test.
pub const NAME: &str = "c1";

/// How long a child gets to answer its health port after start.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------
// PKI

/// A certificate and its key, as PEM.
pub struct Identity {
    /// The SPIFFE id the certificate names.
    pub id: SpiffeId,
    /// Certificate PEM.
    pub cert_pem: String,
    /// Key PEM (redacted in Debug).
    pub key_pem: PrivateKeyPem,
}

/// The trust domain's CA and the identities the tests use.
pub struct Pki {
    /// The trust domain.
    pub td: TrustDomain,
    /// The CA (issues more on demand).
    pub ca: Ca,
    /// The custodian's server certificate (IP SAN 127.0.0.1).
    pub server: Identity,
    /// `enroller/main`.
    pub enroller: Identity,
    /// `admin/ops`.
    pub admin: Identity,
    /// `user/alice`.
    pub alice: Identity,
    /// `user/bob`.
    pub bob: Identity,
}

const DAY: Duration = Duration::from_secs(24 * 3600);

impl Pki {
    /// A new CA for `td` and the standard identities.
    pub fn new(td: &str) -> Pki {
        let td = TrustDomain::new(td).expect("trust domain");
        let ca = Ca::init(&td).expect("CA");
        let server = issue(
            &ca,
            Role::Custodian,
            NAME,
            &["localhost".into()],
            &["127.0.0.1".parse().expect("ip")],
            DAY,
        );
        let enroller = issue(&ca, Role::Enroller, "main", &[], &[], DAY);
        let admin = issue(&ca, Role::Admin, "ops", &[], &[], DAY);
        let alice = issue(&ca, Role::User, "alice", &[], &[], DAY);
        let bob = issue(&ca, Role::User, "bob", &[], &[], DAY);
        Pki {
            td,
            ca,
            server,
            enroller,
            admin,
            alice,
            bob,
        }
    }

    /// Issues another client identity.
    pub fn issue(&self, role: Role, name: &str, validity: Duration) -> Identity {
        issue(&self.ca, role, name, &[], &[], validity)
    }

    /// The CA certificate PEM.
    pub fn ca_pem(&self) -> &str {
        self.ca.cert_pem()
    }

    /// A mutual-TLS client configuration presenting `who`.
    pub fn client_tls(&self, who: &Identity) -> Arc<ClientConfig> {
        Arc::new(
            certs::tls::client_config(
                self.ca_pem().as_bytes(),
                who.cert_pem.as_bytes(),
                who.key_pem.as_bytes(),
            )
            .expect("client config"),
        )
    }

    /// A TLS 1.3 client configuration that trusts this CA but presents no certificate.
    pub fn anonymous_tls(&self) -> Arc<ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        for der in CertificateDer::pem_slice_iter(self.ca_pem().as_bytes()) {
            roots.add(der.expect("CA PEM")).expect("root");
        }
        Arc::new(
            ClientConfig::builder_with_provider(certs::tls::crypto_provider())
                .with_protocol_versions(certs::tls::PROTOCOL_VERSIONS)
                .expect("TLS 1.3")
                .with_root_certificates(roots)
                .with_no_client_auth(),
        )
    }

    /// Every private key this PKI made (for the log scan).
    pub fn keys(&self) -> Vec<(&'static str, &PrivateKeyPem)> {
        vec![
            ("custodian server key", &self.server.key_pem),
            ("enroller key", &self.enroller.key_pem),
            ("admin key", &self.admin.key_pem),
            ("alice key", &self.alice.key_pem),
            ("bob key", &self.bob.key_pem),
        ]
    }
}

fn issue(
    ca: &Ca,
    role: Role,
    name: &str,
    dns: &[String],
    ip: &[std::net::IpAddr],
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

// ---------------------------------------------------------------------------
// Secrets and the log scan

/// One string that must never appear in a log.
#[derive(Clone, Debug)]
pub struct Needle {
    /// What it is (printed when found; never the value itself).
    pub what: String,
    /// The text searched for.
    pub text: String,
    /// Compare case-insensitively (hex).
    pub any_case: bool,
}

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;
const B64URL: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// Needles for secret bytes: hex (any case); base64 in the standard and URL-safe
/// alphabets at each of the three alignments the bytes can have inside a longer
/// base64 text (padding and the partial group at the end left off); and Rust's
/// `Debug` list of (the first 16 of) the bytes, e.g. `[31, 7, 200, ...]`.
pub fn needles_for_bytes(what: &str, bytes: &[u8]) -> Vec<Needle> {
    assert!(
        bytes.len() >= 12,
        "too short to scan for without false alarms"
    );
    let mut v = vec![Needle {
        what: format!("{what} (hex)"),
        text: hex::encode(bytes),
        any_case: true,
    }];
    for off in 0..3 {
        let rest = &bytes[off..];
        // Whole 3-byte groups only: the group that straddles the start or the end
        // depends on bytes around the secret, the others are the same in any base64
        // text whose groups start `off` bytes into the secret.
        let whole = &rest[..rest.len() / 3 * 3];
        if whole.len() < 9 {
            continue;
        }
        v.push(Needle {
            what: format!("{what} (base64, offset {off})"),
            text: B64.encode(whole),
            any_case: false,
        });
        v.push(Needle {
            what: format!("{what} (base64url, offset {off})"),
            text: B64URL.encode(whole),
            any_case: false,
        });
    }
    let head = &bytes[..bytes.len().min(16)];
    let list = format!("{head:?}");
    v.push(Needle {
        what: format!("{what} (Debug byte list)"),
        text: list
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned(),
        any_case: false,
    });
    v
}

/// Needles for a secret string (a PIN): the text in any case.
pub fn needles_for_text(what: &str, text: &str) -> Vec<Needle> {
    let text = text.trim();
    assert!(text.len() >= PREFIX, "too short to scan for");
    vec![Needle {
        what: what.to_owned(),
        text: text.to_owned(),
        any_case: true,
    }]
}

/// Needles for a PEM private key: every full body line, the joined body, and the
/// DER bytes (see [`needles_for_bytes`]).
pub fn needles_for_pem(what: &str, pem: &str) -> Vec<Needle> {
    let body: Vec<&str> = pem
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("-----"))
        .collect();
    let mut v: Vec<Needle> = body
        .iter()
        .filter(|l| l.len() >= 40)
        .map(|l| Needle {
            what: format!("{what} (PEM line)"),
            text: (*l).to_owned(),
            any_case: false,
        })
        .collect();
    let joined = body.concat();
    v.push(Needle {
        what: format!("{what} (PEM body)"),
        text: joined.clone(),
        any_case: false,
    });
    let der = B64.decode(joined.as_bytes()).expect("PEM body is base64");
    // The DER starts with fixed PKCS#8 structure; scan for the part after it.
    v.extend(needles_for_bytes(
        &format!("{what} (DER)"),
        &der[der.len().min(36)..],
    ));
    v
}

/// Every needle is at least this long, so that the scan can index them by prefix.
const PREFIX: usize = 12;

/// The needles found in `haystack` (their descriptions, never their values).
///
/// Needles are indexed by their first [`PREFIX`] characters; every window of the
/// (lower-cased, for the any-case needles) haystack is looked up, and a hit is then
/// compared in full. Linear in the log size, whatever the number of needles.
pub fn scan(haystack: &str, needles: &[Needle]) -> Vec<String> {
    let mut found = std::collections::BTreeSet::new();
    for any_case in [false, true] {
        let mut index: std::collections::HashMap<Vec<u8>, Vec<(Vec<u8>, &str)>> =
            std::collections::HashMap::new();
        for n in needles.iter().filter(|n| n.any_case == any_case) {
            let text = if any_case {
                n.text.to_ascii_lowercase()
            } else {
                n.text.clone()
            };
            assert!(text.len() >= PREFIX, "needle {} is too short", n.what);
            index
                .entry(text.as_bytes()[..PREFIX].to_vec())
                .or_default()
                .push((text.into_bytes(), &n.what));
        }
        if index.is_empty() {
            continue;
        }
        let hay = if any_case {
            haystack.to_ascii_lowercase().into_bytes()
        } else {
            haystack.as_bytes().to_vec()
        };
        for i in 0..hay.len().saturating_sub(PREFIX - 1) {
            if let Some(candidates) = index.get(&hay[i..i + PREFIX]) {
                for (text, what) in candidates {
                    if hay[i..].starts_with(text) {
                        found.insert((*what).to_owned());
                    }
                }
            }
        }
    }
    found.into_iter().collect()
}

/// Whether `needle` occurs in `haystack` as raw bytes.
pub fn contains_bytes(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

/// Needles for an envelope: the whole encoding, its salt and its share.
pub fn needles_for_envelope(env: &ShardEnvelope) -> Vec<Needle> {
    let mut v = needles_for_bytes("envelope", &env.encode());
    v.extend(needles_for_bytes("salt", &env.salt.0));
    if env.share.len() >= 12 {
        v.extend(needles_for_bytes("share", env.share.expose()));
    }
    v
}

// ---------------------------------------------------------------------------
// Envelopes

/// A random 32-byte seed from the operating system.
pub fn os_seed() -> [u8; 32] {
    let mut seed = [0u8; 32];
    SysRng.try_fill_bytes(&mut seed).expect("OS random");
    seed
}

/// A fresh time-ordered secret id.
pub fn new_secret_id() -> SecretId {
    let millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64;
    let mut random = [0u8; 10];
    SysRng.try_fill_bytes(&mut random).expect("OS random");
    SecretId::new_v7(millis, random)
}

/// Deals a random secret of `secret_len` bytes 3-of-4 under a new id and returns the
/// envelope of shard `index` (1..=4).
pub fn dealt_envelope(secret_len: usize, epoch: u32, index: u8) -> ShardEnvelope {
    let mut rng = StdRng::from_seed(os_seed());
    let mut secret = vec![0u8; secret_len];
    rng.fill_bytes(&mut secret);
    let secret = shard::Secret::new(secret).expect("secret");
    let mut envs = shard::deal(
        &secret,
        Threshold::new(3, 4).expect("threshold"),
        new_secret_id(),
        epoch,
        &mut rng,
    );
    envs.swap_remove(usize::from(index) - 1)
}

// ---------------------------------------------------------------------------
// The custodian process

/// Which device the custodian seals with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// A standalone SoftHSM2 token, through the shipped `hsm-profiles/softhsm2.toml`.
    SoftHsm,
    /// A private swtpm, through the shipped `hsm-profiles/tpm2.toml`.
    Tpm,
}

/// How to run the custodian.
#[derive(Clone, Debug)]
pub struct Options {
    /// The device.
    pub backend: Backend,
    /// `log.level`.
    pub log_level: String,
    /// `log.format`.
    pub log_format: String,
    /// `limits.release_per_second` (and burst).
    pub release_per_second: f64,
    /// `limits.release_burst`.
    pub release_burst: f64,
    /// `limits.max_body_bytes`.
    pub max_body_bytes: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            backend: Backend::SoftHsm,
            log_level: "debug".into(),
            log_format: "text".into(),
            release_per_second: 100_000.0,
            release_burst: 100_000.0,
            max_body_bytes: 128 * 1024,
        }
    }
}

enum Device {
    SoftHsm { token: SoftHsm, pin: String },
    Tpm(Swtpm),
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
}

/// Output of a one-shot command (`init`, `audit verify`).
#[derive(Debug)]
pub struct Output {
    /// Exit status.
    pub status: ExitStatus,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

/// A real custodian process with its own directory, PKI and device.
pub struct Custodian {
    /// The PKI.
    pub pki: Pki,
    /// The options it runs with.
    pub opts: Options,
    dir: tempfile::TempDir,
    device: Device,
    config: PathBuf,
    child: Option<Child>,
    /// The mutual-TLS address of the current run.
    pub addr: SocketAddr,
    /// The plain health address of the current run.
    pub health: SocketAddr,
    runs: u32,
    needles: Mutex<Vec<Needle>>,
    scanned: bool,
}

/// A free loopback port (the kernel's choice; the child binds it right after).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

impl Custodian {
    /// Starts a custodian with the default options on `backend`.
    pub fn start(backend: Backend) -> Custodian {
        Custodian::start_with(Options {
            backend,
            ..Options::default()
        })
    }

    /// Creates everything, runs `custodian init`, then `custodian serve`, and waits
    /// until it answers on its health port.
    pub fn start_with(opts: Options) -> Custodian {
        let dir = tempfile::Builder::new()
            .prefix("custodian-it-")
            .tempdir()
            .expect("temp dir");
        let pki = Pki::new("example.test");
        let pki_dir = dir.path().join("pki");
        std::fs::create_dir(&pki_dir).expect("pki dir");
        std::fs::write(pki_dir.join("ca.pem"), pki.ca_pem()).expect("write");
        std::fs::write(pki_dir.join("custodian.pem"), &pki.server.cert_pem).expect("write");
        certs::write_new_private(
            &pki_dir.join("custodian.key"),
            pki.server.key_pem.as_bytes(),
        )
        .expect("write key");

        let (device, profile) = match opts.backend {
            Backend::SoftHsm => {
                // The shipped profile names token "custodian"; each test has its own
                // SoftHSM directory, so the label is free.
                let token = SoftHsm::start_standalone("custodian").expect("SoftHSM token");
                let pin = std::fs::read_to_string(token.pin_file()).expect("PIN file");
                (
                    Device::SoftHsm {
                        token,
                        pin: pin.trim().to_owned(),
                    },
                    PathBuf::from(SOFTHSM_PROFILE),
                )
            }
            Backend::Tpm => {
                let tpm = Swtpm::start().expect("swtpm");
                let shipped = std::fs::read_to_string(TPM_PROFILE).expect("tpm profile");
                let text: String = shipped
                    .lines()
                    .map(|l| {
                        if l.trim_start().starts_with("tcti =") {
                            format!("tcti = \"{}\"", tpm.tcti())
                        } else {
                            l.to_owned()
                        }
                    })
                    .collect::<Vec<_>>()
                    .join("\n");
                assert!(text.contains(&tpm.tcti()), "profile names the swtpm");
                let path = dir.path().join("tpm2.toml");
                std::fs::write(&path, text).expect("write profile");
                (Device::Tpm(tpm), path)
            }
        };

        let config = dir.path().join("custodian.toml");
        let text = format!(
            r#"# written by the custodian integration tests
name = "{NAME}"
trust_domain = "{td}"
# Both addresses are replaced for every run by CUSTODIAN_LISTEN and
# CUSTODIAN_HEALTH_LISTEN (fresh free ports).
listen = "127.0.0.1:1"
health_listen = "127.0.0.1:2"
database = "custodian.db"
profile = "{profile}"

[tls]
ca = "pki/ca.pem"
cert = "pki/custodian.pem"
key = "pki/custodian.key"

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
            max_body = opts.max_body_bytes,
            rps = opts.release_per_second,
            burst = opts.release_burst,
            format = opts.log_format,
            level = opts.log_level,
        );
        std::fs::write(&config, text).expect("write config");

        let mut c = Custodian {
            pki,
            opts,
            dir,
            device,
            config,
            child: None,
            addr: "127.0.0.1:1".parse().expect("addr"),
            health: "127.0.0.1:2".parse().expect("addr"),
            runs: 0,
            needles: Mutex::new(Vec::new()),
            scanned: false,
        };
        let init = c.run(&["init"]);
        assert!(
            init.status.success(),
            "custodian init failed: {}\n{}",
            init.stdout,
            init.stderr
        );
        c.spawn();
        c
    }

    /// The directory holding configuration, database, PKI and logs.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The SQLite database.
    pub fn db_path(&self) -> PathBuf {
        self.dir.path().join("custodian.db")
    }

    /// The custodian's own SPIFFE id.
    pub fn spiffe_id(&self) -> SpiffeId {
        self.pki.server.id.clone()
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.arg("--config").arg(&self.config);
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("CUSTODIAN_") {
                cmd.env_remove(&k);
            }
        }
        cmd.env_remove("SHARD_HSM_PIN")
            .env_remove("SOFTHSM2_CONF")
            .env_remove("TPM2TOOLS_TCTI")
            .env("CUSTODIAN_LISTEN", self.addr.to_string())
            .env("CUSTODIAN_HEALTH_LISTEN", self.health.to_string())
            .stdin(Stdio::null());
        match &self.device {
            Device::SoftHsm { token, pin } => {
                cmd.env("SOFTHSM2_CONF", token.conf_path())
                    .env("SHARD_HSM_PIN", pin);
            }
            Device::Tpm(_) => {}
        }
        cmd
    }

    fn log_paths(&self, label: &str) -> (PathBuf, PathBuf) {
        let logs = self.dir.path().join("logs");
        std::fs::create_dir_all(&logs).expect("logs dir");
        (
            logs.join(format!("{label}.stdout")),
            logs.join(format!("{label}.stderr")),
        )
    }

    /// Runs a one-shot subcommand (e.g. `audit verify`) to completion; its output is
    /// kept with the logs (and scanned).
    pub fn run(&mut self, args: &[&str]) -> Output {
        self.run_with_env(args, &[])
    }

    /// Starts `custodian serve` on fresh ports and waits for its health port.
    pub fn spawn(&mut self) {
        assert!(self.child.is_none(), "already running");
        let mut last = String::new();
        for _ in 0..5 {
            self.addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
            self.health = SocketAddr::from(([127, 0, 0, 1], free_port()));
            self.runs += 1;
            let (out_path, err_path) = self.log_paths(&format!("{:02}-serve", self.runs));
            let child = self
                .command()
                .arg("serve")
                .stdout(std::fs::File::create(&out_path).expect("log file"))
                .stderr(std::fs::File::create(&err_path).expect("log file"))
                .spawn()
                .expect("spawn custodian");
            self.child = Some(child);
            let deadline = Instant::now() + READY_TIMEOUT;
            loop {
                if let Some(status) = self.try_wait() {
                    self.child = None;
                    last = std::fs::read_to_string(&err_path).unwrap_or_default();
                    if last.contains("cannot listen") {
                        break; // a port was taken meanwhile: try others
                    }
                    panic!("custodian serve exited at start ({status}):\n{last}");
                }
                if matches!(http_get(self.health, "/health"), Ok((200, _))) {
                    return;
                }
                assert!(
                    Instant::now() < deadline,
                    "custodian did not become ready:\n{}",
                    std::fs::read_to_string(&err_path).unwrap_or_default()
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        panic!("custodian could not bind free ports:\n{last}");
    }

    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Whether the child is still running.
    pub fn is_running(&mut self) -> bool {
        self.child.is_some() && self.try_wait().is_none()
    }

    fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().expect("try_wait"))
    }

    /// `kill -9` the server and reap it.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sends SIGTERM (does not wait).
    pub fn sigterm(&self) {
        let ok = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid().to_string())
            .status()
            .expect("kill")
            .success();
        assert!(ok, "kill -TERM failed");
    }

    /// Waits up to `timeout` for the server to exit; `None` when it is still running.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.try_wait() {
                self.child = None;
                return Some(s);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGTERM, then waits for a clean exit.
    pub fn stop(&mut self) {
        self.sigterm();
        let status = self
            .wait_exit(Duration::from_secs(30))
            .expect("custodian did not stop within 30 s of SIGTERM");
        assert!(status.success(), "custodian exited with {status}");
    }

    /// A client presenting `who`, verifying that it reached this custodian.
    pub fn client(&self, who: &Identity) -> Client {
        self.client_with(self.pki.client_tls(who))
    }

    /// A client with any TLS configuration.
    pub fn client_with(&self, tls: Arc<ClientConfig>) -> Client {
        Client::new(self.addr, "127.0.0.1", tls)
            .expect("client")
            .expect_identity(self.spiffe_id())
            .with_deadline(Duration::from_secs(20))
    }

    /// Registers secret bytes the logs must never show.
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
                "SELECT seq, event, peer, secret_id, idx, outcome, reason FROM audit ORDER BY seq",
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

    /// Runs a one-shot subcommand with extra environment (e.g. a bad override);
    /// its output is kept with the logs.
    pub fn run_with_env(&mut self, args: &[&str], env: &[(&str, &str)]) -> Output {
        self.runs += 1;
        let (out_path, err_path) = self.log_paths(&format!("{:02}-{}", self.runs, args.join("-")));
        let mut cmd = self.command();
        cmd.args(args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().expect("run custodian");
        std::fs::write(&out_path, &out.stdout).expect("keep stdout");
        std::fs::write(&err_path, &out.stderr).expect("keep stderr");
        Output {
            status: out.status,
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// `custodian audit verify`.
    pub fn audit_verify(&mut self) -> Output {
        self.run(&["audit", "verify"])
    }

    /// Every needle of this custodian: the registered secrets, its PINs, every key.
    pub fn all_needles(&self) -> Vec<Needle> {
        let mut v = self.needles.lock().expect("needles").clone();
        for (what, key) in self.pki.keys() {
            v.extend(needles_for_pem(what, key.as_str()));
        }
        if let Device::SoftHsm { token, pin } = &self.device {
            v.extend(needles_for_text("token user PIN", pin));
            if let Some(so) = token
                .pin_file()
                .parent()
                .map(|d| d.join("so.pin"))
                .and_then(|p| std::fs::read_to_string(p).ok())
            {
                v.extend(needles_for_text("token SO PIN", &so));
            }
        }
        v
    }

    /// Every log this custodian's runs wrote so far, concatenated, with file names.
    pub fn logs(&self) -> Vec<(PathBuf, String)> {
        let mut v = Vec::new();
        if let Ok(rd) = std::fs::read_dir(self.dir.path().join("logs")) {
            let mut paths: Vec<PathBuf> = rd.flatten().map(|e| e.path()).collect();
            paths.sort();
            for p in paths {
                let text =
                    String::from_utf8_lossy(&std::fs::read(&p).expect("read log")).into_owned();
                v.push((p, text));
            }
        }
        v
    }

    /// Scans every log for every needle; returns `file: what` for each hit.
    pub fn scan_logs(&self) -> Vec<String> {
        let needles = self.all_needles();
        // One pass over all logs (each file framed by its name), so the needle index
        // is built once.
        let mut all = String::new();
        for (path, text) in self.logs() {
            let _ = writeln!(all, "\n=== {}", path.display());
            all.push_str(&text);
        }
        let hits = scan(&all, &needles);
        if hits.is_empty() {
            return hits;
        }
        // Name the files for the report.
        let mut named = Vec::new();
        for (path, text) in self.logs() {
            for what in scan(&text, &needles) {
                named.push(format!(
                    "{}: {what}",
                    path.file_name().unwrap_or_default().to_string_lossy()
                ));
            }
        }
        named
    }

    /// Stops the child (SIGKILL) and scans the logs now; panics on a leak.
    pub fn finish(mut self) {
        self.kill9();
        self.check_logs();
    }

    fn check_logs(&mut self) {
        self.scanned = true;
        let hits = self.scan_logs();
        assert!(
            hits.is_empty(),
            "secret material in the custodian's logs: {hits:#?}"
        );
    }
}

impl Drop for Custodian {
    fn drop(&mut self) {
        self.kill9();
        if !self.scanned && !std::thread::panicking() {
            self.check_logs();
        }
    }
}

// ---------------------------------------------------------------------------
// Small helpers

/// A plain HTTP/1.1 GET (for the loopback health port): status and body.
pub fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    parse_http(&raw).ok_or_else(|| std::io::Error::other("not an HTTP answer"))
}

/// Status and body of a raw HTTP/1.1 answer (Content-Length or close-delimited).
pub fn parse_http(raw: &[u8]) -> Option<(u16, String)> {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, body.to_owned()))
}

/// Parses a JSON error body.
pub fn error_body(bytes: &[u8]) -> wire::Refusal {
    serde_json::from_slice(bytes).unwrap_or_else(|e| {
        panic!(
            "not a JSON error body ({e}): {:?}",
            String::from_utf8_lossy(bytes)
        )
    })
}

/// Asserts a client error is an HTTP refusal with this status and reason.
pub fn assert_refused<T>(r: Result<T, mtls::Error>, status: u16, reason: &str) {
    match r {
        Err(mtls::Error::Refused {
            status: s, body, ..
        }) => {
            assert_eq!(
                (s.as_u16(), body.reason.as_str()),
                (status, reason),
                "refusal body {body:?}"
            );
        }
        Err(e) => panic!("expected {status} {reason}, got error {e}"),
        Ok(_) => panic!("expected {status} {reason}, got success"),
    }
}

/// Hex of a secret id as the API prints it.
pub fn sid(env: &ShardEnvelope) -> String {
    env.secret_id.to_string()
}

/// Text describing needles, for messages.
pub fn describe(hits: &[String]) -> String {
    let mut s = String::new();
    for h in hits {
        let _ = writeln!(s, "  {h}");
    }
    s
}

/// The value of one Prometheus sample (`name{labels}`), 0 when absent.
pub fn metric(text: &str, sample: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(sample).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0.0)
}
