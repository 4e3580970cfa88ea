//! Elections: timeouts, PreVote, RequestVote and the vote rules.

use super::*;
use crate::raft::quorum::quorum;
use crate::types::{Entry, HardState, LogIndex, NodeId, Term};

impl Core {
    /// Whether our log can vouch for a candidate's: not while it is being
    /// repaired. (Voting does not depend on being a voter in our own view
    /// of the membership: a new voter may not have its config entry yet.)
    pub(super) fn log_is_whole(&self) -> bool {
        self.repair.is_none() || self.config.bugs.vote_while_repairing
    }

    /// A voter whose log is whole may stand for election.
    pub(super) fn may_campaign(&self) -> bool {
        self.is_voter() && self.log_is_whole()
    }

    pub(super) fn reset_election_timer(&mut self) {
        self.election_elapsed = 0;
        self.randomized_election_ticks = self.rng.range(
            self.config.election_ticks_min,
            self.config.election_ticks_max,
        );
    }

    pub(super) fn become_follower(&mut self, term: Term, leader: Option<NodeId>) {
        debug_assert!(term >= self.term(), "terms never decrease");
        if term > self.term() {
            self.hard_state = HardState {
                term,
                voted_for: None,
            };
            self.leader_match_ceiling = 0;
            self.acked_index = 0;
        }
        if leader != self.leader {
            self.leader_match_ceiling = 0;
            self.acked_index = 0;
        }
        self.role = Role::Follower;
        self.leader = leader;
        self.progress.clear();
        self.votes.clear();
        self.transfer = None;
        self.reset_election_timer();
    }

    pub(super) fn campaign(&mut self, leadership_transfer: bool) {
        if self.config.pre_vote && !leadership_transfer {
            self.role = Role::PreCandidate;
            self.leader = None;
            self.votes.clear();
            self.reset_election_timer();
            self.request_votes(self.term() + 1, true, false);
        } else {
            self.become_candidate(leadership_transfer);
        }
    }

    pub(super) fn become_candidate(&mut self, leadership_transfer: bool) {
        let term = self.term() + 1;
        self.hard_state = HardState {
            term,
            voted_for: Some(self.config.id),
        };
        self.role = Role::Candidate;
        self.leader = None;
        self.votes.clear();
        self.progress.clear();
        self.leader_match_ceiling = 0;
        self.acked_index = 0;
        self.reset_election_timer();
        self.request_votes(term, false, leadership_transfer);
    }

    pub(super) fn request_votes(&mut self, term: Term, pre_vote: bool, leadership_transfer: bool) {
        let id = self.config.id;
        self.votes.insert(id, true);
        if self.check_election_result() {
            return;
        }
        let request = RequestVote {
            term,
            last_log_index: self.log.last_index,
            last_log_term: self.log.last_term(),
            pre_vote,
            leadership_transfer,
        };
        let voters: Vec<NodeId> = {
            let m = self.log.membership();
            m.voters
                .union(&m.voters_outgoing)
                .copied()
                .filter(|&v| v != id)
                .collect()
        };
        for voter in voters {
            self.send(voter, Message::RequestVote(request.clone()));
        }
    }

    /// Returns true if the campaign ended (won or lost).
    pub(super) fn check_election_result(&mut self) -> bool {
        let membership = self.log.membership();
        let votes = &self.votes;
        let won = quorum(membership, |id| votes.get(&id) == Some(&true));
        let lost = !quorum(membership, |id| votes.get(&id) != Some(&false));
        if won {
            if self.role == Role::PreCandidate {
                self.become_candidate(false);
            } else {
                self.become_leader();
            }
            true
        } else if lost {
            let term = self.term();
            self.become_follower(term, None);
            true
        } else {
            false
        }
    }

    pub(super) fn become_leader(&mut self) {
        debug_assert_eq!(self.role, Role::Candidate);
        debug_assert!(
            self.config.bugs.any() || self.hard_state.voted_for == Some(self.config.id),
            "a leader voted for itself in its term"
        );
        debug_assert!(
            self.commit_index <= self.log.last_index,
            "a new leader holds every entry it knows committed (leader completeness)"
        );
        self.role = Role::Leader;
        self.leader = Some(self.config.id);
        self.votes.clear();
        self.heartbeat_elapsed = 0;
        self.election_elapsed = 0;
        self.transfer = None;
        self.rebuild_progress();
        for pr in self.progress.values_mut() {
            pr.recent_active = true;
        }
        if self.config.bugs.commit_old_term_by_counting {
            // The broken rule needs no no-op: it commits old entries anyway.
            self.maybe_commit();
            return;
        }
        // The no-op of §8: lets this leader commit entries of older terms.
        let noop = Entry::noop(self.log.last_index + 1, self.term());
        self.leader_append([noop]);
    }

    pub(super) fn log_is_up_to_date(&self, last_log_index: LogIndex, last_log_term: Term) -> bool {
        let our_term = self.log.last_term();
        last_log_term > our_term
            || (last_log_term == our_term && last_log_index >= self.log.last_index)
    }

    pub(super) fn handle_request_vote(&mut self, from: NodeId, request: RequestVote) {
        // A repairing node may have acknowledged entries it no longer
        // holds: its log cannot vouch for the candidate's.
        let up_to_date = self.log_is_whole()
            && (self.config.bugs.vote_without_log_check
                || self.log_is_up_to_date(request.last_log_index, request.last_log_term));
        if request.pre_vote {
            let granted = up_to_date && request.term > self.term();
            let term = if granted { request.term } else { self.term() };
            self.send(
                from,
                Message::RequestVoteResponse(RequestVoteResponse {
                    term,
                    pre_vote: true,
                    granted,
                }),
            );
            return;
        }
        debug_assert_eq!(request.term, self.term());
        let can_vote = self.hard_state.voted_for == Some(from)
            || (self.hard_state.voted_for.is_none() && self.leader.is_none())
            || self.config.bugs.double_vote;
        let granted = can_vote && up_to_date;
        if granted {
            debug_assert!(
                self.config.bugs.any() || self.hard_state.voted_for.map_or(true, |v| v == from),
                "at most one vote per term (election safety)"
            );
            self.hard_state.voted_for = Some(from);
            self.reset_election_timer();
        }
        let term = self.term();
        self.send(
            from,
            Message::RequestVoteResponse(RequestVoteResponse {
                term,
                pre_vote: false,
                granted,
            }),
        );
    }

    pub(super) fn handle_vote_response(&mut self, from: NodeId, response: RequestVoteResponse) {
        let counts = match self.role {
            Role::PreCandidate => {
                response.pre_vote && (response.term == self.term() + 1 || !response.granted)
            }
            Role::Candidate => !response.pre_vote && response.term == self.term(),
            _ => false,
        };
        if counts {
            self.votes.insert(from, response.granted);
            self.check_election_result();
        }
    }

    /// Thesis §4.2.3 and §9.6: a node that heard from a leader within the
    /// minimum election timeout ignores campaigns for a higher term (other
    /// than a leadership transfer), so that a node that was cut off, or
    /// removed, cannot depose a live leader. It applies whenever PreVote
    /// or CheckQuorum is on: with PreVote alone, a rejoining node whose
    /// log is as up to date as ours would otherwise win its pre-vote and
    /// then the election. (A leader hears from itself: it is in its own
    /// lease while it leads.)
    pub(super) fn in_leader_lease(&self) -> bool {
        (self.config.check_quorum || self.config.pre_vote)
            && self.leader.is_some()
            && self.election_elapsed < self.config.election_ticks_min
    }
}
