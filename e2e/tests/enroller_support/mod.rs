//! What the enroller tests share: a cluster with an enroller, a small synchronous
//! HTTPS client that shows status, headers and the JSON body (the custodian client hides
//! headers, and `Retry-After` is one of the things under test), and the user's side of
//! registration and login.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use certs::rustls::pki_types::ServerName;
use certs::rustls::{ClientConfig, ClientConnection, StreamOwned};
use e2e::{Backend, Bins, Cluster};
use mtls::Client;
use serde_json::{json, Value};

/// A password every policy check accepts.
pub const GOOD_PASSWORD: &str = "correct horse battery staple";

/// Unix seconds, with the fraction.
pub fn unix_f64() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Unix seconds.
pub fn unix() -> i64 {
    unix_f64() as i64
}

/// Sleeps until just after the start of the next whole second, so that a short-lived
/// certificate issued now gets all of its last second.
pub fn align_to_second() {
    let f = unix_f64();
    let rest = 1.0 - f.fract();
    std::thread::sleep(Duration::from_secs_f64(rest + 0.005));
}

/// Starts `backends` custodians (extra env for each) and an enroller with threshold `t`
/// (extra env for it).
pub fn cluster(
    backends: &[Backend],
    custodian_env: &[(&str, &str)],
    t: u8,
    enroller_env: &[(&str, &str)],
) -> Cluster {
    let bins = Bins::locate().expect("binaries (run `cargo build --workspace --bins` first)");
    let mut c = Cluster::start_with(bins, backends, custodian_env, &|_| {})
        .unwrap_or_else(|e| panic!("cluster: {e}"));
    c.start_enroller_with(t, enroller_env, &|_| {})
        .unwrap_or_else(|e| panic!("enroller: {e}"));
    c
}

/// One HTTP answer.
#[derive(Debug, Clone)]
pub struct Reply {
    /// Status code.
    pub status: u16,
    /// Headers, names in lower case.
    pub headers: Vec<(String, String)>,
    /// The body as JSON (`Null` when it is not JSON).
    pub body: Value,
    /// The raw body.
    pub raw: Vec<u8>,
}

impl Reply {
    /// The refusal's `reason`, or "" for a body without one.
    pub fn reason(&self) -> &str {
        self.body["reason"].as_str().unwrap_or("")
    }

    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// `(status, reason)`, for compact assertions.
    pub fn refusal(&self) -> (u16, &str) {
        (self.status, self.reason())
    }
}

/// A synchronous HTTPS client: one connection per call (`Connection: close`), so every
/// call makes a fresh TLS handshake with the certificate it was built with.
#[derive(Clone)]
pub struct Http {
    addr: SocketAddr,
    server_name: ServerName<'static>,
    tls: Arc<ClientConfig>,
}

impl Http {
    /// A client for `addr`, checking the server's certificate for `server_name`.
    pub fn new(addr: SocketAddr, server_name: &str, tls: Arc<ClientConfig>) -> Http {
        Http {
            addr,
            server_name: ServerName::try_from(server_name.to_owned()).expect("server name"),
            tls,
        }
    }

    /// One call; `Err` carries the TLS or I/O error (a refused certificate shows here).
    pub fn try_call(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Reply, String> {
        let tcp = TcpStream::connect_timeout(&self.addr, Duration::from_secs(5))
            .map_err(|e| format!("connect: {e}"))?;
        tcp.set_read_timeout(Some(Duration::from_secs(30)))
            .map_err(|e| e.to_string())?;
        // The client's Finished and the request go out back to back: without this,
        // Nagle holds the request until the server's delayed ACK (about 40 ms).
        tcp.set_nodelay(true).map_err(|e| e.to_string())?;
        let conn = ClientConnection::new(self.tls.clone(), self.server_name.clone())
            .map_err(|e| e.to_string())?;
        let mut tls = StreamOwned::new(conn, tcp);
        let payload = body.map(|b| serde_json::to_vec(b).expect("JSON"));
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nHost: enroller\r\nConnection: close\r\nContent-Length: {}\r\n",
            payload.as_ref().map_or(0, Vec::len)
        );
        if payload.is_some() {
            req.push_str("Content-Type: application/json\r\n");
        }
        req.push_str("\r\n");
        let mut bytes = req.into_bytes();
        bytes.extend_from_slice(payload.as_deref().unwrap_or_default());
        tls.write_all(&bytes).map_err(|e| format!("write: {e}"))?;
        tls.flush().map_err(|e| format!("write: {e}"))?;
        let mut resp = Vec::new();
        match tls.read_to_end(&mut resp) {
            Ok(_) => {}
            // A server that closes without close_notify after a complete answer.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !resp.is_empty() => {}
            Err(e) => return Err(format!("read: {e}")),
        }
        parse_response(&resp)
    }

