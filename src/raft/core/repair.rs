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

    /// Asks the voters that have not answered yet for their term, with
    /// this incarnation's nonce (answers to an earlier incarnation's
    /// probes, still in the network, carry another one).
    pub(super) fn probe_terms(&mut self) {
        let probe = TermProbe {
            nonce: self.probe_nonce,
        };
        for voter in self.unreported_voters() {
            self.send(voter, Message::TermProbe(probe.clone()));
        }
        self.maybe_finish_repair();
    }

    /// A voter's answer to our probe: keeps the highest term each voter
    /// reported to this incarnation, and fences once enough have answered.
    pub(super) fn record_term_report(&mut self, from: NodeId, report: TermProbeResponse) {
        if !self.repair.is_some_and(|r| r.hard_state_lost) {
            return;
        }
        if self.config.bugs.term_probe_accepts_stale_reports {
            self.term_reports.insert(from, report.term);
        } else {
            if report.nonce != self.probe_nonce {
                return;
            }
            let highest = self.term_reports.entry(from).or_insert(report.term);
            *highest = (*highest).max(report.term);
        }
        self.maybe_finish_repair();
    }

    /// True once the reports fence every term we may have voted in: a
    /// candidate that won term T with our vote had a majority of each
    /// voter set at term T or above, so reports from enough of the other
    /// voters that every such majority (less ourselves) meets them show a
    /// term of at least T. With 3 voters that is both others; with 5,
    /// three of the four others. A candidate that did not win T can take
    /// a second vote of ours in T without harm: one leader per term holds.
    fn reports_fence_lost_votes(&self) -> bool {
        let membership = self.log.membership();
        let id = self.config.id;
        [&membership.voters, &membership.voters_outgoing]
            .into_iter()
            .filter(|set| !set.is_empty())
            .all(|set| {
                let majority = set.len() / 2 + 1;
                // Members of a winning majority other than ourselves.
                let others_in_majority = majority - usize::from(set.contains(&id));
                let unreported = set
                    .iter()
                    .filter(|&&voter| voter != id && !self.term_reports.contains_key(&voter))
                    .count();
                // With nobody else to ask (a lone voter), only our own
                // candidacy can have taken our vote: our log's last term
                // fences it.
                others_in_majority == 0 || unreported < others_in_majority
            })
    }

    /// Once the reports fence every term we may have voted in (see
    /// [`Core::reports_fence_lost_votes`]), records a vote (for ourselves)
    /// in the highest reported term, so we never vote in it, and treats it
    /// as the last term we acknowledged entries in. Returns true once done.
    pub(super) fn fence_lost_votes(&mut self) -> bool {
        let fenced = if self.config.bugs.term_probe_accepts_stale_reports {
            self.unreported_voters().is_empty()
        } else {
            self.reports_fence_lost_votes()
        };
        if !fenced {
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
