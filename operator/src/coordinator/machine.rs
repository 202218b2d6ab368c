//! The coordinator's state and its transition function, [`Coordinator::apply`].

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use tributary_crds::StragglerPolicy;

use super::event::{
    Decision, Digest, Event, Fingerprint, PeerId, RefuseReason, RejectReason, SkipReason,
};

/// Other members that must agree on a fingerprint before a member that differs is told to
/// re-sync: one other peer alone cannot say which of the two diverged.
pub const RESYNC_QUORUM: usize = 2;
/// Model versions, counting back from the newest, whose fingerprints are kept.
pub const FINGERPRINT_VERSIONS: u64 = 8;

/// Model version → member → its fingerprint at that version.
type Fingerprints = BTreeMap<u64, BTreeMap<PeerId, Vec<u8>>>;
use super::policy::RoundPolicy;

/// One run's membership and rounds. Pure: every input is an [`Event`], every output a
/// [`Decision`]; the whole state serializes, so a coordinator restored from a snapshot decides
/// exactly as the one that wrote it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Coordinator {
    policy: RoundPolicy,
    /// Latest time seen in any event: time inside the machine never runs backwards.
    clock_ms: u64,
    members: BTreeMap<PeerId, Member>,
    /// The number the next round opens with; a number is never used twice.
    next_round: u64,
    /// Aggregates published so far: the version of θ the next round starts from.
    model_version: u64,
    round: Option<Round>,
    published: Vec<PublishedRound>,
    skipped: Vec<SkippedRound>,
    /// The run ends once this many aggregates are published (`stop.totalRounds`); none: never.
    #[serde(default)]
    round_limit: Option<u64>,
    /// Members' parameter fingerprints at the last [`FINGERPRINT_VERSIONS`] versions.
    #[serde(default)]
    fingerprints: Fingerprints,
}

/// The machine without its logs of ended rounds, in the same JSON shape. The logs only grow,
/// so the store appends their new entries rather than rewriting them after every event: a
/// snapshot then costs O(members), not O(rounds × peers).
#[derive(Debug, Serialize, Deserialize)]
pub struct LiveState<'a> {
    policy: Cow<'a, RoundPolicy>,
    clock_ms: u64,
    members: Cow<'a, BTreeMap<PeerId, Member>>,
    next_round: u64,
    model_version: u64,
    round: Cow<'a, Option<Round>>,
    #[serde(default)]
    round_limit: Option<u64>,
    #[serde(default)]
    fingerprints: Cow<'a, Fingerprints>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Member {
    last_seen_ms: u64,
}

/// The open or aggregating round.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Round {
    number: u64,
    deadline_ms: u64,
    extensions: u32,
    stage: Stage,
    /// Round members who may still submit: neither submitted, left nor expired.
    pending: BTreeSet<PeerId>,
    accepted: BTreeMap<PeerId, Digest>,
    /// Its members when it opened, sorted: a member's position is its data assignment (slot).
    #[serde(default)]
    members: Vec<PeerId>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
enum Stage {
    Open,
    /// Closed; waiting for [`Event::AggregateStored`].
    Aggregating,
}

/// Where the run stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Fewer than `minPeers` members; `next_round` opens when enough join.
    Waiting { next_round: u64 },
    /// Accepting submissions until `deadline_ms`.
    Open { round: u64, deadline_ms: u64 },
    /// Closed; the IO layer is aggregating.
    Aggregating { round: u64 },
    /// The round limit is reached: no round opens again.
    Finished,
}

/// A published round: the aggregate and the submissions it was made from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublishedRound {
    pub round: u64,
    pub digest: Digest,
    /// Sorted by peer.
    pub contributions: Vec<Contribution>,
}

/// One accepted submission.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Contribution {
    pub peer: PeerId,
    pub digest: Digest,
}

/// A round that ended without an aggregate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkippedRound {
    pub round: u64,
    pub reason: SkipReason,
}

