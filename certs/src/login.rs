//! The enroller's user CA: an intermediate certificate the trust domain's CA issues
//! for a key that lives in the enroller's token, and the short-lived login
//! certificates that intermediate signs for users' CSRs.
//!
//! Only `user` identities may come through the intermediate. Services enforce that
//! with [`crate::tls::issued_directly_by`]: any other role must present just its leaf,
//! issued by the trust domain's CA itself, so a compromised enroller cannot mint a
//! custodian's or an admin's certificate.

use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyUsagePurpose, SanType, SigningKey,
    SubjectPublicKeyInfo, PKCS_ECDSA_P256_SHA256,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateSigningRequestDer;
use time::OffsetDateTime;

use crate::{Ca, Error, Name, Role, SpiffeId, TrustDomain};

/// Longest validity of a login certificate.
pub const MAX_LOGIN_VALIDITY: Duration = Duration::from_secs(10 * 60);
/// How far back a login certificate's `notBefore` is set, for clock skew; counted in
/// its validity.
pub const LOGIN_BACKDATE: Duration = Duration::from_secs(60);

/// The subject common name of a trust domain's user CA.
pub fn user_ca_name(td: &TrustDomain) -> String {
    format!("{td} user CA")
}

impl Ca {
    /// Issues the intermediate "user CA" certificate for the P-256 public key in
    /// `public_key_pem` (a `PUBLIC KEY` block, as `enroller init` writes it): CA with
    /// path length 0, certSign only, subject `<td> user CA`.
    pub fn issue_user_ca(&self, public_key_pem: &str, validity: Duration) -> Result<String, Error> {
        let spki =
            SubjectPublicKeyInfo::from_pem(public_key_pem).map_err(|_| Error::UnsupportedKey)?;
        if rcgen::PublicKeyData::algorithm(&spki) != &PKCS_ECDSA_P256_SHA256 {
            return Err(Error::UnsupportedKey);
        }
        let now = OffsetDateTime::now_utc();
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, user_ca_name(self.trust_domain()));
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.use_authority_key_identifier_extension = true;
        params.serial_number = Some(crate::ca::random_serial()?);
        params.not_before = now - crate::BACKDATE;
        params.not_after = now + validity;
        let issuer = Issuer::from_ca_cert_der(self.cert_der(), self.signing_key())
            .map_err(crate::ca::generation)?;
        let cert = params
            .signed_by(&spki, &issuer)
            .map_err(crate::ca::generation)?;
        Ok(cert.pem())
    }
}

