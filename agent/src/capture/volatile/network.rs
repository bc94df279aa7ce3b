//! `network.json`: sockets with the processes that own them, interfaces, routes, neighbours.
//!
//! The socket tables under `/proc/net` belong to the network namespace of the process that
//! reads them, so they are read through `/proc/1/net` (the host's namespace even when the agent
//! runs in a container with the host's pid namespace), and once more through one process of
//! every other network namespace found (containers), listed under `other_namespaces`.
//! Interface addresses come from `getifaddrs`, i.e. the agent's own namespace: run the agent
//! with the host network (`hostNetwork: true`) to see the host's; `agent_net_ns` tells.
//!
//! Long file: one document's reader (sockets, owners, namespaces, interfaces, routes,
//! neighbours) in under 600 lines; the rest are its tests, on this host's own sockets and
//! namespaces.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;

use serde::Serialize;
use serde_json::{Map, Value};

use super::{artifact, put, read_trimmed, Errors, SocketOwner, VolatileOptions};
use crate::capture::Artifact;
use cairn_protocol::rfc3339;

#[derive(Debug, Clone, Serialize)]
struct InetSocket {
    local_address: String,
    local_port: u16,
    remote_address: String,
    remote_port: u16,
    state: String,
    uid: Option<u32>,
    inode: u64,
    tx_queue: Option<u64>,
    rx_queue: Option<u64>,
    owners: Vec<SocketOwner>,
}

#[derive(Debug, Clone, Serialize)]
struct Listener {
    protocol: &'static str,
    address: String,
    port: u16,
    inode: u64,
    uid: Option<u32>,
    owners: Vec<SocketOwner>,
}

#[derive(Debug, Clone, Serialize)]
struct UnixSocket {
    inode: u64,
    /// `stream`, `dgram`, `seqpacket` or the raw number.
    socket_type: String,
    state: String,
    listening: bool,
    /// Filesystem path, `@name` for the abstract namespace, none when unnamed.
    path: Option<String>,
    owners: Vec<SocketOwner>,
}

/// The socket tables of one network namespace.
#[derive(Debug, Default, Serialize)]
struct Sockets {
    tcp: Vec<InetSocket>,
    tcp6: Vec<InetSocket>,
    udp: Vec<InetSocket>,
    udp6: Vec<InetSocket>,
    listeners: Vec<Listener>,
    unix: Vec<UnixSocket>,
}

#[derive(Debug, Serialize)]
struct Address {
    family: &'static str,
    address: String,
    netmask: Option<String>,
    prefix_len: Option<u32>,
    broadcast: Option<String>,
    destination: Option<String>,
}

#[derive(Debug, Default, Serialize)]
struct Interface {
    name: String,
    ifindex: Option<u32>,
    mac: Option<String>,
    mtu: Option<u32>,
    operstate: Option<String>,
    /// `IFF_*` flags as the kernel reports them (`0x1003`) and decoded.
    flags: Option<String>,
    flag_names: Vec<String>,
    addresses: Vec<Address>,
}

#[derive(Debug, Serialize)]
struct Route4 {
    interface: String,
    destination: String,
    gateway: String,
    netmask: String,
    prefix_len: u32,
    flags: Vec<&'static str>,
    metric: u32,
    mtu: u32,
}

#[derive(Debug, Serialize)]
struct Route6 {
    destination: String,
    prefix_len: u32,
    source: String,
    source_prefix_len: u32,
    next_hop: String,
    metric: u32,
    flags: String,
    interface: String,
}

#[derive(Debug, Serialize)]
struct Neighbour {
    address: String,
    hw_type: String,
    flags: String,
    mac: String,
    interface: String,
}

#[derive(Debug, Serialize)]
struct OtherNamespace {
    net_ns: String,
    read_via_pid: i32,
    #[serde(flatten)]
    sockets: Sockets,
}

