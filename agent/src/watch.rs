//! Watches the policy files for changes. Directories are watched, not files: editors and config
//! tools replace a file by renaming a new one over it, and a Kubernetes ConfigMap volume swaps
//! its `..data` symlink, so the file watched yesterday is not the file there today. Every event in
//! those directories is reported; the reload debounces them and ignores reloads that change
//! nothing.

use std::path::{Path, PathBuf};

use notify::{RecommendedWatcher, RecursiveMode, Watcher as _};
use tokio::sync::mpsc::UnboundedSender;

/// Starts watching; `None` when there is nothing to watch (the embedded default).
pub fn watch(paths: &[PathBuf], changed: UnboundedSender<()>) -> notify::Result<Option<RecommendedWatcher>> {
    if paths.is_empty() {
        return Ok(None);
    }
    let mut w = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        // Errors (an overflowed inotify queue) are changes too: reloading is always safe.
        if res.map_or(true, |e| !e.kind.is_access()) {
            let _ = changed.send(());
        }
    })?;
    let mut dirs: Vec<PathBuf> = paths
        .iter()
        .map(|p| {
            if p.is_dir() {
                p.clone()
            } else {
                p.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new(".")).to_path_buf()
            }
        })
        .collect();
    dirs.sort();
    dirs.dedup();
    for d in dirs {
        w.watch(&d, RecursiveMode::NonRecursive)?;
    }
    Ok(Some(w))
}
