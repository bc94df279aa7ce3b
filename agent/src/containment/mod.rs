//! Containment on the host: isolate the whole host or one container, freeze, thaw and kill a
//! container or a process tree, and keep it all in force across agent restarts and reboots.
//!
//! A responder contains first and investigates after, so what is enforced here must hold
//! without the collector, without kprobes, and whatever the container runtime and CNI:
//!
//! - [`host`]: a dedicated nftables table (`table inet cairn_isolation`), applied and removed
//!   in one atomic transaction each; the admin sees it in `nft list ruleset`. Kept open: loopback,
//!   the collector's pinned addresses on its QUIC port, the allow-list, ICMPv6 neighbour
//!   discovery.
//! - [`cgroup`]: `cgroup_skb` programs on the container's cgroup v2 directory, pinned in bpffs so
//!   they stay attached when the agent exits; the admin sees them in `bpftool cgroup tree`.
//! - [`freeze`]: `cgroup.freeze` and `cgroup.kill` for a container, SIGSTOP/SIGCONT/SIGKILL for a
//!   process tree; never pid 1, never the agent's own tree or cgroup.
//! - Last-breath marks: a host or a container marked so that the daemon asks for a
//!   `last-breath` collection when the host shuts down or the container exits; a container's
//!   cgroup and writable layer are found when it is marked, while it still runs.
//! - [`state`]: what is in force, in `<state_dir>/containment.json`; [`Containment::restore`]
//!   re-applies it at start, before the agent connects. Break-glass releases on the host are
//!   queued in `containment-reports.jsonl` for the collector.
//!
//! The round trip to the collector through the isolated path is the daemon's to check: it calls
//! [`Containment::roll_back`] when that fails.

mod breakglass;
pub mod cgroup;
pub mod freeze;
pub mod host;
mod restore;
pub mod state;
mod status;

pub use state::Active;
pub use status::{Checked, Status};

use cairn_protocol::containment::{
    Action, Allow, Cidr, Outcome, Proto, Request, Target, MAX_ALLOW,
};
use state::Store;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ContainError {
    #[error("refused: {0}")]
    Refused(String),
    #[error("{0}")]
    NotFound(String),
    #[error("nothing to release: {0}")]
    NotActive(String),
    #[error(
        "nft not found: install nftables (`apt-get install nftables`, or `cargo xtask setup`)"
    )]
    NftMissing,
    #[error("{what} failed: {detail}")]
    Nft { what: String, detail: String },
    #[error(
        "{what} failed: {detail} (BPF needs root and cgroup v2; `cairn-agent selftest` checks it)"
    )]
    Bpf { what: String, detail: String },
    #[error("cgroup {path}: {detail}")]
    Cgroup { path: PathBuf, detail: String },
    #[error("timed out after {wait:?} waiting for {what}")]
    Timeout { what: String, wait: Duration },
    #[error("containment state {path}: {detail}")]
    State { path: PathBuf, detail: String },
}

/// One checked allow-list entry, as both mechanisms enforce it: traffic to and from `cidr`
/// (on its `port`, the remote side's, when given).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    pub cidr: Cidr,
    pub proto: Option<Proto>,
    pub port: Option<u16>,
}

/// The allow-list, checked (at most [`MAX_ALLOW`] entries, each a CIDR).
pub fn rules(allow: &[Allow]) -> Result<Vec<Rule>, ContainError> {
    if allow.len() > MAX_ALLOW {
        return Err(ContainError::Refused(format!(
            "{} allow-list entries; at most {MAX_ALLOW}",
            allow.len()
        )));
    }
    allow
        .iter()
        .map(|a| {
            if a.port.is_some() && a.proto.is_none() {
                return Err(ContainError::Refused(format!(
                    "{}: a port needs a protocol (tcp or udp)",
                    a.cidr
                )));
            }
            Ok(Rule {
                cidr: a.cidr().map_err(ContainError::Refused)?,
                proto: a.proto,
                port: a.port,
            })
        })
        .collect()
}

pub fn sha256_hex(text: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(text.as_bytes()))
}

