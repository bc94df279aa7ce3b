//! The eBPF sensor on this machine's kernel (as root). These tests fail, never skip, when BPF
//! cannot load: CI must notice a sensor that does not work.

// Test helpers outside #[test] functions: the workspace lint exceptions of tests apply here too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use cairn_agent::sensor::{
    Event, EventKind, RunningMode, Sensor, SensorConfig, SensorMode, Source, Subscription,
};
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// One sensor at a time: the exec storm would otherwise slow the others down.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn start(cfg: SensorConfig) -> Sensor {
    let cfg = SensorConfig {
        mode: SensorMode::Ebpf,
        ..cfg
    };
    let sensor = Sensor::start(cfg).unwrap_or_else(|e| {
        panic!("the eBPF sensor must load here (run as root; `cargo xtask setup`): {e}")
    });
    assert_eq!(sensor.status().mode, RunningMode::Ebpf);
    sensor
}

/// Collects events until `done` holds for the collection or `timeout` passes (then panics).
fn collect(
    rx: &Subscription,
    timeout: Duration,
    what: &str,
    mut done: impl FnMut(&[Event]) -> bool,
) -> Vec<Event> {
    let end = Instant::now() + timeout;
    let mut got = Vec::new();
    while !done(&got) {
        let left = end
            .checked_duration_since(Instant::now())
            .unwrap_or_else(|| panic!("timed out waiting for {what}; saw {} events", got.len()));
        if let Ok(e) = rx.recv_timeout(left.min(Duration::from_millis(200))) {
            got.push(e);
        }
    }
    got
}

fn pid_of(e: &Event) -> u32 {
    e.process.as_ref().map(|p| p.pid).unwrap_or(0)
}

fn is(e: &Event, kind: EventKind, pid: u32) -> bool {
    e.kind == kind && pid_of(e) == pid
}

#[test]
fn exec_has_exact_argv_lineage_uid_cwd_and_exit_codes() {
    let _g = serial();
    let sensor = start(SensorConfig::default());
    let rx = sensor.subscribe();
    let dir = tempfile::tempdir().unwrap();
    let cwd = dir.path().canonicalize().unwrap();
    let mark = uuid::Uuid::new_v4().to_string();
    let mut child = Command::new("/bin/sh")
        .arg("-c")
        .arg(format!(
            "exec /usr/bin/env CAIRN_MARK={mark} /bin/true a \"b c\""
        ))
        .current_dir(&cwd)
        .spawn()
        .unwrap();
    let pid = child.id();
    assert!(child.wait().unwrap().success());
    let events = collect(&rx, Duration::from_secs(10), "the child's exit", |ev| {
        ev.iter().any(|e| is(e, EventKind::ProcessExit, pid))
    });
    let execs: Vec<&Event> = events
        .iter()
        .filter(|e| is(e, EventKind::ProcessExec, pid))
        .collect();
    let argvs: Vec<Vec<String>> = execs
        .iter()
        .map(|e| e.process.as_ref().unwrap().args.clone())
        .collect();
    let want_env = vec![
        "/usr/bin/env".to_string(),
        format!("CAIRN_MARK={mark}"),
        "/bin/true".into(),
        "a".into(),
        "b c".into(),
    ];
    let want_true = vec!["/bin/true".to_string(), "a".into(), "b c".into()];
    assert_eq!(
        argvs,
        vec![
            vec![
                "/bin/sh".to_string(),
                "-c".into(),
                format!("exec /usr/bin/env CAIRN_MARK={mark} /bin/true a \"b c\"")
            ],
            want_env,
            want_true.clone()
        ],
        "exec events of the child, in order"
    );
    let me = std::process::id();
    let uid = nix::unistd::getuid().as_raw();
    for e in &execs {
        let p = e.process.as_ref().unwrap();
        assert_eq!(e.source, Source::Ebpf);
        assert_eq!(p.ppid, me, "ppid of {:?}", p.args);
        assert_eq!(p.uid, Some(uid));
        assert_eq!(p.euid, Some(uid));
        assert_eq!(p.cwd.as_deref(), Some(cwd.to_str().unwrap()));
        assert!(!p.args_truncated);
        let parent = e
            .parent
            .as_ref()
            .expect("the parent, from the process cache");
        assert_eq!(parent.pid, me);
        assert_eq!(
            parent.exe.as_deref(),
            std::env::current_exe().unwrap().to_str()
        );
    }
    let last = execs.last().unwrap().process.as_ref().unwrap();
    assert_eq!(last.exe.as_deref(), Some("/bin/true"));
    assert_eq!(last.comm, "true");
    let exit = events
        .iter()
        .find(|e| is(e, EventKind::ProcessExit, pid))
        .unwrap();
    assert_eq!(exit.exit.as_ref().unwrap().code, Some(0));
    assert_eq!(exit.process.as_ref().unwrap().args, want_true);

    let mut child = Command::new("/bin/sh")
        .args(["-c", "exit 3"])
        .spawn()
        .unwrap();
    let pid = child.id();
    assert_eq!(child.wait().unwrap().code(), Some(3));
    let events = collect(&rx, Duration::from_secs(10), "`exit 3`", |ev| {
        ev.iter().any(|e| is(e, EventKind::ProcessExit, pid))
    });
    let exit = events
        .iter()
        .find(|e| is(e, EventKind::ProcessExit, pid))
        .unwrap();
    assert_eq!(exit.exit.as_ref().unwrap().code, Some(3));
    assert_eq!(exit.exit.as_ref().unwrap().signal, None);
    assert!(sensor.lost().is_empty(), "lost: {:?}", sensor.lost());
}

