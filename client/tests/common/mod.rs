//! Helpers for driving the real `shardctl` binary against real custodians and a real enroller
//! started by the e2e harness. Each user gets a home of their own: XDG directories, the
//! configuration file at the XDG path, a password file and an invitation file.

#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use e2e::{Backend, Bins, Cluster};
use serde_json::Value;

/// A password the enroller's policy accepts.
pub const PASSWORD: &str = "correct horse battery staple";

/// The `shardctl` under test.
pub fn shardctl() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_shardctl"))
}

/// A cluster with an enroller and the text of a configuration file for it.
pub struct World {
    /// The harness's cluster.
    pub cluster: Cluster,
    /// A directory for users' homes and scratch files.
    pub dir: tempfile::TempDir,
    /// The configuration file's text (absolute paths).
    pub config: String,
}

/// Four custodians (two SoftHSM2, two swtpm) and an enroller with threshold 3.
pub fn world() -> World {
    world_with(&[
        Backend::SoftHsm,
        Backend::SoftHsm,
        Backend::Tpm,
        Backend::Tpm,
    ])
}

/// Custodians on `backends` and an enroller with threshold 3.
pub fn world_with(backends: &[Backend]) -> World {
    let bins = Bins::locate().expect("binaries");
    let mut cluster = Cluster::start(bins, backends, &|_| {}).expect("cluster");
    cluster.start_enroller(3, &|_| {}).expect("enroller");
    let (admin_cert, admin_key) = cluster.issue("admin", "ops").expect("admin certificate");
    let enroller = cluster.enroller.as_ref().expect("enroller node");
    let mut config = format!(
        "trust_domain = \"{}\"\nca = \"{}\"\nmanifest_key = \"{}\"\n\n[enroller]\naddress = \"{}\"\n\n[admin]\ncert = \"{}\"\nkey = \"{}\"\n",
        e2e::TRUST_DOMAIN,
        cluster.pki.join("ca.pem").display(),
        cluster.pki.join("enroller-manifest.pub.pem").display(),
        enroller.addr,
        admin_cert.display(),
        admin_key.display(),
    );
    for n in &cluster.nodes {
        config.push_str(&format!(
            "\n[[custodians]]\nname = \"{}\"\naddress = \"{}\"\nserver_name = \"{}\"\n",
            n.name,
            n.addr,
            n.addr.ip()
        ));
    }
    World {
        cluster,
        dir: tempfile::tempdir().expect("tempdir"),
        config,
    }
}

/// One person at one machine.
pub struct User {
    /// Their name.
    pub name: String,
    /// Their home directory.
    pub home: PathBuf,
}

impl World {
    /// A home for `name` with the configuration at the XDG path, and the password file.
    pub fn user(&self, name: &str) -> User {
        let home = self.dir.path().join(name);
        let config_dir = home.join("config").join("shardctl");
        fs::create_dir_all(&config_dir).unwrap();
        fs::write(config_dir.join("config.toml"), &self.config).unwrap();
        fs::write(home.join("password"), format!("{PASSWORD}\n")).unwrap();
        User {
            name: name.to_owned(),
            home,
        }
    }

    /// A user invited by the admin, registered (without TOTP) and logged in.
    pub fn logged_in(&self, name: &str) -> User {
        let user = self.user(name);
        user.invite_and_register(false);
        user.ok(&["login", name]);
        user
    }
}

impl User {
    /// `shardctl` with this user's environment: nothing inherited that could change it.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(shardctl());
        c.args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", &self.home)
            .env("XDG_CONFIG_HOME", self.home.join("config"))
            .env("XDG_STATE_HOME", self.home.join("state"))
            .env("SHARDCTL_PASSWORD_FILE", self.home.join("password"))
            .env("SHARDCTL_INVITATION_FILE", self.home.join("invitation"))
            .stdin(Stdio::null());
        c
    }

    /// Runs `shardctl ARGS`.
    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().expect("run shardctl")
    }

    /// Runs `shardctl ARGS`, which must succeed; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "shardctl {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8(out.stdout).expect("utf-8 stdout")
    }

    /// Runs `shardctl --json ARGS`, which must succeed; returns the parsed document.
    pub fn json(&self, args: &[&str]) -> Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let text = self.ok(&all);
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{args:?}: {e}: {text}"))
    }

    /// Runs `shardctl ARGS`, which must fail; returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            !out.status.success(),
            "shardctl {args:?} succeeded: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let err = String::from_utf8(out.stderr).expect("utf-8 stderr");
        assert_eq!(err.lines().count(), 1, "not one line: {err}");
        assert!(err.starts_with("shardctl: "), "{err}");
        err
    }

    /// The admin (this user's configuration names the admin certificate) invites this user,
    /// who registers with the code; returns the registration's JSON.
    pub fn invite_and_register(&self, totp: bool) -> Value {
        self.invite();
        let mut args = vec!["register", &self.name];
        if totp {
            args.push("--totp");
        }
        self.json(&args)
    }

    /// The admin invites this user; the code goes to their invitation file.
    pub fn invite(&self) {
        let inv = self.json(&["admin", "invite", &self.name]);
        let code = inv["code"].as_str().expect("code");
        fs::write(self.home.join("invitation"), code).unwrap();
    }

    /// Path of a file in this user's home.
    pub fn path(&self, name: &str) -> PathBuf {
        self.home.join(name)
    }

    /// The secret id of a new P-256 enrollment and its public key PEM.
    pub fn enroll_p256(&self) -> (String, String) {
        let e = self.json(&["enroll"]);
        (
            e["secret_id"].as_str().unwrap().to_owned(),
            e["public_key"].as_str().unwrap().to_owned(),
        )
    }
}

/// Waits until `addr` accepts TCP connections (a restarted service is up).
pub fn wait_listening(addr: std::net::SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        assert!(Instant::now() < deadline, "{addr} did not come up");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Flips the last byte of the sealed blob custodian `db` holds for `secret_id`.
pub fn corrupt_blob(db: &Path, secret_id: &str) {
    let id = hex_decode(secret_id);
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.busy_timeout(Duration::from_secs(5)).unwrap();
    let mut blob: Vec<u8> = conn
        .query_row("SELECT blob FROM shards WHERE secret_id = ?1", [&id], |r| {
            r.get(0)
        })
        .unwrap();
    let last = blob.len() - 1;
    blob[last] ^= 0x01;
    let n = conn
        .execute(
            "UPDATE shards SET blob = ?1 WHERE secret_id = ?2",
            rusqlite::params![blob, id],
        )
        .unwrap();
    assert_eq!(n, 1);
}

fn hex_decode(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// RFC 4648 base32 (no padding), for the TOTP secret in an otpauth URI.
pub fn base32_decode(s: &str) -> Vec<u8> {
    e2e::base32_decode(s).expect("base32")
}

/// The RFC 6238 code (SHA-1, 6 digits, 30 s steps) of `seed` now.
pub fn totp_now(seed: &[u8]) -> String {
    use hmac::{Hmac, Mac};
    let step = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        / 30;
    let mut mac = <Hmac<sha1::Sha1> as Mac>::new_from_slice(seed).unwrap();
    mac.update(&step.to_be_bytes());
    let h = mac.finalize().into_bytes();
    let off = usize::from(h[19] & 0x0f);
    let n = u32::from_be_bytes([h[off] & 0x7f, h[off + 1], h[off + 2], h[off + 3]]);
    format!("{:06}", n % 1_000_000)
}

/// The mode bits of `path`.
pub fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}
