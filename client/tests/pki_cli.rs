//! The real `shardctl` binary, run in a temporary directory: `pki init`, `pki issue`, `pki show`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use testkit::handshake::{handshake, ServerEnd};
use testkit::shardctl::{mode, stdout_of_success};

/// A scratch directory to run `shardctl` in.
struct Workspace {
    dir: tempfile::TempDir,
}

impl Workspace {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    fn path(&self, relative: &str) -> PathBuf {
        self.dir.path().join(relative)
    }

    /// Runs `shardctl args...` here, with SHARDCTL_PKI_DIR unset.
    fn run(&self, args: &[&str]) -> Output {
        self.command(args)
            .env_remove("SHARDCTL_PKI_DIR")
            .output()
            .expect("run shardctl")
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_shardctl"));
        command.args(args).current_dir(self.dir.path());
        command
    }

    /// Runs and asserts success, returning stdout.
    fn ok(&self, args: &[&str]) -> String {
        stdout_of_success(&mut self.command(args))
    }

    /// Runs and asserts a clean failure: exit status 1, one line on stderr starting with
    /// `shardctl: `, nothing on stdout, no panic. Returns that line.
    fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        let stderr = String::from_utf8(out.stderr).expect("utf-8 stderr");
        assert_eq!(out.status.code(), Some(1), "shardctl {args:?}: {stderr}");
        assert!(out.stdout.is_empty(), "shardctl {args:?} printed to stdout");
        assert!(!stderr.contains("panicked"), "{stderr}");
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(lines.len(), 1, "one line expected: {stderr:?}");
        assert!(lines[0].starts_with("shardctl: "), "{stderr:?}");
        lines[0].to_owned()
    }

    fn init(&self) {
        self.ok(&["pki", "init", "--trust-domain", "example.org"]);
    }
}

