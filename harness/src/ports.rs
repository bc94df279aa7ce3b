//! Free loopback ports: one registry for the whole process, so parallel tests never get the
//! same port twice, and a retry for the race between picking a port and binding it.

use std::collections::HashSet;
use std::net::{TcpListener, UdpSocket};
use std::sync::Mutex;

use anyhow::{anyhow, bail, Context, Result};

static RESERVED_PORTS: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

/// A free UDP port and a free TCP port on 127.0.0.1 (bound to :0, then released). Ports handed
/// out earlier in this process are never handed out again, so parallel tests do not collide.
pub fn free_ports() -> Result<(u16, u16)> {
    for _ in 0..50 {
        let udp = UdpSocket::bind("127.0.0.1:0").context("cannot bind a UDP socket")?;
        let tcp = TcpListener::bind("127.0.0.1:0").context("cannot bind a TCP socket")?;
        let (u, t) = (udp.local_addr()?.port(), tcp.local_addr()?.port());
        let mut guard = RESERVED_PORTS
            .lock()
            .map_err(|_| anyhow!("port registry poisoned"))?;
        let set = guard.get_or_insert_with(HashSet::new);
        if u != t && !set.contains(&u) && !set.contains(&t) {
            set.insert(u);
            set.insert(t);
            return Ok((u, t));
        }
    }
    bail!("could not find free ports on 127.0.0.1")
}

/// Calls `start(udp, tcp)` with fresh [`free_ports`] up to `attempts` times: another process
/// may take a port between picking and binding it, and `start` then fails; the last error is
/// returned.
pub fn with_free_ports<T>(
    attempts: u32,
    mut start: impl FnMut(u16, u16) -> Result<T>,
) -> Result<T> {
    let mut last_err = None;
    for _ in 0..attempts.max(1) {
        let (udp, tcp) = free_ports()?;
        match start(udp, tcp) {
            Ok(v) => return Ok(v),
            Err(e) => last_err = Some(e),
        }
    }
    Err(last_err.unwrap_or_else(|| anyhow!("no attempt to bind free ports was made")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_never_handed_out_twice() {
        let mut seen = HashSet::new();
        for _ in 0..20 {
            let (u, t) = free_ports().unwrap();
            assert!(
                seen.insert(u) && seen.insert(t),
                "{u} or {t} handed out twice"
            );
        }
    }

    #[test]
    fn a_failed_bind_is_retried_on_other_ports() {
        let mut tried = Vec::new();
        let got = with_free_ports(3, |u, t| {
            tried.push((u, t));
            if tried.len() < 3 {
                bail!("address in use");
            }
            Ok(u)
        })
        .unwrap();
        assert_eq!(tried.len(), 3);
        assert_eq!(got, tried[2].0);
        assert_ne!(tried[0], tried[1]);
        let err = with_free_ports(2, |_, _| -> Result<()> { bail!("always in use") }).unwrap_err();
        assert!(err.to_string().contains("always in use"));
    }
}
