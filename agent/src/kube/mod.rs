//! Pod names, namespaces and labels on Kubernetes (config `kubernetes:`). The cgroup path gives
//! a process's pod UID (see `container`); this node's pod list, from the API server or the
//! kubelet, gives what that pod is called and carries. Events and the per-pod metrics name pods
//! with it, and `pod_namespace`/`pod_name`/`pod_labels` selectors resolve through it to the
//! pods' cgroups, which the kernel checks.
//!
//! The list is fetched on a thread of its own, every `interval` and at once when a pod the list
//! does not know appears on the node (at most once a second). A failed fetch keeps the last good
//! list: a pod's UID never changes, and pods that are gone have no cgroup left to match.

pub mod client;
pub mod podlist;

use std::{
    path::PathBuf,
    sync::{mpsc, Arc, Mutex, RwLock},
    time::{Duration, Instant},
};

use serde::Deserialize;
use tokio::sync::mpsc::UnboundedSender;
use tracing::{info, warn};

pub use podlist::{PodIndex, PodMeta};

use crate::sinks::metrics::Metrics;

/// `kubernetes:` in the agent's configuration.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct KubeConfig {
    /// Where pod metadata comes from: `api`, `kubelet` or `off` (the default).
    #[serde(default)]
    pub pods: PodsFrom,
    /// `https://host:port` of the API server (default from KUBERNETES_SERVICE_HOST/PORT) or of
    /// the kubelet (default `https://$NODE_IP:10250`).
    pub server: Option<String>,
    /// This node's name (default NODE_NAME): the API is asked for this node's pods only.
    pub node: Option<String>,
    /// The bearer token (default: the pod's service account token); `""` sends none.
    pub token_file: Option<PathBuf>,
    /// The CA that signs the server's certificate (default: the service account's `ca.crt`).
    pub ca_file: Option<PathBuf>,
    /// How often the list is fetched (default 30s).
    pub interval: Option<crate::central::Seconds>,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum PodsFrom {
    Api,
    Kubelet,
    #[default]
    Off,
}

const DEFAULT_INTERVAL: Duration = Duration::from_secs(30);
/// Fetches asked for by a new pod are at least this far apart.
const MIN_GAP: Duration = Duration::from_secs(1);
/// A UID the list lacks asks for a fetch at most this often (a pod force-deleted while its
/// processes live would otherwise ask every second, for ever).
const ASK_AGAIN: Duration = Duration::from_secs(60);
/// UIDs remembered as asked for, at most.
const ASKED_MAX: usize = 4096;

/// What the agent knows of this node's pods; cheap to clone and to read from any thread.
#[derive(Clone)]
pub struct Pods {
    shared: Arc<Shared>,
}

struct Shared {
    index: RwLock<Arc<PodIndex>>,
    status: Mutex<Status>,
    /// Asks the fetching thread for a fetch now (a pod it does not know appeared): a channel of
    /// one, so that asking while a fetch is pending costs nothing.
    poke: mpsc::SyncSender<()>,
    /// UIDs the list lacked, and when a fetch was last asked for because of each.
    asked: Mutex<std::collections::HashMap<String, Instant>>,
}

/// For `status` and messages.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Status {
    pub source: String,
    /// A list was fetched once at least: selectors by metadata can be resolved.
    pub fetched: bool,
    pub pods: usize,
    pub last_ok: Option<String>,
    pub last_error: Option<String>,
}

impl Pods {
    /// Fetches the list once (so the first policy resolves with it), then keeps it fresh on a
    /// thread. `changed` is told whenever the list changes (selectors are resolved again).
    /// None when `kubernetes.pods` is off.
    pub fn start(
        cfg: &KubeConfig,
        metrics: Arc<Metrics>,
        changed: UnboundedSender<()>,
    ) -> Result<Option<Self>, client::EndpointError> {
        let Some(ep) = client::endpoint(cfg, &|k| std::env::var(k).ok())? else { return Ok(None) };
        let (poke, poked) = mpsc::sync_channel(1);
        let pods = Pods {
            shared: Arc::new(Shared {
                index: RwLock::default(),
                status: Mutex::new(Status { source: ep.shown(), ..Status::default() }),
                poke,
                asked: Mutex::default(),
            }),
        };
        pods.refresh(&ep, &metrics);
        let interval = cfg.interval.map_or(DEFAULT_INTERVAL, |s| s.0);
        let this = pods.clone();
        std::thread::Builder::new()
            .name("pod-list".into())
            .spawn(move || {
                let mut last = Instant::now();
                loop {
                    match poked.recv_timeout(interval) {
                        Ok(()) => std::thread::sleep(MIN_GAP.saturating_sub(last.elapsed())),
                        Err(mpsc::RecvTimeoutError::Timeout) => {}
                        Err(mpsc::RecvTimeoutError::Disconnected) => return,
                    }
                    // Pokes that came while waiting are answered by this one fetch.
                    while poked.try_recv().is_ok() {}
                    last = Instant::now();
                    if this.refresh(&ep, &metrics) {
                        let _ = changed.send(());
                    }
                }
            })
            .map_err(client::EndpointError::Thread)?;
        Ok(Some(pods))
    }

