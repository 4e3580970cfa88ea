//! Repair of a node whose storage found damage, and fencing of the terms a
//! node that lost its hard state may have voted in.

use super::*;
use crate::types::{NodeId, Term};

impl Core {
    /// Ends the repair once our log is again at least as good as what we
    /// acknowledged before the damage. Either this term's leader has it
    /// durably matching its own up to the index we held then; or this is a
    /// later term than any we acknowledged in (so no leader counts our old
    /// acknowledgements any more), its leader committed an entry of its own
    /// term, and we durably hold its log up to that commit: every entry
    /// committed before this term is below it.
    pub(super) fn maybe_finish_repair(&mut self) {
        let Some(repair) = self.repair else {
            return;
        };
        if repair.hard_state_lost && !self.fence_lost_votes() {
            return;
        }
        let refilled = self.repair_log_intact || self.acked_index >= repair.until_index;
        let caught_up_in_new_term = self.term() > self.start_term
            && self.commit_index > 0
            && self.acked_index >= self.commit_index
            && self.log.term(self.commit_index) == Some(self.term());
        if !(refilled || caught_up_in_new_term) {
            return;
        }
        self.repair = None;
        self.repair_complete_due = true;
    }

    /// Voters whose current term we have not heard yet.
    pub(super) fn unreported_voters(&self) -> Vec<NodeId> {
        let membership = self.log.membership();
        membership
            .voters
            .union(&membership.voters_outgoing)
            .copied()
            .filter(|&id| id != self.config.id && !self.term_reports.contains_key(&id))
            .collect()
    }

    /// Asks the voters that have not answered yet for their term: a
    /// pre-vote for term 0 with an empty log, which no one grants and every
    /// node answers with its term (a higher term would be ignored by nodes
    /// that hear from a leader).
    pub(super) fn probe_terms(&mut self) {
        let request = RequestVote {
            term: 0,
            last_log_index: 0,
            last_log_term: 0,
            pre_vote: true,
            leadership_transfer: false,
        };
        for voter in self.unreported_voters() {
            self.send(voter, Message::RequestVote(request.clone()));
        }
        self.maybe_finish_repair();
    }

    /// Once every voter reported its term, no term above the highest report
    /// holds a vote of ours: records a vote in that term (so we never vote
    /// in it) and treats it as the last term we acknowledged entries in.
    /// Returns true once done.
    pub(super) fn fence_lost_votes(&mut self) -> bool {
        if !self.unreported_voters().is_empty() {
            return false;
        }
        // Our own log's last term counts too: we were at least in that term
        // (and a single-voter cluster has nobody else to ask).
        let highest = self
            .term_reports
            .values()
            .copied()
            .fold(self.term().max(self.log.last_term()), Term::max);
        if highest > self.term() {
            self.become_follower(highest, None);
        }
        if self.hard_state.voted_for.is_none() {
            self.hard_state.voted_for = Some(self.config.id);
        }
        self.start_term = self.start_term.max(highest);
        self.term_reports.clear();
        if let Some(repair) = self.repair.as_mut() {
            repair.hard_state_lost = false;
        }
        true
    }
}
