//! Restore: what the state says is in force is put back in force when the agent starts,
//! before it connects (after a crash, a restart, a reboot).

use super::state::{Active, Store};
use super::{cgroup, cgroup_mechanism, freeze, host, outcome, rules, sha256_hex, state};
use super::{ContainError, Containment};
use cairn_protocol::containment::{Action, Outcome, Target};

impl Containment {
    /// Re-applies every saved containment (at start, before connecting): the host table, a
    /// container's programs (adopting pins still present, attaching anew after a reboot), a
    /// freeze. A frozen process tree that is gone (another process now has its pid) is
    /// dropped from the state.
    pub fn restore(&self) -> Result<Vec<Outcome>, ContainError> {
        let store = Store::lock(&self.roots.state_dir)?;
        let mut outcomes = Vec::new();
        for a in store.active()? {
            let mut out = outcome(&a.request_id, a.action, &a.target, &a.mechanism);
            out.rules_sha256 = a.rules_sha256.clone();
            if let Err(e) = self.restore_one(&store, &a, &mut out) {
                out.ok = false;
                out.error = Some(e.to_string());
            }
            outcomes.push(out);
        }
        Ok(outcomes)
    }

    fn restore_one(
        &self,
        store: &Store,
        a: &Active,
        out: &mut Outcome,
    ) -> Result<(), ContainError> {
        match (a.action, &a.target) {
            (Action::Isolate, Target::Host) => {
                let text = host::render(&a.collector, &rules(&a.allow)?);
                host::apply(&text)?;
                let sha = sha256_hex(&text);
                if a.rules_sha256.as_deref() != Some(sha.as_str()) {
                    // A newer agent renders the same request differently: record what is in force.
                    let mut e = a.clone();
                    e.rules_sha256 = Some(sha.clone());
                    store.upsert(e)?;
                }
                out.rules_sha256 = Some(sha);
                out.rules = Some(text);
            }
            (Action::Isolate, Target::Container { id }) => {
                let cg = match a.cgroup.clone().filter(|c| c.is_dir()) {
                    Some(c) => c,
                    None => self.resolve(id).map_err(|e| {
                        ContainError::NotFound(format!(
                            "{e}: its isolation stays recorded and is applied when the agent next starts with it running"
                        ))
                    })?,
                };
                self.refuse_own_cgroup(&cg)?;
                let rules = rules(&a.allow)?;
                let enforced = cgroup::isolate(&cg, &self.roots.bpffs, &rules)?;
                if a.pins.as_ref() != Some(&enforced.pin_dir) {
                    // The container came back in a new cgroup: the old pins hold nothing.
                    if let Some(old) = &a.pins {
                        let _ = cgroup::release(old, None);
                    }
                    let mut e = a.clone();
                    e.cgroup = Some(cg.clone());
                    e.pins = Some(enforced.pin_dir.clone());
                    e.mechanism = cgroup_mechanism(&cg);
                    store.upsert(e)?;
                }
                let text = cgroup::render(&cg, &rules);
                out.mechanism = cgroup_mechanism(&cg);
                out.rules_sha256 = Some(sha256_hex(&text));
                out.rules = Some(text);
            }
            (Action::Freeze, Target::Container { id }) => {
                let cg = match a.cgroup.clone().filter(|c| c.is_dir()) {
                    Some(c) => c,
                    None => self.resolve(id)?,
                };
                self.refuse_own_cgroup(&cg)?;
                out.pids = freeze::freeze_cgroup(&cg, self.wait)?;
            }
            (Action::Freeze, Target::Process { pid }) => {
                let now = freeze::start_time(&self.roots.proc_root, *pid);
                if now.is_none() || now != a.start_time {
                    store.remove(Action::Thaw, &a.target)?;
                    return Err(ContainError::NotFound(format!(
                        "process {pid} is gone: its freeze ended with it"
                    )));
                }
                out.pids = freeze::stop_tree(&self.roots.proc_root, *pid, self.wait)?;
            }
            // A mark enforces nothing: the daemon's watch reads it from the state.
            (Action::MarkLastBreath, Target::Host | Target::Container { .. }) => {}
            (action, target) => {
                return Err(ContainError::State {
                    path: self.roots.state_dir.join(state::STATE_FILE),
                    detail: format!(
                        "holds {} of {}, which is not a containment in force",
                        action.as_str(),
                        target.describe()
                    ),
                })
            }
        }
        Ok(())
    }
}
