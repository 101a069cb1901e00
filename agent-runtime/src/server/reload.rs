//! `--reload` (development): watching the working directory for changes. The supervisor
//! replaces its workers (rolling, as on SIGHUP) after each burst of changes.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::sync::mpsc;

/// After a change, wait this long for more changes before restarting.
const DEBOUNCE: Duration = Duration::from_millis(200);

/// Watches the working directory (see [`watch`]); logs what it watches.
pub fn watch_working_dir(
    tx: mpsc::UnboundedSender<PathBuf>,
) -> Result<notify::RecommendedWatcher, String> {
    let dir = std::env::current_dir().map_err(|e| e.to_string())?;
    let watcher = watch(&dir, tx)?;
    tracing::info!(event = "reload_watching", directory = %dir.display());
    Ok(watcher)
}

/// Waits out a burst of changes after the first one: editors write several files (and
/// several times) per save.
pub async fn settle(changes: &mut mpsc::UnboundedReceiver<PathBuf>) {
    let deadline = tokio::time::Instant::now() + DEBOUNCE;
    while let Ok(Some(_)) = tokio::time::timeout_at(deadline, changes.recv()).await {}
}

/// Watches `dir` (recursively, skipping hidden directories, `target`, `node_modules` and
/// `__pycache__`) and sends the path of each changed file. Directories created later are
/// not watched themselves (their creation is a change in a watched directory).
fn watch(
    dir: &Path,
    tx: mpsc::UnboundedSender<PathBuf>,
) -> Result<notify::RecommendedWatcher, String> {
    use notify::{EventKind, RecursiveMode, Watcher};
    let skip = |p: &Path| {
        p.components().any(|c| {
            let s = c.as_os_str().to_string_lossy();
            s.starts_with('.') && s != "." && s != ".."
                || s == "target"
                || s == "node_modules"
                || s == "__pycache__"
        })
    };
    let root = dir.to_path_buf();
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        let Ok(event) = res else { return };
        if matches!(event.kind, EventKind::Access(_)) {
            return;
        }
        for path in event.paths {
            let rel = path.strip_prefix(&root).unwrap_or(&path);
            if skip(rel) {
                continue;
            }
            let _ = tx.send(path);
        }
    })
    .map_err(|e| e.to_string())?;
    // Watch directory by directory so ignored trees (a `target/` with thousands of
    // directories) cost no inotify watches.
    let mut stack = vec![dir.to_path_buf()];
    let mut watched = 0usize;
    while let Some(d) = stack.pop() {
        if watched >= 4096 {
            tracing::warn!(event = "reload_watch_limit", watched);
            break;
        }
        if watcher.watch(&d, RecursiveMode::NonRecursive).is_ok() {
            watched += 1;
        }
        if let Ok(entries) = std::fs::read_dir(&d) {
            for e in entries.flatten() {
                let p = e.path();
                let rel = p.strip_prefix(dir).unwrap_or(&p);
                if e.file_type().is_ok_and(|t| t.is_dir()) && !skip(rel) {
                    stack.push(p);
                }
            }
        }
    }
    Ok(watcher)
}