/// Where containment reads and writes: normally `/sys/fs/cgroup` (or the cgroup2 mount of a
/// hybrid host), `/proc`, `/sys/fs/bpf`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Roots {
    pub state_dir: PathBuf,
    /// The cgroup v2 mount.
    pub cgroup_root: PathBuf,
    pub proc_root: PathBuf,
    /// The bpffs mount the pins go under (`cairn/isolation/…`).
    pub bpffs: PathBuf,
}

impl Roots {
    /// This host's: the cgroup2 mount from `/proc/self/mountinfo`; `/proc` under `host_root`
    /// when the agent runs in a container.
    pub fn detect(state_dir: &Path, host_root: Option<&Path>) -> Roots {
        Roots {
            state_dir: state_dir.to_path_buf(),
            cgroup_root: crate::mountinfo::cgroup2_root(Path::new("/proc/self/mountinfo"))
                .unwrap_or_else(|| PathBuf::from("/sys/fs/cgroup")),
            proc_root: host_root
                .map(|r| r.join("proc"))
                .unwrap_or_else(|| PathBuf::from("/proc")),
            bpffs: PathBuf::from("/sys/fs/bpf"),
        }
    }
}

/// The containment of this host, over the state directory.
#[derive(Debug, Clone)]
pub struct Containment {
    roots: Roots,
    /// How long a freeze, thaw or kill is waited for.
    wait: Duration,
}

fn outcome(id: &str, action: Action, target: &Target, mechanism: &str) -> Outcome {
    Outcome {
        id: id.to_string(),
        action,
        target: target.clone(),
        ok: true,
        mechanism: mechanism.to_string(),
        rules_sha256: None,
        rules: None,
        pids: Vec::new(),
        verified_rtt_ms: None,
        rolled_back: false,
        error: None,
        local: None,
        at: cairn_protocol::rfc3339::now(),
    }
}

/// The outcome that says `req` failed with `e` (for the daemon to report).
pub fn failure(req: &Request, e: &ContainError) -> Outcome {
    let mut o = outcome(&req.id, req.action, &req.target, "");
    o.ok = false;
    o.error = Some(e.to_string());
    o
}

/// What a host's last-breath mark waits for.
pub const LAST_BREATH_HOST: &str = "last breath on SIGTERM (the host's shutdown)";

fn last_breath_container(cg: &Path, layer: Option<&Path>) -> String {
    match layer {
        Some(l) => format!(
            "last breath when {} empties (writable layer {})",
            cg.display(),
            l.display()
        ),
        None => format!(
            "last breath when {} empties (no overlay writable layer found)",
            cg.display()
        ),
    }
}

fn cgroup_mechanism(cg: &Path) -> String {
    format!("cgroup_skb on {}", cg.display())
}

impl Containment {
    pub fn new(state_dir: &Path) -> Containment {
        Containment::with_roots(Roots::detect(state_dir, None))
    }

    pub fn with_roots(roots: Roots) -> Containment {
        Containment {
            roots,
            wait: freeze::WAIT,
        }
    }

    pub fn roots(&self) -> &Roots {
        &self.roots
    }

    /// Enforces `req`. `collector`: the collector's addresses, pinned now, that a host
    /// isolation keeps reachable (their UDP port, both ways). The outcome's `verified_rtt_ms`
    /// is left for the daemon, which checks the round trip.
    pub fn apply(&self, req: &Request, collector: &[SocketAddr]) -> Result<Outcome, ContainError> {
        self.apply_in(req, collector, None)
    }

    /// [`apply`](Self::apply) for a container whose cgroup directory is already known (not
    /// looked up through /proc): a container runtime's own path, a test cgroup.
    pub fn apply_to_cgroup(&self, req: &Request, cgroup: &Path) -> Result<Outcome, ContainError> {
        if !matches!(req.target, Target::Container { .. }) {
            return Err(ContainError::Refused(format!(
                "a cgroup directory is a container's, not the target {}",
                req.target.describe()
            )));
        }
        self.apply_in(req, &[], Some(cgroup))
    }