pub(super) fn collect(
    opts: &VolatileOptions,
    owners: &HashMap<u64, Vec<SocketOwner>>,
    namespaces: &[(String, i32)],
) -> Artifact {
    let collected_at = rfc3339::now();
    let mut errors = Errors::default();
    let mut body = Map::new();
    let proc = &opts.proc_root;

    let host_ns = fs::read_link(proc.join("1/ns/net"))
        .ok()
        .map(|p| p.to_string_lossy().into_owned());
    let agent_ns = fs::read_link(proc.join("self/ns/net"))
        .ok()
        .map(|p| p.to_string_lossy().into_owned());
    body.insert("net_ns".into(), opt_str(&host_ns));
    body.insert("agent_net_ns".into(), opt_str(&agent_ns));
    body.insert(
        "read_from".into(),
        Value::String(proc.join("1/net").display().to_string()),
    );

    let host = read_sockets(&proc.join("1/net"), owners, &mut errors);

    // Socket inodes are unique system-wide: a table sharing one with the host's is the host's
    // namespace again (needed when pid 1's namespace link cannot be read).
    let host_inodes: std::collections::HashSet<u64> = inodes(&host).collect();
    let others: Vec<OtherNamespace> = namespaces
        .iter()
        .filter(|(ns, _)| Some(ns) != host_ns.as_ref())
        .map(|(ns, pid)| OtherNamespace {
            net_ns: ns.clone(),
            read_via_pid: *pid,
            sockets: read_sockets(&proc.join(format!("{pid}/net")), owners, &mut errors),
        })
        .filter(|o| !inodes(&o.sockets).any(|i| host_inodes.contains(&i)))
        .collect();
    let Sockets {
        tcp,
        tcp6,
        udp,
        udp6,
        listeners,
        unix,
    } = host;
    put(&mut body, &mut errors, "tcp", tcp);
    put(&mut body, &mut errors, "tcp6", tcp6);
    put(&mut body, &mut errors, "udp", udp);
    put(&mut body, &mut errors, "udp6", udp6);
    put(&mut body, &mut errors, "listeners", listeners);
    put(&mut body, &mut errors, "unix", unix);
    put(&mut body, &mut errors, "other_namespaces", others);

    let ifs = interfaces(opts, &mut errors);
    put(&mut body, &mut errors, "interfaces", ifs);
    let net1 = proc.join("1/net");
    let routes4 = read_table(&net1.join("route"), &mut errors, parse_route4);
    let routes6 = read_table(&net1.join("ipv6_route"), &mut errors, parse_route6);
    put(
        &mut body,
        &mut errors,
        "routes",
        serde_json::json!({ "ipv4": routes4, "ipv6": routes6 }),
    );
    let arp = read_table(&net1.join("arp"), &mut errors, parse_arp);
    put(
        &mut body,
        &mut errors,
        "neighbours",
        serde_json::json!({
            "ipv4": arp,
            "ipv6": Value::Null,
            "ipv6_note": "not collected: IPv6 neighbours are only available over rtnetlink",
        }),
    );
    if let Some(state) = &opts.isolation {
        put(&mut body, &mut errors, "isolation", (state.0)());
    }
    artifact("network.json", collected_at, body, errors, false)
}

fn inodes(s: &Sockets) -> impl Iterator<Item = u64> + '_ {
    let inet = s.tcp.iter().chain(&s.tcp6).chain(&s.udp).chain(&s.udp6);
    inet.map(|x| x.inode)
        .chain(s.unix.iter().map(|u| u.inode))
        .filter(|i| *i != 0)
}

fn opt_str(s: &Option<String>) -> Value {
    s.clone().map(Value::String).unwrap_or(Value::Null)
}

fn read_table<T>(path: &Path, errors: &mut Errors, parse: impl Fn(&str) -> Vec<T>) -> Vec<T> {
    match fs::read_to_string(path) {
        Ok(t) => parse(&t),
        Err(e) => {
            errors.push(path.display().to_string(), e);
            Vec::new()
        }
    }
}

