//! Containment enforced by this machine's kernel, as root: host isolation (nftables) inside a
//! pair of network namespaces made here, container isolation (cgroup BPF) of one of two test
//! cgroups, freeze, thaw and kill of a cgroup and of a process tree. Without root the tests say
//! why and return; with root they run and can fail.

// Test helpers outside #[test] functions: the workspace lint exceptions of tests apply here too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use cairn_agent::containment::{cgroup, ContainError, Containment, Roots};
use cairn_protocol::containment::{Action, Allow, Outcome, Proto, Request, Target};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn root() -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    eprintln!("skipped: containment tests need root (network namespaces, nftables, cgroup BPF)");
    false
}

fn sh(cmd: &str) -> std::process::Output {
    Command::new("sh").arg("-c").arg(cmd).output().unwrap()
}

fn must(cmd: &str) -> String {
    let o = sh(cmd);
    assert!(
        o.status.success(),
        "`{cmd}` failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

const HOST4: &str = "10.213.1.1";
const PEER4: &str = "10.213.1.2";
const HOST6: &str = "fd00:213:1::1";
const PEER6: &str = "fd00:213:1::2";
/// Peer ports: a TCP service, an allow-listed TCP service, the "collector's" UDP port, and
/// another UDP port.
const TCP: u16 = 7000;
const TCP_ALLOWED: u16 = 7001;
const UDP_PINNED: u16 = 5353;
const UDP_OTHER: u16 = 5354;
/// A TCP service listening in the host namespace.
const HOST_TCP: u16 = 7100;

static NEXT: AtomicU32 = AtomicU32::new(0);

/// Two network namespaces joined by a veth pair (IPv4 and an IPv6 ULA); both deleted on drop,
/// even when the test fails. The addresses live inside the namespaces only, so several pairs
/// can coexist.
struct Pair {
    host: String,
    peer: String,
}

impl Pair {
    fn new() -> Pair {
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let pid = std::process::id();
        let p = Pair {
            host: format!("cairn-t-host-{pid}-{n}"),
            peer: format!("cairn-t-peer-{pid}-{n}"),
        };
        let (h, q) = (&p.host, &p.peer);
        must(&format!("ip netns add {h} && ip netns add {q}"));
        // No duplicate address detection: the addresses (and the link-local ones neighbour
        // discovery uses) are usable at once.
        for ns in [h, q] {
            must(&format!(
                "ip netns exec {ns} sysctl -qw net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0"
            ));
        }
        must(&format!(
            "ip -n {h} link set lo up && ip -n {q} link set lo up && \
             ip -n {h} link add veth0 type veth peer name veth1 netns {q} && \
             ip -n {h} addr add {HOST4}/24 dev veth0 && ip -n {h} addr add {HOST6}/64 dev veth0 nodad && \
             ip -n {q} addr add {PEER4}/24 dev veth1 && ip -n {q} addr add {PEER6}/64 dev veth1 nodad && \
             ip -n {h} link set veth0 up && ip -n {q} link set veth1 up"
        ));
        let end = Instant::now() + Duration::from_secs(10);
        while !(ping_ok(&p, h, PEER6) && ping_ok(&p, q, HOST6) && ping_ok(&p, h, PEER4)) {
            assert!(Instant::now() < end, "the veth pair does not come up");
            std::thread::sleep(Duration::from_millis(50));
        }
        p
    }

    /// Runs `f` on a thread that has entered namespace `ns`: sockets it makes live there, and
    /// the processes it starts (nft) run there.
    fn in_ns<T: Send>(&self, ns: &str, f: impl FnOnce() -> T + Send) -> T {
        std::thread::scope(|s| {
            s.spawn(|| {
                let fd = std::fs::File::open(format!("/run/netns/{ns}")).unwrap();
                // SAFETY: setns on a descriptor we own, for this thread only (CLONE_NEWNET).
                let r = unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) };
                assert_eq!(r, 0, "setns {ns}: {}", std::io::Error::last_os_error());
                f()
            })
            .join()
            .unwrap()
        })
    }

    fn exec(&self, ns: &str, cmd: &str) -> std::process::Output {
        sh(&format!("ip netns exec {ns} {cmd}"))
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        let _ = sh(&format!(
            "ip netns del {} 2>/dev/null; ip netns del {} 2>/dev/null",
            self.host, self.peer
        ));
    }
}

