//! The whole journey over real processes: invite, register with TOTP, log in with a
//! CSR, enroll a P-256 key through the enroller, find exactly one shard at each
//! custodian, verify the manifest with the enroller's key, recover as the user.

use std::sync::Arc;

use mtls::{Client, Method};
use p256::pkcs8::DecodePublicKey;
use serde_json::{json, Value};
use testkit::{totp, Backend, Cluster};

async fn call(c: &Client, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
    let (status, bytes) = c
        .request(method, path, body.map(|b| serde_json::to_vec(&b).unwrap()))
        .await
        .unwrap_or_else(|e| panic!("{path}: {e}"));
    (
        status.as_u16(),
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

#[test]
fn invite_register_login_enroll_recover() {
    let mut cluster = Cluster::start(
        &[
            Backend::SoftHsm,
            Backend::SoftHsm,
            Backend::Tpm,
            Backend::Tpm,
        ],
        &|_| {},
    )
    .unwrap();
    cluster.start_enroller(3, &|_| {}).unwrap();
    let enroller = cluster.enroller.as_ref().unwrap();
    let ca = std::fs::read(cluster.pki.join("ca.pem")).unwrap();
    let eaddr = enroller.addr;
    let ip = eaddr.ip().to_string();
    let rt = tokio::runtime::Runtime::new().unwrap();

    let (acert, akey) = cluster.issue("admin", "ops").unwrap();
    let admin_tls = cluster.client_tls(&acert, &akey).unwrap();
    let admin = Client::new(eaddr, &ip, admin_tls.clone()).unwrap();
    let anon = Client::new(
        eaddr,
        &ip,
        Arc::new(certs::tls::client_config_anonymous(&ca).unwrap()),
    )
    .unwrap();

    rt.block_on(async {
        // An admin invites; a client without a certificate cannot.
        let (st, body) = call(
            &anon,
            Method::POST,
            "/v1/admin/invitations",
            Some(json!({"name": "alice"})),
        )
        .await;
        assert_eq!(
            (st, body["reason"].as_str()),
            (401, Some("client_certificate_required"))
        );
        let (st, inv) = call(
            &admin,
            Method::POST,
            "/v1/admin/invitations",
            Some(json!({"name": "alice"})),
        )
        .await;
        assert_eq!(st, 201, "{inv}");
        let code = inv["code"].as_str().unwrap().to_owned();

        // Register with TOTP.
        let password = "correct horse battery staple";
        let (st, reg) = call(
            &anon,
            Method::POST,
            "/v1/register",
            Some(json!({"name": "alice", "invitation": code, "password": password, "totp": true})),
        )
        .await;
        assert_eq!(st, 201, "{reg}");
        let totp_secret = totp::secret_of(reg["totp_uri"].as_str().unwrap());
        let (st, again) = call(
            &anon,
            Method::POST,
            "/v1/register",
            Some(json!({"name": "alice", "invitation": code, "password": password})),
        )
        .await;
        assert_eq!(
            (st, again["reason"].as_str()),
            (403, Some("invitation_used"))
        );

        // Log in with a CSR for a key made here.
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let csr = rcgen::CertificateParams::default()
            .serialize_request(&key)
            .unwrap()
            .pem()
            .unwrap();
        let totp_code = totp::code_now(&totp_secret);
        let login =
            json!({"name": "alice", "password": password, "totp_code": totp_code, "csr": csr});
        let (st, cert) = call(&anon, Method::POST, "/v1/login", Some(login.clone())).await;
        assert_eq!(st, 200, "{cert}");
        assert_eq!(cert["identity"], "spiffe://demo.test/user/alice");
        let (st, replay) = call(&anon, Method::POST, "/v1/login", Some(login)).await;
        assert_eq!(
            (st, replay["reason"].as_str()),
            (401, Some("totp_replayed"))
        );

        let user_tls = Arc::new(
            certs::tls::client_config(
                &ca,
                cert["certificate"].as_str().unwrap().as_bytes(),
                key.serialize_pem().as_bytes(),
            )
            .unwrap(),
        );
        let user = Client::new(eaddr, &ip, user_tls.clone()).unwrap();

        // Enroll a P-256 key.
        let (st, enr) = call(
            &user,
            Method::POST,
            "/v1/enroll",
            Some(json!({"kind": "p256"})),
        )
        .await;
        assert_eq!(st, 201, "{enr}");
        let secret_id: shard::SecretId = enr["secret_id"].as_str().unwrap().parse().unwrap();

        // Exactly one shard at each custodian.
        for i in 0..4 {
            let c = cluster.client(i, admin_tls.clone()).unwrap();
            let list = c.list(None, 100).await.unwrap();
            let mine: Vec<_> = list
                .shards
                .iter()
                .filter(|s| s.secret_id == secret_id.to_string())
                .collect();
            assert_eq!(mine.len(), 1, "custodian {i}");
            assert_eq!(mine[0].index as usize, i + 1);
            assert_eq!(mine[0].owner, "spiffe://demo.test/user/alice");
        }

        // The manifest verifies with the enroller's manifest key.
        let (st, bytes) = user
            .request(Method::GET, "/v1/manifest-key", None)
            .await
            .unwrap();
        assert_eq!(st.as_u16(), 200);
        let mkey =
            p256::ecdsa::VerifyingKey::from_public_key_pem(std::str::from_utf8(&bytes).unwrap())
                .unwrap();
        use base64::Engine;
        let raw = base64::engine::general_purpose::STANDARD
            .decode(enr["manifest"].as_str().unwrap())
            .unwrap();
        let signed = shard::SignedManifest::decode(&raw).unwrap();
        let manifest = signed.verify(&mkey).unwrap().clone();
        assert_eq!(manifest.owner, "spiffe://demo.test/user/alice");

        // Recover as alice with the login certificate, from all four.
        let mut returned = Vec::new();
        for (i, n) in cluster.nodes.iter().enumerate() {
            let c = cluster.client(i, user_tls.clone()).unwrap();
            let r = c.release(&secret_id, None).await.unwrap();
            returned.push(shard::Returned {
                custodian: shard::CustodianId::new(&n.name).unwrap(),
                envelope: r.envelope,
            });
        }
        let rec = shard::combine_verified(&manifest, returned).unwrap();
        let pk = p256::SecretKey::from_slice(rec.secret.expose())
            .unwrap()
            .public_key();
        let enrolled =
            p256::PublicKey::from_public_key_pem(enr["public_key"].as_str().unwrap()).unwrap();
        assert_eq!(pk, enrolled);
    });
}
