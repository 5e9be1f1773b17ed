//! TLS certificates by server name (SNI), from the `kubernetes.io/tls` Secrets the Ingresses name: an
//! exact host first, then a wildcard certificate's host (`*.example.com`); a client that names no host, or
//! one no certificate covers, gets the first certificate (as ingress-nginx serves its default).

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use k8s_openapi::api::core::v1::Secret;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::routes::Tls;

/// One set of certificates: by host, and the one for clients that name no known host.
#[derive(Debug, Default)]
struct Set {
    by_host: BTreeMap<String, Arc<CertifiedKey>>,
    fallback: Option<Arc<CertifiedKey>>,
}

/// The certificates now, swapped whole on every change.
#[derive(Debug, Default)]
pub struct Certificates {
    now: RwLock<Set>,
}

/// A Secret's `tls.crt` and `tls.key` as a signing key with its chain; `None` if either is missing or bad.
pub fn certified_key(secret: &Secret) -> Option<Arc<CertifiedKey>> {
    let data = secret.data.as_ref()?;
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(&data.get("tls.crt")?.0).collect::<Result<_, _>>().ok()?;
    let key = PrivateKeyDer::from_pem_slice(&data.get("tls.key")?.0).ok()?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&key).ok()?;
    (!chain.is_empty()).then(|| Arc::new(CertifiedKey::new(chain, signing)))
}

impl Certificates {
    /// Replaces the certificates with those `tls` names, found in `secrets` (`namespace/name` → Secret).
    pub fn update(&self, tls: &[Tls], secrets: &BTreeMap<(String, String), Secret>) {
        let mut by_host = BTreeMap::new();
        let mut first = None;
        for t in tls {
            let Some(key) = secrets.get(&(t.namespace.clone(), t.secret.clone())).and_then(certified_key) else {
                tracing::debug!(namespace = t.namespace, secret = t.secret, "no usable TLS secret");
                continue;
            };
            first.get_or_insert_with(|| key.clone());
            for host in &t.hosts {
                by_host.entry(host.clone()).or_insert_with(|| key.clone());
            }
        }
        *self.now.write().unwrap_or_else(|e| e.into_inner()) = Set { by_host, fallback: first };
    }

    fn find(&self, server_name: Option<&str>) -> Option<Arc<CertifiedKey>> {
        let set = self.now.read().unwrap_or_else(|e| e.into_inner());
        let found = server_name.map(str::to_ascii_lowercase).and_then(|name| {
            let wildcard = name.split_once('.').map(|(_, rest)| format!("*.{rest}"));
            set.by_host.get(&name).or_else(|| wildcard.and_then(|w| set.by_host.get(&w))).cloned()
        });
        found.or_else(|| set.fallback.clone())
    }
}

impl ResolvesServerCert for Certificates {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.find(hello.server_name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;

    /// A `kubernetes.io/tls` Secret `ns/name` with a fresh self-signed certificate for `host`.
    fn secret(name: &str, host: &str) -> ((String, String), Secret) {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let cert = rcgen::CertificateParams::new(vec![host.to_string()]).unwrap().self_signed(&key).unwrap();
        let data = BTreeMap::from([
            ("tls.crt".to_string(), ByteString(cert.pem().into_bytes())),
            ("tls.key".to_string(), ByteString(key.serialize_pem().into_bytes())),
        ]);
        (("ns".into(), name.into()), Secret { data: Some(data), ..Default::default() })
    }

    #[test]
    fn the_server_name_picks_the_certificate() {
        let secrets: BTreeMap<_, _> = [secret("a", "a.test"), secret("b", "b.test"), secret("w", "*.w.test")].into();
        let tls =
            |name: &str, host: &str| Tls { namespace: "ns".into(), secret: name.into(), hosts: vec![host.into()] };
        let missing = Tls { namespace: "ns".into(), secret: "gone".into(), hosts: vec!["gone.test".into()] };
        let certs = Certificates::default();
        certs.update(&[missing, tls("a", "a.test"), tls("b", "b.test"), tls("w", "*.w.test")], &secrets);
        let cert_of = |name: Option<&str>| certs.find(name).map(|k| k.cert[0].clone());
        let own =
            |secret: &str| certified_key(&secrets[&("ns".to_string(), secret.to_string())]).unwrap().cert[0].clone();
        assert_eq!(cert_of(Some("b.test")), Some(own("b")));
        assert_eq!(cert_of(Some("A.TEST")), Some(own("a")), "names are case-insensitive");
        assert_eq!(cert_of(Some("x.w.test")), Some(own("w")), "a wildcard covers one label");
        assert_eq!(cert_of(Some("y.x.w.test")), Some(own("a")), "not two: the first usable certificate");
        assert_eq!(cert_of(None), Some(own("a")), "no name: the first usable certificate");
        let bad = Secret {
            data: Some(BTreeMap::from([("tls.crt".into(), ByteString(b"junk".to_vec()))])),
            ..Default::default()
        };
        assert!(certified_key(&bad).is_none());
    }
}
