//! Certificate files are reloaded without a restart: replace the custodian's
//! certificate and key on disk, and new connections get the new certificate from the
//! same process, which keeps serving.

use std::sync::Arc;
use std::time::{Duration, Instant};

use certs::{Name, Role};
use testkit::custodian::*;
use testkit::Backend;

/// The certificate the custodian presents to a new connection (DER).
async fn served_certificate(c: &Custodian) -> Vec<u8> {
    let mut tls = (*c.pki.client_tls(&c.pki.alice)).clone();
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(tls));
    let tcp = tokio::net::TcpStream::connect(c.addr)
        .await
        .expect("connect");
    let name = rustls_pki_types::ServerName::try_from("127.0.0.1").expect("name");
    let stream = connector.connect(name, tcp).await.expect("handshake");
    stream
        .get_ref()
        .1
        .peer_certificates()
        .expect("server certificate")[0]
        .to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaced_certificate_files_are_served_without_a_restart() {
    let mut c = Custodian::start(Backend::SoftHsm);
    let pid = c.pid().unwrap();
    let before = served_certificate(&c).await;

    let fresh = c
        .pki
        .ca
        .issue(
            Role::Custodian,
            &Name::new(NAME).expect("name"),
            &["localhost".into()],
            &["127.0.0.1".parse().expect("ip")],
            Duration::from_secs(3600),
        )
        .expect("issue");
    let pki = c.dir().join("pki");
    std::fs::write(pki.join("custodian.key"), fresh.key_pem.as_bytes()).expect("write key");
    std::fs::write(pki.join("custodian.pem"), fresh.cert_pem.as_bytes()).expect("write cert");

    // The files are checked every 5 s by default.
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut after = served_certificate(&c).await;
    while after == before && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(250)).await;
        after = served_certificate(&c).await;
    }
    assert_ne!(
        after, before,
        "the new certificate was not picked up within 15 s"
    );
    assert_eq!(c.pid().unwrap(), pid, "same process");
    assert!(c.is_running());

    // And it still serves: a deposit and its release over the new certificate.
    let env = c.envelope(33, 1);
    c.client(&c.pki.enroller)
        .deposit(&c.pki.alice.id.to_string(), &env.encode())
        .await
        .expect("deposit");
    let got = c
        .client(&c.pki.alice)
        .release(&env.secret_id, None)
        .await
        .expect("release");
    assert_eq!(&*got.envelope, &*env.encode());
    c.finish();
}
