//! Checks of `deploy/`, run by `cargo xtask test`: the systemd unit passes `systemd-analyze
//! verify` (any message fails it: verify exits 0 on an unknown key); every Kubernetes manifest
//! validates against the Kubernetes schemas (`kubernetes-validate --strict`, from PyPI, in a
//! virtualenv under target/); each kustomization lists every file of its directory and nothing
//! missing; the configurations and policies shipped pass `egress-agent check`; and the pieces
//! agree with each other (probe port, admin socket, config paths).

use std::{
    collections::BTreeSet,
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{anyhow, bail, Context as _, Result};
use serde_json::Value;

use crate::util::{output, run, workspace_root};

/// Pinned, so that a new release of the validator or its schemas cannot turn CI red on its own.
const KUBERNETES_VALIDATE: &str = "kubernetes-validate==1.37.0";
/// Where the unit expects the binary; the check points it at the one just built.
const UNIT_BIN: &str = "/usr/local/bin/egress-agent";

pub fn check(bin: &Path) -> Result<()> {
    let root = workspace_root();
    let work = root.join("target").join("deploy-check");
    fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    systemd_unit(&root, bin, &work)?;
    let validator = kubernetes_validate(&work)?;
    let k8s = root.join("deploy/kubernetes");
    for dir in ["base", "monitoring"] {
        kustomization(&k8s.join(dir), &validator)?;
    }
    consistency(&root, bin)?;
    eprintln!("xtask: deploy/ checked (systemd unit, Kubernetes manifests, configurations)");
    Ok(())
}

fn systemd_unit(root: &Path, bin: &Path, work: &Path) -> Result<()> {
    let unit = root.join("deploy/systemd/egress-agent.service");
    let text = fs::read_to_string(&unit).with_context(|| format!("reading {}", unit.display()))?;
    // verify insists that ExecStart's program exists: a copy names the binary just built.
    let uses = text.matches(UNIT_BIN).count();
    if uses < 2 {
        bail!("{}: ExecStart and ExecReload should run {UNIT_BIN} ({uses} found)", unit.display());
    }
    let copy = work.join("egress-agent.service");
    fs::write(&copy, text.replace(UNIT_BIN, &bin.display().to_string()))?;
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&copy)
        .output()
        .context("systemd-analyze (package systemd) is needed to verify the unit")?;
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    if !out.status.success() || !said.trim().is_empty() {
        bail!("systemd-analyze verify {} ({}):\n{}", unit.display(), out.status, said.trim());
    }
    Ok(())
}

/// The validator's executable, installed into a virtualenv under target/ when missing. No
/// network, no PyPI: this fails, it does not skip.
fn kubernetes_validate(work: &Path) -> Result<PathBuf> {
    let venv = work.join("venv");
    let exe = venv.join("bin/kubernetes-validate");
    let version = KUBERNETES_VALIDATE.rsplit('=').next().unwrap_or_default();
    let installed = Command::new(&exe)
        .arg("--version")
        .output()
        .ok()
        .is_some_and(|o| o.status.success() && String::from_utf8_lossy(&o.stdout).trim() == version);
    if installed {
        return Ok(exe);
    }
    eprintln!("xtask: installing {KUBERNETES_VALIDATE} into {}", venv.display());
    run(Command::new("python3").arg("-m").arg("venv").arg("--clear").arg(&venv))
        .context("python3 -m venv failed (Debian: apt-get install python3-venv); the manifests cannot be validated")?;
    run(Command::new(venv.join("bin/pip")).args([
        "install",
        "--quiet",
        "--disable-pip-version-check",
        KUBERNETES_VALIDATE,
    ]))
    .context("installing kubernetes-validate from PyPI failed; the manifests cannot be validated")?;
    Ok(exe)
}

fn yaml(path: &Path) -> Result<Value> {
    let text = fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_yaml_ng::from_str(&text).with_context(|| format!("{} is not YAML", path.display()))
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array().map(|a| a.iter().filter_map(|s| s.as_str().map(str::to_owned)).collect()).unwrap_or_default()
}