/// Not a test of its own: the multi-threaded child of `a_multithreaded_process_exits_once`.
#[test]
fn threads_child() {
    if std::env::var_os("CAIRN_THREADS_CHILD").is_none() {
        return;
    }
    let short: Vec<_> = (0..2).map(|_| std::thread::spawn(|| ())).collect();
    for t in short {
        t.join().unwrap();
    }
    for _ in 0..2 {
        std::thread::spawn(|| std::thread::sleep(Duration::from_secs(30)));
    }
    std::thread::sleep(Duration::from_millis(100));
    std::process::exit(7);
}

#[test]
fn a_multithreaded_process_exits_once() {
    let _g = serial();
    let sensor = start(SensorConfig::default());
    let rx = sensor.subscribe();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "threads_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("CAIRN_THREADS_CHILD", "1")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    assert_eq!(child.wait().unwrap().code(), Some(7));
    // Long enough for any per-thread exit to arrive too.
    let events = collect(&rx, Duration::from_secs(10), "the exit", |ev| {
        ev.iter().any(|e| is(e, EventKind::ProcessExit, pid))
    });
    let mut more = events;
    let end = Instant::now() + Duration::from_millis(700);
    while let Some(left) = end.checked_duration_since(Instant::now()) {
        if let Ok(e) = rx.recv_timeout(left) {
            more.push(e);
        }
    }
    let exits: Vec<&Event> = more
        .iter()
        .filter(|e| is(e, EventKind::ProcessExit, pid))
        .collect();
    assert_eq!(exits.len(), 1, "exit events: {exits:#?}");
    assert_eq!(exits[0].exit.as_ref().unwrap().code, Some(7));
    // Threads are not processes: no fork events for them.
    assert!(
        !more
            .iter()
            .any(|e| e.kind == EventKind::ProcessFork
                && e.parent.as_ref().map(|p| p.pid) == Some(pid))
    );
}

#[test]
fn tcp_connect_accept_and_close_name_their_processes() {
    let _g = serial();
    let sensor = start(SensorConfig::default());
    let rx = sensor.subscribe();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut child = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "exec 3<>/dev/tcp/127.0.0.1/{port}; echo hello >&3; exec 3>&-"
        ))
        .spawn()
        .unwrap();
    let cpid = child.id();
    let (mut stream, peer) = listener.accept().unwrap();
    let mut buf = String::new();
    stream.read_to_string(&mut buf).unwrap();
    assert_eq!(buf, "hello\n");
    assert!(child.wait().unwrap().success());
    stream.write_all(b"bye").ok();
    drop(stream);
    let me = std::process::id();
    let events = collect(
        &rx,
        Duration::from_secs(10),
        "connect, accept and two closes",
        |ev| {
            ev.iter().any(|e| is(e, EventKind::TcpConnect, cpid))
                && ev.iter().any(|e| is(e, EventKind::TcpAccept, me))
                && ev.iter().any(|e| is(e, EventKind::TcpClose, cpid))
                && ev.iter().any(|e| {
                    is(e, EventKind::TcpClose, me) && e.socket.as_ref().unwrap().sport == port
                })
        },
    );
    let find = |k, pid| {
        events
            .iter()
            .find(|e| {
                is(e, k, pid)
                    && e.socket
                        .as_ref()
                        .is_some_and(|s| s.sport == port || s.dport == port)
            })
            .unwrap_or_else(|| panic!("no {k:?} for pid {pid}"))
    };
    let connect = find(EventKind::TcpConnect, cpid);
    let s = connect.socket.as_ref().unwrap();
    assert_eq!(
        (
            s.family.as_str(),
            s.saddr.as_str(),
            s.sport,
            s.daddr.as_str(),
            s.dport,
            s.result
        ),
        ("inet", "127.0.0.1", peer.port(), "127.0.0.1", port, Some(0))
    );
    assert_eq!(connect.process.as_ref().unwrap().comm, "bash");
    let accept = find(EventKind::TcpAccept, me);
    let a = accept.socket.as_ref().unwrap();
    assert_eq!(
        (a.saddr.as_str(), a.sport, a.daddr.as_str(), a.dport),
        ("127.0.0.1", port, "127.0.0.1", peer.port())
    );
    let cclose = find(EventKind::TcpClose, cpid);
    assert_eq!(cclose.socket.as_ref().unwrap().cookie, s.cookie);
    assert_eq!(cclose.socket.as_ref().unwrap().sport, peer.port());
    let sclose = find(EventKind::TcpClose, me);
    assert_eq!(sclose.socket.as_ref().unwrap().cookie, a.cookie);
    assert_eq!(sclose.socket.as_ref().unwrap().dport, peer.port());
}

