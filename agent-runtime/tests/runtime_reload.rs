//! `--reload` against the real binary: touching a file in the working directory restarts
//! the server process.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod runtime_support;

use std::time::Duration;

use runtime_support::*;

fn serving_pid(s: &Server) -> (u64, u64) {
    let m = s.metrics();
    (
        m["process"]["pid"].as_u64().unwrap(),
        m["process"]["started_at_ms"].as_u64().unwrap(),
    )
}

fn reload_restarts(args: &[&str], env: &[(&str, &str)]) {
    let dir = std::env::temp_dir().join(format!("fastagentic-reload-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("src")).unwrap();
    let file = dir.join("src").join("agent.py");
    std::fs::write(&file, "v1\n").unwrap();
    let s = Server::start_in(Some(&dir), args, env);
    let (pid, started) = serving_pid(&s);
    assert_ne!(
        pid,
        u64::from(s.child.id()),
        "the server runs in a child process"
    );

    std::fs::write(&file, "v2\n").unwrap();
    let restarted = poll(Duration::from_secs(30), || {
        let (p, t) = serving_pid(&s);
        (p != pid).then_some((p, t))
    });
    let (new_pid, new_started) = restarted.expect("the server restarted after the change");
    assert!(new_started >= started);
    assert_eq!(get(s.port, "/health").unwrap().status, 200);
    assert!(!s.events("reload_triggered").is_empty());
    // The old process is gone.
    let gone = poll(Duration::from_secs(30), || {
        (!s.children().contains(&(pid as i32))).then_some(())
    });
    assert!(gone.is_some());
    assert_eq!(s.children(), vec![new_pid as i32]);
    // Changes in ignored directories do not restart.
    std::fs::create_dir_all(dir.join(".git")).unwrap();
    std::fs::write(dir.join(".git").join("index"), "x").unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(serving_pid(&s).0, new_pid);
    drop(s);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn touching_a_watched_file_restarts_the_server() {
    reload_restarts(&["--reload"], &[]);
}
