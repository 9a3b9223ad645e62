//! The demo behind the README's first command, run the way a person would: a trust
//! domain, four custodians (two sealing with SoftHSM2, two with swtpm) and an enroller
//! on their own loopback addresses; then, with `shardctl` only, an admin invites alice,
//! she registers, logs in and enrolls a P-256 key; one custodian is stopped; she
//! recovers the key from the other three and the demo proves it by a signature that
//! verifies with the enrolled public key. Then the custodians make an Ed25519 key
//! among themselves (DKG), so that no machine ever holds it, three of them sign a note with their sealed shares, and
//! OpenSSL verifies the signature.
//!
//! `--keep` leaves the cluster running (until Ctrl-C) and prints how to talk to it.
#![forbid(unsafe_code)]

use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Instant;

use p256::ecdsa::signature::{Signer, Verifier};
use p256::ecdsa::{Signature, SigningKey, VerifyingKey};
use p256::pkcs8::{DecodePrivateKey, DecodePublicKey};
use testkit::{Backend, Cluster};

fn say(step: &str) {
    println!("  - {step}");
}

fn main() -> ExitCode {
    let keep = std::env::args().skip(1).any(|a| a == "--keep");
    if std::env::args().skip(1).any(|a| a == "--help" || a == "-h") {
        println!("usage: demo [--keep]   (--keep: leave the cluster running until Ctrl-C)");
        return ExitCode::SUCCESS;
    }
    match run(keep) {
        Ok(()) => {
            println!(
                "\ndemo finished: every step above succeeded; processes stopped and files removed."
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("\ndemo FAILED: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Runs `shardctl` as alice or the operator would, printing the command line.
struct Shell {
    bin: PathBuf,
    env: Vec<(String, PathBuf)>,
}

impl Shell {
    fn run(&self, args: &[&str], extra_env: &[(&str, &Path)]) -> Result<String, String> {
        println!("    $ shardctl {}", args.join(" "));
        let mut cmd = Command::new(&self.bin);
        cmd.args(args);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        let out = cmd
            .output()
            .map_err(|e| format!("cannot run shardctl: {e}"))?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() {
            return Err(format!(
                "shardctl {} failed: {}{}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim(),
                stdout.trim()
            ));
        }
        Ok(stdout)
    }
}

fn json(text: &str) -> Result<serde_json::Value, String> {
    serde_json::from_str(text).map_err(|e| format!("unexpected shardctl output ({e}): {text}"))
}

fn write_secret_file(path: &Path, text: &str) -> Result<(), String> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    writeln!(f, "{text}").map_err(|e| e.to_string())
}

fn random_password() -> Result<String, String> {
    let mut b = [0u8; 18];
    shard::rand::TryRng::try_fill_bytes(&mut shard::rand::rngs::SysRng, &mut b)
        .map_err(|e| e.to_string())?;
    Ok(format!("demo-{}", hex(&b)))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn run(keep: bool) -> Result<(), String> {
    let started = Instant::now();
    println!("1. An operator starts a cluster");
    let mut cluster = Cluster::start(
        &[
            Backend::SoftHsm,
            Backend::SoftHsm,
            Backend::Tpm,
            Backend::Tpm,
        ],
        &say,
    )?;
    cluster.start_enroller(3, &say)?;

    // shardctl's configuration, and private XDG directories so the demo never touches
    // the user's own files.
    let shardctl = testkit::Bins::require(cluster.bins.shardctl())?;
    let home = cluster.dir.join("alice-home");
    std::fs::create_dir_all(&home).map_err(|e| e.to_string())?;
    let config = testkit::shardctl::config_text(&cluster)?;
    let config_path = cluster.dir.join("shardctl.toml");
    std::fs::write(&config_path, config).map_err(|e| e.to_string())?;
    let sh = Shell {
        bin: shardctl,
        env: vec![
            ("SHARDCTL_CONFIG".into(), config_path.clone()),
            ("XDG_CONFIG_HOME".into(), home.join("config")),
            ("XDG_STATE_HOME".into(), home.join("state")),
        ],
    };
    say(&format!(
        "shardctl configuration: {}",
        config_path.display()
    ));

    println!("\n2. The operator invites alice");
    let invite = json(&sh.run(&["--json", "admin", "invite", "alice"], &[])?)?;
    let code = invite["code"].as_str().ok_or("no invitation code")?;
    say(&format!(
        "one-time invitation code issued, valid until {}",
        invite["expires_at"].as_str().unwrap_or("?")
    ));

    println!("\n3. Alice registers, logs in and enrolls a P-256 key");
    let invitation_file = home.join("invitation");
    let password_file = home.join("password");
    write_secret_file(&invitation_file, code)?;
    write_secret_file(&password_file, &random_password()?)?;
    let secrets = [
        ("SHARDCTL_INVITATION_FILE", invitation_file.as_path()),
        ("SHARDCTL_PASSWORD_FILE", password_file.as_path()),
    ];
    sh.run(&["register", "alice"], &secrets)?;
    say("registered: password hashed with Argon2id over the enroller token's HMAC pepper");
    sh.run(&["login", "alice"], &secrets)?;
    say("logged in: key made on alice's machine, certificate valid for 10 minutes from the enroller's user CA");
    let enrolled = json(&sh.run(&["--json", "enroll"], &[])?)?;
    let secret_id = enrolled["secret_id"]
        .as_str()
        .ok_or("no secret id")?
        .to_owned();
    let public_pem = enrolled["public_key"]
        .as_str()
        .ok_or("no public key")?
        .to_owned();
    say(&format!(
        "secret {secret_id}: key generated from the token's randomness, split 3-of-4, one sealed shard at each of {}",
        enrolled["custodians"].as_array().map(|c| c.iter().filter_map(|x| x.as_str()).collect::<Vec<_>>().join(", ")).unwrap_or_default()
    ));

    println!("\n4. A custodian goes away");
    let status = cluster.nodes[1].stop()?;
    say(&format!(
        "c2 stopped with SIGTERM after draining ({status})"
    ));

    println!("\n5. Alice recovers her key from whoever answers");
    let out = home.join("alice-key.pem");
    let t0 = Instant::now();
    let report = sh.run(
        &["recover", &secret_id, "--out", &out.to_string_lossy()],
        &[],
    )?;
    for line in report.lines().filter(|l| !l.trim().is_empty()) {
        println!("      {line}");
    }
    say(&format!(
        "recovered in {:?} (one fresh shardctl process)",
        t0.elapsed()
    ));

    println!("\n6. Prove the recovered key");
    let pem = std::fs::read_to_string(&out).map_err(|e| e.to_string())?;
    let key = SigningKey::from_pkcs8_pem(&pem)
        .map_err(|e| format!("recovered file is not a P-256 key: {e}"))?;
    let message = format!("demo message for secret {secret_id}");
    let signature: Signature = key.sign(message.as_bytes());
    VerifyingKey::from_public_key_pem(&public_pem)
        .map_err(|e| e.to_string())?
        .verify(message.as_bytes(), &signature)
        .map_err(|_| {
            "the recovered key's signature does not verify with the enrolled public key".to_string()
        })?;
    say("signed a message with the recovered key; it verifies with the enrolled public key");

    println!(
        "\n7. Alice has the custodians make an Ed25519 key among themselves, and signs with it"
    );
    // An enrollment needs every custodian; c2 comes back for it and goes away again.
    cluster.nodes[1].start()?;
    cluster.wait_ready(1)?;
    say("c2 restarted: a key is made by every custodian together");
    let made = json(&sh.run(&["--json", "enroll", "--kind", "ed25519", "--dkg"], &[])?)?;
    let key_id = made["secret_id"].as_str().ok_or("no key id")?.to_owned();
    say(&format!(
        "key {key_id}: born distributed (FROST's DKG; the custodians sent their secret shares to each other over mutual TLS, the enroller relayed only public packages); each custodian sealed its key package; no machine ever held the key"
    ));
    cluster.nodes[1].stop()?;
    say("c2 stopped again");
    let public = home.join("ed25519.pub.pem");
    std::fs::write(&public, sh.run(&["pubkey", &key_id], &[])?).map_err(|e| e.to_string())?;
    let note = home.join("note.txt");
    std::fs::write(&note, format!("signed by three custodians for {key_id}\n"))
        .map_err(|e| e.to_string())?;
    let sig = home.join("note.sig");
    let t0 = Instant::now();
    let report = sh.run(
        &[
            "sign",
            &key_id,
            "--in",
            &note.to_string_lossy(),
            "--out",
            &sig.to_string_lossy(),
        ],
        &[],
    )?;
    for line in report.lines().filter(|l| !l.trim().is_empty()) {
        println!("      {line}");
    }
    say(&format!(
        "threshold signature in {:?} (one fresh shardctl process, two rounds, c2 still down)",
        t0.elapsed()
    ));
    let verified = Command::new("openssl")
        .args(["pkeyutl", "-verify", "-pubin", "-inkey"])
        .arg(&public)
        .args(["-rawin", "-in"])
        .arg(&note)
        .arg("-sigfile")
        .arg(&sig)
        .output()
        .map_err(|e| format!("cannot run openssl: {e}"))?;
    if !verified.status.success() {
        return Err(format!(
            "OpenSSL does not accept the threshold signature: {}",
            String::from_utf8_lossy(&verified.stderr).trim()
        ));
    }
    say(&format!(
        "OpenSSL verifies it: {}",
        String::from_utf8_lossy(&verified.stdout).trim()
    ));

    println!("\n8. Check the custodians' audit logs");
    for n in &mut cluster.nodes {
        let out = n.run(&["audit", "verify"])?;
        say(&format!("{}: {}", n.name, out.stdout.trim()));
        if !out.status.success() {
            return Err(format!("audit log of {} is broken", n.name));
        }
    }
    say(&format!("total {:.1} s", started.elapsed().as_secs_f64()));

    if keep {
        cluster.nodes[1].start()?;
        println!("\nThe cluster keeps running (c2 restarted). In another terminal:");
        println!(
            "  export SHARDCTL_CONFIG={} XDG_CONFIG_HOME={} XDG_STATE_HOME={}",
            config_path.display(),
            home.join("config").display(),
            home.join("state").display()
        );
        println!("  {} status", sh.bin.display());
        println!("Press Ctrl-C to stop it and remove its files.");
        wait_for_ctrl_c();
    }
    Ok(())
}

fn wait_for_ctrl_c() {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(_) => return,
    };
    rt.block_on(async {
        let _ = tokio::signal::ctrl_c().await;
    });
}
