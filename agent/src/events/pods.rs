//! Per-pod attempt counts (`egress_pod_connections_total`). A pod UID is not a fixed enum, so
//! its series are kept bounded by construction: one per pod whose cgroup exists on this node,
//! removed once the cgroup is gone, and at most [`MAX_PODS`] (more are counted as `other`).

use std::{
    collections::HashMap,
    path::PathBuf,
    time::{Duration, Instant},
};

use super::enrich::Enriched;
use crate::sinks::metrics::Metrics;

/// Far above a node's pod limit (the kubelet's default is 110).
const MAX_PODS: usize = 1024;
/// How often the pods counted are checked for removal.
const SWEEP_EVERY: Duration = Duration::from_secs(30);
const VERDICTS: [&str; 3] = ["allow", "deny", "alert"];

pub struct PodSeries {
    mount: PathBuf,
    /// Pod UID → its cgroup directory.
    pods: HashMap<String, PathBuf>,
    /// Pod UID → the namespace and name its `egress_pod_info` series has.
    names: HashMap<String, (String, String)>,
    last_sweep: Instant,
}

impl PodSeries {
    pub fn new(mount: PathBuf) -> Self {
        Self { mount, pods: HashMap::new(), names: HashMap::new(), last_sweep: Instant::now() }
    }

    /// Counts one attempt of `who` if it comes from a pod.
    pub fn count(&mut self, m: &Metrics, who: &Enriched, verdict: &str) {
        let Some(id) = who.identity.as_deref() else { return };
        let (Some(uid), Some(cg)) = (&id.pod_uid, &id.pod_cgroup) else { return };
        let label = if self.pods.contains_key(uid) {
            uid.as_str()
        } else if self.pods.len() < MAX_PODS {
            self.pods.insert(uid.clone(), self.mount.join(cg.trim_start_matches('/')));
            uid.as_str()
        } else {
            "other"
        };
        m.pod_connections.with_label_values(&[label, verdict]).inc();
        if let Some(p) = who.pod.as_deref().filter(|_| label != "other") {
            // Labelled by the pod's UID too: a pod recreated under the same name is another.
            let names = (p.namespace.clone(), p.name.clone());
            if let Some(old) = self.names.get(uid).filter(|old| **old != names) {
                let _ = m.pod_info.remove_label_values(&[uid, &old.0, &old.1]);
            }
            m.pod_info.with_label_values(&[label, &p.namespace, &p.name]).set(1);
            self.names.insert(uid.clone(), names);
        }
    }

    /// Removes the series of pods whose cgroup is gone (at most every [`SWEEP_EVERY`]).
    pub fn sweep(&mut self, m: &Metrics) {
        if self.last_sweep.elapsed() < SWEEP_EVERY {
            return;
        }
        self.last_sweep = Instant::now();
        self.pods.retain(|uid, dir| {
            if dir.is_dir() {
                return true;
            }
            for v in VERDICTS {
                // A verdict the pod never had has no series: nothing to remove.
                let _ = m.pod_connections.remove_label_values(&[uid, v]);
            }
            if let Some((ns, name)) = self.names.remove(uid) {
                let _ = m.pod_info.remove_label_values(&[uid, &ns, &name]);
            }
            false
        });
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn series_follow_the_pods_cgroups() {
        let mount = std::env::temp_dir().join(format!("ea-pods-{}", std::process::id()));
        let uid = "6f1c2d3e-0a1b-4c5d-8e9f-0123456789ab";
        let pod = format!("/kubepods/burstable/pod{uid}");
        std::fs::create_dir_all(mount.join(&pod[1..])).expect("mkdir");
        let m = Metrics::new().expect("metrics");
        let who = |path: &str| Enriched {
            identity: Some(Arc::new(crate::container::parse(path))).filter(|i| !i.is_empty()),
            pod: Some(Arc::new(crate::kube::PodMeta {
                namespace: "payments".into(),
                name: "checkout-1".into(),
                labels: Default::default(),
            })),
            ..Enriched::default()
        };
        let mut s = PodSeries::new(mount.clone());
        s.count(&m, &who(&format!("{pod}/{}", "a".repeat(64))), "allow");
        s.count(&m, &who(&format!("{pod}/{}", "b".repeat(64))), "deny");
        s.count(&m, &who("/system.slice/x.service"), "allow");
        assert_eq!(m.pod_connections.with_label_values(&[uid, "allow"]).get(), 1);
        assert_eq!(m.pod_connections.with_label_values(&[uid, "deny"]).get(), 1);
        assert_eq!(m.pod_info.with_label_values(&[uid, "payments", "checkout-1"]).get(), 1);
        s.last_sweep = Instant::now() - SWEEP_EVERY;
        s.sweep(&m);
        assert_eq!(s.pods.len(), 1, "the pod is still there");
        std::fs::remove_dir_all(&mount).expect("rm");
        s.last_sweep = Instant::now() - SWEEP_EVERY;
        s.sweep(&m);
        assert!(s.pods.is_empty());
        let families = prometheus::core::Collector::collect(&m.pod_connections);
        assert!(families.iter().all(|f| f.get_metric().is_empty()), "series of a gone pod removed");
        let families = prometheus::core::Collector::collect(&m.pod_info);
        assert!(families.iter().all(|f| f.get_metric().is_empty()), "its info series too");
    }
}
