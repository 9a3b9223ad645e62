//! The mutual-TLS HTTP/1.1 client every service of the project speaks: the enroller
//! towards the custodians, `shardctl` towards both, the tests and the benchmarks. One
//! [`Client`] keeps one connection and reconnects when it drops; use several clients for
//! parallel requests. [`Client::call`] sends any [`wire::Request`] and returns its typed
//! answer, or an [`Error`] that says whether retrying can help.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use certs::SpiffeId;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
pub use hyper::{Method, StatusCode};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use zeroize::Zeroizing;

use wire::custodian::{
    Commit, Delete, DeleteResponse, Deposit, DepositResponse, Health, HealthResponse, List,
    ListResponse, Release, Sign,
};
use wire::{Answer, Refusal, Request};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// Why a call failed; [`Error::retryable`] says whether retrying can help. Exhaustive on
/// purpose: callers word each case, and a new one should not build until they do.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// TCP connect failed or timed out (retryable: the custodian may be down).
    #[error("cannot connect to {addr}: {reason}")]
    Connect {
        /// Address.
        addr: SocketAddr,
        /// Cause.
        reason: String,
    },
    /// The TLS handshake failed (not retryable with the same certificate; it may have expired).
    #[error("TLS handshake with {addr} failed: {reason}")]
    Handshake {
        /// Address.
        addr: SocketAddr,
        /// Cause.
        reason: String,
    },
    /// The server's certificate names another identity than expected (not retryable).
    #[error("{addr} presented {found}, expected {expected}")]
    WrongPeer {
        /// Address.
        addr: SocketAddr,
        /// Expected identity.
        expected: String,
        /// Presented identity.
        found: String,
    },
    /// The connection broke during the request (retryable).
    #[error("request to {addr} failed: {reason}")]
    Transport {
        /// Address.
        addr: SocketAddr,
        /// Cause.
        reason: String,
    },
    /// The deadline passed (retryable).
    #[error("{addr} did not answer within {0:?}", .deadline)]
    Timeout {
        /// Address.
        addr: SocketAddr,
        /// The deadline.
        deadline: Duration,
    },
    /// The service refused with a status and reason (retryable as the reason says).
    #[error("{addr} refused: {status} {reason}", status = .status.as_u16(), reason = .body.reason)]
    Refused {
        /// Address.
        addr: SocketAddr,
        /// HTTP status.
        status: StatusCode,
        /// The JSON error body.
        body: Refusal,
    },
    /// The answer did not parse (not retryable).
    #[error("{addr} sent an unreadable answer: {reason}")]
    Decode {
        /// Address.
        addr: SocketAddr,
        /// Cause.
        reason: String,
    },
}

impl Error {
    /// Whether the same request can succeed later: the peer was unreachable, the
    /// connection broke, the deadline passed, or the refusal's reason is transient.
    pub fn retryable(&self) -> bool {
        match self {
            Error::Connect { .. } | Error::Transport { .. } | Error::Timeout { .. } => true,
            Error::Refused { body, .. } => body.retryable(),
            Error::Handshake { .. } | Error::WrongPeer { .. } | Error::Decode { .. } => false,
        }
    }
}

/// A client for one service.
pub struct Client {
    addr: SocketAddr,
    server_name: ServerName<'static>,
    connector: TlsConnector,
    expected: Option<SpiffeId>,
    deadline: Duration,
    conn: tokio::sync::Mutex<Option<SendRequest<Full<Bytes>>>>,
}

/// A custodian's answer to round 1 of threshold signing, its base64 decoded.
#[derive(Debug, Clone)]
pub struct Committed {
    /// The epoch of the key package that committed.
    pub epoch: u32,
    /// The custodian's holder number in the key.
    pub holder: u16,
    /// The key kind's wire name.
    pub kind: String,
    /// The signing commitments (FROST's encoding).
    pub commitments: Vec<u8>,
    /// The key's public key package (FROST's encoding).
    pub public: Vec<u8>,
}

/// A custodian's answer to round 2: its holder number and signature share (FROST's
/// encoding).
#[derive(Debug, Clone)]
pub struct Signed {
    /// The custodian's holder number.
    pub holder: u16,
    /// The signature share.
    pub share: Vec<u8>,
}

/// A released shard.
pub struct Released {
    /// Epoch.
    pub epoch: u32,
    /// Index.
    pub index: u8,
    /// The encoded envelope. Zeroized on drop.
    pub envelope: Zeroizing<Vec<u8>>,
}