    fn apply_in(
        &self,
        req: &Request,
        collector: &[SocketAddr],
        cgroup: Option<&Path>,
    ) -> Result<Outcome, ContainError> {
        req.check().map_err(ContainError::Refused)?;
        let store = Store::lock(&self.roots.state_dir)?;
        let entry = |mechanism: &str| Active {
            action: req.action,
            target: req.target.clone(),
            request_id: req.id.clone(),
            reason: req.reason.clone(),
            requested_by: req.requested_by.clone(),
            at: cairn_protocol::rfc3339::now(),
            mechanism: mechanism.to_string(),
            cgroup: None,
            pins: None,
            allow: Vec::new(),
            collector: Vec::new(),
            rules_sha256: None,
            pids: Vec::new(),
            start_time: None,
            layer: None,
        };
        let mut out = outcome(&req.id, req.action, &req.target, "");
        match (req.action, &req.target) {
            (Action::Isolate, Target::Host) => {
                if collector.is_empty() {
                    return Err(ContainError::Refused(
                        "no collector address to keep reachable: a host isolation would cut the agent off its collector".into(),
                    ));
                }
                let rules = rules(&req.allow)?;
                let text = host::render(collector, &rules);
                host::apply(&text)?;
                if !host::present()? {
                    return Err(ContainError::Nft {
                        what: "checking the host isolation".into(),
                        detail: "the table is not in the ruleset after applying it".into(),
                    });
                }
                let sha = sha256_hex(&text);
                let mut e = entry(host::MECHANISM);
                e.allow = req.allow.clone();
                e.collector = collector.to_vec();
                e.rules_sha256 = Some(sha.clone());
                self.save_or_undo(&store, e, host::remove)?;
                out.mechanism = host::MECHANISM.into();
                out.rules_sha256 = Some(sha);
                out.rules = Some(text);
            }
            (Action::Isolate, Target::Container { .. }) => {
                let cg = self.cgroup_for(&store, &req.target, cgroup)?;
                let rules = rules(&req.allow)?;
                let enforced = cgroup::isolate(&cg, &self.roots.bpffs, &rules)?;
                let text = cgroup::render(&cg, &rules);
                let sha = sha256_hex(&text);
                let mechanism = cgroup_mechanism(&cg);
                let mut e = entry(&mechanism);
                e.cgroup = Some(cg.clone());
                e.pins = Some(enforced.pin_dir.clone());
                e.allow = req.allow.clone();
                e.rules_sha256 = Some(sha.clone());
                let dir = enforced.pin_dir.clone();
                self.save_or_undo(&store, e, || cgroup::release(&dir, Some(&cg)).map(|_| ()))?;
                out.mechanism = mechanism;
                out.rules_sha256 = Some(sha);
                out.rules = Some(text);
            }
            (Action::Release, Target::Host) => {
                host::remove()?;
                if host::present()? {
                    return Err(ContainError::Nft {
                        what: "checking the release".into(),
                        detail: "the table is still in the ruleset".into(),
                    });
                }
                store.remove(Action::Release, &req.target)?;
                out.mechanism = host::MECHANISM.into();
            }
            (Action::Release, Target::Container { .. }) => {
                out.mechanism = self.release_container(&store, &req.target, cgroup)?;
            }
            (Action::Freeze, Target::Container { .. }) => {
                let cg = self.cgroup_for(&store, &req.target, cgroup)?;
                out.pids = freeze::freeze_cgroup(&cg, self.wait)?;
                let mut e = entry("cgroup.freeze");
                e.cgroup = Some(cg.clone());
                e.pids = out.pids.clone();
                self.save_or_undo(&store, e, || {
                    freeze::thaw_cgroup(&cg, self.wait).map(|_| ())
                })?;
                out.mechanism = "cgroup.freeze".into();
            }
            (Action::Thaw, Target::Container { .. }) => {
                let cg = self.cgroup_for(&store, &req.target, cgroup)?;
                out.pids = freeze::thaw_cgroup(&cg, self.wait)?;
                store.remove(Action::Thaw, &req.target)?;
                out.mechanism = "cgroup.freeze".into();
            }
            (Action::Kill, Target::Container { .. }) => {
                let cg = self.cgroup_for(&store, &req.target, cgroup)?;
                out.pids = freeze::kill_cgroup(&cg, self.wait)?;
                store.remove(Action::Kill, &req.target)?;
                out.mechanism = "cgroup.kill".into();
            }
            (Action::Freeze, Target::Process { pid }) => {
                let proc_root = &self.roots.proc_root;
                out.pids = freeze::stop_tree(proc_root, *pid, self.wait)?;
                let mut e = entry("SIGSTOP");
                e.pids = out.pids.clone();
                e.start_time = freeze::start_time(proc_root, *pid);
                let pid = *pid;
                self.save_or_undo(&store, e, || {
                    freeze::continue_tree(proc_root, pid).map(|_| ())
                })?;
                out.mechanism = "SIGSTOP".into();
            }
            (Action::Thaw, Target::Process { pid }) => {
                out.pids = freeze::continue_tree(&self.roots.proc_root, *pid)?;
                store.remove(Action::Thaw, &req.target)?;
                out.mechanism = "SIGCONT".into();
            }
            (Action::Kill, Target::Process { pid }) => {
                out.pids = freeze::kill_tree(&self.roots.proc_root, *pid, self.wait)?;
                store.remove(Action::Kill, &req.target)?;
                out.mechanism = "SIGKILL".into();
            }
            (Action::MarkLastBreath, Target::Host) => {
                store.upsert(entry(LAST_BREATH_HOST))?;
                out.mechanism = LAST_BREATH_HOST.into();
            }
            (Action::MarkLastBreath, Target::Container { id }) => {
                let cg = self.cgroup_for(&store, &req.target, cgroup)?;
                let mut e = entry("");
                e.layer = self.writable_layer(id).ok();
                e.mechanism = last_breath_container(&cg, e.layer.as_deref());
                e.cgroup = Some(cg);
                out.mechanism = e.mechanism.clone();
                store.upsert(e)?;
            }
            (Action::UnmarkLastBreath, Target::Host | Target::Container { .. }) => {
                let gone = store.remove(Action::UnmarkLastBreath, &req.target)?;
                out.mechanism = gone
                    .first()
                    .map(|a| a.mechanism.clone())
                    .unwrap_or_else(|| "no mark was recorded".into());
            }
            // `check` refuses the rest (isolating a process tree, freezing the host).
            (a, t) => {
                return Err(ContainError::Refused(format!(
                    "{} does not apply to {}",
                    a.as_str(),
                    t.describe()
                )))
            }
        }
        out.at = cairn_protocol::rfc3339::now();
        Ok(out)
    }

