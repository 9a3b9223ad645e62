//! A client that trickles its request body cannot hold a connection slot: after
//! `limits.request_timeout_ms` the request is answered 408 and the connection closed,
//! and the custodian goes on serving.
//!

use std::sync::Arc;
use std::time::{Duration, Instant};

use testkit::custodian::*;
use testkit::Backend;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickled_body_is_cut_off_with_408() {
    let mut c = Custodian::start(Backend::SoftHsm);
    assert!(c.stop().unwrap().success());
    let config = c.dir().join("custodian.toml");
    let text = std::fs::read_to_string(&config).expect("config");
    std::fs::write(
        &config,
        text.replace("[limits]\n", "[limits]\nrequest_timeout_ms = 400\n"),
    )
    .expect("config");
    c.start().unwrap();

    let mut tls = (*c.pki.client_tls(&c.pki.enroller)).clone();
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(tls));
    let tcp = tokio::net::TcpStream::connect(c.addr)
        .await
        .expect("connect");
    let name = rustls_pki_types::ServerName::try_from("127.0.0.1").expect("name");
    let mut stream = connector.connect(name, tcp).await.expect("handshake");
    let head = "PUT /v1/shards HTTP/1.1\r\nHost: custodian\r\nContent-Type: application/json\r\nContent-Length: 4000\r\n\r\n{\"owner\":";
    stream.write_all(head.as_bytes()).await.expect("write");
    stream.flush().await.expect("flush");

    let started = Instant::now();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer)).await;
    let text = String::from_utf8_lossy(&answer);
    assert!(
        read.is_ok(),
        "the connection was still held after 5 s: {text}"
    );
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("\"reason\":\"request_timeout\""), "{text}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );

    // Still serving.
    c.client(&c.pki.alice)
        .health()
        .await
        .expect("health after the refusal");
    c.finish();
}
