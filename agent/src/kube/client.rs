//! Where the pod list is asked for and how: the API server (`/api/v1/pods` filtered to this
//! node) or the kubelet (`/pods`), over HTTPS verified against the cluster's CA, with the
//! service account's token (read again for every request: projected tokens are rotated).

use std::{
    io::Read as _,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use super::{KubeConfig, PodsFrom};

/// Where a pod's service account material is mounted.
const SA_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// The kubelet's authenticated port.
const KUBELET_PORT: u16 = 10250;
/// For one whole request, body included.
const TIMEOUT: Duration = Duration::from_secs(10);
/// A few hundred pods are a few MiB at most; more is cut off.
const MAX_BODY: u64 = 64 << 20;

pub struct Endpoint {
    pub url: url::Url,
    token_file: Option<PathBuf>,
    agent: ureq::Agent,
}

#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    #[error("kubernetes.pods: api needs this node's name, to list only its pods: set kubernetes.node or the NODE_NAME environment variable (the DaemonSet sets it from spec.nodeName)")]
    NoNode,
    #[error("kubernetes.pods: api needs kubernetes.server, or KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT (set in every pod)")]
    NoServer,
    #[error("kubernetes.server `{0}`: {1}")]
    BadServer(String, String),
    #[error("kubernetes.caFile {0}: {1}")]
    Ca(String, String),
    #[error("kubernetes: no CA to verify the server with: set kubernetes.caFile (in a pod, the service account's ca.crt is the default); the public CAs are never trusted for the pod list, which decides which pods get which vendor")]
    NoCa,
    #[error("starting the pod list thread: {0}")]
    Thread(std::io::Error),
}

/// The endpoint `cfg` names, reading the environment through `env`; None when pods are `off`.
pub fn endpoint(cfg: &KubeConfig, env: &dyn Fn(&str) -> Option<String>) -> Result<Option<Endpoint>, EndpointError> {
    let server = match (&cfg.pods, &cfg.server) {
        (PodsFrom::Off, _) => return Ok(None),
        (_, Some(s)) => s.clone(),
        (PodsFrom::Api, None) => match (env("KUBERNETES_SERVICE_HOST"), env("KUBERNETES_SERVICE_PORT")) {
            (Some(h), Some(p)) => format!("https://{}:{p}", bracketed(&h)),
            _ => return Err(EndpointError::NoServer),
        },
        // The kubelet serves on the node's address; the DaemonSet passes it as NODE_IP.
        (PodsFrom::Kubelet, None) => {
            format!("https://{}:{KUBELET_PORT}", bracketed(&env("NODE_IP").unwrap_or_else(|| "127.0.0.1".into())))
        }
    };
    let mut url = url::Url::parse(&server).map_err(|e| EndpointError::BadServer(server.clone(), e.to_string()))?;
    // The list decides which pods get which vendor: whoever could change it in transit could
    // grant one. Credentials in the URL would be shown in logs and status.
    if url.scheme() != "https" || url.host().is_none() {
        return Err(EndpointError::BadServer(server, "an https://host[:port] URL is needed".into()));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(EndpointError::BadServer(
            "(credentials hidden)".into(),
            "credentials in the URL are refused: the token comes from kubernetes.tokenFile".into(),
        ));
    }
    match cfg.pods {
        PodsFrom::Api => {
            let node =
                cfg.node.clone().or_else(|| env("NODE_NAME")).filter(|n| !n.is_empty()).ok_or(EndpointError::NoNode)?;
            url.set_path("/api/v1/pods");
            // resourceVersion=0: served from the API server's cache, not from etcd.
            url.query_pairs_mut()
                .append_pair("fieldSelector", &format!("spec.nodeName={node}"))
                .append_pair("resourceVersion", "0");
        }
        PodsFrom::Kubelet => url.set_path("/pods"),
        PodsFrom::Off => unreachable!("returned above"),
    }
    let sa = |f: &str| Some(Path::new(SA_DIR).join(f)).filter(|p| p.exists());
    let token_file = cfg.token_file.clone().or_else(|| sa("token")).filter(|p| !p.as_os_str().is_empty());
    let ca_file = cfg.ca_file.clone().or_else(|| sa("ca.crt"));
    let mut builder = ureq::AgentBuilder::new()
        .timeout(TIMEOUT)
        .redirects(0)
        .user_agent(concat!("egress-agent/", env!("CARGO_PKG_VERSION")));
    builder = builder.tls_config(tls_with_ca(&ca_file.ok_or(EndpointError::NoCa)?)?);
    Ok(Some(Endpoint { url, token_file, agent: builder.build() }))
}