fn read(path: &Path) -> Vec<u8> {
    fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn init_issue_show() {
    let ws = Workspace::new();
    let out = ws.ok(&["pki", "init", "--trust-domain", "example.org"]);
    assert!(out.contains("example.org"), "{out}");
    assert!(out.contains("pki/ca.key"), "{out}");

    let out = ws.ok(&[
        "pki",
        "issue",
        "custodian",
        "c1",
        "--dns",
        "localhost",
        "--dns",
        "c1.example.org",
        "--ip",
        "127.0.0.1",
    ]);
    assert!(
        out.contains("issued spiffe://example.org/custodian/c1"),
        "{out}"
    );
    for file in [
        "pki/ca.pem",
        "pki/ca.key",
        "pki/custodian-c1.pem",
        "pki/custodian-c1.key",
    ] {
        assert!(ws.path(file).is_file(), "{file} missing");
    }
    #[cfg(unix)]
    {
        assert_eq!(mode(&ws.path("pki")), 0o700);
        assert_eq!(mode(&ws.path("pki/ca.key")), 0o600);
        assert_eq!(mode(&ws.path("pki/custodian-c1.key")), 0o600);
        assert_eq!(mode(&ws.path("pki/ca.pem")), 0o644);
        assert_eq!(mode(&ws.path("pki/custodian-c1.pem")), 0o644);
    }

    let shown = ws.ok(&["pki", "show", "pki/custodian-c1.pem"]);
    assert!(
        shown.contains("spiffe id:   spiffe://example.org/custodian/c1"),
        "{shown}"
    );
    assert!(
        shown.contains("dns names:   localhost, c1.example.org"),
        "{shown}"
    );
    assert!(shown.contains("ip addrs:    127.0.0.1"), "{shown}");
    assert!(shown.contains("issuer:      CN=example.org CA"), "{shown}");
    assert!(shown.contains("ca:          no"), "{shown}");

    let shown = ws.ok(&["pki", "show", "pki/ca.pem"]);
    assert!(shown.contains("ca:          yes"), "{shown}");
    assert!(
        shown.contains("uri sans:    spiffe://example.org"),
        "{shown}"
    );

    // What the files hold, checked independently of `show`.
    let summary = certs::summary(&read(&ws.path("pki/custodian-c1.pem"))).unwrap();
    assert_eq!(
        summary.spiffe_id.map(|id| id.to_string()).as_deref(),
        Some("spiffe://example.org/custodian/c1")
    );
    assert_eq!((summary.not_after - summary.not_before).whole_days(), 365);
    let key = String::from_utf8(read(&ws.path("pki/custodian-c1.key"))).unwrap();
    assert!(key.starts_with("-----BEGIN PRIVATE KEY-----"));
    assert!(!shown.contains("PRIVATE KEY"));
}

#[test]
fn second_init_and_issue_refuse_and_leave_files_identical() {
    let ws = Workspace::new();
    ws.init();
    ws.ok(&["pki", "issue", "custodian", "c1", "--dns", "localhost"]);
    let files = [
        "pki/ca.pem",
        "pki/ca.key",
        "pki/custodian-c1.pem",
        "pki/custodian-c1.key",
    ];
    let before: Vec<Vec<u8>> = files.iter().map(|f| read(&ws.path(f))).collect();

    let line = ws.fails(&["pki", "init", "--trust-domain", "other.org"]);
    assert!(
        line.contains("pki/ca.pem") && line.contains("already exist"),
        "{line}"
    );
    let line = ws.fails(&["pki", "init", "--trust-domain", "example.org"]);
    assert!(line.contains("refusing to overwrite"), "{line}");
    let line = ws.fails(&["pki", "issue", "custodian", "c1", "--dns", "other"]);
    assert!(
        line.contains("pki/custodian-c1.pem") && line.contains("already exist"),
        "{line}"
    );

    let after: Vec<Vec<u8>> = files.iter().map(|f| read(&ws.path(f))).collect();
    assert_eq!(before, after, "refused runs must not touch existing files");

    // Half a pair counts too: with only the key left, nothing is created next to it.
    fs::remove_file(ws.path("pki/custodian-c1.pem")).unwrap();
    let line = ws.fails(&["pki", "issue", "custodian", "c1"]);
    assert!(line.contains("pki/custodian-c1.key"), "{line}");
    assert!(!ws.path("pki/custodian-c1.pem").exists());
    assert_eq!(read(&ws.path("pki/custodian-c1.key")), before[3]);

    fs::remove_file(ws.path("pki/ca.pem")).unwrap();
    ws.fails(&["pki", "init", "--trust-domain", "example.org"]);
    assert!(!ws.path("pki/ca.pem").exists());
    assert_eq!(read(&ws.path("pki/ca.key")), before[1]);
}

#[test]
fn bad_input_gives_one_clear_line() {
    let ws = Workspace::new();

    let line = ws.fails(&["pki", "issue", "custodian", "c1"]);
    assert!(line.contains("pki init --trust-domain"), "{line}");

    let line = ws.fails(&["pki", "init", "--trust-domain", "Example.org"]);
    assert!(
        line.contains("invalid trust domain") && line.contains("lowercase"),
        "{line}"
    );
    ws.fails(&["pki", "init", "--trust-domain", "exa mple.org"]);
    ws.fails(&["pki", "init", "--trust-domain", ""]);
    assert!(!ws.path("pki").exists(), "a refused init creates nothing");

    ws.init();
    let line = ws.fails(&["pki", "issue", "root", "c1"]);
    assert!(
        line.contains("unknown role \"root\"")
            && line.contains("custodian, enroller, admin or user"),
        "{line}"
    );
    let line = ws.fails(&["pki", "issue", "custodian", "C1"]);
    assert!(line.contains("invalid name \"C1\""), "{line}");
    let line = ws.fails(&["pki", "issue", "custodian", "../../etc/passwd"]);
    assert!(line.contains("invalid name"), "{line}");
    ws.fails(&["pki", "issue", "custodian", "--", "-c1"]);
    ws.fails(&["pki", "issue", "user", &"a".repeat(64)]);
    let line = ws.fails(&["pki", "issue", "custodian", "c1", "--ip", "300.1.1.1"]);
    assert!(line.contains("--ip \"300.1.1.1\""), "{line}");
    let line = ws.fails(&["pki", "issue", "custodian", "c1", "--dns", "bad name"]);
    assert!(line.contains("invalid DNS name"), "{line}");
    let line = ws.fails(&["pki", "issue", "admin", "ops", "--dns", "ops.example.org"]);
    assert!(line.contains("client-only"), "{line}");
    let line = ws.fails(&["pki", "issue", "custodian", "c1", "--days", "0"]);
    assert!(line.contains("--days 0"), "{line}");
    ws.fails(&["pki", "issue", "custodian", "c1", "--days", "3651"]);
    let names: Vec<_> = fs::read_dir(ws.path("pki"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names.len(), 2, "only ca.pem and ca.key: {names:?}");

    let line = ws.fails(&["pki", "show", "pki/ca.key"]);
    assert!(line.contains("no CERTIFICATE"), "{line}");
    assert!(!line.contains("PRIVATE KEY-----"), "{line}");
    let line = ws.fails(&["pki", "show", "missing.pem"]);
    assert!(line.contains("missing.pem"), "{line}");
    fs::write(ws.path("junk.pem"), b"\x00\xffnot pem at all").unwrap();
    ws.fails(&["pki", "show", "junk.pem"]);
    fs::write(
        ws.path("broken.pem"),
        b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let line = ws.fails(&["pki", "show", "broken.pem"]);
    assert!(line.contains("broken.pem"), "{line}");

    // A CA directory whose files do not belong together.
    let other = Workspace::new();
    other.init();
    fs::create_dir(ws.path("mixed")).unwrap();
    fs::copy(ws.path("pki/ca.pem"), ws.path("mixed/ca.pem")).unwrap();
    fs::copy(other.path("pki/ca.key"), ws.path("mixed/ca.key")).unwrap();
    let line = ws.fails(&["pki", "issue", "user", "alice", "--dir", "mixed"]);
    assert!(line.contains("does not match"), "{line}");
}

#[test]
fn usage_errors_exit_non_zero_without_panicking() {
    let ws = Workspace::new();
    for args in [
        &["pki", "init"][..],
        &["pki", "issue", "custodian"],
        &["pki", "issue", "custodian", "c1", "--days", "many"],
        &["pki", "frobnicate"],
    ] {
        let out = ws.run(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.starts_with("error: "), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    // No command at all: clap's usage on stderr, still status 2.
    let out = ws.run(&[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("Usage: shardctl"));

    let help = ws.ok(&["pki", "issue", "--help"]);
    assert!(help.contains("SHARDCTL_PKI_DIR"), "{help}");
    assert!(help.contains("365 for custodian and enroller"), "{help}");
}

#[test]
fn dir_comes_from_flag_then_env_then_default() {
    let ws = Workspace::new();
    stdout_of_success(
        ws.command(&["pki", "init", "--trust-domain", "env.example"])
            .env("SHARDCTL_PKI_DIR", ws.path("from-env")),
    );
    assert!(ws.path("from-env/ca.pem").is_file());
    assert!(!ws.path("pki").exists());

    stdout_of_success(
        ws.command(&["pki", "issue", "admin", "ops"])
            .env("SHARDCTL_PKI_DIR", ws.path("from-env")),
    );
    assert!(ws.path("from-env/admin-ops.pem").is_file());

    // The flag wins over the environment.
    stdout_of_success(
        ws.command(&[
            "pki",
            "init",
            "--trust-domain",
            "flag.example",
            "--dir",
            "from-flag",
        ])
        .env("SHARDCTL_PKI_DIR", ws.path("from-env")),
    );
    assert!(ws.path("from-flag/ca.pem").is_file());

    ws.init();
    assert!(ws.path("pki/ca.pem").is_file(), "default is ./pki");
}

#[test]
fn validity_defaults_per_role_and_days_flag() {
    let ws = Workspace::new();
    ws.init();
    for (args, file, days) in [
        (&["enroller", "main"][..], "enroller-main", 365),
        (&["admin", "ops"], "admin-ops", 30),
        (&["user", "alice"], "user-alice", 1),
        (&["custodian", "c9", "--days", "7"], "custodian-c9", 7),
    ] {
        let mut full = vec!["pki", "issue"];
        full.extend_from_slice(args);
        ws.ok(&full);
        let summary = certs::summary(&read(&ws.path(&format!("pki/{file}.pem")))).unwrap();
        assert_eq!(
            (summary.not_after - summary.not_before).whole_days(),
            days,
            "{file}"
        );
    }
}

#[test]
fn cli_certificates_complete_mutual_tls() {
    let ws = Workspace::new();
    ws.init();
    ws.ok(&[
        "pki",
        "issue",
        "custodian",
        "c1",
        "--dns",
        "localhost",
        "--ip",
        "127.0.0.1",
    ]);
    ws.ok(&["pki", "issue", "enroller", "main"]);
    ws.ok(&["pki", "issue", "user", "alice"]);
    let ca = read(&ws.path("pki/ca.pem"));
    let server = || {
        certs::tls::server_config(
            &ca,
            &read(&ws.path("pki/custodian-c1.pem")),
            &read(&ws.path("pki/custodian-c1.key")),
        )
        .unwrap()
    };
    for (who, expected) in [
        ("enroller-main", "spiffe://example.org/enroller/main"),
        ("user-alice", "spiffe://example.org/user/alice"),
    ] {
        let client = certs::tls::client_config(
            &ca,
            &read(&ws.path(&format!("pki/{who}.pem"))),
            &read(&ws.path(&format!("pki/{who}.key"))),
        )
        .unwrap();
        for name in ["localhost", "127.0.0.1"] {
            let outcome = handshake(server(), client.clone(), name);
            match &outcome.server {
                ServerEnd::Accepted(id) => assert_eq!(id.to_string(), expected),
                other => panic!("{who} via {name}: {other:?}"),
            }
            assert_eq!(
                outcome.client.as_deref().unwrap(),
                format!("hello {expected}\n")
            );
            assert_eq!(
                outcome
                    .server_id_seen_by_client
                    .map(|id| id.to_string())
                    .as_deref(),
                Some("spiffe://example.org/custodian/c1")
            );
        }
    }

    // A second, independent trust domain's client is refused by the first one's server.
    let other = Workspace::new();
    other.init();
    other.ok(&["pki", "issue", "enroller", "main"]);
    let rogue = certs::tls::client_config(
        &ca,
        &read(&other.path("pki/enroller-main.pem")),
        &read(&other.path("pki/enroller-main.key")),
    )
    .unwrap();
    let outcome = handshake(server(), rogue, "localhost");
    assert!(
        matches!(outcome.server, ServerEnd::Refused(_)),
        "{outcome:?}"
    );
    assert!(outcome.client.is_err(), "{outcome:?}");
}
