//! The follower side of replication: the consistency check, truncation of
//! conflicting entries, acknowledgements of what is durable, and
//! InstallLogStart.

use super::*;
use crate::types::{LogIndex, NodeId};

impl Core {
    pub(super) fn step_follower(
        &mut self,
        from: NodeId,
        message: Message,
    ) -> Result<(), StepError> {
        match message {
            Message::AppendEntries(append) => {
                self.become_follower_of(from);
                self.handle_append_entries(from, append)
            }
            Message::InstallLogStart(install) => {
                self.become_follower_of(from);
                self.handle_install_log_start(from, install)
            }
            Message::TimeoutNow(_) => {
                if self.may_campaign() {
                    self.become_candidate(true);
                }
                Ok(())
            }
            // Answers meant for a leader we no longer are.
            Message::AppendEntriesResponse(_) | Message::InstallLogStartResponse(_) => Ok(()),
            Message::RequestVote(_) | Message::RequestVoteResponse(_) => Ok(()),
            // Answered in `step` whatever the role.
            Message::TermProbe(_) | Message::TermProbeResponse(_) => Ok(()),
        }
    }

    pub(super) fn become_follower_of(&mut self, leader: NodeId) {
        if self.role != Role::Follower || self.leader != Some(leader) {
            let term = self.term();
            self.become_follower(term, Some(leader));
        } else {
            self.election_elapsed = 0;
        }
    }

    pub(super) fn handle_append_entries(
        &mut self,
        from: NodeId,
        append: AppendEntries,
    ) -> Result<(), StepError> {
        let AppendEntries {
            term: _,
            prev_log_index,
            prev_log_term,
            entries,
            leader_commit,
        } = append;
        let mut expected_term = prev_log_term;
        for (offset, entry) in entries.iter().enumerate() {
            if entry.index != prev_log_index + 1 + offset as u64
                || entry.term < expected_term
                || entry.term > self.term()
            {
                return Err(StepError::BadEntries {
                    from,
                    prev_log_index,
                });
            }
            expected_term = entry.term;
        }
        let first = self.log.first_index();
        let mut entries = entries;
        let (prev_log_index, prev_log_term) = if prev_log_index + 1 < first {
            // Entries below our log start are committed, hence match.
            let skip = usize::try_from(first - 1 - prev_log_index).unwrap_or(usize::MAX);
            entries.drain(..skip.min(entries.len()));
            (first - 1, self.log.start.prev_term)
        } else {
            (prev_log_index, prev_log_term)
        };
        match self.log.term(prev_log_index) {
            Some(term) if term == prev_log_term => {}
            found => {
                let hint = match found {
                    None => RejectHint::LogTooShort {
                        last_index: self.log.last_index,
                    },
                    Some(term) => RejectHint::ConflictingTerm {
                        term,
                        first_index: self.log.first_index_of_term_at(prev_log_index),
                    },
                };
                let term = self.term();
                self.send(
                    from,
                    Message::AppendEntriesResponse(AppendEntriesResponse {
                        term,
                        repairing: self.repair.is_some(),
                        outcome: AppendOutcome::Rejected {
                            rejected_prev_index: prev_log_index,
                            hint,
                        },
                    }),
                );
                return Ok(());
            }
        }
        let last_new_index = prev_log_index + entries.len() as u64;
        let mut append_from = entries.len();
        for (position, entry) in entries.iter().enumerate() {
            match self.log.term(entry.index) {
                Some(term) if term == entry.term => continue,
                Some(_) => {
                    debug_assert!(
                        self.config.bugs.any() || entry.index > self.commit_index,
                        "a committed entry is never truncated"
                    );
                    debug_assert!(
                        self.config.bugs.any() || entry.index > self.leader_match_ceiling,
                        "entries matching this term's leader are never truncated"
                    );
                    self.truncate_from(entry.index);
                    append_from = position;
                    break;
                }
                None => {
                    append_from = position;
                    break;
                }
            }
        }
        if append_from < entries.len() {
            // A config entry that does not decode is kept but not applied;
            // the leader encoded it, so only a bug gets here.
            let _undecodable_configs = self.log.append(entries.drain(append_from..));
        }
        self.leader_match_ceiling = self.leader_match_ceiling.max(last_new_index);
        let new_commit = leader_commit.min(last_new_index);
        if new_commit > self.commit_index {
            self.commit_index = new_commit;
            self.log.forget_old_configs(self.commit_index);
        }
        let waits_for_sync = self.leader_match_ceiling > self.log.persisted_index;
        if entries.is_empty() || !waits_for_sync || self.config.bugs.ack_unpersisted {
            self.ack_leader(from, true);
        }
        Ok(())
    }

