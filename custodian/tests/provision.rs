//! What the container images rely on: `custodian init --create-token-so-pin-file`
//! creates a missing SoftHSM2 token and never touches an existing one, and
//! `custodian health` (the HEALTHCHECK) answers 0 only while the service is ready.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use testkit::custodian::Custodian;
use testkit::{Backend, Bins};

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
    let mut cmd = Command::new(Bins::locate().expect("binaries").custodian());
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

/// The device id `init` reports.
fn device_id(out: &Output) -> String {
    let t = text(out);
    let at = t.find("device id ").expect("init names the device id") + "device id ".len();
    t[at..at + 32].to_owned()
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

    // Again: the token exists, so it is left alone and the sealing keys stay.
    let second = f.custodian(&["init", "--create-token-so-pin-file", so]);
    assert!(second.status.success(), "{}", text(&second));
    assert!(!text(&second).contains("initialised"), "{}", text(&second));
    assert_eq!(device_id(&first), device_id(&second), "the key set changed");

    // A wrong SO PIN cannot re-initialise it either (nothing is attempted).
    std::fs::write(f.path("other.pin"), "wrong-so-pin-123\n").expect("pin");
    let other = f.path("other.pin");
    let third = f.custodian(&[
        "init",
        "--create-token-so-pin-file",
        other.to_str().unwrap(),
    ]);
    assert!(third.status.success(), "{}", text(&third));
    assert_eq!(device_id(&first), device_id(&third), "the key set changed");

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
    let up = c.run(&["health"]).unwrap();
    assert!(up.status.success(), "{}{}", up.stdout, up.stderr);
    assert!(up.stdout.contains("\"status\":\"ok\""), "{}", up.stdout);
    assert!(c.stop().unwrap().success());
    let down = c.run(&["health"]).unwrap();
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

#[test]
fn a_replaced_device_is_refused_while_shards_are_stored() {
    let f = Fresh::new();
    let so = f.path("so.pin");
    let so = so.to_str().expect("utf-8 path");
    let first = f.custodian(&["init", "--create-token-so-pin-file", so]);
    assert!(first.status.success(), "{}", text(&first));

    // One stored shard (its bytes do not matter here), then the token is lost.
    let db = rusqlite::Connection::open(f.path("custodian.db")).expect("database");
    db.execute(
        "INSERT INTO shards (secret_id, epoch, idx, owner, blob, digest, key_version, size, created_at)
         VALUES (x'00112233445566778899aabbccddeeff', 1, 1, 'spiffe://example.test/user/alice', x'00', x'00', 1, 1, 0)",
        [],
    )
    .expect("insert");
    std::fs::remove_dir_all(f.path("tokens")).expect("remove tokens");
    std::fs::create_dir(f.path("tokens")).expect("tokens dir");

    // init makes a new token (and key set), then refuses to bind the shards to it ...
    let again = f.custodian(&["init", "--create-token-so-pin-file", so]);
    assert!(
        !again.status.success(),
        "init accepted a new device: {}",
        text(&again)
    );
    assert!(
        text(&again).contains("holds 1 shards sealed by device"),
        "{}",
        text(&again)
    );
    assert!(
        text(&again).contains(&device_id(&first)),
        "{}",
        text(&again)
    );
    // ... and serve refuses to start on it.
    let serve = f.custodian(&["serve"]);
    assert!(!serve.status.success());
    assert!(
        text(&serve).contains("holds 1 shards sealed by device"),
        "{}",
        text(&serve)
    );

    // A database from before devices were recorded is bound only when its blobs name
    // the device (this fake blob names none).
    db.execute("DELETE FROM device", [])
        .expect("forget the binding");
    let legacy = f.custodian(&["init"]);
    assert!(
        !legacy.status.success(),
        "a legacy database was bound to a foreign device"
    );
    assert!(
        text(&legacy).contains("holds shards sealed by device"),
        "{}",
        text(&legacy)
    );

    // With no shards stored, the new device is accepted.
    db.execute("DELETE FROM shards", []).expect("delete");
    let empty = f.custodian(&["init"]);
    assert!(empty.status.success(), "{}", text(&empty));
    assert_ne!(device_id(&first), device_id(&empty));
}

#[test]
fn a_half_made_token_gets_its_user_pin() {
    let f = Fresh::new();
    // A token initialised by the SO whose user PIN was never set (an interrupted set-up).
    let out = Command::new("pkcs11-tool")
        .args([
            "--module",
            MODULE,
            "--slot-index",
            "0",
            "--init-token",
            "--label",
            "custodian",
        ])
        .args(["--so-pin", SO_PIN])
        .env("SOFTHSM2_CONF", f.path("softhsm2.conf"))
        .output()
        .expect("pkcs11-tool (OpenSC) is installed by scripts/setup.sh");
    assert!(out.status.success(), "{}", text(&out));
    let refused = f.custodian(&["init"]);
    assert!(!refused.status.success(), "init worked without a user PIN");

    let so = f.path("so.pin");
    let fixed = f.custodian(&["init", "--create-token-so-pin-file", so.to_str().unwrap()]);
    assert!(fixed.status.success(), "{}", text(&fixed));
    assert!(text(&fixed).contains("initialised"), "{}", text(&fixed));
    let again = f.custodian(&["init"]);
    assert!(again.status.success(), "{}", text(&again));
    assert_eq!(device_id(&fixed), device_id(&again));
}