    /// One fetch; true if the list changed.
    fn refresh(&self, ep: &client::Endpoint, metrics: &Metrics) -> bool {
        let got = ep.fetch().map_err(|e| e.to_string()).and_then(|b| podlist::parse(&b).map_err(|e| e.to_string()));
        let now = time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).ok();
        let mut status = self.shared.status.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match got {
            Ok(index) => {
                metrics.pod_list_fetches.with_label_values(&["ok"]).inc();
                metrics.pod_list_pods.set(i64::try_from(index.pods).unwrap_or(i64::MAX));
                if status.last_error.take().is_some() || !status.fetched {
                    info!(source = %status.source, pods = index.pods, "pod list fetched");
                }
                status.fetched = true;
                status.pods = index.pods;
                status.last_ok = now;
                let mut cur = self.shared.index.write().unwrap_or_else(std::sync::PoisonError::into_inner);
                if **cur == index {
                    return false;
                }
                *cur = Arc::new(index);
                true
            }
            Err(e) => {
                metrics.pod_list_fetches.with_label_values(&["failed"]).inc();
                // Said when it starts or changes, not at every interval.
                if status.last_error.as_deref() != Some(&e) {
                    warn!(source = %status.source, error = %e, kept = status.pods, "pod list not fetched; the last good one stays in use");
                }
                status.last_error = Some(e);
                false
            }
        }
    }

    /// The pod with this UID, if the list has it. A UID the list lacks asks for a fetch (once
    /// per [`ASK_AGAIN`] for the same UID).
    pub fn get(&self, uid: &str) -> Option<Arc<PodMeta>> {
        let found =
            self.shared.index.read().unwrap_or_else(std::sync::PoisonError::into_inner).by_uid.get(uid).cloned();
        if found.is_none() {
            let mut asked = self.shared.asked.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if asked.get(uid).is_none_or(|at| at.elapsed() >= ASK_AGAIN) {
                if asked.len() >= ASKED_MAX {
                    asked.retain(|_, at| at.elapsed() < ASK_AGAIN);
                }
                if asked.len() < ASKED_MAX {
                    asked.insert(uid.to_owned(), Instant::now());
                }
                // Full: a fetch is already asked for.
                let _ = self.shared.poke.try_send(());
            }
        }
        found
    }

    /// Why selectors by pod metadata cannot be resolved yet, if they cannot.
    pub fn unavailable(&self) -> Option<String> {
        let s = self.status();
        (!s.fetched).then(|| {
            format!(
                "the pod list from {} was never fetched ({})",
                s.source,
                s.last_error.as_deref().unwrap_or("not yet")
            )
        })
    }

    pub fn status(&self) -> Status {
        self.shared.status.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_reads_every_key_and_refuses_unknown_ones() {
        let c: KubeConfig = serde_yaml_ng::from_str(
            "pods: api\nserver: https://10.96.0.1:443\nnode: n1\ntokenFile: /t\ncaFile: /c\ninterval: 10s\n",
        )
        .expect("valid");
        assert_eq!((c.pods, c.node.as_deref()), (PodsFrom::Api, Some("n1")));
        assert_eq!(c.interval.map(|s| s.0), Some(Duration::from_secs(10)));
        assert!(serde_yaml_ng::from_str::<KubeConfig>("pods: apiserver\n").is_err());
        assert!(serde_yaml_ng::from_str::<KubeConfig>("pods: api\nnodeName: x\n").is_err());
        assert_eq!(serde_yaml_ng::from_str::<KubeConfig>("{}").expect("empty").pods, PodsFrom::Off);
    }
}