    /// One call that must get an HTTP answer.
    pub fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Reply {
        self.try_call(method, path, body)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    /// `POST` with a JSON body.
    pub fn post(&self, path: &str, body: &Value) -> Reply {
        self.call("POST", path, Some(body))
    }

    /// `GET`.
    pub fn get(&self, path: &str) -> Reply {
        self.call("GET", path, None)
    }
}

fn parse_response(resp: &[u8]) -> Result<Reply, String> {
    let split = resp
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| format!("no HTTP header in {} bytes", resp.len()))?;
    let head = String::from_utf8_lossy(&resp[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or("no status line")?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let mut body = resp[split + 4..].to_vec();
    if headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"))
    {
        body = dechunk(&body)?;
    }
    Ok(Reply {
        status,
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
        raw: body,
        headers,
    })
}

fn dechunk(mut b: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let eol = b.windows(2).position(|w| w == b"\r\n").ok_or("bad chunk")?;
        let size = usize::from_str_radix(String::from_utf8_lossy(&b[..eol]).trim(), 16)
            .map_err(|e| e.to_string())?;
        b = &b[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        out.extend_from_slice(b.get(..size).ok_or("short chunk")?);
        b = b.get(size + 2..).ok_or("short chunk")?;
    }
}

/// The enroller of a cluster as its clients see it.
pub struct Enroller {
    /// Address.
    pub addr: SocketAddr,
    /// The trust domain's CA certificate (PEM).
    pub ca: Vec<u8>,
    /// No client certificate (registration and login).
    pub anon: Http,
    /// An admin certificate (`admin/ops`).
    pub admin: Http,
}

impl Enroller {
    /// The clients of `cluster`'s enroller.
    pub fn of(cluster: &Cluster) -> Enroller {
        let node = cluster.enroller.as_ref().expect("enroller started");
        let ca = std::fs::read(cluster.pki.join("ca.pem")).expect("ca.pem");
        let ip = node.addr.ip().to_string();
        let (cert, key) = cluster.issue("admin", "ops").expect("admin certificate");
        Enroller {
            addr: node.addr,
            anon: Http::new(
                node.addr,
                &ip,
                Arc::new(certs::tls::client_config_anonymous(&ca).expect("TLS")),
            ),
            admin: Http::new(
                node.addr,
                &ip,
                cluster.client_tls(&cert, &key).expect("admin TLS"),
            ),
            ca,
        }
    }

    /// The manifest-signing public key (`GET /v1/manifest-key`).
    pub fn manifest_key(&self) -> p256::ecdsa::VerifyingKey {
        use p256::pkcs8::DecodePublicKey;
        let r = self.admin.get("/v1/manifest-key");
        assert_eq!(r.status, 200);
        p256::ecdsa::VerifyingKey::from_public_key_pem(std::str::from_utf8(&r.raw).expect("PEM"))
            .expect("manifest key")
    }

    /// A client presenting `tls`.
    pub fn with(&self, tls: Arc<ClientConfig>) -> Http {
        Http::new(self.addr, &self.addr.ip().to_string(), tls)
    }

    /// An invitation code for `name` (admin).
    pub fn invite(&self, name: &str, ttl: Option<i64>) -> String {
        let mut req = json!({ "name": name });
        if let Some(t) = ttl {
            req["ttl_seconds"] = json!(t);
        }
        let r = self.admin.post("/v1/admin/invitations", &req);
        assert_eq!(r.status, 201, "invite {name}: {:?}", r.body);
        r.body["code"].as_str().expect("code").to_owned()
    }

    /// `POST /v1/register`.
    pub fn register(&self, name: &str, invitation: &str, password: &str, totp: bool) -> Reply {
        self.anon.post(
            "/v1/register",
            &json!({ "name": name, "invitation": invitation, "password": password, "totp": totp }),
        )
    }

    /// Invites and registers `name`; returns the TOTP secret when `totp`.
    pub fn new_user(&self, name: &str, password: &str, totp: bool) -> Option<Vec<u8>> {
        let code = self.invite(name, None);
        let r = self.register(name, &code, password, totp);
        assert_eq!(r.status, 201, "register {name}: {:?}", r.body);
        r.body["totp_uri"].as_str().map(totp_secret_of)
    }

    /// `POST /v1/login` with a CSR for `key`.
    pub fn login(
        &self,
        name: &str,
        password: &str,
        totp_code: Option<&str>,
        key: &UserKey,
    ) -> Reply {
        let mut req = json!({ "name": name, "password": password, "csr": key.csr });
        if let Some(c) = totp_code {
            req["totp_code"] = json!(c);
        }
        self.anon.post("/v1/login", &req)
    }

    /// Logs in (must succeed) and returns a client TLS configuration with the login
    /// certificate, and the answer.
    pub fn session(
        &self,
        name: &str,
        password: &str,
        totp_code: Option<&str>,
        key: &UserKey,
    ) -> (Arc<ClientConfig>, Reply) {
        let r = self.login(name, password, totp_code, key);
        assert_eq!(r.status, 200, "login {name}: {:?}", r.body);
        (key.tls(&self.ca, &r), r)
    }
}

/// A user's key pair, made on the user's side, and a CSR for it.
pub struct UserKey {
    /// The key pair.
    pub key: rcgen::KeyPair,
    /// CSR (PEM).
    pub csr: String,
}

impl UserKey {
    /// A fresh P-256 key and CSR.
    pub fn new() -> UserKey {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
        let csr = rcgen::CertificateParams::default()
            .serialize_request(&key)
            .expect("CSR")
            .pem()
            .expect("PEM");
        UserKey { key, csr }
    }

    /// The TLS configuration presenting the certificate of a login answer.
    pub fn tls(&self, ca: &[u8], login: &Reply) -> Arc<ClientConfig> {
        let chain = login.body["certificate"].as_str().expect("certificate");
        Arc::new(
            certs::tls::client_config(ca, chain.as_bytes(), self.key.serialize_pem().as_bytes())
                .expect("user TLS"),
        )
    }
}

/// The secret in an `otpauth://` URI.
pub fn totp_secret_of(uri: &str) -> Vec<u8> {
    let b32 = uri
        .split("secret=")
        .nth(1)
        .and_then(|s| s.split('&').next())
        .expect("secret in URI");
    base32_decode(b32)
}

/// RFC 4648 base32 without padding.
pub fn base32_decode(s: &str) -> Vec<u8> {
    e2e::base32_decode(s).expect("base32")
}

/// The TOTP code of time step `step`.
pub fn totp_code(secret: &[u8], step: u64) -> String {
    format!("{:06}", enroller::totp::code_at(secret, step))
}

/// The current TOTP step.
pub fn totp_step() -> u64 {
    enroller::totp::step_of(unix() as u64)
}

/// `n` bytes from the OS generator.
pub fn random_bytes(n: usize) -> Vec<u8> {
    let mut b = vec![0u8; n];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .expect("/dev/urandom");
    b
}

/// Custodian clients of `cluster` presenting `tls`.
pub fn custodians(cluster: &Cluster, tls: &Arc<ClientConfig>) -> Vec<Client> {
    (0..cluster.nodes.len())
        .map(|i| cluster.client(i, tls.clone()).expect("custodian client"))
        .collect()
}

/// The secret ids of `owner`'s shards at custodian `i` (admin listing).
pub async fn shards_of(cluster: &Cluster, i: usize, owner: &str) -> Vec<String> {
    let (cert, key) = cluster.issue("admin", "ops").expect("admin certificate");
    let c = cluster
        .client(i, cluster.client_tls(&cert, &key).expect("TLS"))
        .expect("client");
    let mut out = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = c
            .list(after.as_deref(), 100)
            .await
            .unwrap_or_else(|e| panic!("listing at {}: {e}", cluster.nodes[i].name));
        out.extend(
            page.shards
                .into_iter()
                .filter(|s| s.owner == owner)
                .map(|s| s.secret_id),
        );
        match page.next_after {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    out
}

/// The identity of user `name` in the harness's trust domain.
pub fn user_id(name: &str) -> String {
    format!("spiffe://{}/user/{name}", e2e::TRUST_DOMAIN)
}

/// Recovers the secret of the enrollment answer `enr` from custodians `which` (released
/// with the owner's certificate), verifying the manifest with `manifest_key` and every
/// shard against it.
pub async fn recover(
    cluster: &Cluster,
    user_tls: &Arc<ClientConfig>,
    which: &[usize],
    enr: &Value,
    manifest_key: &p256::ecdsa::VerifyingKey,
) -> Vec<u8> {
    use base64::Engine;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(enr["manifest"].as_str().expect("manifest"))
        .expect("base64");
    let signed = shard::SignedManifest::decode(&raw).expect("manifest decodes");
    let manifest = signed
        .verify(manifest_key)
        .expect("manifest verifies")
        .clone();
    let secret_id: shard::SecretId = enr["secret_id"]
        .as_str()
        .expect("secret_id")
        .parse()
        .expect("id");
    let mut returned = Vec::new();
    for &i in which {
        let c = cluster.client(i, user_tls.clone()).expect("client");
        let r = c
            .release(&secret_id, None)
            .await
            .unwrap_or_else(|e| panic!("release at {}: {e}", cluster.nodes[i].name));
        returned.push(shard::Returned {
            custodian: shard::CustodianId::new(&cluster.nodes[i].name).expect("name"),
            envelope: r.envelope,
        });
    }
    let rec = shard::combine_verified(&manifest, returned).expect("combine");
    rec.secret.expose().to_vec()
}

/// Where the enroller's token profile is.
pub fn enroller_token_profile(cluster: &Cluster) -> PathBuf {
    cluster.dir.join("enroller").join("token.toml")
}

/// All log files of the cluster (custodians and enroller).
pub fn log_files(cluster: &Cluster) -> Vec<PathBuf> {
    cluster
        .nodes
        .iter()
        .chain(cluster.enroller.as_ref())
        .map(|n| n.log.clone())
        .collect()
}

/// The text of a file ("" when absent).
pub fn read_text(p: &Path) -> String {
    std::fs::read(p)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}