/// Every YAML file of `dir` is a resource of its kustomization or read by one of its
/// generators, every one named exists, and the resources validate.
fn kustomization(dir: &Path, validator: &Path) -> Result<()> {
    let k = yaml(&dir.join("kustomization.yaml"))?;
    let resources = strings(&k["resources"]);
    let generated: Vec<String> =
        k["configMapGenerator"].as_array().into_iter().flatten().flat_map(|g| strings(&g["files"])).collect();
    let named: BTreeSet<&str> =
        resources.iter().chain(&generated).map(String::as_str).filter(|r| !r.starts_with("..")).collect();
    let present: BTreeSet<String> = fs::read_dir(dir)?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| (n.ends_with(".yaml") || n.ends_with(".yml")) && n != "kustomization.yaml")
        .collect();
    for n in &named {
        if !present.contains(*n) {
            bail!("{}/kustomization.yaml names {n}, which does not exist", dir.display());
        }
    }
    for p in &present {
        if !named.contains(p.as_str()) {
            bail!("{}/{p} is neither a resource nor a generator file of its kustomization.yaml", dir.display());
        }
    }
    for r in resources.iter().filter(|r| r.starts_with("..")) {
        if !dir.join(r).join("kustomization.yaml").is_file() {
            bail!("{}/kustomization.yaml: {r} is not a kustomization", dir.display());
        }
    }
    // Custom resources have no schema here: their fields are checked against the Service below.
    let (custom, core): (Vec<&String>, Vec<&String>) = resources
        .iter()
        .filter(|r| !r.starts_with(".."))
        .partition(|r| yaml(&dir.join(r)).is_ok_and(|v| v["kind"] == "ServiceMonitor"));
    if !core.is_empty() {
        let out = Command::new(validator)
            .arg("--strict")
            .args(core.iter().map(|r| dir.join(r)))
            .output()
            .with_context(|| format!("cannot run {}", validator.display()))?;
        let report = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            bail!(
                "the manifests of {} do not validate:\n{report}{}",
                dir.display(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        // A kind without a schema is only a warning to the validator; here it is a failure.
        if let Some(l) = report.lines().find(|l| !l.starts_with("INFO")) {
            bail!("{}: {l}", dir.display());
        }
        if report.lines().count() < core.len() {
            bail!("{}: kubernetes-validate reported on fewer resources than given:\n{report}", dir.display());
        }
    }
    for c in custom {
        service_monitor(&dir.join(c))?;
    }
    Ok(())
}

fn service_monitor(path: &Path) -> Result<()> {
    let root = workspace_root();
    let sm = yaml(path)?;
    let svc = yaml(&root.join("deploy/kubernetes/base/service.yaml"))?;
    if sm["apiVersion"] != "monitoring.coreos.com/v1" {
        bail!("{}: apiVersion should be monitoring.coreos.com/v1", path.display());
    }
    let labels = svc["metadata"]["labels"].as_object().ok_or_else(|| anyhow!("service.yaml has no labels"))?;
    let wanted = sm["spec"]["selector"]["matchLabels"]
        .as_object()
        .ok_or_else(|| anyhow!("{}: spec.selector.matchLabels missing", path.display()))?;
    if wanted.iter().any(|(k, v)| labels.get(k) != Some(v)) {
        bail!("{}: spec.selector does not select the Service's labels {labels:?}", path.display());
    }
    let ports: Vec<&str> =
        svc["spec"]["ports"].as_array().into_iter().flatten().filter_map(|p| p["name"].as_str()).collect();
    for e in sm["spec"]["endpoints"].as_array().into_iter().flatten() {
        let port = e["port"].as_str().unwrap_or_default();
        if !ports.contains(&port) {
            bail!("{}: endpoint port `{port}` is not a port of the Service ({ports:?})", path.display());
        }
    }
    Ok(())
}

/// The shipped configurations and policies load, and the pieces agree.
fn consistency(root: &Path, bin: &Path) -> Result<()> {
    let check = |config: &Path, policy: &Path| {
        output(Command::new(bin).arg("check").arg("--config").arg(config).arg(policy))
            .with_context(|| format!("egress-agent check --config {} {}", config.display(), policy.display()))
    };
    check(&root.join("deploy/systemd/agent.yaml"), &root.join("policies/default.yaml"))?;
    let base = root.join("deploy/kubernetes/base");
    check(&base.join("agent.yaml"), &base.join("policy.yaml"))?;

    // systemd: the admin socket is in the RuntimeDirectory, and reload uses the same config.
    let unit = fs::read_to_string(root.join("deploy/systemd/egress-agent.service"))?;
    let value = |key: &str| unit.lines().find_map(|l| l.strip_prefix(&format!("{key}="))).unwrap_or_default();
    let config = value("ExecStart").split_once("--config ").map(|(_, c)| c.trim()).unwrap_or_default();
    if config.is_empty() || !value("ExecReload").ends_with(&format!("--config {config}")) {
        bail!("egress-agent.service: ExecReload must pass ExecStart's --config ({config}) to find the admin socket");
    }
    let vm = yaml(&root.join("deploy/systemd/agent.yaml"))?;
    let admin = vm["admin"].as_str().unwrap_or_default();
    if !admin.starts_with(&format!("/run/{}/", value("RuntimeDirectory"))) {
        bail!("deploy/systemd/agent.yaml: admin {admin} is not in the unit's RuntimeDirectory");
    }

    // Kubernetes: the probes reach the metrics listener, which listens beyond loopback.
    let ds = yaml(&base.join("daemonset.yaml"))?;
    let agent = &ds["spec"]["template"]["spec"]["containers"][0];
    let k8s = yaml(&base.join("agent.yaml"))?;
    let listen = k8s["metrics"].as_str().unwrap_or_default();
    let port = agent["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["name"] == "metrics")
        .and_then(|p| p["containerPort"].as_u64())
        .ok_or_else(|| anyhow!("daemonset.yaml: no container port named metrics"))?;
    if !listen.starts_with("0.0.0.0:") || !listen.ends_with(&format!(":{port}")) {
        bail!("deploy/kubernetes/base/agent.yaml: metrics {listen} must be 0.0.0.0:{port}, for the kubelet's probes");
    }
    for (probe, path) in [("startupProbe", "/readyz"), ("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")] {
        let p = &agent[probe]["httpGet"];
        if p["path"] != path || p["port"] != "metrics" {
            bail!("daemonset.yaml: {probe} should get {path} on port metrics");
        }
    }
    let args = strings(&agent["args"]);
    let config = args.iter().skip_while(|a| *a != "--config").nth(1).cloned().unwrap_or_default();
    let mounted = agent["volumeMounts"].as_array().into_iter().flatten().filter_map(|m| m["mountPath"].as_str());
    if !mounted.clone().any(|m| Path::new(&config).parent() == Some(Path::new(m))) {
        bail!("daemonset.yaml: --config {config} is not in a mounted directory");
    }
    let policy_dirs = strings(&k8s["policy"]);
    if !policy_dirs.iter().all(|d| mounted.clone().any(|m| m == d)) {
        bail!("deploy/kubernetes/base/agent.yaml: policy {policy_dirs:?} is not mounted by the DaemonSet");
    }
    Ok(())
}