/// What closing a round leads to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Aggregate,
    Extend,
    Skip(SkipReason),
}

/// Why an open round stops taking submissions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Close {
    /// Every round member submitted or left, or `maxPeers` were accepted.
    Complete,
    Deadline,
}

impl Coordinator {
    /// A run with no members, before round 0.
    pub fn new(policy: RoundPolicy) -> Self {
        Self {
            policy,
            clock_ms: 0,
            members: BTreeMap::new(),
            next_round: 0,
            model_version: 0,
            round: None,
            published: Vec::new(),
            skipped: Vec::new(),
            round_limit: None,
            fingerprints: BTreeMap::new(),
        }
    }

    /// A run that ends after `rounds` published aggregates.
    /// New participation settings for a resumed run; they apply from the next event on.
    pub fn reconfigure(&mut self, policy: RoundPolicy) {
        self.policy = policy;
    }

    pub fn with_round_limit(mut self, rounds: Option<u64>) -> Self {
        self.round_limit = rounds;
        self
    }

    /// Everything but the logs, borrowed (see [`LiveState`]).
    pub fn live(&self) -> LiveState<'_> {
        LiveState {
            policy: Cow::Borrowed(&self.policy),
            clock_ms: self.clock_ms,
            members: Cow::Borrowed(&self.members),
            next_round: self.next_round,
            model_version: self.model_version,
            round: Cow::Borrowed(&self.round),
            round_limit: self.round_limit,
            fingerprints: Cow::Borrowed(&self.fingerprints),
        }
    }

    /// The machine that [`Coordinator::live`] and the logs were taken from.
    pub fn restore(
        live: LiveState<'_>,
        published: Vec<PublishedRound>,
        skipped: Vec<SkippedRound>,
    ) -> Self {
        Self {
            policy: live.policy.into_owned(),
            clock_ms: live.clock_ms,
            members: live.members.into_owned(),
            next_round: live.next_round,
            model_version: live.model_version,
            round: live.round.into_owned(),
            published,
            skipped,
            round_limit: live.round_limit,
            fingerprints: live.fingerprints.into_owned(),
        }
    }

    /// Whether the round limit is reached.
    pub fn finished(&self) -> bool {
        self.round_limit
            .is_some_and(|limit| self.model_version >= limit)
    }

    /// Applies one event and returns the decisions it causes, in the order they happened.
    pub fn apply(&mut self, event: Event) -> Vec<Decision> {
        let mut out = Vec::new();
        match event {
            Event::Join { peer, now_ms } => {
                self.advance(now_ms);
                self.join(peer, &mut out);
            }
            Event::Heartbeat {
                peer,
                now_ms,
                fingerprint,
            } => {
                self.advance(now_ms);
                self.touch(&peer);
                if let Some(fingerprint) = fingerprint {
                    // Judge against members that are still members at this time.
                    self.expire(&mut out);
                    self.record_fingerprint(peer, fingerprint, &mut out);
                }
            }
            Event::Leave { peer, now_ms } => {
                self.advance(now_ms);
                self.remove(&peer);
            }
            Event::Submission {
                peer,
                round,
                digest,
                now_ms,
            } => {
                self.advance(now_ms);
                out.push(self.submission(peer, round, digest));
            }
            Event::Tick { now_ms } => self.advance(now_ms),
            Event::AggregateStored { round, digest } => self.publish(round, digest, &mut out),
            Event::NothingSelected { round } => self.reject_all(round, &mut out),
        }
        self.settle(&mut out);
        out
    }

    pub fn policy(&self) -> &RoundPolicy {
        &self.policy
    }

    pub fn phase(&self) -> Phase {
        match &self.round {
            None if self.finished() => Phase::Finished,
            None => Phase::Waiting {
                next_round: self.next_round,
            },
            Some(round) => match round.stage {
                Stage::Open => Phase::Open {
                    round: round.number,
                    deadline_ms: round.deadline_ms,
                },
                Stage::Aggregating => Phase::Aggregating {
                    round: round.number,
                },
            },
        }
    }

    /// Latest time seen in an event.
    pub fn clock_ms(&self) -> u64 {
        self.clock_ms
    }

    /// Members of the run, sorted.
    pub fn members(&self) -> impl Iterator<Item = &PeerId> {
        self.members.keys()
    }

    pub fn is_member(&self, peer: &PeerId) -> bool {
        self.members.contains_key(peer)
    }

    /// Aggregates published so far; a late joiner replays them in order.
    pub fn model_version(&self) -> u64 {
        self.model_version
    }

    /// Published rounds, oldest first.
    pub fn published(&self) -> &[PublishedRound] {
        &self.published
    }

    /// Skipped rounds, oldest first.
    pub fn skipped(&self) -> &[SkippedRound] {
        &self.skipped
    }

    fn advance(&mut self, now_ms: u64) {
        self.clock_ms = self.clock_ms.max(now_ms);
    }

    fn touch(&mut self, peer: &PeerId) {
        if let Some(member) = self.members.get_mut(peer) {
            member.last_seen_ms = self.clock_ms;
        }
    }

    /// Records a member's fingerprint and judges it against the other members' at the same
    /// version. Versions above the published one are ignored (no peer can hold them), and only
    /// the newest [`FINGERPRINT_VERSIONS`] are kept, so no report can push out others.
    fn record_fingerprint(&mut self, peer: PeerId, f: Fingerprint, out: &mut Vec<Decision>) {
        let oldest = self.model_version.saturating_sub(FINGERPRINT_VERSIONS - 1);
        if !self.members.contains_key(&peer)
            || f.model_version > self.model_version
            || f.model_version < oldest
        {
            return;
        }
        let at = self.fingerprints.entry(f.model_version).or_default();
        if at.get(&peer) != Some(&f.digest) {
            at.insert(peer.clone(), f.digest.clone());
            out.push(Decision::FingerprintRecorded {
                peer: peer.clone(),
                model_version: f.model_version,
            });
        }
        let mut counts: BTreeMap<&Vec<u8>, usize> = BTreeMap::new();
        for (other, digest) in at.iter() {
            if *other != peer && self.members.contains_key(other) {
                *counts.entry(digest).or_default() += 1;
            }
        }
        // The most common digest; a tie between digests is no majority.
        let mut ranked: Vec<(usize, &Vec<u8>)> = counts.into_iter().map(|(d, n)| (n, d)).collect();
        ranked.sort_by_key(|r| std::cmp::Reverse(r.0));
        let majority = match ranked.as_slice() {
            [(n, d), rest @ ..] if *n >= RESYNC_QUORUM && rest.first().is_none_or(|r| r.0 < *n) => {
                Some(*d)
            }
            _ => None,
        };
        if majority.is_some_and(|d| *d != f.digest) {
            out.push(Decision::ResyncRequired {
                peer,
                model_version: f.model_version,
            });
        }
    }

    /// Drops fingerprints of versions no peer reports any more, and of peers that left.
    fn prune_fingerprints(&mut self) {
        let oldest = self.model_version.saturating_sub(FINGERPRINT_VERSIONS - 1);
        self.fingerprints.retain(|v, _| *v >= oldest);
        let members = &self.members;
        for at in self.fingerprints.values_mut() {
            at.retain(|p, _| members.contains_key(p));
        }
        self.fingerprints.retain(|_, at| !at.is_empty());
    }

    fn join(&mut self, peer: PeerId, out: &mut Vec<Decision>) {
        if self.members.contains_key(&peer) {
            // A retried Join: admitted again, and it counts as a heartbeat.
            self.touch(&peer);
        } else if self.members.len() >= self.policy.capacity() as usize {
            out.push(Decision::Refused {
                peer,
                reason: RefuseReason::RunFull,
            });
            return;
        } else {
            let member = Member {
                last_seen_ms: self.clock_ms,
            };
            self.members.insert(peer.clone(), member);
        }
        out.push(Decision::Admitted { peer });
    }

    fn remove(&mut self, peer: &PeerId) {
        self.members.remove(peer);
        if let Some(round) = &mut self.round {
            round.pending.remove(peer);
        }
    }

    fn expire(&mut self, out: &mut Vec<Decision>) {
        let timeout = self.policy.heartbeat_timeout_ms();
        let now = self.clock_ms;
        let expired: Vec<PeerId> = self
            .members
            .iter()
            .filter(|(_, member)| now.saturating_sub(member.last_seen_ms) > timeout)
            .map(|(peer, _)| peer.clone())
            .collect();
        for peer in expired {
            self.remove(&peer);
            out.push(Decision::PeerExpired { peer });
        }
    }

    /// What [`Event::Submission`] of `peer` for `round` would decide now, without applying it:
    /// the IO layer asks before reading a payload, so a refused one costs no bandwidth.
    pub fn check_submission(&self, peer: &PeerId, round: u64) -> Result<(), RejectReason> {
        if !self.members.contains_key(peer) {
            return Err(RejectReason::NotAMember);
        }
        let Some(current) = &self.round else {
            return Err(RejectReason::RoundNotOpen);
        };
        if round != current.number {
            return Err(RejectReason::WrongRound);
        }
        if current.accepted.contains_key(peer) {
            return Err(RejectReason::Duplicate);
        }
        if !current.pending.contains(peer) {
            return Err(RejectReason::NotInRound);
        }
        if self.clock_ms >= current.deadline_ms {
            return Err(RejectReason::PastDeadline);
        }
        if current.stage == Stage::Aggregating {
            return Err(RejectReason::RoundClosed);
        }
        Ok(())
    }

    /// The closed round being aggregated: its number, its members in slot order and the
    /// digests of its accepted updates.
    pub fn aggregating_round(&self) -> Option<(u64, &[PeerId], &BTreeMap<PeerId, Digest>)> {
        let round = self
            .round
            .as_ref()
            .filter(|r| r.stage == Stage::Aggregating)?;
        Some((round.number, &round.members, &round.accepted))
    }

    /// The open round: number, deadline and the peers it was opened for.
    pub fn open_round(&self) -> Option<(u64, u64, Vec<PeerId>)> {
        let round = self.round.as_ref().filter(|r| r.stage == Stage::Open)?;
        let mut members: Vec<PeerId> = round
            .pending
            .iter()
            .chain(round.accepted.keys())
            .cloned()
            .collect();
        members.sort();
        Some((round.number, round.deadline_ms, members))
    }

    fn submission(&mut self, peer: PeerId, round: u64, digest: Digest) -> Decision {
        if self.members.contains_key(&peer) {
            self.touch(&peer);
        }
        if let Err(reason) = self.check_submission(&peer, round) {
            return Decision::Rejected {
                peer,
                round,
                reason,
            };
        }
        if let Some(current) = &mut self.round {
            current.pending.remove(&peer);
            current.accepted.insert(peer.clone(), digest);
        }
        Decision::Accepted { peer, round }
    }

    fn publish(&mut self, round: u64, digest: Digest, out: &mut Vec<Decision>) {
        // Anything but the aggregate asked for (a stale or repeated store) changes nothing.
        let Some(current) = self
            .round
            .take_if(|current| current.number == round && current.stage == Stage::Aggregating)
        else {
            return;
        };
        let contributions = current
            .accepted
            .into_iter()
            .map(|(peer, digest)| Contribution { peer, digest })
            .collect();
        self.published.push(PublishedRound {
            round,
            digest,
            contributions,
        });
        self.model_version += 1;
        out.push(Decision::Published { round, digest });
    }

    /// Ends the aggregating `round` without an aggregate: the Gauntlet left out every update.
    fn reject_all(&mut self, round: u64, out: &mut Vec<Decision>) {
        if self
            .round
            .take_if(|current| current.number == round && current.stage == Stage::Aggregating)
            .is_none()
        {
            return;
        }
        let reason = SkipReason::AllExcluded;
        self.skipped.push(SkippedRound { round, reason });
        out.push(Decision::RoundSkipped { round, reason });
    }

    /// The rules that depend on time and membership, after every event: silent members expire;
    /// the open round closes if it is complete or past its deadline; the next round opens if
    /// none is running and enough members are present.
    fn settle(&mut self, out: &mut Vec<Decision>) {
        self.expire(out);
        self.prune_fingerprints();
        if let Some(round) = &self.round
            && round.stage == Stage::Open
        {
            let complete =
                round.pending.is_empty() || round.accepted.len() >= self.policy.accepts() as usize;
            if complete {
                self.close(Close::Complete, out);
            } else if self.clock_ms >= round.deadline_ms {
                self.close(Close::Deadline, out);
            }
        }
        if self.round.is_none()
            && !self.finished()
            && self.members.len() >= self.policy.min_peers().max(1) as usize
        {
            self.open(out);
        }
    }

    fn close(&mut self, why: Close, out: &mut Vec<Decision>) {
        let Some(round) = &mut self.round else {
            return;
        };
        match outcome(&self.policy, round, why) {
            Outcome::Aggregate => {
                round.stage = Stage::Aggregating;
                out.push(Decision::Aggregate {
                    round: round.number,
                    peers: round.accepted.keys().cloned().collect(),
                });
            }
            Outcome::Extend => {
                round.extensions += 1;
                // From now, not from the old deadline: a coordinator back from downtime still
                // gives stragglers a whole window.
                round.deadline_ms = self
                    .clock_ms
                    .saturating_add(self.policy.submission_window_ms());
                out.push(Decision::DeadlineExtended {
                    round: round.number,
                    deadline_ms: round.deadline_ms,
                });
            }
            Outcome::Skip(reason) => {
                let skipped = SkippedRound {
                    round: round.number,
                    reason,
                };
                self.round = None;
                self.skipped.push(skipped);
                out.push(Decision::RoundSkipped {
                    round: skipped.round,
                    reason,
                });
            }
        }
    }

    fn open(&mut self, out: &mut Vec<Decision>) {
        let number = self.next_round;
        self.next_round += 1;
        let pending: BTreeSet<PeerId> = self.members.keys().cloned().collect();
        let deadline_ms = self
            .clock_ms
            .saturating_add(self.policy.round_duration_ms());
        out.push(Decision::RoundOpened {
            round: number,
            deadline_ms,
            members: pending.iter().cloned().collect(),
        });
        let members = pending.iter().cloned().collect();
        self.round = Some(Round {
            number,
            deadline_ms,
            extensions: 0,
            stage: Stage::Open,
            pending,
            accepted: BTreeMap::new(),
            members,
        });
    }
}

/// Aggregate with `minPeers` accepted; with fewer, the straggler policy decides.
fn outcome(policy: &RoundPolicy, round: &Round, why: Close) -> Outcome {
    let accepted = round.accepted.len();
    if accepted >= policy.min_peers() as usize {
        return Outcome::Aggregate;
    }
    match policy.straggler_policy() {
        StragglerPolicy::Aggregate if accepted > 0 => Outcome::Aggregate,
        StragglerPolicy::Aggregate => Outcome::Skip(SkipReason::NoSubmissions),
        StragglerPolicy::Skip => Outcome::Skip(SkipReason::TooFewSubmissions),
        // Nobody is left who could submit: extending cannot help.
        StragglerPolicy::Extend if why == Close::Complete => {
            Outcome::Skip(SkipReason::TooFewSubmissions)
        }
        StragglerPolicy::Extend if round.extensions < policy.max_extensions() => Outcome::Extend,
        StragglerPolicy::Extend => Outcome::Skip(SkipReason::ExtensionsExhausted),
    }
}
