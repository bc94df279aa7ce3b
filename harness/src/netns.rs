//! Several hosts on one machine: network namespaces joined by veth pairs, for tests of what
//! crosses a network (isolation). Everything made here is removed on drop, even after a
//! failed assertion.
//!
//! The layout: the root namespace (the collector) ─ `host` (the agent) ─ `peer` (servers the
//! host talks to). Commands enter a namespace with `nsenter --net`, which switches the network
//! only: `ip netns exec` would remount /sys and hide cgroup2, bpffs and tracefs from the agent.

use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::{run, Output};

/// Three networks: root ↔ host on `10.X.1.0/24`, host ↔ peer on `10.X.2.0/24` and
/// `fd13:X:2::/64`, X chosen from the process id so that parallel test processes differ.
pub struct Topology {
    pub host_ns: String,
    pub peer_ns: String,
    /// The root namespace's end of root ↔ host (where the collector listens).
    pub root_ip: String,
    /// The host's end of root ↔ host.
    pub host_ip: String,
    /// The host's end of host ↔ peer.
    pub host_peer_ip: String,
    pub peer_ip: String,
    pub host_peer_ip6: String,
    pub peer_ip6: String,
    root_link: String,
}

fn ip(args: &[&str]) -> Result<Output> {
    let mut c = Command::new("ip");
    c.args(args);
    run(c, Duration::from_secs(20))
}

fn ok(args: &[&str]) -> Result<()> {
    ip(args)?
        .ok()
        .map(|_| ())
        .with_context(|| format!("ip {}", args.join(" ")))
}

impl Topology {
    /// Creates the namespaces and links; `tag` names them (`cairn-TAG-host-PID`).
    pub fn create(tag: &str) -> Result<Topology> {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        // Distinct per test process and per topology in it (tests run on threads).
        let pid = std::process::id() * 8 + n % 8;
        let x = 100 + (std::process::id() * 3 + n) % 150;
        let t = Topology {
            host_ns: format!("cairn-{tag}-host-{pid}"),
            peer_ns: format!("cairn-{tag}-peer-{pid}"),
            root_ip: format!("10.{x}.1.1"),
            host_ip: format!("10.{x}.1.2"),
            host_peer_ip: format!("10.{x}.2.1"),
            peer_ip: format!("10.{x}.2.2"),
            host_peer_ip6: format!("fd13:{x}:2::1"),
            peer_ip6: format!("fd13:{x}:2::2"),
            root_link: format!("cr{pid}"),
        };
        // Removed first: what a killed earlier run of this pid left.
        t.remove();
        t.build().with_context(|| {
            format!(
                "creating network namespaces {} and {}",
                t.host_ns, t.peer_ns
            )
        })?;
        Ok(t)
    }

    fn build(&self) -> Result<()> {
        let id = self.root_link.trim_start_matches("cr");
        let (rh, hr, hp, ph) = (
            self.root_link.clone(),
            format!("ch{id}"),
            format!("cp{id}"),
            format!("cq{id}"),
        );
        ok(&["netns", "add", &self.host_ns])?;
        ok(&["netns", "add", &self.peer_ns])?;
        ok(&["link", "add", &rh, "type", "veth", "peer", "name", &hr])?;
        ok(&["link", "set", &hr, "netns", &self.host_ns])?;
        ok(&["link", "add", &hp, "type", "veth", "peer", "name", &ph])?;
        ok(&["link", "set", &hp, "netns", &self.host_ns])?;
        ok(&["link", "set", &ph, "netns", &self.peer_ns])?;
        ok(&["addr", "add", &format!("{}/24", self.root_ip), "dev", &rh])?;
        ok(&["link", "set", &rh, "up"])?;
        let (h, p) = (self.host_ns.as_str(), self.peer_ns.as_str());
        ok(&[
            "-n",
            h,
            "addr",
            "add",
            &format!("{}/24", self.host_ip),
            "dev",
            &hr,
        ])?;
        ok(&[
            "-n",
            h,
            "addr",
            "add",
            &format!("{}/24", self.host_peer_ip),
            "dev",
            &hp,
        ])?;
        ok(&[
            "-n",
            h,
            "addr",
            "add",
            &format!("{}/64", self.host_peer_ip6),
            "dev",
            &hp,
            "nodad",
        ])?;
        ok(&[
            "-n",
            p,
            "addr",
            "add",
            &format!("{}/24", self.peer_ip),
            "dev",
            &ph,
        ])?;
        ok(&[
            "-n",
            p,
            "addr",
            "add",
            &format!("{}/64", self.peer_ip6),
            "dev",
            &ph,
            "nodad",
        ])?;
        for (ns, dev) in [
            (h, "lo"),
            (h, hr.as_str()),
            (h, hp.as_str()),
            (p, "lo"),
            (p, ph.as_str()),
        ] {
            ok(&["-n", ns, "link", "set", dev, "up"])?;
        }
        Ok(())
    }

