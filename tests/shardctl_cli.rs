//! The real `shardctl` binary against real custodians (SoftHSM2 and swtpm) and a real enroller:
//! the journey people make, and recovery when custodians are down, hung or lying.

use std::fs;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use p256::pkcs8::{DecodePrivateKey, DecodePublicKey};
use serde_json::Value;
use testkit::shardctl::{mode, stdout_of_success, world};
use testkit::totp;

fn public_key_matches(key_file: &std::path::Path, public_pem: &str) {
    let pem = fs::read_to_string(key_file).unwrap();
    assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"), "{pem:.40}");
    let key = p256::SecretKey::from_pkcs8_pem(&pem).unwrap();
    let public = p256::PublicKey::from_public_key_pem(public_pem).unwrap();
    assert_eq!(key.public_key(), public);
    assert_eq!(mode(key_file), 0o600);
}

fn outcome<'a>(recovery: &'a Value, name: &str) -> &'a Value {
    recovery["custodians"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("{name} not in {recovery}"))
}

#[test]
fn journey_invite_register_totp_login_enroll_recover_3_of_4() {
    let w = world();
    let alice = w.user("alice");

    // The admin invites; alice registers with a TOTP second factor.
    let reg = alice.invite_and_register(true);
    let uri = reg["totp_uri"].as_str().unwrap();
    assert!(uri.starts_with("otpauth://totp/"), "{uri}");
    let seed = uri
        .split("secret=")
        .nth(1)
        .unwrap()
        .split('&')
        .next()
        .unwrap();
    let seed = totp::base32_decode(seed).expect("base32");

    // Without a terminal or SHARDCTL_TOTP_CODE, login says how to give the code.
    let err = alice.fails(&["login", "alice"]);
    assert!(err.contains("SHARDCTL_TOTP_CODE"), "{err}");
    let code = totp::code_now(&seed);
    let text = stdout_of_success(
        alice
            .cmd(&["login", "alice"])
            .env("SHARDCTL_TOTP_CODE", &code),
    );
    assert!(
        text.starts_with("logged in as spiffe://demo.test/user/alice until "),
        "{text}"
    );
    let login_file = alice.path("config/shardctl/login/demo.test.pem");
    assert_eq!(mode(&login_file), 0o600);
    assert_eq!(mode(login_file.parent().unwrap()), 0o700);

    // Every service answers, with its identity and version.
    let status = alice.json(&["status"]);
    let services = status["services"].as_array().unwrap();
    assert_eq!(services.len(), 5);
    for s in services {
        assert_eq!(s["status"], "ok", "{s}");
        assert_eq!(s["version"], env!("CARGO_PKG_VERSION"), "{s}");
    }
    assert_eq!(services[1]["identity"], "spiffe://demo.test/custodian/c1");
    assert_eq!(status["manifest_key"], "matches the pinned key");
    assert_eq!(status["login"]["valid"], true);

    // Enroll a P-256 key (text output), then list it.
    let text = alice.ok(&["enroll"]);
    assert!(
        text.starts_with("enrolled a new P-256 key as secret "),
        "{text}"
    );
    assert!(text.contains("any 3 of 4 at c1, c2, c3, c4"), "{text}");
    let secrets = alice.json(&["secrets"]);
    let listed = &secrets.as_array().unwrap()[0];
    let id = listed["secret_id"].as_str().unwrap();
    assert!(text.contains(id));
    assert_eq!(listed["manifest_verified"], true);
    assert_eq!(listed["threshold"], 3);
    let public = listed["public_key"].as_str().unwrap();
    let table = alice.ok(&["secrets"]);
    assert!(table.contains(id) && table.contains("3/4"), "{table}");

    // Recover: the key matches the enrolled public key, and lands 0600.
    let out = alice.path("alice.key");
    let text = alice.ok(&["recover", id, "--out", out.to_str().unwrap()]);
    assert!(
        text.starts_with(&format!("recovered {id}: P-256 private key")),
        "{text}"
    );
    public_key_matches(&out, public);

    // Never over an existing file: refused, and the file is untouched.
    let before = fs::read(&out).unwrap();
    let err = alice.fails(&["recover", id, "--out", out.to_str().unwrap()]);
    assert!(err.contains("refusing to overwrite"), "{err}");
    assert_eq!(fs::read(&out).unwrap(), before);

    // --json recovery parses and names every custodian.
    let out2 = alice.path("alice2.key");
    let r = alice.json(&["recover", id, "--out", out2.to_str().unwrap()]);
    assert_eq!(r["secret_id"], id);
    assert_eq!(r["kind"], "p256");
    let verified = r["custodians"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["result"] == "verified")
        .count();
    assert_eq!(verified, 3, "{r}");
    public_key_matches(&out2, public);

    // The admin sees alice, with TOTP.
    let users = alice.json(&["admin", "users"]);
    let a = users
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["name"] == "alice")
        .unwrap();
    assert_eq!(
        (a["totp"].as_bool(), a["locked"].as_bool()),
        (Some(true), Some(false))
    );
}