fn read_sockets(
    net: &Path,
    owners: &HashMap<u64, Vec<SocketOwner>>,
    errors: &mut Errors,
) -> Sockets {
    let mut s = Sockets::default();
    let inet = |file: &str, tcp: bool, errors: &mut Errors| -> Vec<InetSocket> {
        match fs::read_to_string(net.join(file)) {
            Ok(t) => parse_inet(&t, tcp, owners),
            // IPv6 disabled: no tcp6/udp6 files. Not an error worth reporting.
            Err(e) if super::is_gone(&e) && file.ends_with('6') => Vec::new(),
            Err(e) => {
                errors.push(net.join(file).display().to_string(), e);
                Vec::new()
            }
        }
    };
    s.tcp = inet("tcp", true, errors);
    s.tcp6 = inet("tcp6", true, errors);
    s.udp = inet("udp", false, errors);
    s.udp6 = inet("udp6", false, errors);
    for (proto, list, tcp) in [
        ("tcp", &s.tcp, true),
        ("tcp6", &s.tcp6, true),
        ("udp", &s.udp, false),
        ("udp6", &s.udp6, false),
    ] {
        // TCP: LISTEN. UDP: bound and not connected to a peer.
        let listening = |x: &&InetSocket| {
            if tcp {
                x.state == "LISTEN"
            } else {
                x.remote_port == 0 && x.local_port != 0
            }
        };
        s.listeners
            .extend(list.iter().filter(listening).map(|x| Listener {
                protocol: proto,
                address: x.local_address.clone(),
                port: x.local_port,
                inode: x.inode,
                uid: x.uid,
                owners: x.owners.clone(),
            }));
    }
    match fs::read_to_string(net.join("unix")) {
        Ok(t) => s.unix = parse_unix(&t, owners),
        Err(e) => errors.push(net.join("unix").display().to_string(), e),
    }
    s
}

const TCP_STATES: [&str; 13] = [
    "UNKNOWN",
    "ESTABLISHED",
    "SYN_SENT",
    "SYN_RECV",
    "FIN_WAIT1",
    "FIN_WAIT2",
    "TIME_WAIT",
    "CLOSE",
    "CLOSE_WAIT",
    "LAST_ACK",
    "LISTEN",
    "CLOSING",
    "NEW_SYN_RECV",
];

/// `/proc/net/{tcp,tcp6,udp,udp6}`.
fn parse_inet(text: &str, tcp: bool, owners: &HashMap<u64, Vec<SocketOwner>>) -> Vec<InetSocket> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (la, lp) = decode_addr_port(f.get(1)?)?;
            let (ra, rp) = decode_addr_port(f.get(2)?)?;
            let st = usize::from_str_radix(f.get(3)?, 16).ok()?;
            let state = if tcp {
                TCP_STATES.get(st).copied().unwrap_or("UNKNOWN").to_string()
            } else {
                // UDP reuses the TCP numbers: 1 connected, 7 unconnected.
                match st {
                    1 => "ESTABLISHED".to_string(),
                    7 => "UNCONNECTED".to_string(),
                    n => format!("{n:02X}"),
                }
            };
            let (tx, rx) = f.get(4)?.split_once(':')?;
            let inode: u64 = f.get(9)?.parse().ok()?;
            Some(InetSocket {
                local_address: la.to_string(),
                local_port: lp,
                remote_address: ra.to_string(),
                remote_port: rp,
                state,
                uid: f.get(7).and_then(|u| u.parse().ok()),
                inode,
                tx_queue: u64::from_str_radix(tx, 16).ok(),
                rx_queue: u64::from_str_radix(rx, 16).ok(),
                owners: owner_list(owners, inode),
            })
        })
        .collect()
}

fn owner_list(owners: &HashMap<u64, Vec<SocketOwner>>, inode: u64) -> Vec<SocketOwner> {
    if inode == 0 {
        return Vec::new();
    }
    owners.get(&inode).cloned().unwrap_or_default()
}

/// `0100007F:1F90` → 127.0.0.1:8080. The kernel prints each 32-bit word of the address as a
/// native-endian integer, so the bytes are the word's native-endian bytes.
fn decode_addr_port(s: &str) -> Option<(IpAddr, u16)> {
    let (a, p) = s.split_once(':')?;
    let port = u16::from_str_radix(p, 16).ok()?;
    let words: Option<Vec<[u8; 4]>> = (0..a.len() / 8)
        .map(|i| {
            let w = u32::from_str_radix(a.get(i * 8..i * 8 + 8)?, 16).ok()?;
            Some(w.to_ne_bytes())
        })
        .collect();
    let bytes: Vec<u8> = words?.concat();
    let ip = match (a.len(), bytes.len()) {
        (8, 4) => IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3])),
        (32, 16) => {
            let mut b = [0u8; 16];
            b.copy_from_slice(&bytes);
            IpAddr::V6(Ipv6Addr::from(b))
        }
        _ => return None,
    };
    Some((ip, port))
}