    fn remove(&self) {
        let _ = ip(&["link", "del", &self.root_link]);
        let _ = ip(&["netns", "del", &self.host_ns]);
        let _ = ip(&["netns", "del", &self.peer_ns]);
    }

    /// `program args…` in namespace `ns` (network only).
    pub fn command(ns: &str, program: &str) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net=/run/netns/{ns}"))
            .arg("--")
            .arg(program);
        c
    }

    /// Whether a TCP connection from `ns` to `addr:port` is accepted within 1.5 s.
    pub fn tcp_connects(ns: &str, addr: &str, port: u16) -> Result<bool> {
        probe(ns, &format!(
            "import socket,sys\ns=socket.create_connection(({addr:?},{port}),timeout=1.5)\ns.sendall(b'x')\nsys.exit(0 if s.recv(1)==b'x' else 1)"
        ))
    }

    /// Whether a UDP datagram from `ns` to `addr:port` is echoed within 1.5 s.
    pub fn udp_echoes(ns: &str, addr: &str, port: u16) -> Result<bool> {
        let fam = if addr.contains(':') {
            "AF_INET6"
        } else {
            "AF_INET"
        };
        probe(ns, &format!(
            "import socket,sys\ns=socket.socket(socket.{fam},socket.SOCK_DGRAM)\ns.settimeout(1.5)\ns.sendto(b'x',({addr:?},{port}))\nsys.exit(0 if s.recv(1)==b'x' else 1)"
        ))
    }

    /// Whether one ping from `ns` to `addr` is answered within 2 s.
    pub fn pings(ns: &str, addr: &str) -> Result<bool> {
        let mut c = Self::command(ns, "ping");
        c.args(["-c", "1", "-W", "2", addr]);
        Ok(run(c, Duration::from_secs(10))?.success())
    }

    /// A TCP and a UDP echo server on `addr:port` in `ns`, until the returned guard drops.
    pub fn echo_servers(ns: &str, addr: &str, port: u16) -> Result<crate::KillOnDrop> {
        let fam = if addr.contains(':') {
            "AF_INET6"
        } else {
            "AF_INET"
        };
        let script = format!(
            "import socket,threading\n\
             t=socket.socket(socket.{fam});t.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1);t.bind(({addr:?},{port}));t.listen(16)\n\
             u=socket.socket(socket.{fam},socket.SOCK_DGRAM);u.bind(({addr:?},{port}))\n\
             def udp():\n  while True:\n    d,a=u.recvfrom(64);u.sendto(d,a)\n\
             threading.Thread(target=udp,daemon=True).start()\n\
             while True:\n  c,_=t.accept()\n  try:\n    c.settimeout(2);c.sendall(c.recv(1))\n  except OSError: pass\n  c.close()\n"
        );
        let mut c = Self::command(ns, "python3");
        c.args(["-c", &script])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        let child = c.spawn().context("starting python3 echo servers")?;
        let guard = crate::KillOnDrop(child);
        // Listening before the first probe.
        for _ in 0..50 {
            if Self::tcp_connects(ns, addr, port)? {
                return Ok(guard);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!("echo servers on {addr}:{port} in {ns} did not start")
    }
}

fn probe(ns: &str, script: &str) -> Result<bool> {
    let mut c = Topology::command(ns, "python3");
    c.args(["-c", script]);
    Ok(run(c, Duration::from_secs(10))?.success())
}

impl Drop for Topology {
    fn drop(&mut self) {
        self.remove();
    }
}
