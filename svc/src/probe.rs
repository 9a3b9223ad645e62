//! The container health check: a plain HTTP/1.0 `GET` to a service's loopback health
//! port, answered by the same binary's `health` subcommand. No TLS: the port is
//! loopback-only and carries no secret.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// Why a probe failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProbeError {
    /// No connection, or the exchange failed or timed out.
    #[error("health port {addr}: {reason}")]
    Unreachable {
        /// The address probed.
        addr: SocketAddr,
        /// What went wrong.
        reason: String,
    },
    /// The service answered, but not 200.
    #[error("health port {addr} answered {status}")]
    Unhealthy {
        /// The address probed.
        addr: SocketAddr,
        /// The status line's code (0 when the answer was not HTTP).
        status: u16,
    },
}

/// Largest answer read (a health document is a few hundred bytes).
const MAX_ANSWER: u64 = 16 * 1024;

/// `GET path` on `addr`; Ok with the body when the answer is 200.
pub fn probe(addr: SocketAddr, path: &str, timeout: Duration) -> Result<String, ProbeError> {
    let unreachable = |e: std::io::Error| ProbeError::Unreachable {
        addr,
        reason: e.to_string(),
    };
    let mut stream = TcpStream::connect_timeout(&addr, timeout).map_err(unreachable)?;
    stream
        .set_read_timeout(Some(timeout))
        .map_err(unreachable)?;
    stream
        .set_write_timeout(Some(timeout))
        .map_err(unreachable)?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").map_err(unreachable)?;
    let mut answer = Vec::new();
    stream
        .take(MAX_ANSWER)
        .read_to_end(&mut answer)
        .map_err(unreachable)?;
    let text = String::from_utf8_lossy(&answer);
    let status = text
        .strip_prefix("HTTP/1.")
        .and_then(|rest| rest.get(2..5))
        .and_then(|code| code.parse::<u16>().ok())
        .unwrap_or(0);
    if status != 200 {
        return Err(ProbeError::Unhealthy { addr, status });
    }
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    Ok(body.trim().to_owned())
}

/// The `health` subcommand both services share: asks the configured loopback health
/// port (`health_listen`) for `/health` and returns the answer's body.
pub fn ask(health_listen: Option<SocketAddr>) -> Result<String, String> {
    let addr =
        health_listen.ok_or("health_listen is not configured: there is no health port to ask")?;
    probe(addr, "/health", Duration::from_secs(3)).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;

    use super::*;

    fn answer_once(reply: &'static [u8]) -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            // Read the whole request first: closing with unread bytes would reset.
            let mut seen = Vec::new();
            let mut buf = [0u8; 512];
            while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => seen.extend_from_slice(&buf[..n]),
                }
            }
            let _ = s.write_all(reply);
        });
        addr
    }

    #[test]
    fn ok_returns_the_body() {
        let addr = answer_once(b"HTTP/1.1 200 OK\r\ncontent-length: 15\r\n\r\n{\"status\":\"ok\"}");
        let body = probe(addr, "/health", Duration::from_secs(2)).unwrap();
        assert_eq!(body, "{\"status\":\"ok\"}");
    }

    #[test]
    fn other_status_is_unhealthy() {
        let addr = answer_once(b"HTTP/1.1 503 Service Unavailable\r\n\r\n{}");
        match probe(addr, "/health", Duration::from_secs(2)) {
            Err(ProbeError::Unhealthy { status: 503, .. }) => {}
            other => panic!("expected 503, got {other:?}"),
        }
    }

    #[test]
    fn garbage_is_unhealthy_not_a_panic() {
        let addr = answer_once(b"\xff\xfe nonsense");
        assert!(matches!(
            probe(addr, "/health", Duration::from_secs(2)),
            Err(ProbeError::Unhealthy { status: 0, .. })
        ));
    }

    #[test]
    fn closed_port_is_unreachable() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        drop(l);
        assert!(matches!(
            probe(addr, "/health", Duration::from_secs(2)),
            Err(ProbeError::Unreachable { .. })
        ));
    }
}
