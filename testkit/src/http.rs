//! Raw HTTP/1.1: one request per connection, over mutual TLS to a service's API or plain
//! to its loopback health port, showing the status, the headers and the body as they came
//! (the API clients hide headers, and `Retry-After` is one of the things under test).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use certs::rustls::pki_types::ServerName;
use certs::rustls::{ClientConfig, ClientConnection, StreamOwned};
use serde_json::Value;

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

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.raw).into_owned()
    }
}

/// A synchronous HTTPS client: one connection per call (`Connection: close`), so every
/// call makes a fresh TLS handshake with the configuration it was built with.
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
        let tcp = connect(self.addr).map_err(|e| format!("connect: {e}"))?;
        let conn = ClientConnection::new(self.tls.clone(), self.server_name.clone())
            .map_err(|e| e.to_string())?;
        let mut tls = StreamOwned::new(conn, tcp);
        let payload = body.map(|b| serde_json::to_vec(b).expect("JSON"));
        tls.write_all(&request(method, path, payload.as_deref()))
            .and_then(|()| tls.flush())
            .map_err(|e| format!("write: {e}"))?;
        let mut resp = Vec::new();
        match tls.read_to_end(&mut resp) {
            Ok(_) => {}
            // A server that closes without close_notify after a complete answer.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !resp.is_empty() => {}
            Err(e) => return Err(format!("read: {e}")),
        }
        parse(&resp)
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

/// A plain `GET` (for a loopback health port, or to show that a TLS port does not speak
/// plain HTTP).
pub fn get_plain(addr: SocketAddr, path: &str) -> std::io::Result<Reply> {
    let mut s = connect(addr)?;
    s.write_all(&request("GET", path, None))?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    parse(&raw).map_err(std::io::Error::other)
}

fn connect(addr: SocketAddr) -> std::io::Result<TcpStream> {
    let tcp = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    tcp.set_read_timeout(Some(Duration::from_secs(30)))?;
    // The request goes out right after the handshake: without this, Nagle holds it until
    // the server's delayed ACK (about 40 ms).
    tcp.set_nodelay(true)?;
    Ok(tcp)
}

fn request(method: &str, path: &str, payload: Option<&[u8]>) -> Vec<u8> {
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: service\r\nConnection: close\r\nContent-Length: {}\r\n",
        payload.map_or(0, <[u8]>::len)
    );
    if payload.is_some() {
        req.push_str("Content-Type: application/json\r\n");
    }
    req.push_str("\r\n");
    let mut bytes = req.into_bytes();
    bytes.extend_from_slice(payload.unwrap_or_default());
    bytes
}

/// Parses a raw HTTP/1.1 answer (Content-Length, chunked or close-delimited).
pub fn parse(resp: &[u8]) -> Result<Reply, String> {
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

/// Parses a JSON refusal body.
pub fn error_body(bytes: &[u8]) -> wire::Refusal {
    serde_json::from_slice(bytes).unwrap_or_else(|e| {
        panic!(
            "not a JSON error body ({e}): {:?}",
            String::from_utf8_lossy(bytes)
        )
    })
}

/// Asserts that an API client's call was refused with this status and reason.
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

/// The value of one Prometheus sample (`name{labels}`), 0 when absent.
pub fn metric(text: &str, sample: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(sample).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0.0)
}
