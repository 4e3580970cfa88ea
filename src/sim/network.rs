//! The simulator's network: messages in flight with their delivery times,
//! loss, duplication, delay and reordering.
//!
//! It runs in one of two orders. `Any` reorders every message freely (a
//! datagram network: stricter than what the node runs on). `Lanes` is what
//! the node's transport does: each (sender, receiver, lane) is one QUIC
//! stream, delivered in order and never duplicated, while the control lane
//! (votes, heartbeats, responses) and the replication lane (batches,
//! InstallLogStart) overtake each other freely, as a heartbeat overtakes a
//! large batch on the wire.

use std::collections::{BTreeMap, VecDeque};

use crate::raft::{Message, SplitMix64};
use crate::types::NodeId;
use crate::wire::peer::PeerLane;

/// How messages may be reordered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeliveryOrder {
    /// Any message may overtake any other; duplicates happen.
    Any,
    /// In order per sender, receiver and lane; no duplicates.
    Lanes,
}

#[derive(Clone, Copy, Debug)]
pub(super) struct NetworkFaults {
    pub loss_per_mille: u64,
    pub duplicate_per_mille: u64,
    pub delay_steps_max: u64,
    /// Extra delay of the replication lane only, in steps (a large batch
    /// behind a small heartbeat).
    pub replication_lag_steps_max: u64,
    /// Chance that a message is held for `LONG_DELAY_STEPS` (a datagram
    /// stuck in a queue, delivered after the sender restarted or moved on
    /// several terms), in thousandths; `Any` order only.
    pub long_delay_per_mille: u64,
}

/// How long a message held back is held, in steps (exclusive bounds).
const LONG_DELAY_STEPS_MIN: u64 = 10;
const LONG_DELAY_STEPS_MAX: u64 = 200;

pub(super) const NO_FAULTS: NetworkFaults = NetworkFaults {
    loss_per_mille: 0,
    duplicate_per_mille: 0,
    delay_steps_max: 0,
    replication_lag_steps_max: 0,
    long_delay_per_mille: 0,
};

pub(super) struct InFlight {
    pub deliver_at: u64,
    pub from: NodeId,
    pub to: NodeId,
    pub message: Message,
    lane: PeerLane,
    /// Order of sending, to keep each lane in order.
    seq: u64,
}

/// (sender, receiver, lane code).
type LaneKey = (NodeId, NodeId, u8);

pub(super) struct Network {
    pub order: DeliveryOrder,
    pub faults: NetworkFaults,
    in_flight: Vec<InFlight>,
    /// Lanes order: the delivery time of the last message sent on a lane
    /// (a later message never lands earlier).
    lane_tail: BTreeMap<LaneKey, u64>,
    next_seq: u64,
}

impl Network {
    pub fn new(order: DeliveryOrder, faults: NetworkFaults) -> Network {
        Network {
            order,
            faults,
            in_flight: Vec::new(),
            lane_tail: BTreeMap::new(),
            next_seq: 0,
        }
    }

    /// Sends `message` at `now`, subject to loss, duplication and delay.
    pub fn send(
        &mut self,
        rng: &mut SplitMix64,
        now: u64,
        from: NodeId,
        to: NodeId,
        message: Message,
    ) {
        if rng.chance(self.faults.loss_per_mille, 1000) {
            return;
        }
        let lane = PeerLane::of(&message);
        if self.order == DeliveryOrder::Any && rng.chance(self.faults.duplicate_per_mille, 1000) {
            let deliver_at = self.deliver_at(rng, now, from, to, lane);
            self.push(deliver_at, from, to, lane, message.clone());
        }
        let deliver_at = self.deliver_at(rng, now, from, to, lane);
        self.push(deliver_at, from, to, lane, message);
    }

    fn deliver_at(
        &mut self,
        rng: &mut SplitMix64,
        now: u64,
        from: NodeId,
        to: NodeId,
        lane: PeerLane,
    ) -> u64 {
        let mut delay = rng.range(0, self.faults.delay_steps_max + 1);
        if lane == PeerLane::Replication {
            delay += rng.range(0, self.faults.replication_lag_steps_max + 1);
        }
        let at = now + delay;
        match self.order {
            DeliveryOrder::Any if rng.chance(self.faults.long_delay_per_mille, 1000) => {
                at + rng.range(LONG_DELAY_STEPS_MIN, LONG_DELAY_STEPS_MAX)
            }
            DeliveryOrder::Any => at,
            DeliveryOrder::Lanes => {
                let tail = self.lane_tail.entry((from, to, lane as u8)).or_insert(0);
                *tail = (*tail).max(at);
                *tail
            }
        }
    }

    fn push(
        &mut self,
        deliver_at: u64,
        from: NodeId,
        to: NodeId,
        lane: PeerLane,
        message: Message,
    ) {
        self.in_flight.push(InFlight {
            deliver_at,
            from,
            to,
            message,
            lane,
            seq: self.next_seq,
        });
        self.next_seq += 1;
    }

    /// The step by which everything in flight now is due.
    pub fn last_due(&self) -> u64 {
        self.in_flight
            .iter()
            .map(|m| m.deliver_at)
            .max()
            .unwrap_or(0)
    }

    /// Takes every message due at `now` whose receiver is not paused, in a
    /// random order that keeps each lane in order under `Lanes`.
    pub fn take_due(
        &mut self,
        rng: &mut SplitMix64,
        now: u64,
        paused: impl Fn(NodeId) -> bool,
    ) -> Vec<InFlight> {
        let mut due = Vec::new();
        let mut later = Vec::new();
        for message in self.in_flight.drain(..) {
            if message.deliver_at <= now && !paused(message.to) {
                due.push(message);
            } else {
                later.push(message);
            }
        }
        self.in_flight = later;
        let reorder = self.faults.delay_steps_max > 0
            || self.faults.replication_lag_steps_max > 0
            || self.faults.long_delay_per_mille > 0;
        if due.len() < 2 || !reorder {
            return due;
        }
        // Fisher-Yates with the seeded RNG: reordering.
        for i in (1..due.len()).rev() {
            let j = rng.range(0, i as u64 + 1) as usize;
            due.swap(i, j);
        }
        if self.order == DeliveryOrder::Lanes {
            // Keep the shuffled order of lanes, but hand each lane's slots
            // its messages in sending order.
            let lane_of = |m: &InFlight| (m.from, m.to, m.lane as u8);
            let slots: Vec<LaneKey> = due.iter().map(lane_of).collect();
            due.sort_by_key(|m| m.seq);
            let mut lanes: BTreeMap<LaneKey, VecDeque<InFlight>> = BTreeMap::new();
            for message in due {
                lanes
                    .entry(lane_of(&message))
                    .or_default()
                    .push_back(message);
            }
            return slots
                .into_iter()
                .filter_map(|lane| lanes.get_mut(&lane).and_then(VecDeque::pop_front))
                .collect();
        }
        due
    }
}