/// `/proc/net/unix`: `Num RefCount Protocol Flags Type St Inode [Path]`.
fn parse_unix(text: &str, owners: &HashMap<u64, Vec<SocketOwner>>) -> Vec<UnixSocket> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let (f, rest) = super::split_fields(line, 7);
            let flags = u32::from_str_radix(f.get(3)?, 16).ok()?;
            let ty = u32::from_str_radix(f.get(4)?, 16).ok()?;
            let st = u32::from_str_radix(f.get(5)?, 16).ok()?;
            let inode: u64 = f.get(6)?.parse().ok()?;
            // The path is the rest of the line; it may hold spaces.
            let path = Some(rest.trim_end().to_string()).filter(|p| !p.is_empty());
            Some(UnixSocket {
                inode,
                socket_type: match ty {
                    1 => "stream".into(),
                    2 => "dgram".into(),
                    5 => "seqpacket".into(),
                    n => n.to_string(),
                },
                state: match st {
                    1 => "UNCONNECTED".into(),
                    2 => "CONNECTING".into(),
                    3 => "CONNECTED".into(),
                    4 => "DISCONNECTING".into(),
                    n => n.to_string(),
                },
                // __SO_ACCEPTCON
                listening: flags & 0x0001_0000 != 0,
                path,
                owners: owner_list(owners, inode),
            })
        })
        .collect()
}

/// `/proc/net/route`: hex native-endian IPv4 words.
fn parse_route4(text: &str) -> Vec<Route4> {
    let ip = |s: &str| {
        u32::from_str_radix(s, 16)
            .ok()
            .map(|w| Ipv4Addr::from(w.to_ne_bytes()))
    };
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let flags = u32::from_str_radix(f.get(3)?, 16).ok()?;
            let mask = ip(f.get(7)?)?;
            let names = [
                (0x1, "U"),
                (0x2, "G"),
                (0x4, "H"),
                (0x8, "R"),
                (0x10, "D"),
                (0x20, "M"),
                (0x200, "reject"),
            ];
            Some(Route4 {
                interface: f.first()?.to_string(),
                destination: ip(f.get(1)?)?.to_string(),
                gateway: ip(f.get(2)?)?.to_string(),
                netmask: mask.to_string(),
                prefix_len: u32::from(mask).count_ones(),
                flags: names
                    .iter()
                    .filter(|(b, _)| flags & b != 0)
                    .map(|(_, n)| *n)
                    .collect(),
                metric: f.get(6)?.parse().ok()?,
                mtu: f.get(8)?.parse().ok()?,
            })
        })
        .collect()
}

/// `/proc/net/ipv6_route`: addresses in network byte order as 32 hex digits.
fn parse_route6(text: &str) -> Vec<Route6> {
    let ip = |s: &str| -> Option<String> {
        let mut b = [0u8; 16];
        for (i, byte) in b.iter_mut().enumerate() {
            *byte = u8::from_str_radix(s.get(i * 2..i * 2 + 2)?, 16).ok()?;
        }
        Some(Ipv6Addr::from(b).to_string())
    };
    let hex32 = |s: &str| u32::from_str_radix(s, 16).ok();
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            Some(Route6 {
                destination: ip(f.first()?)?,
                prefix_len: hex32(f.get(1)?)?,
                source: ip(f.get(2)?)?,
                source_prefix_len: hex32(f.get(3)?)?,
                next_hop: ip(f.get(4)?)?,
                metric: hex32(f.get(5)?)?,
                flags: format!("0x{}", f.get(8)?),
                interface: f.get(9)?.to_string(),
            })
        })
        .collect()
}

/// `/proc/net/arp`: `IP address  HW type  Flags  HW address  Mask  Device`.
fn parse_arp(text: &str) -> Vec<Neighbour> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            Some(Neighbour {
                address: f.first()?.to_string(),
                hw_type: f.get(1)?.to_string(),
                flags: f.get(2)?.to_string(),
                mac: f.get(3)?.to_string(),
                interface: f.get(5)?.to_string(),
            })
        })
        .collect()
}

const IFF_NAMES: [(u32, &str); 19] = [
    (0x1, "UP"),
    (0x2, "BROADCAST"),
    (0x4, "DEBUG"),
    (0x8, "LOOPBACK"),
    (0x10, "POINTOPOINT"),
    (0x20, "NOTRAILERS"),
    (0x40, "RUNNING"),
    (0x80, "NOARP"),
    (0x100, "PROMISC"),
    (0x200, "ALLMULTI"),
    (0x400, "MASTER"),
    (0x800, "SLAVE"),
    (0x1000, "MULTICAST"),
    (0x2000, "PORTSEL"),
    (0x4000, "AUTOMEDIA"),
    (0x8000, "DYNAMIC"),
    (0x10000, "LOWER_UP"),
    (0x20000, "DORMANT"),
    (0x40000, "ECHO"),
];

