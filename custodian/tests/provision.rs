//! What the container images rely on: `custodian init --create-token-so-pin-file`
//! creates a missing SoftHSM2 token and never touches an existing one, and
//! `custodian health` (the HEALTHCHECK) answers 0 only while the service is ready.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::{Backend, Custodian, BIN};

const TEMPLATE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../softhsm/softhsm2.conf.in");
const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
const USER_PIN: &str = "user-pin-4711-provision";
const SO_PIN: &str = "so-pin-0815-provision";

/// A SoftHSM2 directory with no token yet, the PIN files and a custodian configuration.
struct Fresh {
    dir: tempfile::TempDir,
}

impl Fresh {
    fn new() -> Fresh {
        let dir = tempfile::Builder::new()
            .prefix("custodian-provision-")
            .tempdir()
            .expect("temp dir");
        let root = dir.path();
        std::fs::create_dir(root.join("tokens")).expect("tokens dir");
        let conf = std::fs::read_to_string(TEMPLATE)
            .expect("template")
            .replace("@TOKENDIR@", &root.join("tokens").display().to_string());
        std::fs::write(root.join("softhsm2.conf"), conf).expect("conf");
        std::fs::write(root.join("user.pin"), format!("{USER_PIN}\n")).expect("pin");
        std::fs::write(root.join("so.pin"), format!("{SO_PIN}\n")).expect("pin");
        std::fs::write(
            root.join("profile.toml"),
            format!(
                "backend = \"pkcs11\"\n[pkcs11]\nmodule = \"{MODULE}\"\ntoken_label = \"custodian\"\npin_file = \"{}\"\nkey_label = \"shard-seal\"\nmechanism = \"aes-gcm\"\n",
                root.join("user.pin").display()
            ),
        )
        .expect("profile");
        std::fs::write(
            root.join("custodian.toml"),
            "name = \"c1\"\ntrust_domain = \"example.test\"\nlisten = \"127.0.0.1:1\"\n\
             database = \"custodian.db\"\nprofile = \"profile.toml\"\n\
             [tls]\nca = \"ca.pem\"\ncert = \"cert.pem\"\nkey = \"key.pem\"\n",
        )
        .expect("config");
        Fresh { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn custodian(&self, args: &[&str]) -> Output {
        run(self.dir.path(), args)
    }
}

fn run(dir: &Path, args: &[&str]) -> Output {
    let mut cmd = Command::new(BIN);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("CUSTODIAN_") {
            cmd.env_remove(&k);
        }
    }
    cmd.arg("--config")
        .arg(dir.join("custodian.toml"))
        .args(args)
        .env("SOFTHSM2_CONF", dir.join("softhsm2.conf"))
        .stdin(Stdio::null())
        .output()
        .expect("run custodian")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn init_creates_a_missing_token_once_and_never_reinitialises_it() {
    let f = Fresh::new();
    let so = f.path("so.pin");
    let so = so.to_str().expect("utf-8 path");

    // Without the flag a missing token is an error that names the label.
    let out = f.custodian(&["init"]);
    assert!(!out.status.success(), "init without a token succeeded");
    assert!(
        text(&out).contains("no token labelled \"custodian\""),
        "{}",
        text(&out)
    );

    let first = f.custodian(&["init", "--create-token-so-pin-file", so]);
    assert!(first.status.success(), "{}", text(&first));
    assert!(
        text(&first).contains("token \"custodian\" initialised"),
        "{}",
        text(&first)
    );
    assert!(text(&first).contains("version 1"), "{}", text(&first));

    // Again: the token exists, so it is left alone and the sealing key stays.
    let second = f.custodian(&["init", "--create-token-so-pin-file", so]);
    assert!(second.status.success(), "{}", text(&second));
    assert!(!text(&second).contains("initialised"), "{}", text(&second));
    assert!(text(&second).contains("version 1"), "{}", text(&second));

    // A wrong SO PIN cannot re-initialise it either (nothing is attempted).
    std::fs::write(f.path("other.pin"), "wrong-so-pin-123\n").expect("pin");
    let other = f.path("other.pin");
    let third = f.custodian(&[
        "init",
        "--create-token-so-pin-file",
        other.to_str().unwrap(),
    ]);
    assert!(third.status.success(), "{}", text(&third));
    assert!(text(&third).contains("version 1"), "{}", text(&third));

    for out in [&first, &second, &third] {
        let t = text(out);
        assert!(
            !t.contains(USER_PIN) && !t.contains(SO_PIN),
            "a PIN was printed: {t}"
        );
    }
}

#[test]
fn create_token_refuses_unreadable_so_pin_and_tpm_profiles_clearly() {
    let f = Fresh::new();
    let out = f.custodian(&["init", "--create-token-so-pin-file", "/nonexistent/so.pin"]);
    assert!(!out.status.success());
    assert!(text(&out).contains("/nonexistent/so.pin"), "{}", text(&out));
    assert!(!text(&out).contains(USER_PIN));

    let tpm = concat!(env!("CARGO_MANIFEST_DIR"), "/../hsm-profiles/tpm2.toml");
    let so = f.path("so.pin");
    let out = f.custodian(&[
        "init",
        "--profile",
        tpm,
        "--create-token-so-pin-file",
        so.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("PKCS#11 profiles only"),
        "{}",
        text(&out)
    );
}

#[test]
fn health_answers_zero_only_while_serving() {
    let mut c = Custodian::start(Backend::SoftHsm);
    let up = c.run(&["health"]);
    assert!(up.status.success(), "{}{}", up.stdout, up.stderr);
    assert!(up.stdout.contains("\"status\":\"ok\""), "{}", up.stdout);
    c.stop();
    let down = c.run(&["health"]);
    assert!(
        !down.status.success(),
        "health succeeded with the service stopped"
    );
    assert!(down.stderr.contains("health port"), "{}", down.stderr);

    let f = Fresh::new();
    let none = f.custodian(&["health"]);
    assert!(!none.status.success());
    assert!(
        text(&none).contains("health_listen is not configured"),
        "{}",
        text(&none)
    );
}
