//! Prometheus metrics on `/metrics` (`--metrics`, default `127.0.0.1:9464`; `off` disables it).
//!
//! Label values come from the policy (vendor names) and fixed enums only, never addresses or
//! pids, so the number of series is bounded by construction: a destination no vendor covers is
//! `vendor="none"`. The HTTP listener runs on a thread of its own and only renders the registry:
//! a slow scraper never holds up the event loop.

use std::{net::SocketAddr, sync::Arc};

use prometheus::{Encoder as _, Gauge, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder};
use tracing::{info, warn};

use super::probes::Probes;

/// Every metric the agent exports (README "Metrics" lists them).
pub struct Metrics {
    registry: Registry,
    pub connections: IntCounterVec,
    /// Per Kubernetes pod on this node (`events::pods` removes a pod's series once its cgroup
    /// is gone, so the series are bounded by the pods the node runs).
    pub pod_connections: IntCounterVec,
    /// `1` per pod counted in `pod_connections` whose metadata is known: joins a pod UID to its
    /// namespace and name (as kube-state-metrics' `kube_pod_info`), removed with the pod's series.
    pub pod_info: IntGaugeVec,
    /// Pod list fetches by result (`ok`, `failed`), and the pods the last good list had.
    pub pod_list_fetches: IntCounterVec,
    pub pod_list_pods: IntGauge,
    pub flow_bytes: IntCounterVec,
    pub anomalies: IntCounterVec,
    pub dns_answers: IntCounter,
    pub dns_rejected: IntCounter,
    pub dns_refused: IntCounter,
    pub events_dropped: IntCounter,
    pub events_suppressed: IntCounter,
    pub policy_generation: IntGauge,
    pub policy_reload_time: IntGauge,
    pub policy_reloads: IntCounterVec,
    pub policy_fetches: IntCounterVec,
    pub flows_open: IntGauge,
    pub flows_inherited: IntGauge,
    pub flows_capacity: IntGauge,
    pub flows_evicted: IntCounter,
    pub flows_untracked: IntCounter,
    pub learnt_addresses: IntGauge,
    pub blocks_active: IntGauge,
    pub kills_active: IntGaugeVec,
    pub kill_refused: IntCounter,
    pub kill_packets: IntCounter,
    pub source_routed_packets: IntCounter,
    pub table_entries: IntGaugeVec,
    pub table_capacity: IntGaugeVec,
    pub ring_lag: Gauge,
    /// Per sink (label `sink`: its configured name, so the series are bounded by the config).
    pub sink_written: IntCounterVec,
    pub sink_dropped: IntCounterVec,
    pub sink_failed: IntCounterVec,
    pub sink_queued: IntGaugeVec,
}

fn counter(r: &Registry, name: &str, help: &str) -> prometheus::Result<IntCounter> {
    let c = IntCounter::new(name, help)?;
    r.register(Box::new(c.clone()))?;
    Ok(c)
}

fn gauge(r: &Registry, name: &str, help: &str) -> prometheus::Result<IntGauge> {
    let g = IntGauge::new(name, help)?;
    r.register(Box::new(g.clone()))?;
    Ok(g)
}

fn gauge_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> prometheus::Result<IntGaugeVec> {
    let g = IntGaugeVec::new(Opts::new(name, help), labels)?;
    r.register(Box::new(g.clone()))?;
    Ok(g)
}

fn counter_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> prometheus::Result<IntCounterVec> {
    let c = IntCounterVec::new(Opts::new(name, help), labels)?;
    r.register(Box::new(c.clone()))?;
    Ok(c)
}