/// Interfaces from sysfs (MAC, MTU, state, flags) merged with `getifaddrs` addresses.
fn interfaces(opts: &VolatileOptions, errors: &mut Errors) -> Vec<Interface> {
    let mut by_name: BTreeMap<String, Interface> = BTreeMap::new();
    let class = opts.sys_root.join("class/net");
    match fs::read_dir(&class) {
        Ok(rd) => {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let dir = class.join(&name);
                let get = |f: &str| read_trimmed(&dir.join(f)).ok();
                let flags = get("flags");
                let flag_bits = flags
                    .as_deref()
                    .and_then(|f| u32::from_str_radix(f.trim_start_matches("0x"), 16).ok())
                    .unwrap_or(0);
                by_name.insert(
                    name.clone(),
                    Interface {
                        name,
                        ifindex: get("ifindex").and_then(|s| s.parse().ok()),
                        mac: get("address"),
                        mtu: get("mtu").and_then(|s| s.parse().ok()),
                        operstate: get("operstate"),
                        flag_names: IFF_NAMES
                            .iter()
                            .filter(|(b, _)| flag_bits & b != 0)
                            .map(|(_, n)| n.to_string())
                            .collect(),
                        flags,
                        addresses: Vec::new(),
                    },
                );
            }
        }
        Err(e) => errors.push(class.display().to_string(), e),
    }
    match nix::ifaddrs::getifaddrs() {
        Ok(addrs) => {
            for a in addrs {
                let Some(addr) = a.address.as_ref().and_then(ip_of) else {
                    continue;
                };
                let netmask = a.netmask.as_ref().and_then(ip_of);
                let prefix_len = netmask.map(|m| match m {
                    IpAddr::V4(v) => u32::from(v).count_ones(),
                    IpAddr::V6(v) => u128::from(v).count_ones(),
                });
                let entry = by_name
                    .entry(a.interface_name.clone())
                    .or_insert_with(|| Interface {
                        name: a.interface_name.clone(),
                        ..Default::default()
                    });
                entry.addresses.push(Address {
                    family: if addr.is_ipv4() { "inet" } else { "inet6" },
                    address: addr.to_string(),
                    netmask: netmask.map(|m| m.to_string()),
                    prefix_len,
                    broadcast: a.broadcast.as_ref().and_then(ip_of).map(|b| b.to_string()),
                    destination: a
                        .destination
                        .as_ref()
                        .and_then(ip_of)
                        .map(|b| b.to_string()),
                });
            }
        }
        Err(e) => errors.push("getifaddrs", e),
    }
    by_name.into_values().collect()
}