#[test]
fn escrowed_file_recovers_byte_for_byte_with_or_without_the_enroller() {
    let mut w = world();
    let bob = w.logged_in("bob");
    let mut secret = vec![0u8; 10 * 1024];
    // Not a key, just bytes that are not all alike.
    let mut x: u32 = 0x9e37_79b9;
    for b in secret.iter_mut() {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        *b = x as u8;
    }
    let input = bob.path("notes.bin");
    fs::write(&input, &secret).unwrap();
    let e = bob.json(&["enroll", "--secret-file", input.to_str().unwrap()]);
    let id = e["secret_id"].as_str().unwrap().to_owned();
    assert_eq!(e["kind"], "secret");
    assert_eq!(e["public_key"], Value::Null);

    let out = bob.path("out1.bin");
    bob.ok(&["recover", &id, "--out", out.to_str().unwrap()]);
    assert_eq!(fs::read(&out).unwrap(), secret);
    assert_eq!(mode(&out), 0o600);

    // Without the cached manifest, it is fetched from the enroller (and verified).
    let cached = bob.path(&format!("state/shardctl/manifests/demo.test/{id}"));
    assert!(cached.exists());
    fs::remove_file(&cached).unwrap();
    let out = bob.path("out2.bin");
    bob.ok(&["recover", &id, "--out", out.to_str().unwrap()]);
    assert_eq!(fs::read(&out).unwrap(), secret);
    assert!(cached.exists());

    // With the enroller down, the cached manifest is enough.
    w.cluster.enroller.as_mut().unwrap().kill9();
    let out = bob.path("out3.bin");
    bob.ok(&["recover", &id, "--out", out.to_str().unwrap()]);
    assert_eq!(fs::read(&out).unwrap(), secret);

    // status names the service that is down and fails.
    let run = bob.run(&["status"]);
    assert!(!run.status.success());
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        stdout.contains("enroller main") && stdout.contains("down"),
        "{stdout}"
    );
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(stderr.contains("1 of 5 services"), "{stderr}");
}

#[test]
fn recovery_with_one_custodian_killed() {
    let mut w = world();
    let carol = w.logged_in("carol");
    let (id, public) = carol.enroll_p256();
    w.cluster.nodes[1].kill9();
    let out = carol.path("k.pem");
    let r = carol.json(&["recover", &id, "--out", out.to_str().unwrap()]);
    public_key_matches(&out, &public);
    let c2 = outcome(&r, "c2");
    assert_eq!(c2["result"], "unreachable", "{r}");
    assert!(
        c2["detail"]
            .as_str()
            .unwrap()
            .contains("connection refused"),
        "{r}"
    );
}

