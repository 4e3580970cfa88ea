//! Membership changes (learners, joint consensus) and leadership transfer.

use std::collections::BTreeSet;

use crate::raft::progress::ReplicationState;

use super::*;
use crate::types::{Entry, EntryKind, LogIndex, NodeId};

impl Core {
    /// Starts a membership change; returns the index of its config entry.
    pub fn propose_membership_change(
        &mut self,
        change: MembershipChange,
    ) -> Result<LogIndex, MembershipChangeError> {
        self.check_can_propose()?;
        let current = self.log.membership().clone();
        let config_index = self.log.last_config_index();
        if current.is_joint() || config_index > self.commit_index {
            return Err(MembershipChangeError::ChangeInProgress {
                index: config_index,
            });
        }
        let mut next = current.clone();
        match change {
            MembershipChange::AddLearner { id, addr } => {
                if id == 0 {
                    return Err(MembershipChangeError::ZeroNodeId);
                }
                if current.addrs.contains_key(&id) {
                    return Err(MembershipChangeError::AlreadyMember { id });
                }
                next.addrs.insert(id, addr);
                next.learners.insert(id);
            }
            MembershipChange::PromoteLearner { id } => {
                if !current.learners.contains(&id) {
                    return Err(MembershipChangeError::NotLearner { id });
                }
                next.learners.remove(&id);
                next.voters.insert(id);
                next.voters_outgoing = current.voters.clone();
            }
            MembershipChange::Remove { id } => {
                if current.learners.contains(&id) {
                    next.learners.remove(&id);
                    next.addrs.remove(&id);
                } else if current.voters.contains(&id) {
                    if current.voters.len() == 1 {
                        return Err(MembershipChangeError::LastVoter { id });
                    }
                    next.voters.remove(&id);
                    next.voters_outgoing = current.voters.clone();
                } else {
                    return Err(MembershipChangeError::NotMember { id });
                }
            }
        }
        let index = self.log.last_index + 1;
        let entry = Entry {
            index,
            term: self.term(),
            kind: EntryKind::Config,
            producer: None,
            payload: next.to_bytes(),
        };
        self.leader_append([entry]);
        Ok(index)
    }

    /// Hands leadership to voter `to` (it campaigns once its log is current).
    pub fn transfer_leadership(&mut self, to: NodeId) -> Result<(), TransferError> {
        if self.role != Role::Leader {
            return Err(TransferError::NotLeader {
                leader: self.leader,
            });
        }
        if to == self.config.id {
            return Err(TransferError::AlreadyLeader { to });
        }
        if !self.log.membership().is_voter(to) {
            return Err(TransferError::NotVoter { to });
        }
        if self.progress.get(&to).is_some_and(|pr| pr.repairing) {
            return Err(TransferError::Repairing { to });
        }
        // The transfer has its own clock; CheckQuorum's (election_elapsed)
        // keeps running, or a transfer request would keep a leader that
        // lost its quorum in office for another election timeout.
        self.transfer = Some((to, 0));
        let last_index = self.log.last_index;
        let Some(pr) = self.progress.get_mut(&to) else {
            return Ok(());
        };
        if pr.match_index == last_index {
            let term = self.term();
            self.send(to, Message::TimeoutNow(TimeoutNow { term }));
        } else if pr.state == ReplicationState::Replicate {
            // The target must catch up within the transfer's timeout, and a
            // lost batch is otherwise resent only after an election timeout
            // (heartbeats refer to the match index and do not reveal it):
            // resend from its match index now. Deliberate, so not counted
            // as a fall-back.
            pr.become_probe();
        }
        Ok(())
    }

    /// Leader: one progress per other member of the configuration in force.
    pub(super) fn rebuild_progress(&mut self) {
        let id = self.config.id;
        let next = self.log.last_index + 1;
        let now = self.tick_count;
        let members: BTreeSet<NodeId> = self
            .log
            .membership()
            .members()
            .filter(|&m| m != id)
            .collect();
        self.progress.retain(|peer, _| members.contains(peer));
        for member in members {
            self.progress
                .entry(member)
                .or_insert_with(|| Progress::new(next, now));
        }
    }

    pub(super) fn on_commit_advanced(&mut self) {
        let config_index = self.log.last_config_index();
        self.log.forget_old_configs(self.commit_index);
        if config_index == 0 || config_index > self.commit_index {
            return;
        }
        let membership = self.log.membership().clone();
        if membership.is_joint() {
            // C_old,new is committed: move on to C_new.
            let mut next = membership;
            next.voters_outgoing.clear();
            let keep: BTreeSet<NodeId> = next.voters.union(&next.learners).copied().collect();
            next.addrs.retain(|id, _| keep.contains(id));
            let entry = Entry {
                index: self.log.last_index + 1,
                term: self.term(),
                kind: EntryKind::Config,
                producer: None,
                payload: next.to_bytes(),
            };
            self.leader_append([entry]);
        } else if !membership.is_voter(self.config.id) {
            // C_new without us is committed: hand over (thesis §4.2.2).
            let term = self.term();
            self.become_follower(term, None);
        }
    }
}