    pub(super) fn truncate_from(&mut self, from: LogIndex) {
        debug_assert!(
            self.role != Role::Leader,
            "a leader never truncates its own log"
        );
        self.log.truncate_from(from);
        if from <= self.handed_out_index {
            self.pending_truncate = Some(self.pending_truncate.map_or(from, |t| t.min(from)));
            self.handed_out_index = from - 1;
        }
    }

    /// Follower: tells the leader how far our log durably matches its own.
    pub(super) fn ack_leader(&mut self, leader: NodeId, always: bool) {
        let persisted = if self.config.bugs.ack_unpersisted {
            self.log.last_index
        } else {
            self.log.persisted_index
        };
        let match_index = self.leader_match_ceiling.min(persisted);
        debug_assert!(
            self.config.bugs.any() || match_index <= self.log.persisted_index,
            "only persisted entries are acknowledged"
        );
        if !always && match_index <= self.acked_index {
            return;
        }
        self.acked_index = self.acked_index.max(match_index);
        let term = self.term();
        self.send(
            leader,
            Message::AppendEntriesResponse(AppendEntriesResponse {
                term,
                repairing: self.repair.is_some(),
                outcome: AppendOutcome::Accepted { match_index },
            }),
        );
        self.maybe_finish_repair();
    }

    pub(super) fn maybe_ack_leader(&mut self) {
        if let (Role::Follower, Some(leader)) = (self.role, self.leader) {
            if self.leader_match_ceiling > 0 {
                self.ack_leader(leader, false);
            }
        }
    }

    pub(super) fn handle_install_log_start(
        &mut self,
        from: NodeId,
        install: InstallLogStart,
    ) -> Result<(), StepError> {
        let start = install.log_start;
        if start.first_index == 0 {
            return Err(StepError::BadLogStart { from });
        }
        let boundary = start.first_index - 1;
        let holds_boundary = boundary <= self.commit_index
            || (self.log.term(boundary) == Some(start.prev_term)
                && !self.config.bugs.install_log_start_drops_matching_suffix);
        let match_index = if holds_boundary {
            // Our log holds the boundary entry: the committed prefix, or
            // the same (index, term) as the leader's, so by log matching
            // everything up to it is the leader's. Keep what follows
            // (Raft Figure 13 step 6, etcd's `restore`): we may have
            // acknowledged it and the leader may have counted it toward a
            // commit. Retention drops our entries below the boundary later.
            let matched_to = boundary.max(self.commit_index);
            if boundary > self.commit_index {
                // Entries below the leader's log start are committed.
                self.commit_index = boundary;
                self.log.forget_old_configs(self.commit_index);
            }
            self.leader_match_ceiling = self.leader_match_ceiling.max(matched_to);
            self.leader_match_ceiling.min(self.log.persisted_index)
        } else {
            // Our entry at the boundary differs from the leader's (or we
            // have none): every entry we hold above the boundary conflicts
            // with the committed one there, so none of them can be
            // committed (log matching), and discarding them needs no
            // repair. Start over at the leader's log start.
            debug_assert!(
                self.config.bugs.any() || self.leader_match_ceiling <= boundary,
                "entries matching this term's leader are never discarded"
            );
            self.log.set_start(start.clone());
            self.log.truncate_from(start.first_index);
            self.pending_reset = Some(start);
            self.pending_truncate = None;
            self.handed_out_index = boundary;
            self.commit_index = boundary;
            self.leader_match_ceiling = boundary;
            boundary
        };
        self.acked_index = self.acked_index.max(match_index);
        let term = self.term();
        self.send(
            from,
            Message::InstallLogStartResponse(InstallLogStartResponse { term, match_index }),
        );
        self.maybe_finish_repair();
        Ok(())
    }
}