#[test]
fn recovery_with_one_custodian_hung_finishes_within_its_deadline() {
    let w = world();
    let dave = w.logged_in("dave");
    let (id, public) = dave.enroll_p256();
    w.cluster.nodes[2].pause().unwrap();

    // Three others answer: done long before the deadline, the hung one not waited for.
    let out = dave.path("k1.pem");
    let start = Instant::now();
    let r = dave.json(&[
        "recover",
        &id,
        "--out",
        out.to_str().unwrap(),
        "--deadline-ms",
        "2000",
    ]);
    let took = start.elapsed();
    assert!(took < Duration::from_millis(2000), "{took:?}");
    public_key_matches(&out, &public);
    assert_eq!(outcome(&r, "c3")["result"], "not_needed", "{r}");

    // Waiting for everyone: the hung custodian is named once its deadline passes, and
    // shardctl still exits right after (nothing of it lingers on the hung connection).
    let out = dave.path("k2.pem");
    let start = Instant::now();
    let r = dave.json(&[
        "recover",
        &id,
        "--out",
        out.to_str().unwrap(),
        "--deadline-ms",
        "1000",
        "--wait-all",
    ]);
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(1000) && took < Duration::from_millis(2500),
        "{took:?}"
    );
    let c3 = outcome(&r, "c3");
    assert_eq!(c3["result"], "timeout", "{r}");
    assert_eq!(c3["detail"], "did not answer within 1000 ms");
    public_key_matches(&out, &public);

    w.cluster.nodes[2].resume().unwrap();
    let out = dave.path("k3.pem");
    let r = dave.json(&["recover", &id, "--out", out.to_str().unwrap(), "--wait-all"]);
    assert_eq!(outcome(&r, "c3")["result"], "verified", "{r}");
}

#[test]
fn recovery_names_a_custodian_whose_stored_blob_is_corrupted() {
    let w = world();
    let erin = w.logged_in("erin");
    let (id, public) = erin.enroll_p256();
    w.cluster.nodes[0].corrupt_blob(&id);

    // Stopping at three verified shards, c1 is named only if its refusal came first.
    let out = erin.path("k1.pem");
    erin.ok(&["recover", &id, "--out", out.to_str().unwrap()]);
    public_key_matches(&out, &public);

    // Waiting for every answer names it always.
    let out = erin.path("k2.pem");
    let r = erin.json(&["recover", &id, "--out", out.to_str().unwrap(), "--wait-all"]);
    public_key_matches(&out, &public);
    let c1 = outcome(&r, "c1");
    assert_eq!(c1["result"], "refused", "{r}");
    assert!(
        c1["detail"]
            .as_str()
            .unwrap()
            .contains("its stored shard is damaged"),
        "{r}"
    );
}

#[test]
fn recovery_with_two_custodians_down_fails_clearly() {
    let mut w = world();
    let frank = w.logged_in("frank");
    let (id, _) = frank.enroll_p256();
    w.cluster.nodes[0].kill9();
    w.cluster.nodes[1].pause().unwrap();

    let out = frank.path("k.pem");
    let start = Instant::now();
    let err = frank.fails(&[
        "recover",
        &id,
        "--out",
        out.to_str().unwrap(),
        "--deadline-ms",
        "1500",
    ]);
    assert!(start.elapsed() < Duration::from_millis(3000));
    assert!(err.contains("2 of 3 shards verified"), "{err}");
    assert!(
        err.contains("c1: unreachable (connection refused)"),
        "{err}"
    );
    assert!(err.contains("c2: did not answer within 1500 ms"), "{err}");
    assert!(err.contains("nothing was written"), "{err}");
    assert!(!out.exists());

    // The same for scripts.
    let run = frank.run(&[
        "--json",
        "recover",
        &id,
        "--out",
        out.to_str().unwrap(),
        "--deadline-ms",
        "500",
    ]);
    assert!(!run.status.success());
    let v: Value = serde_json::from_slice(&run.stdout).unwrap();
    assert_eq!(v["error"], "not_enough_shards");
    assert_eq!(
        (v["valid"].as_u64(), v["needed"].as_u64()),
        (Some(2), Some(3))
    );
    assert_eq!(outcome(&v, "c2")["result"], "timeout");
    assert!(!out.exists());
    w.cluster.nodes[1].resume().unwrap();
}