impl Metrics {
    pub fn new() -> prometheus::Result<Self> {
        let r = Registry::new();
        Ok(Metrics {
            connections: counter_vec(
                &r,
                "egress_connections_total",
                "Outbound attempts by the vendor whose rule matched (none), verdict and protocol",
                &["vendor", "verdict", "proto"],
            )?,
            pod_connections: counter_vec(
                &r,
                "egress_pod_connections_total",
                "Outbound attempts from Kubernetes pods on this node, by pod UID and verdict",
                &["pod_uid", "verdict"],
            )?,
            pod_info: gauge_vec(
                &r,
                "egress_pod_info",
                "1 per pod with attempts counted, naming its namespace and pod (from the pod list)",
                &["pod_uid", "namespace", "pod"],
            )?,
            pod_list_fetches: counter_vec(
                &r,
                "egress_pod_list_fetches_total",
                "Fetches of this node's pod list (kubernetes.pods) by result: ok, failed",
                &["result"],
            )?,
            pod_list_pods: gauge(&r, "egress_pod_list_pods", "Pods in the last pod list fetched")?,
            flow_bytes: counter_vec(
                &r,
                "egress_flow_bytes_total",
                "Payload bytes of reported flows by vendor (none) and direction (out, in)",
                &["vendor", "direction"],
            )?,
            anomalies: counter_vec(&r, "egress_anomalies_total", "Anomalies flagged, by kind", &["kind"])?,
            dns_answers: counter(&r, "egress_dns_answers_learnt_total", "Addresses learnt from trusted DNS answers")?,
            dns_rejected: counter(&r, "egress_dns_answers_rejected_total", "DNS answers not trusted")?,
            dns_refused: counter(&r, "egress_dns_queries_refused_total", "DNS queries refused in the kernel")?,
            events_dropped: counter(
                &r,
                "egress_events_dropped_total",
                "Kernel records lost because the ring buffer was full",
            )?,
            events_suppressed: counter(
                &r,
                "egress_events_suppressed_total",
                "Connect records folded by the per-key rate limit (still counted in suppressed)",
            )?,
            policy_generation: gauge(&r, "egress_policy_generation", "Generation of the policy in force")?,
            policy_reload_time: gauge(
                &r,
                "egress_policy_last_reload_timestamp_seconds",
                "Unix time of the last policy install or refused reload",
            )?,
            policy_reloads: counter_vec(
                &r,
                "egress_policy_reloads_total",
                "Policy reloads by result (installed, refused)",
                &["result"],
            )?,
            policy_fetches: counter_vec(
                &r,
                "egress_policy_fetches_total",
                "Polls of a central policy source by result (installed, unchanged, not_modified, refused, error)",
                &["result"],
            )?,
            flows_open: gauge(&r, "egress_flows_open", "Flows tracked now")?,
            flows_inherited: gauge(
                &r,
                "egress_flows_inherited",
                "Flows an earlier agent left in the pinned flow table that this one could not resume: kept and enforced, not reported",
            )?,
            flows_capacity: gauge(&r, "egress_flows_capacity", "Capacity of the kernel's flow table")?,
            flows_evicted: counter(
                &r,
                "egress_flows_evicted_total",
                "Flows reported and evicted from a nearly full table",
            )?,
            flows_untracked: counter(
                &r,
                "egress_flows_untracked_total",
                "Flows the full table could not track (decided and reported, bytes not counted)",
            )?,
            learnt_addresses: gauge(
                &r,
                "egress_dns_learnt_addresses",
                "Addresses in the learnt tables with a live pattern",
            )?,
            blocks_active: gauge(&r, "egress_blocks_active", "Automated blocks in force")?,
            kills_active: gauge_vec(
                &r,
                "egress_kill_switch_active",
                "1 while the kill switch blocks the vendor (vendor=\"all\": block --all)",
                &["vendor"],
            )?,
            kill_refused: counter(&r, "egress_kill_switch_refused_total", "Attempts refused by the kill switch")?,
            kill_packets: counter(
                &r,
                "egress_kill_switch_packets_dropped_total",
                "Packets of live flows the kill switch dropped",
            )?,
            source_routed_packets: counter(
                &r,
                "egress_source_routed_packets_total",
                "Packets going out with a source route (IPv6 routing header, IPv4 source-route option); dropped in enforce mode",
            )?,
            table_entries: gauge_vec(&r, "egress_kernel_table_entries", "Entries in each kernel table", &["table"])?,
            table_capacity: gauge_vec(&r, "egress_kernel_table_capacity", "Capacity of each kernel table", &["table"])?,
            ring_lag: {
                let g = Gauge::new(
                    "egress_ring_lag_seconds",
                    "Age of the oldest record in the last batch read from the kernel's ring buffer",
                )?;
                r.register(Box::new(g.clone()))?;
                g
            },
            sink_written: counter_vec(
                &r,
                "egress_sink_records_total",
                "Records a sink delivered (written to its file, accepted by its receiver)",
                &["sink"],
            )?,
            sink_dropped: counter_vec(
                &r,
                "egress_sink_dropped_total",
                "Records a sink lost: its queue was full, delivery was given up, or a write failed",
                &["sink"],
            )?,
            sink_failed: counter_vec(
                &r,
                "egress_sink_failures_total",
                "Failed writes or delivery attempts of a sink (each retry counts)",
                &["sink"],
            )?,
            sink_queued: {
                let g = IntGaugeVec::new(
                    Opts::new("egress_sink_queue_length", "Records waiting in a sink's queue"),
                    &["sink"],
                )?;
                r.register(Box::new(g.clone()))?;
                g
            },
            registry: r,
        })
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            warn!(error = %e, "rendering metrics failed");
        }
        out
    }
}

/// Serves `/metrics`, and the probes `/healthz` and `/readyz` (see [`super::probes`]), on `addr`
/// from a thread of its own. A listener that cannot bind is logged and skipped: metrics never
/// stop enforcement.
pub fn serve(metrics: Arc<Metrics>, probes: Arc<Probes>, addr: SocketAddr) {
    let server = match tiny_http::Server::http(addr) {
        Ok(s) => s,
        Err(e) => {
            warn!(%addr, error = %e, "metrics listener not started");
            return;
        }
    };
    info!(%addr, "metrics on /metrics, probes on /healthz and /readyz");
    let spawned = std::thread::Builder::new().name("metrics".into()).spawn(move || {
        for req in server.incoming_requests() {
            let text =
                |code: u16, body: String| tiny_http::Response::from_data(body.into_bytes()).with_status_code(code);
            let probe = |r: Result<String, String>| match r {
                Ok(body) => text(200, body),
                Err(body) => text(503, body),
            };
            // The query string (a prober's `?verbose`) does not change the answer.
            let path = req.url().split('?').next().unwrap_or_default();
            let resp = match path {
                "/metrics" => {
                    let header = tiny_http::Header::from_bytes(&b"Content-Type"[..], &b"text/plain; version=0.0.4"[..]);
                    let r = tiny_http::Response::from_data(metrics.render());
                    match header {
                        Ok(h) => r.with_header(h),
                        Err(()) => r,
                    }
                }
                "/healthz" => probe(probes.liveness(std::time::Instant::now())),
                "/readyz" => probe(probes.readiness().map(str::to_owned).map_err(str::to_owned)),
                _ => text(404, "not found: metrics are on /metrics, probes on /healthz and /readyz\n".to_owned()),
            };
            let _ = req.respond(resp);
        }
    });
    if let Err(e) = spawned {
        warn!(error = %e, "metrics thread not started");
    }
}
