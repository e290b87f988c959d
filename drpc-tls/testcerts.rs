// Test certificate authority and certificates made on the fly with rcgen, shared by
// the tests and the `gen-test-certs` example (which writes them for the
// cross-language tests). Never used outside tests: no key is ever committed.

use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, SanType,
};

pub struct TestCa {
    pub cert: Certificate,
    pub key: KeyPair,
}

pub struct TestCert {
    pub cert_pem: String,
    pub key_pem: String,
}

#[allow(dead_code)] // the example uses a subset
pub enum Validity {
    Now,
    Expired,
    NotYetValid,
}

impl TestCa {
    pub fn new(name: &str) -> TestCa {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.not_before = rcgen::date_time_ymd(2000, 1, 1);
        params.not_after = rcgen::date_time_ymd(2100, 1, 1);
        let cert = params.self_signed(&key).expect("self-signed CA");
        TestCa { cert, key }
    }

    pub fn pem(&self) -> String {
        self.cert.pem()
    }

    /// A leaf for `common_name` with DNS SANs `dns` (and 127.0.0.1, ::1 and a
    /// SPIFFE URI), usable as server and client certificate.
    pub fn issue(&self, common_name: &str, dns: &[&str], validity: Validity) -> TestCert {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::new(dns.iter().map(|d| d.to_string()).collect::<Vec<_>>()).expect("params");
        params.distinguished_name.push(DnType::CommonName, common_name);
        params.distinguished_name.push(DnType::OrganizationName, "drpc-rs tests");
        params.subject_alt_names.push(SanType::IpAddress("127.0.0.1".parse().unwrap()));
        params.subject_alt_names.push(SanType::IpAddress("::1".parse().unwrap()));
        params.subject_alt_names.push(SanType::URI(
            format!("spiffe://drpc.test/{common_name}").try_into().expect("uri"),
        ));
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        let (before, after) = match validity {
            Validity::Now => (rcgen::date_time_ymd(2000, 1, 1), rcgen::date_time_ymd(2100, 1, 1)),
            Validity::Expired => (rcgen::date_time_ymd(2000, 1, 1), rcgen::date_time_ymd(2001, 1, 1)),
            Validity::NotYetValid => (rcgen::date_time_ymd(2099, 1, 1), rcgen::date_time_ymd(2100, 1, 1)),
        };
        params.not_before = before;
        params.not_after = after;
        let cert = params.signed_by(&key, &self.cert, &self.key).expect("signed leaf");
        TestCert { cert_pem: cert.pem(), key_pem: key.serialize_pem() }
    }
}