fn bracketed(host: &str) -> String {
    if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_owned()
    }
}

/// A TLS client trusting exactly the certificates of `ca` (PEM): the cluster's CA, not the
/// public ones.
fn tls_with_ca(ca: &Path) -> Result<Arc<rustls::ClientConfig>, EndpointError> {
    use rustls::pki_types::{pem::PemObject as _, CertificateDer};
    let shown = ca.display().to_string();
    let bad = |m: String| EndpointError::Ca(shown.clone(), m);
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).map_err(|e| bad(e.to_string()))? {
        roots.add(cert.map_err(|e| bad(e.to_string()))?).map_err(|e| bad(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(bad("no certificate in it".into()));
    }
    let config = rustls::ClientConfig::builder_with_provider(rustls::crypto::ring::default_provider().into())
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("HTTP {0}{1}")]
    Status(u16, &'static str),
    #[error("{0}")]
    Transport(String),
    #[error("the answer is larger than {MAX_BODY} bytes; cut off")]
    TooLarge,
    #[error("reading the token {0}: {1}")]
    Token(String, std::io::Error),
}

impl Endpoint {
    /// The URL without its query, for messages.
    pub fn shown(&self) -> String {
        let mut u = self.url.clone();
        u.set_query(None);
        u.to_string()
    }

    /// One request for the pod list; its body, at most [`MAX_BODY`] bytes.
    pub fn fetch(&self) -> Result<Vec<u8>, FetchError> {
        let mut req = self.agent.request_url("GET", &self.url).set("Accept", "application/json");
        // Only https endpoints are built (see `endpoint`), and redirects are not followed: the
        // token goes to the server configured, and nowhere else.
        if let Some(f) = &self.token_file {
            let token = std::fs::read_to_string(f).map_err(|e| FetchError::Token(f.display().to_string(), e))?;
            req = req.set("Authorization", &format!("Bearer {}", token.trim()));
        }
        let resp = match req.call() {
            Ok(r) => r,
            Err(ureq::Error::Status(code, _)) => {
                let hint = match code {
                    401 => ": the token was not accepted",
                    403 => ": the service account may not list pods (deploy/kubernetes/base/rbac.yaml grants it)",
                    _ => "",
                };
                return Err(FetchError::Status(code, hint));
            }
            Err(e) => return Err(FetchError::Transport(e.to_string())),
        };
        let mut body = Vec::new();
        resp.into_reader()
            .take(MAX_BODY + 1)
            .read_to_end(&mut body)
            .map_err(|e| FetchError::Transport(e.to_string()))?;
        if body.len() as u64 > MAX_BODY {
            return Err(FetchError::TooLarge);
        }
        Ok(body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(vars: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |k| vars.iter().find(|(n, _)| *n == k).map(|(_, v)| (*v).to_owned())
    }

    /// A CA file (any certificate will do: nothing is fetched).
    fn ca() -> PathBuf {
        let p = std::env::temp_dir().join(format!("ea-kube-ca-{}.pem", std::process::id()));
        // A self-signed CA made once with openssl for these tests.
        let pem = "-----BEGIN CERTIFICATE-----\nMIIBgjCCASmgAwIBAgIUOaWz804MI/Piex7rTSdj+46JW+QwCgYIKoZIzj0EAwIw\nFzEVMBMGA1UEAwwMdW5pdC10ZXN0LWNhMB4XDTI2MTIwMjA4NDI1MVoXDTM2MTEy\nOTA4NDI1MVowFzEVMBMGA1UEAwwMdW5pdC10ZXN0LWNhMFkwEwYHKoZIzj0CAQYI\nKoZIzj0DAQcDQgAEXxf6NppKlscf9ddx++7H43h6v7rqqkZxvxEQXtBX3722sPkd\n/mgHhS8cTKnmPI2k52PQnGNX1Na9THOFmXGPzaNTMFEwHQYDVR0OBBYEFPF4+HhZ\n0QPJiVFSb5qx2M3vT3VWMB8GA1UdIwQYMBaAFPF4+HhZ0QPJiVFSb5qx2M3vT3VW\nMA8GA1UdEwEB/wQFMAMBAf8wCgYIKoZIzj0EAwIDRwAwRAIgFaQO4HvhTMIp7MeA\n0JkH5vdj25L6NBD4WThy2rJPL9ICIFd7Efxg7KOYXXISvjtt71FlJoLoqp6/lif5\n3k55SZx6\n-----END CERTIFICATE-----\n";
        std::fs::write(&p, pem).expect("ca");
        p
    }

    fn cfg(pods: PodsFrom) -> KubeConfig {
        KubeConfig { pods, token_file: Some(PathBuf::new()), ca_file: Some(ca()), ..KubeConfig::default() }
    }

    #[test]
    fn the_api_url_lists_this_nodes_pods_only() {
        let e = endpoint(
            &cfg(PodsFrom::Api),
            &env(&[("KUBERNETES_SERVICE_HOST", "fd00::1"), ("KUBERNETES_SERVICE_PORT", "443"), ("NODE_NAME", "n-1")]),
        )
        .expect("ok")
        .expect("on");
        assert_eq!(e.url.as_str(), "https://[fd00::1]/api/v1/pods?fieldSelector=spec.nodeName%3Dn-1&resourceVersion=0");
        assert_eq!(e.shown(), "https://[fd00::1]/api/v1/pods");
        let e = endpoint(
            &cfg(PodsFrom::Api),
            &env(&[("KUBERNETES_SERVICE_HOST", "10.96.0.1"), ("KUBERNETES_SERVICE_PORT", "443")]),
        );
        assert!(matches!(e, Err(EndpointError::NoNode)), "never the whole cluster's pods");
        assert!(matches!(endpoint(&cfg(PodsFrom::Api), &env(&[("NODE_NAME", "n")])), Err(EndpointError::NoServer)));
    }

    #[test]
    fn the_kubelet_url_is_on_the_node_address_and_off_is_none() {
        let e = endpoint(&cfg(PodsFrom::Kubelet), &env(&[("NODE_IP", "192.0.2.7")])).expect("ok").expect("on");
        assert_eq!(e.url.as_str(), "https://192.0.2.7:10250/pods");
        assert!(endpoint(&cfg(PodsFrom::Off), &env(&[])).expect("ok").is_none());
        let mut c = cfg(PodsFrom::Kubelet);
        for bad in ["ftp://x", "http://127.0.0.1:10255", "https://user:pw@10.0.0.1"] {
            c.server = Some(bad.into());
            let e = endpoint(&c, &env(&[])).err().expect("refused").to_string();
            assert!(!e.contains("pw@"), "{e}");
            assert!(e.contains("https://") || e.contains("credentials"), "{bad}: {e}");
        }
        c.server = Some("https://127.0.0.1:1".into());
        c.ca_file = None;
        assert!(matches!(endpoint(&c, &env(&[])), Err(EndpointError::NoCa)), "never the public CAs");
        c.server = Some("https://127.0.0.1:1".into());
        c.ca_file = Some("/nonexistent/ca.crt".into());
        let e = endpoint(&c, &env(&[])).err().expect("no CA file").to_string();
        assert!(e.starts_with("kubernetes.caFile /nonexistent/ca.crt:"), "{e}");
    }
}
