//! Break glass: a root user on the host ends an isolation without the collector
//! (`cairn-agent isolation release --local`), and the report of it waits for the collector.

use super::state::{Active, Store};
use super::{host, outcome, ContainError, Containment};
use cairn_protocol::containment::{Action, LocalAction, Outcome, Target, MAX_REASON};

impl Containment {
    /// Break glass: a root user on the host ends an isolation without the collector. The
    /// outcome (`local-…`, who and why) is queued for the collector, which records it when the
    /// agent next connects ([`pending_reports`](Self::pending_reports)).
    pub fn release_local(
        &self,
        target: &Target,
        user: &str,
        reason: &str,
    ) -> Result<Outcome, ContainError> {
        let reason = reason.trim();
        if reason.is_empty() {
            return Err(ContainError::Refused(
                "a reason is required: it is sent to the collector and kept in custody".into(),
            ));
        }
        if reason.len() > MAX_REASON {
            return Err(ContainError::Refused(format!(
                "the reason is longer than {MAX_REASON} bytes"
            )));
        }
        let store = Store::lock(&self.roots.state_dir)?;
        let recorded: Vec<Active> = store
            .active()?
            .into_iter()
            .filter(|a| a.is_for(Action::Release, target))
            .collect();
        let (target, mechanism) = match target {
            Target::Host => {
                // The table is removed even when the state lost it: breaking glass must work.
                if recorded.is_empty() && !host::present()? {
                    return Err(ContainError::NotActive(
                        "the host is not isolated (no state, no nftables table)".into(),
                    ));
                }
                host::remove()?;
                store.remove(Action::Release, target)?;
                (Target::Host, host::MECHANISM.to_string())
            }
            Target::Container { id } => {
                let Some(first) = recorded.first() else {
                    return Err(ContainError::NotActive(format!(
                        "no isolation of container {id} is recorded here (`cairn-agent isolation status` lists what is)"
                    )));
                };
                let target = first.target.clone();
                (
                    target.clone(),
                    self.release_container(&store, &target, None)?,
                )
            }
            Target::Process { .. } => {
                return Err(ContainError::Refused(
                    "a process tree is not isolated; thaw it with a signal (kill -CONT)".into(),
                ))
            }
        };
        let mut out = outcome(
            &format!("local-{}", uuid::Uuid::new_v4()),
            Action::Release,
            &target,
            &mechanism,
        );
        out.local = Some(LocalAction {
            user: user.to_string(),
            reason: reason.to_string(),
        });
        store.push_report(&out)?;
        Ok(out)
    }

    /// Keeps an outcome for the collector until it acknowledges it: the daemon's answers to
    /// the collector's commands wait here as break-glass reports do.
    pub fn queue_report(&self, out: &Outcome) -> Result<(), ContainError> {
        Store::lock(&self.roots.state_dir)?.push_report(out)
    }

    /// Outcomes the collector has not acknowledged yet, oldest first.
    pub fn pending_reports(&self) -> Result<Vec<Outcome>, ContainError> {
        Store::lock(&self.roots.state_dir)?.reports()
    }

    /// The collector has recorded report `id`: it is not sent again.
    pub fn acknowledge(&self, id: &str) -> Result<(), ContainError> {
        Store::lock(&self.roots.state_dir)?.remove_report(id)
    }
}