    /// Records `e`; when it cannot be recorded, undoes the enforcement (it would not survive
    /// a restart and nothing would say it is there) and says so.
    fn save_or_undo(
        &self,
        store: &Store,
        e: Active,
        undo: impl FnOnce() -> Result<(), ContainError>,
    ) -> Result<(), ContainError> {
        let Err(err) = store.upsert(e) else {
            return Ok(());
        };
        let undone = match undo() {
            Ok(()) => "undone".to_string(),
            Err(u) => format!("and undoing it failed too: {u}"),
        };
        Err(ContainError::State {
            path: self.roots.state_dir.join(state::STATE_FILE),
            detail: format!("the containment could not be recorded ({err}), so it was {undone}"),
        })
    }

    /// The cgroup directory of a container target: `given`, else the one recorded when it was
    /// contained (if it still exists), else found through /proc. Refused when the agent itself
    /// runs in it.
    fn cgroup_for(
        &self,
        store: &Store,
        target: &Target,
        given: Option<&Path>,
    ) -> Result<PathBuf, ContainError> {
        let Target::Container { id } = target else {
            return Err(ContainError::Refused(format!(
                "{} has no cgroup of its own",
                target.describe()
            )));
        };
        let recorded = || -> Result<Option<PathBuf>, ContainError> {
            Ok(store
                .active()?
                .into_iter()
                .filter(|a| a.target.same_as(target))
                .find_map(|a| a.cgroup.filter(|c| c.is_dir())))
        };
        let cg = match given {
            Some(g) => g.to_path_buf(),
            None => match recorded()? {
                Some(c) => c,
                None => self.resolve(id)?,
            },
        };
        self.refuse_own_cgroup(&cg)?;
        Ok(cg)
    }

