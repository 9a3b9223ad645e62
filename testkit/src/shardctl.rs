//! Running the real `shardctl`: with a PKI directory (the operator's `shardctl pki`), and as
//! people at their own machines against a cluster ([`World`], [`User`]). Each user gets a
//! home of their own: XDG directories, the configuration file at the XDG path, a password
//! file and an invitation file.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;

use crate::cluster::{Cluster, TRUST_DOMAIN};
use crate::device::Backend;
use crate::enroller::{custodians_toml, GOOD_PASSWORD};
use crate::Bins;

/// Runs `command` to its end; it must succeed (the panic shows its stderr and stdout).
/// Returns its stdout.
pub fn stdout_of_success(command: &mut Command) -> String {
    let out = command.output().expect("run the command");
    assert!(
        out.status.success(),
        "{command:?} failed: {}{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8(out.stdout).expect("utf-8 stdout")
}

/// The text of a `shardctl` configuration file for `cluster` (absolute paths), with the
/// admin certificate `admin/ops`.
pub fn config_text(cluster: &Cluster) -> Result<String, String> {
    let (admin_cert, admin_key) = cluster.issue("admin", "ops")?;
    let enroller = cluster
        .enroller
        .as_ref()
        .ok_or("the enroller is not started")?;
    let config = format!(
        "trust_domain = \"{TRUST_DOMAIN}\"\nca = \"{}\"\nmanifest_key = \"{}\"\n\n[enroller]\naddress = \"{}\"\n\n[admin]\ncert = \"{}\"\nkey = \"{}\"\n",
        cluster.pki.join("ca.pem").display(),
        cluster.pki.join("enroller-manifest.pub.pem").display(),
        enroller.addr,
        admin_cert.display(),
        admin_key.display(),
    );
    // shardctl knows every custodian alike: standby is the enroller's word.
    let mut peers = cluster.peers();
    for p in &mut peers {
        p.standby = false;
    }
    Ok(config + &custodians_toml(&peers))
}

/// A cluster with an enroller, and the configuration its users' `shardctl` reads.
pub struct World {
    /// The cluster.
    pub cluster: Cluster,
    /// A directory for users' homes and scratch files.
    pub dir: tempfile::TempDir,
    /// The configuration file's text.
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
    world_standby(backends, 0)
}

/// Custodians on `backends`, the last `standby` of them on standby at the enroller
/// (threshold 3).
pub fn world_standby(backends: &[Backend], standby: usize) -> World {
    let mut cluster = Cluster::start(backends, &|_| {}).unwrap_or_else(|e| panic!("cluster: {e}"));
    cluster.standby = standby;
    cluster
        .start_enroller(3, &|_| {})
        .unwrap_or_else(|e| panic!("enroller: {e}"));
    let config = config_text(&cluster).unwrap_or_else(|e| panic!("configuration: {e}"));
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
    shardctl: PathBuf,
}

impl World {
    /// A TLS client configuration presenting the PKI's certificate of `role` `name` (a
    /// service's, `enroller`/`main` or `custodian`/`c3`, or an issued one).
    pub fn tls_of(&self, role: &str, name: &str) -> std::sync::Arc<certs::rustls::ClientConfig> {
        let pki = &self.cluster.pki;
        self.cluster
            .client_tls(
                &pki.join(format!("{role}-{name}.pem")),
                &pki.join(format!("{role}-{name}.key")),
            )
            .unwrap_or_else(|e| panic!("TLS configuration of {role} {name}: {e}"))
    }

    /// One sample of custodian `i`'s plain metrics (`name{labels}`), 0 when absent.
    pub fn metric(&self, i: usize, sample: &str) -> f64 {
        let r = crate::http::get_plain(self.cluster.nodes[i].health, "/metrics")
            .unwrap_or_else(|e| panic!("metrics of {}: {e}", self.cluster.nodes[i].name));
        crate::http::metric(&r.text(), sample)
    }

    /// A home for `name` with the configuration at the XDG path, and the password file.
    pub fn user(&self, name: &str) -> User {
        let home = self.dir.path().join(name);
        let config_dir = home.join("config").join("shardctl");
        std::fs::create_dir_all(&config_dir).expect("config dir");
        std::fs::write(config_dir.join("config.toml"), &self.config).expect("config");
        std::fs::write(home.join("password"), format!("{GOOD_PASSWORD}\n")).expect("password");
        User {
            name: name.to_owned(),
            home,
            shardctl: Bins::require(self.cluster.bins.shardctl()).unwrap_or_else(|e| panic!("{e}")),
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
    /// `shardctl ARGS` with this user's environment and nothing inherited that could
    /// change it.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.shardctl);
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
        stdout_of_success(&mut self.cmd(args))
    }

    /// Runs `shardctl --json ARGS`, which must succeed; returns the parsed document.
    pub fn json(&self, args: &[&str]) -> Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let text = self.ok(&all);
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{args:?}: {e}: {text}"))
    }

    /// Runs `shardctl ARGS`, which must fail with one line starting `shardctl: `; returns
    /// stderr.
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

    /// The admin (this user's configuration names the admin certificate) invites this
    /// user, who registers with the code; returns the registration's JSON.
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
        std::fs::write(self.home.join("invitation"), code).expect("invitation file");
    }

    /// Path of a file in this user's home.
    pub fn path(&self, name: &str) -> PathBuf {
        self.home.join(name)
    }

    /// The secret id of a new P-256 enrollment and its public key PEM.
    pub fn enroll_p256(&self) -> (String, String) {
        let e = self.json(&["enroll"]);
        (
            e["secret_id"].as_str().expect("secret_id").to_owned(),
            e["public_key"].as_str().expect("public_key").to_owned(),
        )
    }
}

/// The mode bits of `path`.
pub fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .expect("metadata")
        .permissions()
        .mode()
        & 0o777
}