/// The peer's services: TCP listeners (the kernel completes handshakes without accept) and
/// UDP echo servers, dual-stack; stopped on drop.
struct Services {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
    _tcp: Vec<TcpListener>,
}

impl Services {
    fn start(pair: &Pair, ns: &str, tcp: &[u16], udp: &[u16]) -> Services {
        let (tcp, udp) = pair.in_ns(ns, || {
            let t: Vec<TcpListener> = tcp
                .iter()
                .map(|p| TcpListener::bind(("::", *p)).unwrap())
                .collect();
            let u: Vec<UdpSocket> = udp
                .iter()
                .map(|p| UdpSocket::bind(("::", *p)).unwrap())
                .collect();
            (t, u)
        });
        let stop = Arc::new(AtomicBool::new(false));
        let threads = udp
            .into_iter()
            .map(|s| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
                    let mut buf = [0u8; 256];
                    while !stop.load(Ordering::Relaxed) {
                        if let Ok((n, from)) = s.recv_from(&mut buf) {
                            let _ = s.send_to(&buf[..n], from);
                        }
                    }
                })
            })
            .collect();
        Services {
            stop,
            threads,
            _tcp: tcp,
        }
    }
}

impl Drop for Services {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn addr(ip: &str, port: u16) -> SocketAddr {
    SocketAddr::new(ip.parse().unwrap(), port)
}

fn tcp_ok(pair: &Pair, ns: &str, to: SocketAddr) -> bool {
    pair.in_ns(ns, || {
        TcpStream::connect_timeout(&to, Duration::from_millis(700)).is_ok()
    })
}

fn udp_ok(pair: &Pair, ns: &str, to: SocketAddr) -> bool {
    pair.in_ns(ns, || {
        let s = UdpSocket::bind(if to.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let mut buf = [0u8; 16];
        // A few tries: the first IPv6 datagram may wait for neighbour discovery.
        (0..3).any(|_| s.send_to(b"cairn", to).is_ok() && s.recv_from(&mut buf).is_ok())
    })
}

fn ping_ok(pair: &Pair, ns: &str, ip: &str) -> bool {
    pair.exec(ns, &format!("ping -c 1 -W 1 {ip} >/dev/null 2>&1"))
        .status
        .success()
}

fn request(id: &str, action: Action, target: Target, allow: Vec<Allow>) -> Request {
    Request {
        id: id.into(),
        action,
        target,
        allow,
        reason: "IR-15 test".into(),
        requested_by: "tester".into(),
    }
}

fn allow_tcp(ip: &str, port: u16) -> Allow {
    Allow {
        cidr: ip.into(),
        port: Some(port),
        proto: Some(Proto::Tcp),
        note: Some("test service".into()),
    }
}

fn containment(state: &Path) -> Containment {
    Containment::with_roots(Roots::detect(state, None))
}

/// The pins of the cgroup test are seen by every status that reads /sys/fs/bpf (as
/// "unrecorded" enforcement): the tests that read it take turns.
static BPFFS: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn bpffs_turn() -> std::sync::MutexGuard<'static, ()> {
    BPFFS.lock().unwrap_or_else(|e| e.into_inner())
}

/// For tests that isolate the host only: a bpffs directory of their own, empty, so that their
/// status does not see the cgroup test's pins.
fn host_containment(state: &Path) -> Containment {
    let mut roots = Roots::detect(state, None);
    roots.bpffs = state.join("no-bpffs");
    Containment::with_roots(roots)
}

fn assert_sha(o: &Outcome) {
    let rules = o.rules.as_deref().unwrap();
    assert_eq!(
        o.rules_sha256.as_deref(),
        Some(cairn_agent::containment::sha256_hex(rules).as_str())
    );
}

/// Everything the host isolation must cut, checked in one place: `isolated` says which way.
fn check_host_traffic(pair: &Pair, isolated: bool) {
    let (h, p) = (pair.host.as_str(), pair.peer.as_str());
    let open = !isolated;
    assert_eq!(tcp_ok(pair, h, addr(PEER4, TCP)), open, "host → peer TCP");
    assert_eq!(
        tcp_ok(pair, h, addr(PEER6, TCP)),
        open,
        "host → peer TCP over IPv6"
    );
    assert_eq!(
        udp_ok(pair, h, addr(PEER4, UDP_OTHER)),
        open,
        "host → peer UDP"
    );
    assert_eq!(ping_ok(pair, h, PEER4), open, "host → peer ping");
    assert_eq!(ping_ok(pair, h, PEER6), open, "host → peer ping over IPv6");
    assert_eq!(
        tcp_ok(pair, p, addr(HOST4, HOST_TCP)),
        open,
        "peer → host TCP"
    );
    assert_eq!(
        tcp_ok(pair, p, addr(HOST6, HOST_TCP)),
        open,
        "peer → host TCP over IPv6"
    );
    // The collector's channel and the allow-list stay open either way.
    assert!(
        udp_ok(pair, h, addr(PEER4, UDP_PINNED)),
        "host → pinned UDP"
    );
    assert!(
        udp_ok(pair, h, addr(PEER6, UDP_PINNED)),
        "host → pinned UDP over IPv6"
    );
    assert!(
        tcp_ok(pair, h, addr(PEER4, TCP_ALLOWED)),
        "host → allowed TCP"
    );
    assert!(
        tcp_ok(pair, h, addr(PEER6, TCP_ALLOWED)),
        "host → allowed TCP over IPv6"
    );
}

fn ruleset(pair: &Pair) -> String {
    let o = pair.exec(&pair.host, "nft list ruleset");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn host_isolation_cuts_everything_but_the_collector_and_the_allow_list() {
    if !root() {
        return;
    }
    let pair = Pair::new();
    let _peer = Services::start(
        &pair,
        &pair.peer,
        &[TCP, TCP_ALLOWED],
        &[UDP_PINNED, UDP_OTHER],
    );
    let _host = Services::start(&pair, &pair.host, &[HOST_TCP], &[]);
    let state = tempfile::tempdir().unwrap();
    let c = host_containment(state.path());
    let collector = [addr(PEER4, UDP_PINNED), addr(PEER6, UDP_PINNED)];
    check_host_traffic(&pair, false);

    let req = request(
        "iso-1",
        Action::Isolate,
        Target::Host,
        vec![allow_tcp(PEER4, TCP_ALLOWED), allow_tcp(PEER6, TCP_ALLOWED)],
    );
    let out = pair
        .in_ns(&pair.host, || c.apply(&req, &collector))
        .unwrap();
    assert!(out.ok, "{out:?}");
    assert_eq!(out.mechanism, "nftables table inet cairn_isolation");
    assert_eq!(out.verified_rtt_ms, None);
    assert_sha(&out);
    assert!(ruleset(&pair).contains("table inet cairn_isolation"));
    check_host_traffic(&pair, true);
    let status = pair.in_ns(&pair.host, || c.status()).unwrap();
    assert!(status.consistent(), "{}", status.render());
    assert_eq!(status.active[0].enforced, Some(true));

    // The agent "restarts" after the table was lost: restore puts it back.
    let o = pair.exec(&pair.host, "nft delete table inet cairn_isolation");
    assert!(o.status.success());
    assert!(tcp_ok(&pair, &pair.host, addr(PEER4, TCP)));
    let status = pair.in_ns(&pair.host, || c.status()).unwrap();
    assert_eq!(
        status.active[0].enforced,
        Some(false),
        "{}",
        status.render()
    );
    let restored = pair.in_ns(&pair.host, || c.restore()).unwrap();
    assert_eq!(restored.len(), 1);
    assert!(restored[0].ok, "{restored:?}");
    assert_eq!(restored[0].id, "iso-1");
    assert_eq!(restored[0].rules_sha256, out.rules_sha256);
    assert!(ruleset(&pair).contains("cairn_isolation"));
    check_host_traffic(&pair, true);
    // Re-applying replaces the table whole, in one transaction.
    let again = pair
        .in_ns(&pair.host, || c.apply(&req, &collector))
        .unwrap();
    assert_eq!(again.rules_sha256, out.rules_sha256);
    assert_eq!(
        ruleset(&pair).matches("table inet cairn_isolation").count(),
        1
    );

    let rel = request("rel-1", Action::Release, Target::Host, vec![]);
    let out = pair.in_ns(&pair.host, || c.apply(&rel, &[])).unwrap();
    assert!(out.ok);
    assert!(!ruleset(&pair).contains("cairn"), "{}", ruleset(&pair));
    check_host_traffic(&pair, false);
    assert!(c.active().unwrap().is_empty());
}

#[test]
fn a_host_isolation_without_a_collector_is_refused_and_one_can_be_rolled_back() {
    if !root() {
        return;
    }
    let pair = Pair::new();
    let _peer = Services::start(&pair, &pair.peer, &[TCP], &[UDP_PINNED]);
    let state = tempfile::tempdir().unwrap();
    let c = containment(state.path());
    let req = request("iso-2", Action::Isolate, Target::Host, vec![]);
    let e = pair.in_ns(&pair.host, || c.apply(&req, &[])).unwrap_err();
    assert!(matches!(e, ContainError::Refused(_)), "{e}");
    assert!(!ruleset(&pair).contains("cairn"));

    let out = pair
        .in_ns(&pair.host, || c.apply(&req, &[addr(PEER4, UDP_PINNED)]))
        .unwrap();
    assert!(out.ok);
    assert!(!tcp_ok(&pair, &pair.host, addr(PEER4, TCP)));
    let back = pair.in_ns(&pair.host, || {
        c.roll_back(&req, "the collector did not answer")
    });
    assert!(back.rolled_back && !back.ok, "{back:?}");
    assert_eq!(back.error.as_deref(), Some("the collector did not answer"));
    assert!(!ruleset(&pair).contains("cairn"));
    assert!(tcp_ok(&pair, &pair.host, addr(PEER4, TCP)));
    assert!(c.active().unwrap().is_empty());
}

#[test]
fn break_glass_release_on_the_host_is_queued_for_the_collector() {
    if !root() {
        return;
    }
    let _turn = bpffs_turn();
    let pair = Pair::new();
    let _peer = Services::start(&pair, &pair.peer, &[TCP], &[UDP_PINNED]);
    let state = tempfile::tempdir().unwrap();
    let c = containment(state.path());
    let req = request("iso-3", Action::Isolate, Target::Host, vec![]);
    pair.in_ns(&pair.host, || c.apply(&req, &[addr(PEER4, UDP_PINNED)]))
        .unwrap();
    assert!(!tcp_ok(&pair, &pair.host, addr(PEER4, TCP)));

    // The real CLI, in the host's namespace, as an admin would run it.
    let bin = env!("CARGO_BIN_EXE_cairn-agent");
    let dir = state.path().display();
    let o = pair.exec(
        &pair.host,
        &format!("{bin} --state-dir {dir} isolation status --json"),
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["active"][0]["enforced"], true, "{v}");
    assert_eq!(v["active"][0]["request_id"], "iso-3");
    let o = pair.exec(
        &pair.host,
        &format!("{bin} --state-dir {dir} isolation release --reason x"),
    );
    assert!(
        !o.status.success(),
        "release without --local must be refused"
    );
    let o = pair.exec(
        &pair.host,
        &format!("{bin} --state-dir {dir} isolation release --local --reason 'IR-15 drill'"),
    );
    assert!(
        o.status.success(),
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(!ruleset(&pair).contains("cairn"));
    assert!(tcp_ok(&pair, &pair.host, addr(PEER4, TCP)));
    assert!(c.active().unwrap().is_empty());

    let pending = c.pending_reports().unwrap();
    assert_eq!(pending.len(), 1, "{pending:?}");
    let r = &pending[0];
    assert!(r.id.starts_with("local-"), "{}", r.id);
    assert_eq!(
        (r.action, &r.target, r.ok),
        (Action::Release, &Target::Host, true)
    );
    let local = r.local.as_ref().unwrap();
    assert_eq!(local.reason, "IR-15 drill");
    assert!(local.user.contains("root"), "{}", local.user);
    let file = state.path().join("containment-reports.jsonl");
    use std::os::unix::fs::MetadataExt;
    assert_eq!(std::fs::metadata(&file).unwrap().mode() & 0o777, 0o600);
    c.acknowledge(&r.id).unwrap();
    assert!(c.pending_reports().unwrap().is_empty());
    // Nothing left to release: said so, not pretended.
    let e = pair
        .in_ns(&pair.host, || {
            c.release_local(&Target::Host, "root", "again")
        })
        .unwrap_err();
    assert!(matches!(e, ContainError::NotActive(_)), "{e}");
}

/// A test cgroup under the cgroup v2 root; its processes killed and the directory removed on
/// drop.
struct TestCgroup(PathBuf);

impl TestCgroup {
    fn new(tag: &str) -> TestCgroup {
        let root = cairn_agent::mountinfo::cgroup2_root(Path::new("/proc/self/mountinfo"))
            .expect("a cgroup v2 mount");
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let p = root.join(format!("cairn-t-{tag}-{}-{n}", std::process::id()));
        std::fs::create_dir(&p).unwrap();
        TestCgroup(p)
    }

    fn procs(&self) -> String {
        self.0.join("cgroup.procs").display().to_string()
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        let _ = std::fs::write(self.0.join("cgroup.freeze"), "0");
        let _ = std::fs::write(self.0.join("cgroup.kill"), "1");
        for _ in 0..100 {
            if std::fs::remove_dir(&self.0).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// A new process in `cg`, in the host namespace, connecting to `ip:port` over TCP: true when
/// it could. It joins the cgroup before `ip netns exec`, which mounts a sysfs of its own
/// without the cgroup tree.
fn connect_from(pair: &Pair, cg: &TestCgroup, ip: &str, port: u16) -> bool {
    let cmd = format!(
        "echo $$ > {} && exec ip netns exec {} timeout 3 bash -c 'exec 3<>/dev/tcp/{ip}/{port}' 2>/dev/null",
        cg.procs(),
        pair.host
    );
    sh(&cmd).status.success()
}

#[test]
fn isolating_one_cgroup_cuts_only_that_cgroup() {
    if !root() {
        return;
    }
    let _turn = bpffs_turn();
    let pair = Pair::new();
    let _peer = Services::start(&pair, &pair.peer, &[TCP, TCP_ALLOWED], &[]);
    let (a, b) = (TestCgroup::new("a"), TestCgroup::new("b"));
    let state = tempfile::tempdir().unwrap();
    let c = containment(state.path());
    let bpffs = c.roots().bpffs.clone();
    for cg in [&a, &b] {
        assert!(connect_from(&pair, cg, PEER4, TCP));
    }
    let target = Target::Container {
        id: "a0a0a0a0".into(),
    };
    let req = request(
        "ciso-1",
        Action::Isolate,
        target.clone(),
        vec![allow_tcp(PEER4, TCP_ALLOWED)],
    );
    let out = c.apply_to_cgroup(&req, &a.0).unwrap();
    assert!(out.ok);
    assert_eq!(out.mechanism, format!("cgroup_skb on {}", a.0.display()));
    assert_sha(&out);
    let pins = cgroup::pin_dir(&bpffs, &a.0).unwrap();
    assert!(pins.join("egress").exists() && pins.join("ingress").exists());
    cgroup::verify(&a.0, &bpffs).unwrap();
    assert!(!connect_from(&pair, &a, PEER4, TCP), "A is isolated");
    assert!(
        !connect_from(&pair, &a, PEER6, TCP),
        "A is isolated over IPv6"
    );
    assert!(connect_from(&pair, &b, PEER4, TCP), "B is not");
    assert!(connect_from(&pair, &b, PEER6, TCP), "B is not, over IPv6");
    assert!(
        connect_from(&pair, &a, PEER4, TCP_ALLOWED),
        "A's allow-list"
    );
    // The host itself (no cgroup of ours) is untouched.
    assert!(tcp_ok(&pair, &pair.host, addr(PEER4, TCP)));
    let (egress, _) = cgroup::dropped(&pins).unwrap();
    assert!(egress > 0);
    if Command::new("bpftool")
        .arg("version")
        .stdout(Stdio::null())
        .status()
        .is_ok()
    {
        let tree = must(&format!("bpftool cgroup show {}", a.0.display()));
        assert!(
            tree.contains("isolation_egress") && tree.contains("isolation_ingress"),
            "{tree}"
        );
    }
    let status = c.status().unwrap();
    assert!(status
        .active
        .iter()
        .any(|x| x.active.request_id == "ciso-1" && x.enforced == Some(true)));

    // Restarted with the pins in place: adopted, not attached twice.
    let restored = c.restore().unwrap();
    assert!(restored.iter().all(|o| o.ok), "{restored:?}");
    assert_eq!(
        cgroup::pinned_dirs(&bpffs)
            .iter()
            .filter(|d| **d == pins)
            .count(),
        1
    );
    // After a "reboot" (pins and programs gone): attached anew.
    assert!(cgroup::release(&pins, Some(&a.0)).unwrap());
    assert!(connect_from(&pair, &a, PEER4, TCP));
    let restored = c.restore().unwrap();
    assert!(restored.iter().all(|o| o.ok), "{restored:?}");
    cgroup::verify(&a.0, &bpffs).unwrap();
    assert!(!connect_from(&pair, &a, PEER4, TCP), "A is isolated again");

    let rel = request("crel-1", Action::Release, target, vec![]);
    let out = c.apply_to_cgroup(&rel, &a.0).unwrap();
    assert!(out.ok);
    assert!(connect_from(&pair, &a, PEER4, TCP), "A is released");
    assert!(!pins.exists(), "nothing left in bpffs");
    assert!(cgroup::verify(&a.0, &bpffs).is_err());
    if Command::new("bpftool")
        .arg("version")
        .stdout(Stdio::null())
        .status()
        .is_ok()
    {
        let tree = must(&format!("bpftool cgroup show {}", a.0.display()));
        assert!(!tree.contains("isolation"), "{tree}");
    }
    assert!(c.active().unwrap().is_empty());
}

fn counter(path: &Path) -> u64 {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_frozen_cgroup_stops_counting_can_be_read_and_thaws() {
    if !root() {
        return;
    }
    let cg = TestCgroup::new("f");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("counter");
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "echo $$ > {} && i=0; while :; do i=$((i+1)); echo $i > {}; done",
            cg.procs(),
            file.display()
        ))
        .spawn()
        .unwrap();
    let pid = child.id();
    wait_for("the counter to advance", || counter(&file) > 100);
    let state = tempfile::tempdir().unwrap();
    let c = containment(state.path());
    let target = Target::Container {
        id: "f0f0f0f0".into(),
    };
    let out = c
        .apply_to_cgroup(
            &request("fr-1", Action::Freeze, target.clone(), vec![]),
            &cg.0,
        )
        .unwrap();
    assert_eq!(out.mechanism, "cgroup.freeze");
    assert!(out.pids.contains(&pid), "{:?}", out.pids);
    let before = counter(&file);
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(counter(&file), before, "a frozen process does not count");
    // Its memory can still be read while it is frozen.
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    let line = maps
        .lines()
        .find(|l| {
            l.split_whitespace()
                .nth(1)
                .is_some_and(|p| p.starts_with('r'))
        })
        .unwrap();
    let start = u64::from_str_radix(line.split('-').next().unwrap(), 16).unwrap();
    let mem = std::fs::File::open(format!("/proc/{pid}/mem")).unwrap();
    let mut buf = vec![0u8; 4096];
    use std::os::unix::fs::FileExt;
    assert_eq!(mem.read_at(&mut buf, start).unwrap(), 4096);
    // And so can its core, through the agent's own capture.
    let mut cache = cairn_agent::capture::memory::files::FileCache::default();
    let core =
        cairn_agent::capture::memory::process::plan(Path::new("/proc"), pid, &mut cache).unwrap();
    assert!(core.len > 4096);
    let status = c.status().unwrap();
    assert_eq!(status.active[0].enforced, Some(true), "{}", status.render());
    assert_eq!(counter(&file), before);

    let out = c
        .apply_to_cgroup(
            &request("th-1", Action::Thaw, target.clone(), vec![]),
            &cg.0,
        )
        .unwrap();
    assert!(out.ok);
    wait_for("the counter to advance again", || {
        counter(&file) > before + 100
    });
    assert!(c.active().unwrap().is_empty());

    let out = c
        .apply_to_cgroup(&request("k-1", Action::Kill, target, vec![]), &cg.0)
        .unwrap();
    assert_eq!(out.mechanism, "cgroup.kill");
    assert!(out.pids.contains(&pid));
    let st = child.wait().unwrap();
    assert!(!st.success());
}

fn proc_state(pid: u32) -> Option<char> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    s.rsplit_once(')')?
        .1
        .split_whitespace()
        .next()?
        .chars()
        .next()
}

#[test]
fn a_process_tree_is_stopped_continued_and_killed_whole() {
    if !root() {
        return;
    }
    let mut child = Command::new("sh")
        .arg("-c")
        .arg("sleep 60 & sleep 60 & sh -c 'sleep 60 & sleep 60 & wait' & wait")
        .spawn()
        .unwrap();
    let pid = child.id();
    wait_for("the tree to grow", || {
        cairn_agent::containment::freeze::tree(Path::new("/proc"), pid).len() >= 6
    });
    let state = tempfile::tempdir().unwrap();
    let c = containment(state.path());
    let target = Target::Process { pid };
    let out = c
        .apply(
            &request("pf-1", Action::Freeze, target.clone(), vec![]),
            &[],
        )
        .unwrap();
    assert_eq!(out.mechanism, "SIGSTOP");
    assert_eq!(out.pids.len(), 6, "{:?}", out.pids);
    assert_eq!(out.pids[0], pid, "parents first");
    for p in &out.pids {
        assert_eq!(proc_state(*p), Some('T'), "{p} stopped");
    }
    assert_eq!(c.active().unwrap().len(), 1);
    // Restarted: the tree is the same process (start time), stopped again.
    let restored = c.restore().unwrap();
    assert!(restored[0].ok, "{restored:?}");

    let out = c
        .apply(&request("pt-1", Action::Thaw, target.clone(), vec![]), &[])
        .unwrap();
    assert_eq!(out.mechanism, "SIGCONT");
    for p in &out.pids {
        wait_for("the tree to run", || proc_state(*p) != Some('T'));
    }
    assert!(c.active().unwrap().is_empty());

    let pids = out.pids.clone();
    let out = c
        .apply(&request("pk-1", Action::Kill, target, vec![]), &[])
        .unwrap();
    assert_eq!(out.mechanism, "SIGKILL");
    assert_eq!(out.pids.len(), 6);
    let st = child.wait().unwrap();
    assert!(!st.success());
    for p in pids {
        wait_for("the tree to be gone", || {
            matches!(proc_state(p), None | Some('Z'))
        });
    }

    // Never the agent itself, nor pid 1.
    let me = Target::Process {
        pid: std::process::id(),
    };
    let e = c
        .apply(&request("pf-2", Action::Freeze, me, vec![]), &[])
        .unwrap_err();
    assert!(matches!(e, ContainError::Refused(_)), "{e}");
    let e = c
        .apply(
            &request("pf-3", Action::Kill, Target::Process { pid: 1 }, vec![]),
            &[],
        )
        .unwrap_err();
    assert!(matches!(e, ContainError::Refused(_)), "{e}");
}