    fn resolve(&self, id: &str) -> Result<PathBuf, ContainError> {
        let c = crate::containers::cgroup_of(&self.roots.proc_root, id)
            .map_err(ContainError::NotFound)?;
        Ok(self.roots.cgroup_root.join(c.path.trim_start_matches('/')))
    }

    /// A running container's writable layer: the `upperdir` of the overlay mounted at its
    /// root (Docker, containerd and CRI-O all mount one), as a path in the agent's view.
    pub fn writable_layer(&self, id: &str) -> Result<PathBuf, ContainError> {
        let c = crate::containers::cgroup_of(&self.roots.proc_root, id)
            .map_err(ContainError::NotFound)?;
        let mountinfo = self
            .roots
            .proc_root
            .join(c.pid.to_string())
            .join("mountinfo");
        let upper = crate::mountinfo::read(&mountinfo)
            .ok()
            .and_then(|m| crate::mountinfo::root_overlay_upperdir(&m))
            .ok_or_else(|| {
                ContainError::NotFound(format!(
                    "container {id}: its root is not an overlay mount with an upperdir ({})",
                    mountinfo.display()
                ))
            })?;
        // The runtime mounted it in the host's namespace: under the host root when the agent
        // runs in a container with the host's / mounted.
        Ok(match self.roots.proc_root.parent() {
            Some(root) if root != Path::new("/") => {
                root.join(upper.strip_prefix("/").unwrap_or(&upper))
            }
            _ => upper,
        })
    }

