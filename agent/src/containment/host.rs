//! Host isolation: one nftables table of its own, `table inet cairn_isolation`.
//!
//! A table of our own (not rules in the admin's tables) so that applying and removing it are
//! each one atomic `nft -f -` transaction that never touches anyone else's rules, and the
//! admin sees exactly what cairn enforces with `nft list ruleset`. One `inet` table covers
//! IPv4 and IPv6. It runs in the network namespace of the calling thread (nft inherits it).

use super::{ContainError, Rule};
use cairn_protocol::containment::Proto;
use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::{Command, Stdio};

pub const TABLE: &str = "cairn_isolation";
/// What an [`Outcome`](cairn_protocol::containment::Outcome) names as the mechanism.
pub const MECHANISM: &str = "nftables table inet cairn_isolation";

/// The ICMPv6 neighbour discovery types kept open: without them IPv6 cannot resolve the
/// link-layer address of an allowed peer (or of the router towards it), so the allow-list
/// and the collector's channel would not work over IPv6. They do not leave the link.
const ND_TYPES: &str =
    "nd-router-solicit, nd-router-advert, nd-neighbor-solicit, nd-neighbor-advert";

/// The whole transaction given to `nft -f -`, a pure function of its inputs so that its
/// SHA-256 names exactly the rules in force.
///
/// `add` then `delete` then the definition, in one transaction: re-applying replaces the
/// table whole (even chains whose definition changed), and a failure leaves what was there.
/// The chains hook at priority -300, before conntrack (-200) and the usual filter chains (0):
/// a dropped packet never creates conntrack state, and an `accept` in another table cannot
/// let through what this table drops (a drop in any base chain is final). There is no
/// `ct state established accept`: connections open before the isolation are cut too.
pub fn render(collector: &[SocketAddr], allow: &[Rule]) -> String {
    let mut seen = Vec::new();
    for a in collector {
        let a = SocketAddr::new(a.ip().to_canonical(), a.port());
        if !seen.contains(&a) {
            seen.push(a);
        }
    }
    let collector = seen;
    let mut input = vec![
        "iif \"lo\" accept".to_string(),
        format!("icmpv6 type {{ {ND_TYPES} }} accept"),
    ];
    let mut output = vec![
        "oif \"lo\" accept".to_string(),
        format!("icmpv6 type {{ {ND_TYPES} }} accept"),
    ];
    for a in &collector {
        let fam = family(a.ip());
        input.push(format!(
            "{fam} saddr {} udp sport {} accept",
            a.ip(),
            a.port()
        ));
        output.push(format!(
            "{fam} daddr {} udp dport {} accept",
            a.ip(),
            a.port()
        ));
    }
    for r in allow {
        let fam = family(r.cidr.addr);
        let l4 = |dir: &str| match (r.proto, r.port) {
            (Some(p), Some(port)) => format!(" {} {dir} {port}", proto(p)),
            (Some(p), None) => format!(" meta l4proto {}", proto(p)),
            // A port without a protocol is refused when the request is checked.
            (None, _) => String::new(),
        };
        input.push(format!("{fam} saddr {}{} accept", r.cidr, l4("sport")));
        output.push(format!("{fam} daddr {}{} accept", r.cidr, l4("dport")));
    }
    let chain = |name: &str, rules: &[String]| {
        let mut s =
            format!("\tchain {name} {{\n\t\ttype filter hook {name} priority -300; policy drop;\n");
        for r in rules {
            s.push_str("\t\t");
            s.push_str(r);
            s.push('\n');
        }
        s.push_str("\t}\n");
        s
    };
    format!(
        "add table inet {TABLE}\ndelete table inet {TABLE}\ntable inet {TABLE} {{\n{}{}{}}}\n",
        chain("input", &input),
        chain("output", &output),
        chain("forward", &[]),
    )
}

fn family(ip: IpAddr) -> &'static str {
    if ip.is_ipv4() {
        "ip"
    } else {
        "ip6"
    }
}

fn proto(p: Proto) -> &'static str {
    match p {
        Proto::Tcp => "tcp",
        Proto::Udp => "udp",
    }
}

/// The `nft` binary: on PATH, or where Debian puts it (a service's PATH may lack sbin).
fn nft() -> Result<PathBuf, ContainError> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|d| d.join("nft"))
        .find(|p| p.is_file())
        .ok_or(ContainError::NftMissing)
}

