//! Certificates for TLS distribution tests: a throw-away certificate
//! authority (rcgen) that writes PEM files into a fresh directory, and the
//! `-ssl_dist_optfile` an `erl -proto_dist inet_tls` node reads.

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair};

use crate::unique;

/// A fresh directory for one test's certificates.
pub fn cert_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(unique("ember-tls"));
    std::fs::create_dir_all(&dir).expect("create the certificate directory");
    dir
}

/// A certificate authority that signs node certificates into a directory.
pub struct TestCa {
    dir: PathBuf,
    name: String,
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl TestCa {
    /// A fresh authority; its certificate goes to `dir/<name>-ca.pem`.
    pub fn new(dir: &Path, name: &str) -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params
            .distinguished_name
            .push(DnType::CommonName, format!("{name} test CA"));
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let key = KeyPair::generate().expect("a CA key");
        let cert = params.self_signed(&key).expect("a CA certificate");
        let ca = TestCa {
            dir: dir.to_path_buf(),
            name: name.to_string(),
            cert,
            key,
        };
        std::fs::write(ca.ca_file(), ca.cert.pem()).expect("write the CA file");
        ca
    }

    /// The PEM file of the authority's certificate.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.join(format!("{}-ca.pem", self.name))
    }

    /// The directory the files go to.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A certificate for `node` naming `hosts` (DNS names or IP addresses;
    /// server and client use), as `(cert file, key file)`.
    pub fn issue(&self, node: &str, hosts: &[&str]) -> (PathBuf, PathBuf) {
        let names = hosts.iter().map(|h| h.to_string()).collect::<Vec<_>>();
        let mut params = CertificateParams::new(names).expect("node params");
        params.distinguished_name.push(DnType::CommonName, node);
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let key = KeyPair::generate().expect("a node key");
        let cert = params
            .signed_by(&key, &self.cert, &self.key)
            .expect("a node certificate");
        let cert_file = self.dir.join(format!("{}-{node}.pem", self.name));
        let key_file = self.dir.join(format!("{}-{node}-key.pem", self.name));
        std::fs::write(&cert_file, cert.pem()).expect("write the certificate");
        std::fs::write(&key_file, key.serialize_pem()).expect("write the key");
        (cert_file, key_file)
    }

    /// An `-ssl_dist_optfile` for `erl` node `node` on `hosts`: a
    /// certificate of this authority, trusting `trusted`'s, and mutual TLS
    /// (`verify_peer`, `fail_if_no_peer_cert`). Without `client_cert`, its
    /// client side presents no certificate.
    pub fn erl_optfile(
        &self,
        node: &str,
        hosts: &[&str],
        trusted: &TestCa,
        client_cert: bool,
    ) -> PathBuf {
        let (cert, key) = self.issue(node, hosts);
        let files = format!(
            "{{certfile, {:?}}}, {{keyfile, {:?}}}",
            cert.display().to_string(),
            key.display().to_string()
        );
        let verify = format!(
            "{{cacertfile, {:?}}}, {{verify, verify_peer}}, {{secure_renegotiate, true}}",
            trusted.ca_file().display().to_string()
        );
        let client = if client_cert {
            format!("{files}, {verify}")
        } else {
            verify.clone()
        };
        let text = format!(
            "[{{server, [{files}, {verify}, {{fail_if_no_peer_cert, true}}]}},\n {{client, [{client}]}}].\n"
        );
        let file = self.dir.join(format!("{node}-ssl_dist.conf"));
        std::fs::write(&file, text).expect("write the optfile");
        file
    }
}