    fn refuse_own_cgroup(&self, cg: &Path) -> Result<(), ContainError> {
        let root = &self.roots.cgroup_root;
        if !cg.starts_with(root) || cg == root.as_path() {
            return Err(ContainError::Refused(format!(
                "{} is not a cgroup below {}",
                cg.display(),
                root.display()
            )));
        }
        let mine = std::fs::read_to_string(self.roots.proc_root.join("self/cgroup"))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("0::").map(|p| p.trim().to_string()))
            });
        if let Some(mine) = mine {
            if root.join(mine.trim_start_matches('/')).starts_with(cg) {
                return Err(ContainError::Refused(format!(
                    "this agent runs in {}: containing it would contain the agent itself (isolate the host instead)",
                    cg.display()
                )));
            }
        }
        Ok(())
    }

    fn release_container(
        &self,
        store: &Store,
        target: &Target,
        given: Option<&Path>,
    ) -> Result<String, ContainError> {
        let recorded: Vec<Active> = store
            .active()?
            .into_iter()
            .filter(|a| a.is_for(Action::Release, target))
            .collect();
        let mut dirs: Vec<(PathBuf, Option<PathBuf>)> = recorded
            .iter()
            .filter_map(|a| a.pins.clone().map(|p| (p, a.cgroup.clone())))
            .collect();
        // Not recorded (the state was lost): the pins of the container's cgroup, if running.
        let found = match (given, target) {
            (Some(g), _) => Some(g.to_path_buf()),
            (None, Target::Container { id }) if dirs.is_empty() => self.resolve(id).ok(),
            _ => None,
        };
        if let Some(g) = found {
            dirs.push((cgroup::pin_dir(&self.roots.bpffs, &g)?, Some(g)));
        }
        let mut mechanism = recorded.first().map(|a| a.mechanism.clone());
        for (dir, cg) in &dirs {
            let cg = cg.as_deref().filter(|c| c.is_dir());
            cgroup::release(dir, cg)?;
            if let Some(cg) = cg {
                mechanism = Some(cgroup_mechanism(cg));
            }
        }
        store.remove(Action::Release, target)?;
        Ok(mechanism.unwrap_or_else(|| "cgroup_skb".into()))
    }

    /// Undoes an isolation just applied (the daemon calls it when the collector cannot be
    /// reached through it): the outcome says `rolled_back` and why.
    pub fn roll_back(&self, req: &Request, why: &str) -> Outcome {
        let mut out = outcome(&req.id, req.action, &req.target, "");
        out.ok = false;
        out.error = Some(why.to_string());
        let undo = || -> Result<String, ContainError> {
            let store = Store::lock(&self.roots.state_dir)?;
            match (&req.action, &req.target) {
                (Action::Isolate, Target::Host) => {
                    host::remove()?;
                    store.remove(Action::Release, &req.target)?;
                    Ok(host::MECHANISM.to_string())
                }
                (Action::Isolate, Target::Container { .. }) => {
                    self.release_container(&store, &req.target, None)
                }
                _ => Err(ContainError::Refused(format!(
                    "only an isolation is rolled back, not {}",
                    req.action.as_str()
                ))),
            }
        };
        match undo() {
            Ok(m) => {
                out.mechanism = m;
                out.rolled_back = true;
            }
            Err(e) => out.error = Some(format!("{why}; rolling back failed: {e}")),
        }
        out.at = cairn_protocol::rfc3339::now();
        out
    }

    /// Drops a used last-breath mark here, without the collector (the daemon, once the mark's
    /// container is gone): the outcome, a local `unmark_last_breath` by `cairn-agent`, says why
    /// and is for the collector.
    pub fn forget_mark(
        &self,
        mark: &Active,
        why: &str,
        error: Option<String>,
    ) -> Result<Outcome, ContainError> {
        Store::lock(&self.roots.state_dir)?.remove(Action::UnmarkLastBreath, &mark.target)?;
        let mut out = outcome(
            &format!("local-{}", uuid::Uuid::new_v4()),
            Action::UnmarkLastBreath,
            &mark.target,
            &mark.mechanism,
        );
        out.local = Some(cairn_protocol::containment::LocalAction {
            user: "cairn-agent".into(),
            reason: why.to_string(),
        });
        out.error = error;
        Ok(out)
    }

    /// The containments recorded as in force.
    pub fn active(&self) -> Result<Vec<Active>, ContainError> {
        Store::lock(&self.roots.state_dir)?.active()
    }
}

/// Mounts bpffs at `bpffs` when it is not one already (pins need it).
pub(crate) fn ensure_bpffs(bpffs: &Path) -> Result<(), ContainError> {
    use nix::sys::statfs::{statfs, BPF_FS_MAGIC};
    if statfs(bpffs).is_ok_and(|s| s.filesystem_type() == BPF_FS_MAGIC) {
        return Ok(());
    }
    nix::mount::mount(
        Some("bpf"),
        bpffs,
        Some("bpf"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .map_err(|e| ContainError::Bpf {
        what: format!("mounting bpffs at {}", bpffs.display()),
        detail: e.to_string(),
    })?;
    tracing::info!("mounted bpffs at {}", bpffs.display());
    Ok(())
}

/// Kernels before 5.11 charge BPF maps to RLIMIT_MEMLOCK.
pub(crate) fn raise_memlock() {
    let _ = nix::sys::resource::setrlimit(
        nix::sys::resource::Resource::RLIMIT_MEMLOCK,
        nix::sys::resource::RLIM_INFINITY,
        nix::sys::resource::RLIM_INFINITY,
    );
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn allow_lists_are_checked_before_anything_is_enforced() {
        let a = |cidr: &str, port, proto| Allow {
            cidr: cidr.into(),
            port,
            proto,
            note: None,
        };
        let r = rules(&[a("10.0.0.1/24", Some(22), Some(Proto::Tcp))]).unwrap();
        assert_eq!(r[0].cidr.to_string(), "10.0.0.0/24");
        assert!(rules(&[a("nope", None, None)]).is_err());
        assert!(rules(&[a("10.0.0.1", Some(22), None)]).is_err());
        assert!(rules(&vec![a("10.0.0.1", None, None); MAX_ALLOW + 1]).is_err());
    }
}