/// Issues a login certificate for `spiffe://<td>/user/<name>` to the key of a PKCS#10
/// CSR (whose signature proves the requester holds that key), signed by the user CA
/// whose certificate is `user_ca_pem` and whose key is `signer` (the enroller's token).
///
/// Nothing is taken from the CSR but its public key: subject, SANs and extensions are
/// set here. The key must be P-256. Validity is capped at [`MAX_LOGIN_VALIDITY`],
/// counted from [`LOGIN_BACKDATE`] before now. Returns the certificate PEM and its
/// `notAfter` as Unix seconds.
pub fn issue_login_certificate(
    user_ca_pem: &str,
    signer: &impl SigningKey,
    td: &TrustDomain,
    name: &Name,
    csr_pem: &str,
    validity: Duration,
) -> Result<(String, i64), Error> {
    let validity = validity.min(MAX_LOGIN_VALIDITY);
    if validity <= LOGIN_BACKDATE {
        return Err(Error::InvalidValidity(
            "a login certificate must be valid for more than a minute",
        ));
    }
    let csr_der = CertificateSigningRequestDer::from_pem_slice(csr_pem.as_bytes())
        .map_err(|e| Error::Pem(e.to_string()))?;
    let csr = CertificateSigningRequestParams::from_der(&csr_der).map_err(|_| Error::InvalidCsr)?;
    if csr.public_key.algorithm() != &PKCS_ECDSA_P256_SHA256 {
        return Err(Error::UnsupportedKey);
    }
    let id = SpiffeId::new(td.clone(), Role::User, name.clone());
    let now = OffsetDateTime::now_utc();
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::OrganizationalUnitName, "user");
    params
        .distinguished_name
        .push(DnType::CommonName, name.as_str());
    params.subject_alt_names = vec![SanType::URI(
        id.to_string().try_into().map_err(crate::ca::generation)?,
    )];
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.use_authority_key_identifier_extension = true;
    params.serial_number = Some(crate::ca::random_serial()?);
    params.not_before = now - LOGIN_BACKDATE;
    params.not_after = params.not_before + validity;
    let not_after = params.not_after.unix_timestamp();
    let issuer = Issuer::from_ca_cert_pem(user_ca_pem, signer).map_err(crate::ca::generation)?;
    let cert = params
        .signed_by(&csr.public_key, &issuer)
        .map_err(crate::ca::generation)?;
    Ok((cert.pem(), not_after))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::KeyPair;

    #[test]
    fn login_certificate_from_csr_through_an_intermediate() {
        let td = TrustDomain::new("example.test").unwrap();
        let ca = Ca::init(&td).unwrap();
        let ca_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let user_ca = ca
            .issue_user_ca(&ca_key.public_key_pem(), Duration::from_secs(86400))
            .unwrap();

        let user_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let mut req = CertificateParams::default();
        req.subject_alt_names = vec![SanType::URI(
            "spiffe://example.test/admin/root".try_into().unwrap(),
        )];
        let csr = req.serialize_request(&user_key).unwrap().pem().unwrap();
        let name = Name::new("alice").unwrap();
        let (pem, not_after) = issue_login_certificate(
            &user_ca,
            &ca_key,
            &td,
            &name,
            &csr,
            Duration::from_secs(3600),
        )
        .unwrap();
        let now = OffsetDateTime::now_utc().unix_timestamp();
        assert!(
            not_after <= now + 600 && not_after > now + 500,
            "capped at ten minutes"
        );
        let der = crate::ca::first_certificate(pem.as_bytes()).unwrap();
        // The CSR asked for an admin identity; the certificate names only the user.
        assert_eq!(
            crate::spiffe_id_from_der(&der).unwrap().to_string(),
            "spiffe://example.test/user/alice"
        );
        let (_, x) = x509_parser::parse_x509_certificate(&der).unwrap();
        assert_eq!(
            x.public_key().subject_public_key.data.as_ref(),
            user_key.public_key_raw()
        );
        assert!(x.issuer().to_string().contains("user CA"));

        // A CSR whose signature does not verify is refused.
        let mut broken = csr.clone().into_bytes();
        let i = broken.len() / 2;
        broken[i] = if broken[i] == b'A' { b'B' } else { b'A' };
        assert!(issue_login_certificate(
            &user_ca,
            &ca_key,
            &td,
            &name,
            &String::from_utf8_lossy(&broken),
            Duration::from_secs(600)
        )
        .is_err());
    }

    #[test]
    fn only_the_ca_itself_issues_service_identities() {
        use crate::tls::issued_directly_by;
        let td = TrustDomain::new("example.test").unwrap();
        let ca = Ca::init(&td).unwrap();
        let ca_pem = ca.cert_pem().as_bytes();
        let svc = ca
            .issue(
                Role::Custodian,
                &Name::new("c1").unwrap(),
                &[],
                &[],
                Duration::from_secs(60),
            )
            .unwrap();
        let svc_der = crate::ca::first_certificate(svc.cert_pem.as_bytes()).unwrap();
        assert!(issued_directly_by(std::slice::from_ref(&svc_der), ca_pem));
        assert!(
            !issued_directly_by(&[svc_der.clone(), svc_der.clone()], ca_pem),
            "extra certificates refused"
        );

        // A certificate the intermediate signs, even one that names a custodian, is not.
        let ca_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let user_ca = ca
            .issue_user_ca(&ca_key.public_key_pem(), Duration::from_secs(3600))
            .unwrap();
        let user_ca_der = crate::ca::first_certificate(user_ca.as_bytes()).unwrap();
        let k = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let csr = CertificateParams::default()
            .serialize_request(&k)
            .unwrap()
            .pem()
            .unwrap();
        let (pem, _) = issue_login_certificate(
            &user_ca,
            &ca_key,
            &td,
            &Name::new("bob").unwrap(),
            &csr,
            Duration::from_secs(600),
        )
        .unwrap();
        let der = crate::ca::first_certificate(pem.as_bytes()).unwrap();
        assert!(!issued_directly_by(std::slice::from_ref(&der), ca_pem));
        assert!(!issued_directly_by(&[der, user_ca_der], ca_pem));
    }
}