fn cgroup2_mount() -> PathBuf {
    let m = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    m.lines()
        .find_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            (post.split_whitespace().next() == Some("cgroup2"))
                .then(|| PathBuf::from(pre.split_whitespace().nth(4).unwrap()))
        })
        .expect("a cgroup2 mount")
}

/// Removes the cgroups a test created (after moving their processes out).
struct CgroupGuard {
    dirs: Vec<PathBuf>,
}

impl Drop for CgroupGuard {
    fn drop(&mut self) {
        for d in self.dirs.iter().rev() {
            let _ = std::fs::remove_dir(d);
        }
    }
}

#[test]
fn a_process_in_a_docker_like_cgroup_gets_the_container_id() {
    let _g = serial();
    let sensor = start(SensorConfig::default());
    let rx = sensor.subscribe();
    let root = cgroup2_mount();
    let id: String = (0..4)
        .map(|_| uuid::Uuid::new_v4().simple().to_string())
        .collect::<String>()[..64]
        .to_string();
    let docker = root.join("docker");
    let mut guard = CgroupGuard { dirs: Vec::new() };
    if !docker.exists() {
        std::fs::create_dir(&docker).unwrap();
        guard.dirs.push(docker.clone());
    }
    let cg = docker.join(&id);
    std::fs::create_dir(&cg).unwrap();
    guard.dirs.push(cg.clone());

    let mut child = Command::new("/bin/sh")
        .args(["-c", "read x; exec /bin/true in-a-container"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    std::fs::write(cg.join("cgroup.procs"), pid.to_string()).unwrap();
    child.stdin.take().unwrap().write_all(b"go\n").unwrap();
    assert!(child.wait().unwrap().success());
    let events = collect(
        &rx,
        Duration::from_secs(10),
        "the exec in the cgroup",
        |ev| {
            ev.iter().any(|e| {
                is(e, EventKind::ProcessExec, pid)
                    && e.process.as_ref().unwrap().args == ["/bin/true", "in-a-container"]
            })
        },
    );
    let exec = events
        .iter()
        .find(|e| is(e, EventKind::ProcessExec, pid) && e.process.as_ref().unwrap().comm == "true")
        .unwrap();
    let p = exec.process.as_ref().unwrap();
    assert_eq!(p.container_id.as_deref(), Some(id.as_str()), "{p:#?}");
    assert_eq!(p.container_runtime.as_deref(), Some("docker"));
    assert_eq!(p.cgroup.as_deref(), Some(format!("/docker/{id}").as_str()));
    drop(guard);
    assert!(!cg.exists(), "the test cgroup was removed");
}

#[test]
fn a_tiny_ring_buffer_under_an_exec_storm_reports_its_drops() {
    let _g = serial();
    let sensor = start(SensorConfig {
        ring_buffer_bytes: 4096,
        ..Default::default()
    });
    assert_eq!(sensor.status().ring_buffer_bytes, Some(4096));
    let rx = sensor.subscribe();
    let storm = "i=0; while [ $i -lt 1500 ]; do /bin/true; i=$((i+1)); done";
    let mut a = Command::new("/bin/sh").args(["-c", storm]).spawn().unwrap();
    let mut b = Command::new("/bin/sh").args(["-c", storm]).spawn().unwrap();
    assert!(a.wait().unwrap().success() && b.wait().unwrap().success());
    let events = collect(&rx, Duration::from_secs(10), "an events_lost event", |ev| {
        ev.iter().any(|e| e.kind == EventKind::EventsLost)
    });
    let lost_ev: u64 = events
        .iter()
        .filter_map(|e| e.lost.as_ref())
        .filter(|l| l.kind != "subscriber")
        .map(|l| l.count)
        .sum();
    assert!(lost_ev > 0);
    let lost = sensor.lost();
    let kernel: u64 = lost
        .iter()
        .filter(|(k, _)| k.starts_with("process_"))
        .map(|(_, n)| n)
        .sum();
    assert!(kernel > 0, "lost: {lost:?}");
    assert!(
        lost.get("process_exec").copied().unwrap_or(0) > 0,
        "lost: {lost:?}"
    );
}

#[test]
fn a_process_older_than_the_sensor_has_its_lineage() {
    let _g = serial();
    let mut child = Command::new("/bin/sleep").arg("1000").spawn().unwrap();
    let pid = child.id();
    std::thread::sleep(Duration::from_millis(50)); // exec done
    let sensor = start(SensorConfig::default());
    let rx = sensor.subscribe();
    child.kill().unwrap();
    child.wait().unwrap();
    let events = collect(
        &rx,
        Duration::from_secs(10),
        "the old process's exit",
        |ev| ev.iter().any(|e| is(e, EventKind::ProcessExit, pid)),
    );
    let exit = events
        .iter()
        .find(|e| is(e, EventKind::ProcessExit, pid))
        .unwrap();
    let p = exit.process.as_ref().unwrap();
    assert_eq!(p.ppid, std::process::id());
    assert_eq!(p.args, ["/bin/sleep", "1000"]);
    let exe = p.exe.as_deref().unwrap_or_default();
    assert!(
        Path::new(exe).file_name() == Some("sleep".as_ref()),
        "exe {exe:?}"
    );
    assert!(p.start_time.is_some());
    assert_eq!(exit.exit.as_ref().unwrap().signal, Some(9));
    assert_eq!(exit.parent.as_ref().unwrap().pid, std::process::id());
}

#[test]
fn the_procfs_fallback_marks_its_events() {
    let _g = serial();
    let sensor = Sensor::start(SensorConfig {
        mode: SensorMode::Procfs,
        procfs_poll_ms: 20,
        ..Default::default()
    })
    .unwrap();
    assert_eq!(sensor.status().mode, RunningMode::Procfs);
    assert!(sensor.status().reason.is_some());
    let rx = sensor.subscribe();
    let mut child = Command::new("/bin/sleep").arg("0.5").spawn().unwrap();
    let pid = child.id();
    let events = collect(&rx, Duration::from_secs(10), "the polled exec", |ev| {
        ev.iter().any(|e| is(e, EventKind::ProcessExec, pid))
    });
    child.wait().unwrap();
    let exec = events
        .iter()
        .find(|e| is(e, EventKind::ProcessExec, pid))
        .unwrap();
    assert_eq!(exec.source, Source::Procfs);
    assert_eq!(exec.process.as_ref().unwrap().ppid, std::process::id());
    let events = collect(&rx, Duration::from_secs(10), "the polled exit", |ev| {
        ev.iter().any(|e| is(e, EventKind::ProcessExit, pid))
    });
    let exit = events
        .iter()
        .find(|e| is(e, EventKind::ProcessExit, pid))
        .unwrap();
    assert_eq!(exit.source, Source::Procfs);
    assert!(exit.exit.is_none(), "polling cannot know the exit code");
}

#[test]
fn security_relevant_calls_are_reported() {
    let _g = serial();
    let sensor = start(SensorConfig::default());
    let rx = sensor.subscribe();
    let name = format!("cairn-{}", std::process::id());
    let fd =
        nix::sys::memfd::memfd_create(name.as_str(), nix::sys::memfd::MFdFlags::empty()).unwrap();
    drop(fd);
    // setuid to the uid it already has: allowed, and still a call worth seeing.
    let uid = nix::unistd::getuid();
    nix::unistd::setuid(uid).unwrap();
    let me = std::process::id();
    let events = collect(
        &rx,
        Duration::from_secs(10),
        "memfd_create and setuid",
        |ev| {
            let has = |n: &str| {
                ev.iter().any(|e| {
                    is(e, EventKind::SecurityCall, me)
                        && e.syscall.as_ref().is_some_and(|s| s.name == n)
                })
            };
            has("memfd_create") && has("setuid")
        },
    );
    let memfd = events
        .iter()
        .find(|e| e.syscall.as_ref().is_some_and(|s| s.name == "memfd_create"))
        .unwrap();
    assert_eq!(
        memfd.syscall.as_ref().unwrap().text.as_deref(),
        Some(name.as_str())
    );
    let setuid = events
        .iter()
        .find(|e| e.syscall.as_ref().is_some_and(|s| s.name == "setuid"))
        .unwrap();
    assert_eq!(
        setuid.syscall.as_ref().unwrap().args,
        [u64::from(uid.as_raw())]
    );
}