#[test]
fn an_expired_login_certificate_says_to_log_in_again() {
    let mut w = world();
    let gina = w.logged_in("gina");
    let (id, _) = gina.enroll_p256();

    // Restart the enroller with the shortest login validity it allows: 61 s counted from
    // a minute back, so about one second from now.
    let enroller = w.cluster.enroller.as_mut().unwrap();
    enroller.stop().unwrap();
    let mut config = fs::read_to_string(&enroller.config).unwrap();
    config.push_str("\n[limits]\nlogin_validity_seconds = 61\n");
    fs::write(&enroller.config, config).unwrap();
    enroller.start().unwrap();

    let login = gina.json(&["login", "gina"]);
    let not_after = login["not_after_unix"].as_i64().unwrap();
    loop {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        if now > not_after {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = gina.path("k.pem");
    for args in [
        vec!["recover", id.as_str(), "--out", out.to_str().unwrap()],
        vec!["enroll"],
        vec!["secrets"],
    ] {
        let err = gina.fails(&args);
        assert!(
            err.starts_with("shardctl: your login certificate expired at ")
                && err.trim_end().ends_with("; run `shardctl login gina`"),
            "{args:?}: {err}"
        );
    }
    assert!(!out.exists());
    // status still works (with the admin certificate) and shows it.
    let status = gina.ok(&["status"]);
    assert!(status.contains("expired at"), "{status}");
}

#[test]
fn refusals_are_one_line_and_say_what_to_do() {
    let mut w = world();
    let nobody = w.user("nobody");
    fs::remove_file(nobody.path("config/shardctl/config.toml")).unwrap();
    let err = nobody.fails(&["secrets"]);
    assert!(
        err.contains("no configuration at ") && err.contains("--config"),
        "{err}"
    );

    let hank = w.user("hank");
    let err = hank.fails(&["enroll"]);
    assert!(
        err.contains("not logged in to demo.test; run `shardctl login <name>`"),
        "{err}"
    );

    // A wrong invitation code.
    fs::write(hank.path("invitation"), "NOTACODE").unwrap();
    let err = hank.fails(&["register", "hank"]);
    assert!(
        err.contains("invitation code is not valid for hank"),
        "{err}"
    );

    // No terminal and no password file.
    hank.invite();
    let out = hank
        .cmd(&["register", "hank"])
        .env_remove("SHARDCTL_PASSWORD_FILE")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no terminal to ask for the password; set SHARDCTL_PASSWORD_FILE"),
        "{err}"
    );
    hank.ok(&["register", "hank"]);

    // A wrong password.
    fs::write(hank.path("wrong"), "not the password at all\n").unwrap();
    let out = hank
        .cmd(&["login", "hank"])
        .env("SHARDCTL_PASSWORD_FILE", hank.path("wrong"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("wrong user name or password for hank"),
        "{err}"
    );
    hank.ok(&["login", "hank"]);

    let err = hank.fails(&["recover", "nonsense", "--out", "x"]);
    assert!(err.contains("is not a secret id"), "{err}");
    let unknown = "0190f0f0f0f07000800000000000000a";
    let err = hank.fails(&[
        "recover",
        unknown,
        "--out",
        hank.path("x").to_str().unwrap(),
    ]);
    assert!(err.contains("knows no secret"), "{err}");
    let run = hank.run(&[
        "--json",
        "recover",
        unknown,
        "--out",
        hank.path("x").to_str().unwrap(),
    ]);
    let v: Value = serde_json::from_slice(&run.stdout).unwrap();
    assert_eq!(v["error"], "error");
    assert!(v["message"].as_str().unwrap().contains("knows no secret"));

    // --config names another file: this one has no admin certificate.
    let other = hank.path("no-admin.toml");
    let text = fs::read_to_string(hank.path("config/shardctl/config.toml")).unwrap();
    let without_admin: String = text.split("\n[admin]").next().unwrap().to_owned()
        + &text[text.find("\n[[custodians]]").unwrap()..];
    fs::write(&other, without_admin).unwrap();
    let err = hank.fails(&["--config", other.to_str().unwrap(), "admin", "users"]);
    assert!(err.contains("no admin certificate"), "{err}");
    // A user certificate is not an admin's.
    let err = hank.fails(&[
        "admin",
        "users",
        "--admin-cert",
        hank.path("config/shardctl/login/demo.test.pem")
            .to_str()
            .unwrap(),
        "--admin-key",
        hank.path("config/shardctl/login/demo.test.pem")
            .to_str()
            .unwrap(),
    ]);
    assert!(err.contains("needs an admin certificate"), "{err}");

    // The enroller down.
    w.cluster.enroller.as_mut().unwrap().kill9();
    let err = hank.fails(&["secrets"]);
    assert!(
        err.contains("cannot reach the enroller at 127.0.0.10:"),
        "{err}"
    );
}