fn ip_of(s: &nix::sys::socket::SockaddrStorage) -> Option<IpAddr> {
    if let Some(v4) = s.as_sockaddr_in() {
        return Some(IpAddr::V4(v4.ip()));
    }
    s.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use std::net::{TcpListener, UdpSocket};

    #[test]
    fn tcp_listener_appears_with_our_pid() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let u = UdpSocket::bind("[::1]:0").ok();
        let arts = super::super::collect(&VolatileOptions::default());
        let net = arts.iter().find(|a| a.name == "network.json").unwrap();
        let doc: Value = serde_json::from_slice(&net.bytes).unwrap();
        let me = std::process::id() as i64;
        let listeners = doc["listeners"].as_array().unwrap();
        let ours = listeners
            .iter()
            .find(|x| x["protocol"] == "tcp" && x["port"].as_u64() == Some(u64::from(port)))
            .unwrap_or_else(|| panic!("port {port} not in {listeners:?}"));
        assert_eq!(ours["address"], "127.0.0.1");
        assert!(ours["owners"]
            .as_array()
            .unwrap()
            .iter()
            .any(|o| o["pid"].as_i64() == Some(me)));
        let tcp = doc["tcp"].as_array().unwrap();
        assert!(tcp
            .iter()
            .any(|s| s["local_port"].as_u64() == Some(u64::from(port)) && s["state"] == "LISTEN"));
        if let Some(u) = u {
            let up = u.local_addr().unwrap().port();
            assert!(listeners.iter().any(|x| x["protocol"] == "udp6"
                && x["address"] == "::1"
                && x["port"].as_u64() == Some(u64::from(up))));
        }
        let ifs = doc["interfaces"].as_array().unwrap();
        let lo = ifs.iter().find(|i| i["name"] == "lo").unwrap();
        assert!(lo["addresses"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["address"] == "127.0.0.1" && a["prefix_len"] == 8));
        assert!(lo["flag_names"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f == "LOOPBACK"));
        assert!(doc["neighbours"]["ipv6_note"].is_string());
        drop(l);
    }

    #[test]
    fn other_network_namespaces_are_read_separately() {
        let Ok(mut child) = std::process::Command::new("unshare")
            .args(["--net", "/bin/sleep", "30"])
            .spawn()
        else {
            eprintln!("unshare not available; skipped");
            return;
        };
        let mine = fs::read_link("/proc/self/ns/net").unwrap();
        let link = format!("/proc/{}/ns/net", child.id());
        let mut theirs = None;
        for _ in 0..200 {
            match fs::read_link(&link) {
                Ok(ns) if ns != mine => {
                    theirs = Some(ns.to_string_lossy().into_owned());
                    break;
                }
                _ => std::thread::sleep(std::time::Duration::from_millis(10)),
            }
        }
        let arts = super::super::collect(&VolatileOptions::default());
        child.kill().unwrap();
        child.wait().unwrap();
        let Some(theirs) = theirs else {
            eprintln!("unshare --net did not create a namespace here; skipped");
            return;
        };
        let net = arts.iter().find(|a| a.name == "network.json").unwrap();
        let doc: Value = serde_json::from_slice(&net.bytes).unwrap();
        let others = doc["other_namespaces"].as_array().unwrap();
        let o = others
            .iter()
            .find(|o| o["net_ns"] == theirs.as_str())
            .unwrap();
        assert_eq!(o["read_via_pid"].as_i64(), Some(i64::from(child.id())));
        // A fresh namespace has no sockets of its own.
        assert_eq!(o["tcp"].as_array().unwrap().len(), 0);
        // Our own namespace is the host table, not repeated.
        let own = mine.to_string_lossy();
        assert!(!others.iter().any(|o| o["net_ns"] == own.as_ref()));
    }

    #[test]
    fn address_decoding() {
        let (ip, port) = decode_addr_port("0100007F:1F90").unwrap();
        assert_eq!((ip.to_string(), port), ("127.0.0.1".into(), 8080));
        // ::1 as the kernel prints it on little-endian hosts.
        let (ip, _) = decode_addr_port("00000000000000000000000001000000:0016").unwrap();
        assert_eq!(ip.to_string(), "::1");
        let (ip, _) = decode_addr_port("B80D0120000000000000000001000000:0050").unwrap();
        assert_eq!(ip.to_string(), "2001:db8::1");
        let (ip, _) = decode_addr_port("0000000000000000FFFF00000100007F:0050").unwrap();
        assert_eq!(ip.to_string(), "::ffff:127.0.0.1");
        assert!(decode_addr_port("zz:1").is_none());
        let r = parse_route4(
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
             eth0\t00000000\t0102A8C0\t0003\t0\t0\t100\t00000000\t0\t0\t0\n\
             eth0\t0002A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n",
        );
        assert_eq!(r[0].gateway, "192.168.2.1");
        assert_eq!(r[0].flags, ["U", "G"]);
        assert_eq!(
            (r[1].destination.as_str(), r[1].prefix_len),
            ("192.168.2.0", 24)
        );
        let r6 = parse_route6("fe800000000000000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001     eth0\n");
        assert_eq!(
            (r6[0].destination.as_str(), r6[0].prefix_len),
            ("fe80::", 64)
        );
        assert_eq!(r6[0].metric, 256);
        let u = parse_unix(
            "Num       RefCount Protocol Flags    Type St Inode Path\n\
             0000000000000000: 00000002 00000000 00010000 0001 01 12345 /run/my sock\n\
             0000000000000000: 00000003 00000000 00000000 0001 03 12346\n",
            &HashMap::new(),
        );
        assert_eq!(u[0].path.as_deref(), Some("/run/my sock"));
        assert!(u[0].listening);
        assert_eq!(u[1].path, None);
        assert_eq!(u[1].state, "CONNECTED");
    }
}