impl Client {
    /// A client for the service at `addr`, verified by `server_name` (a DNS or IP SAN).
    pub fn new(addr: SocketAddr, server_name: &str, tls: Arc<ClientConfig>) -> Result<Self, Error> {
        let server_name =
            ServerName::try_from(server_name.to_owned()).map_err(|_| Error::Connect {
                addr,
                reason: format!("invalid server name {server_name:?}"),
            })?;
        let mut tls = (*tls).clone();
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Client {
            addr,
            server_name,
            connector: TlsConnector::from(Arc::new(tls)),
            expected: None,
            deadline: Duration::from_secs(10),
            conn: tokio::sync::Mutex::new(None),
        })
    }

    /// Also require the server's certificate to name exactly `id`.
    pub fn expect_identity(mut self, id: SpiffeId) -> Self {
        self.expected = Some(id);
        self
    }

    /// Per-request deadline (connect, handshake and answer); default 10 s.
    pub fn with_deadline(mut self, deadline: Duration) -> Self {
        self.deadline = deadline;
        self
    }

    /// The service's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, Error> {
        let addr = self.addr;
        let tcp = TcpStream::connect(addr).await.map_err(|e| Error::Connect {
            addr,
            reason: error_chain(&e),
        })?;
        let _ = tcp.set_nodelay(true);
        let tls = self
            .connector
            .connect(self.server_name.clone(), tcp)
            .await
            .map_err(|e| Error::Handshake {
                addr,
                reason: error_chain(&e),
            })?;
        if let Some(expected) = &self.expected {
            let found = certs::tls::peer_spiffe_id(tls.get_ref().1)
                .map(|id| id.to_string())
                .unwrap_or_else(|_| "no identity".into());
            if found != expected.to_string() {
                return Err(Error::WrongPeer {
                    addr,
                    expected: expected.to_string(),
                    found,
                });
            }
        }
        let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| Error::Transport {
                addr,
                reason: error_chain(&e),
            })?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(send)
    }

    /// Sends one request and returns the status and body, within the client's deadline.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(StatusCode, Bytes), Error> {
        let addr = self.addr;
        let deadline = self.deadline;
        let transport = |e: &(dyn std::error::Error + 'static)| Error::Transport {
            addr,
            reason: error_chain(e),
        };
        let has_body = body.is_some();
        let body = Bytes::from(body.unwrap_or_default());
        // One request on the kept connection, or on a new one.
        let exchange = async {
            let mut guard = self.conn.lock().await;
            // One retry on a fresh connection when a kept-alive one turns out closed.
            for attempt in 0..2 {
                let mut send = match guard.take() {
                    Some(s) if !s.is_closed() => s,
                    _ => self.connect().await?,
                };
                if send.ready().await.is_err() {
                    continue;
                }
                let mut req = hyper::Request::builder()
                    .method(method.clone())
                    .uri(path)
                    .header("host", "custodian");
                if has_body {
                    req = req.header("content-type", "application/json");
                }
                let req = req
                    .body(Full::new(body.clone()))
                    .map_err(|e| transport(&e))?;
                match send.send_request(req).await {
                    Ok(resp) => {
                        let status = resp.status();
                        let collected = resp.into_body().collect().await;
                        let bytes = collected.map_err(|e| transport(&e))?.to_bytes();
                        *guard = Some(send);
                        return Ok((status, bytes));
                    }
                    Err(e) if attempt == 0 && e.is_canceled() => continue,
                    Err(e) => return Err(transport(&e)),
                }
            }
            Err(Error::Transport {
                addr,
                reason: "connection closed".into(),
            })
        };
        tokio::time::timeout(deadline, exchange)
            .await
            .map_err(|_| Error::Timeout { addr, deadline })?
    }

    /// Sends a request of the project's wire and decodes its typed answer; a refusal
    /// comes back as [`Error::Refused`] with its reason.
    pub async fn call<R: Request>(&self, req: &R) -> Result<R::Response, Error> {
        let body = req.body().map_err(|e| Error::Decode {
            addr: self.addr,
            reason: error_chain(&e),
        })?;
        let (status, bytes) = self.request(method(R::METHOD), &req.path(), body).await?;
        self.answer::<R::Response>(status, &bytes)
    }

    /// The typed answer of a success, or the refusal.
    pub fn answer<T: Answer>(&self, status: StatusCode, body: &[u8]) -> Result<T, Error> {
        if !status.is_success() {
            let body = serde_json::from_slice::<Refusal>(body)
                .unwrap_or_else(|_| Refusal::new(status.as_u16(), wire::Reason::Unknown));
            return Err(Error::Refused {
                addr: self.addr,
                status,
                body,
            });
        }
        T::decode(body).map_err(|e| Error::Decode {
            addr: self.addr,
            reason: e.to_string(),
        })
    }

    /// Deposits an encoded envelope for `owner` at a custodian (enroller certificate).
    pub async fn deposit(&self, owner: &str, envelope: &[u8]) -> Result<DepositResponse, Error> {
        self.call(&Deposit {
            owner: owner.to_owned(),
            envelope: Zeroizing::new(B64.encode(envelope)),
        })
        .await
    }

    /// Releases the caller's shard of `secret_id` from a custodian (the owner's
    /// certificate), its envelope decoded.
    pub async fn release(
        &self,
        secret_id: &shard::SecretId,
        epoch: Option<u32>,
    ) -> Result<Released, Error> {
        let r = self
            .call(&Release {
                secret_id: secret_id.to_string(),
                epoch,
            })
            .await?;
        let envelope =
            Zeroizing::new(
                B64.decode(r.envelope.as_bytes())
                    .map_err(|e| Error::Decode {
                        addr: self.addr,
                        reason: error_chain(&e),
                    })?,
            );
        Ok(Released {
            epoch: r.epoch,
            index: r.index,
            envelope,
        })
    }

    /// Round 1 of threshold signing with the caller's key `secret_id` under `session` (32
    /// hex digits; the owner's certificate).
    pub async fn commit(
        &self,
        secret_id: &shard::SecretId,
        epoch: Option<u32>,
        session: &str,
    ) -> Result<Committed, Error> {
        let r = self
            .call(&Commit {
                secret_id: secret_id.to_string(),
                session: session.to_owned(),
                epoch,
            })
            .await?;
        Ok(Committed {
            epoch: r.epoch,
            holder: r.holder,
            kind: r.kind,
            commitments: self.base64(&r.commitments)?,
            public: self.base64(&r.public)?,
        })
    }

    /// Round 2 of threshold signing: the signing package (FROST's encoding) for `session`.
    pub async fn sign(
        &self,
        secret_id: &shard::SecretId,
        session: &str,
        package: &[u8],
    ) -> Result<Signed, Error> {
        let r = self
            .call(&Sign {
                secret_id: secret_id.to_string(),
                session: session.to_owned(),
                package: B64.encode(package),
            })
            .await?;
        Ok(Signed {
            holder: r.holder,
            share: self.base64(&r.share)?,
        })
    }

    fn base64(&self, text: &str) -> Result<Vec<u8>, Error> {
        B64.decode(text.as_bytes()).map_err(|e| Error::Decode {
            addr: self.addr,
            reason: error_chain(&e),
        })
    }

    /// Commits a refresh's next `epoch` of `secret_id` (the enroller's certificate).
    pub async fn commit_epoch(
        &self,
        secret_id: &shard::SecretId,
        epoch: u32,
    ) -> Result<wire::custodian::CommitEpochResponse, Error> {
        self.call(&wire::custodian::CommitEpoch {
            secret_id: secret_id.to_string(),
            epoch,
        })
        .await
    }

    /// Checks the custodian's share of `secret_id` (at `epoch`, or the newest) against the
    /// manifest's `commitment` for it, without the share leaving the custodian (the
    /// owner's or the enroller's certificate). A verdict, `ok` or `bad`, is an answer.
    pub async fn verify(
        &self,
        secret_id: &shard::SecretId,
        epoch: Option<u32>,
        commitment: &[u8; 32],
    ) -> Result<wire::custodian::VerifyResponse, Error> {
        self.call(&wire::custodian::Verify {
            secret_id: secret_id.to_string(),
            epoch,
            commitment: hex::encode(commitment),
        })
        .await
    }

    /// Deletes the shard(s) of `secret_id` at a custodian (enroller or admin certificate).
    pub async fn delete(
        &self,
        secret_id: &shard::SecretId,
        epoch: Option<u32>,
    ) -> Result<DeleteResponse, Error> {
        self.call(&Delete {
            secret_id: secret_id.to_string(),
            epoch,
        })
        .await
    }

    /// Lists a custodian's shard metadata (admin certificate).
    pub async fn list(&self, after: Option<&str>, limit: u32) -> Result<ListResponse, Error> {
        self.call(&List {
            after: after.map(str::to_owned),
            limit: Some(limit),
        })
        .await
    }

    /// A custodian's health (any certificate of the trust domain).
    pub async fn health(&self) -> Result<HealthResponse, Error> {
        self.call(&Health).await
    }
}

/// The HTTP method of a wire method.
pub fn method(m: wire::Method) -> Method {
    match m {
        wire::Method::Get => Method::GET,
        wire::Method::Put => Method::PUT,
        wire::Method::Post => Method::POST,
        wire::Method::Delete => Method::DELETE,
    }
}

/// An error with its causes, so that e.g. a TLS alert under a broken connection
/// (an expired client certificate) reaches the caller's message.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let more = c.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        cause = c.source();
    }
    text
}