/// Runs `nft ARGS` with `stdin`; its stderr in the error.
fn run(args: &[&str], stdin: &str, what: &str) -> Result<(), ContainError> {
    let mut child = Command::new(nft()?)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| ContainError::Nft {
            what: what.into(),
            detail: format!("cannot run nft: {e}"),
        })?;
    if let Some(mut i) = child.stdin.take() {
        // A write error shows as nft's own failure below.
        let _ = i.write_all(stdin.as_bytes());
    }
    let out = child.wait_with_output().map_err(|e| ContainError::Nft {
        what: what.into(),
        detail: format!("nft did not finish: {e}"),
    })?;
    if out.status.success() {
        return Ok(());
    }
    Err(ContainError::Nft {
        what: what.into(),
        detail: format!(
            "nft {} ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ),
    })
}

/// Applies a ruleset from [`render`] in one transaction.
pub fn apply(rules: &str) -> Result<(), ContainError> {
    run(&["-f", "-"], rules, "applying the host isolation")
}

/// Removes the table in one transaction; nothing to remove is not an error.
pub fn remove() -> Result<(), ContainError> {
    let tx = format!("add table inet {TABLE}\ndelete table inet {TABLE}\n");
    run(&["-f", "-"], &tx, "removing the host isolation")
}

/// Whether the table is in this network namespace's ruleset now.
pub fn present() -> Result<bool, ContainError> {
    let out = Command::new(nft()?)
        .args(["list", "tables"])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| ContainError::Nft {
            what: "listing the nftables tables".into(),
            detail: format!("cannot run nft: {e}"),
        })?;
    if !out.status.success() {
        return Err(ContainError::Nft {
            what: "listing the nftables tables".into(),
            detail: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    let want = format!("table inet {TABLE}");
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .any(|l| l.trim() == want))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use cairn_protocol::containment::Cidr;

    fn rule(cidr: &str, proto: Option<Proto>, port: Option<u16>) -> Rule {
        Rule {
            cidr: Cidr::parse(cidr).unwrap(),
            proto,
            port,
        }
    }

    #[test]
    fn the_ruleset_is_exactly_this_text() {
        let collector: Vec<SocketAddr> = vec![
            "10.213.1.2:4433".parse().unwrap(),
            "[fd00:cafe::2]:4433".parse().unwrap(),
            // The same address as IPv4-mapped IPv6: one rule, in IPv4.
            "[::ffff:10.213.1.2]:4433".parse().unwrap(),
        ];
        let allow = vec![
            rule("10.213.1.2", Some(Proto::Tcp), Some(22)),
            rule("192.0.2.0/24", Some(Proto::Udp), None),
            rule("fd00:1::/64", None, None),
        ];
        let text = render(&collector, &allow);
        let nd = "icmpv6 type { nd-router-solicit, nd-router-advert, nd-neighbor-solicit, nd-neighbor-advert } accept";
        let want = format!(
            "add table inet cairn_isolation
delete table inet cairn_isolation
table inet cairn_isolation {{
\tchain input {{
\t\ttype filter hook input priority -300; policy drop;
\t\tiif \"lo\" accept
\t\t{nd}
\t\tip saddr 10.213.1.2 udp sport 4433 accept
\t\tip6 saddr fd00:cafe::2 udp sport 4433 accept
\t\tip saddr 10.213.1.2/32 tcp sport 22 accept
\t\tip saddr 192.0.2.0/24 meta l4proto udp accept
\t\tip6 saddr fd00:1::/64 accept
\t}}
\tchain output {{
\t\ttype filter hook output priority -300; policy drop;
\t\toif \"lo\" accept
\t\t{nd}
\t\tip daddr 10.213.1.2 udp dport 4433 accept
\t\tip6 daddr fd00:cafe::2 udp dport 4433 accept
\t\tip daddr 10.213.1.2/32 tcp dport 22 accept
\t\tip daddr 192.0.2.0/24 meta l4proto udp accept
\t\tip6 daddr fd00:1::/64 accept
\t}}
\tchain forward {{
\t\ttype filter hook forward priority -300; policy drop;
\t}}
}}
"
        );
        assert_eq!(text, want);
        // The hash the outcome carries is of exactly this text.
        assert_eq!(
            super::super::sha256_hex(&text),
            "0197689e9fd1b672f1874f544d424acd9a7e5a0c0e2c4591a55b2f0d074cf23b"
        );
        // Nothing but loopback and neighbour discovery without a collector or allow-list.
        let bare = render(&[], &[]);
        assert!(!bare.contains("saddr") && !bare.contains("daddr"), "{bare}");
    }
}
