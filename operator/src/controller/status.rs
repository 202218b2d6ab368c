//! A TrainingRun's status from what the operator observed: its spec checks, its coordinator's
//! status API and the peers its Contributors run. Pure, so every phase transition is tested.

use std::collections::BTreeSet;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use tributary_crds::{Problems, RunPhase, TrainingRunStatus, condition};
use tributary_proto::v1alpha1::RunStatus;

/// Everything a run's status is computed from.
pub(super) struct Observed<'a> {
    pub generation: Option<i64>,
    /// Problems of the spec itself: the run cannot start.
    pub invalid: &'a Problems,
    /// Changes to fields a running run keeps: refused, the run goes on with its old spec.
    pub refused: &'a Problems,
    /// The coordinator's answer, `None` when it is not ready or did not answer.
    pub coordinator: Option<&'a RunStatus>,
    /// Why the coordinator gave no answer (shown in CoordinatorReady).
    pub coordinator_problem: Option<String>,
    /// Peer ids run by in-cluster Contributors of this run.
    pub own_peers: &'a BTreeSet<String>,
    /// Ready pods of the validators the operator runs for this run.
    pub ready_validators: u32,
    pub min_peers: u32,
    pub endpoint: String,
    pub previous: Option<&'a TrainingRunStatus>,
    pub now: Time,
}

/// One condition: (type, status, reason, message).
type Cond = (&'static str, bool, &'static str, String);

pub(super) fn run_status(o: &Observed<'_>) -> TrainingRunStatus {
    let previous_phase = o.previous.and_then(|s| s.phase);
    let (phase, reason, message) = phase(o, previous_phase);
    let spec_valid: Cond = if !o.invalid.is_empty() {
        (
            condition::SPEC_VALID,
            false,
            "InvalidSpec",
            o.invalid.to_string(),
        )
    } else if !o.refused.is_empty() {
        (
            condition::SPEC_VALID,
            false,
            "FrozenFieldChanged",
            format!(
                "change refused, the run goes on with its running spec: {}",
                o.refused
            ),
        )
    } else {
        (condition::SPEC_VALID, true, "Valid", "spec is valid".into())
    };
    let ready: Cond = match (o.coordinator, &o.coordinator_problem) {
        (Some(_), _) => (
            condition::COORDINATOR_READY,
            true,
            "Serving",
            format!("serving at {}", o.endpoint),
        ),
        (None, problem) => (
            condition::COORDINATOR_READY,
            false,
            "NotReady",
            problem
                .clone()
                .unwrap_or_else(|| "coordinator not ready".into()),
        ),
    };
    let progressing: Cond = (
        condition::PROGRESSING,
        phase == RunPhase::Running,
        reason,
        message.clone(),
    );
    let degraded: Cond = (
        condition::DEGRADED,
        phase == RunPhase::Degraded,
        reason,
        message,
    );
    let summary = summary(&spec_valid, &ready, phase, &progressing);
    let conditions = [summary, spec_valid, ready, progressing, degraded]
        .into_iter()
        .map(|c| to_condition(c, o))
        .collect();
    let c = o.coordinator;
    let previous = o.previous.cloned().unwrap_or_default();
    TrainingRunStatus {
        phase: Some(phase),
        round: c.map_or(previous.round, |s| s.model_version),
        loss: match c {
            Some(s) if s.model_version > 0 => Some(s.loss),
            Some(_) => None,
            None => previous.loss,
        },
        tokens: c.map_or(previous.tokens, |s| s.tokens),
        active_peers: c.map_or(0, |s| s.active_peers),
        rejected_peers: c.map_or(previous.rejected_peers, |s| s.rejected_peers),
        external_peers: c.map_or(previous.external_peers, |s| {
            s.peers
                .iter()
                .filter(|p| p.active && !o.own_peers.contains(&p.peer_id))
                .count() as u32
        }),
        ready_validators: o.ready_validators,
        coordinator_endpoint: Some(o.endpoint.clone()),
        conditions,
        observed_generation: o.generation,
    }
}

fn phase(o: &Observed<'_>, previous: Option<RunPhase>) -> (RunPhase, &'static str, String) {
    if !o.invalid.is_empty() {
        return (RunPhase::Failed, "InvalidSpec", o.invalid.to_string());
    }
    let Some(status) = o.coordinator else {
        return match previous {
            // Finished runs stay finished even while their coordinator restarts.
            Some(RunPhase::Succeeded) => (RunPhase::Succeeded, "Finished", "run finished".into()),
            None | Some(RunPhase::Pending) => (
                RunPhase::Pending,
                "CoordinatorStarting",
                "waiting for the coordinator".into(),
            ),
            Some(_) => (
                RunPhase::Degraded,
                "CoordinatorUnavailable",
                "the coordinator does not answer".into(),
            ),
        };
    };
    if status.phase() == tributary_proto::v1alpha1::RunPhase::Succeeded {
        return (
            RunPhase::Succeeded,
            "Finished",
            format!("finished after {} rounds", status.model_version),
        );
    }
    if status.active_peers < o.min_peers {
        let message = format!(
            "{} of at least {} peers joined",
            status.active_peers, o.min_peers
        );
        return if status.model_version == 0 {
            (RunPhase::Pending, "WaitingForPeers", message)
        } else {
            (RunPhase::Degraded, "NotEnoughPeers", message)
        };
    }
    if let Some(last) = status.history.last().filter(|r| !r.published) {
        return (
            RunPhase::Degraded,
            "RoundSkipped",
            format!(
                "round {} skipped: {}",
                last.round,
                crate::coordinator::SkipReason::from_wire(last.skip_reason())
                    .map_or("unknown reason", |r| r.label())
            ),
        );
    }
    (
        RunPhase::Running,
        "RoundsCompleting",
        format!("{} rounds completed", status.model_version),
    )
}

/// `Ready` (the kstatus summary): true while the accepted spec trains or has finished; false
/// with the first cause otherwise: the spec, the coordinator, then the phase's own reason.
fn summary(spec_valid: &Cond, coordinator: &Cond, phase: RunPhase, progress: &Cond) -> Cond {
    let (ok, reason, message) = match phase {
        _ if !spec_valid.1 => (false, spec_valid.2, spec_valid.3.clone()),
        RunPhase::Running | RunPhase::Succeeded => (true, progress.2, progress.3.clone()),
        _ if !coordinator.1 => (false, "CoordinatorNotReady", coordinator.3.clone()),
        _ => (false, progress.2, progress.3.clone()),
    };
    (condition::READY, ok, reason, message)
}

/// A condition whose transition time moves only when its status does.
fn to_condition((type_, ok, reason, message): Cond, o: &Observed<'_>) -> Condition {
    let status = if ok { "True" } else { "False" };
    let since = o
        .previous
        .and_then(|p| p.conditions.iter().find(|c| c.type_ == type_))
        .filter(|c| c.status == status)
        .map_or_else(|| o.now.clone(), |c| c.last_transition_time.clone());
    Condition {
        type_: type_.into(),
        status: status.into(),
        reason: reason.into(),
        message,
        last_transition_time: since,
        observed_generation: o.generation,
    }
}

/// The phase change worth an Event, if any.
pub(super) fn transition(
    before: Option<&TrainingRunStatus>,
    after: &TrainingRunStatus,
) -> Option<(Option<RunPhase>, RunPhase)> {
    let old = before.and_then(|s| s.phase);
    let new = after.phase?;
    (old != Some(new)).then_some((old, new))
}

#[cfg(test)]
mod tests {
    use k8s_openapi::jiff::Timestamp;
    use tributary_proto::v1alpha1::{PeerStatus, RoundSummary};

    use super::*;

    fn now(secs: i64) -> Time {
        Time(Timestamp::from_second(secs).unwrap_or(Timestamp::UNIX_EPOCH))
    }

    fn coordinator(version: u64, active: u32, peers: &[&str]) -> RunStatus {
        RunStatus {
            phase: tributary_proto::v1alpha1::RunPhase::Open.into(),
            model_version: version,
            loss: 3.5,
            tokens: 1000 * version,
            active_peers: active,
            peers: peers
                .iter()
                .map(|p| PeerStatus {
                    peer_id: (*p).into(),
                    active: true,
                    ..PeerStatus::default()
                })
                .collect(),
            ..RunStatus::default()
        }
    }

    fn observe<'a>(
        invalid: &'a Problems,
        refused: &'a Problems,
        c: Option<&'a RunStatus>,
        own: &'a BTreeSet<String>,
        previous: Option<&'a TrainingRunStatus>,
        t: i64,
    ) -> Observed<'a> {
        Observed {
            generation: Some(3),
            invalid,
            refused,
            coordinator: c,
            coordinator_problem: None,
            own_peers: own,
            ready_validators: 0,
            min_peers: 2,
            endpoint: "r-coordinator.ns.svc:50051".into(),
            previous,
            now: now(t),
        }
    }

    fn cond<'a>(s: &'a TrainingRunStatus, t: &str) -> &'a Condition {
        s.conditions.iter().find(|c| c.type_ == t).unwrap()
    }

    fn ready(s: &TrainingRunStatus) -> (&str, &str) {
        let c = cond(s, condition::READY);
        (c.status.as_str(), c.reason.as_str())
    }

    #[test]
    fn phases_follow_the_coordinator() {
        let none = Problems::default();
        let own: BTreeSet<String> = ["a".into(), "b".into()].into();
        let pending = run_status(&observe(&none, &none, None, &own, None, 1));
        assert_eq!(pending.phase, Some(RunPhase::Pending));
        assert_eq!(cond(&pending, condition::COORDINATOR_READY).status, "False");
        assert_eq!(ready(&pending), ("False", "CoordinatorNotReady"));

        let waiting = coordinator(0, 1, &["a"]);
        let s = run_status(&observe(
            &none,
            &none,
            Some(&waiting),
            &own,
            Some(&pending),
            2,
        ));
        assert_eq!(s.phase, Some(RunPhase::Pending));
        assert_eq!(cond(&s, condition::PROGRESSING).reason, "WaitingForPeers");
        assert_eq!(ready(&s), ("False", "WaitingForPeers"));
        assert_eq!(s.loss, None);

        let running = coordinator(5, 3, &["a", "b", "ext"]);
        let s = run_status(&observe(&none, &none, Some(&running), &own, Some(&s), 3));
        assert_eq!(s.phase, Some(RunPhase::Running));
        assert_eq!((s.round, s.loss, s.tokens), (5, Some(3.5), 5000));
        assert_eq!((s.active_peers, s.external_peers), (3, 1));
        assert_eq!(cond(&s, condition::PROGRESSING).status, "True");
        assert_eq!(cond(&s, condition::DEGRADED).status, "False");
        assert_eq!(ready(&s), ("True", "RoundsCompleting"));
        assert_eq!(s.observed_generation, Some(3));
        assert_eq!(s.ready_validators, 0);
        let with_validators = run_status(&Observed {
            ready_validators: 2,
            ..observe(&none, &none, Some(&running), &own, Some(&s), 3)
        });
        assert_eq!(with_validators.ready_validators, 2);

        // The coordinator goes away mid-run: Degraded, progress kept.
        let s = run_status(&observe(&none, &none, None, &own, Some(&s), 4));
        assert_eq!(s.phase, Some(RunPhase::Degraded));
        assert_eq!((s.round, s.loss), (5, Some(3.5)));
        assert_eq!(
            cond(&s, condition::DEGRADED).reason,
            "CoordinatorUnavailable"
        );
        assert_eq!(ready(&s), ("False", "CoordinatorNotReady"));

        let few = coordinator(6, 1, &["a"]);
        let s = run_status(&observe(&none, &none, Some(&few), &own, Some(&s), 5));
        assert_eq!(cond(&s, condition::DEGRADED).reason, "NotEnoughPeers");
        assert_eq!(ready(&s), ("False", "NotEnoughPeers"));

        let mut skipped = coordinator(6, 2, &["a", "b"]);
        skipped.history.push(RoundSummary {
            round: 7,
            published: false,
            skip_reason: tributary_proto::v1alpha1::SkipReason::TooFewSubmissions.into(),
            ..RoundSummary::default()
        });
        let s = run_status(&observe(&none, &none, Some(&skipped), &own, Some(&s), 6));
        assert_eq!(s.phase, Some(RunPhase::Degraded));
        assert!(
            cond(&s, condition::DEGRADED)
                .message
                .contains("too-few-submissions")
        );

        let mut done = coordinator(40, 0, &[]);
        done.phase = tributary_proto::v1alpha1::RunPhase::Succeeded.into();
        let s = run_status(&observe(&none, &none, Some(&done), &own, Some(&s), 7));
        assert_eq!(s.phase, Some(RunPhase::Succeeded));
        assert_eq!(ready(&s), ("True", "Finished"));
        // A finished run stays finished while its coordinator is away.
        let s = run_status(&observe(&none, &none, None, &own, Some(&s), 8));
        assert_eq!(s.phase, Some(RunPhase::Succeeded));
        assert_eq!(ready(&s), ("True", "Finished"));
    }

    #[test]
    fn invalid_and_refused_specs_are_explained() {
        let own = BTreeSet::new();
        let mut invalid = Problems::default();
        invalid.push("spec.stop", "set totalRounds");
        let none = Problems::default();
        let s = run_status(&observe(&invalid, &none, None, &own, None, 1));
        assert_eq!(s.phase, Some(RunPhase::Failed));
        let valid = cond(&s, condition::SPEC_VALID);
        assert_eq!(
            (valid.status.as_str(), valid.reason.as_str()),
            ("False", "InvalidSpec")
        );
        assert!(valid.message.contains("spec.stop"));
        assert_eq!(ready(&s), ("False", "InvalidSpec"));

        let mut refused = Problems::default();
        refused.push("spec.model", "cannot change on a running run");
        let running = coordinator(5, 2, &[]);
        let s = run_status(&observe(&none, &refused, Some(&running), &own, None, 1));
        assert_eq!(s.phase, Some(RunPhase::Running), "the run goes on");
        let valid = cond(&s, condition::SPEC_VALID);
        assert_eq!(valid.reason, "FrozenFieldChanged");
        assert!(valid.message.contains("spec.model"));
        // Not Ready: the applied spec is not the one running.
        assert_eq!(ready(&s), ("False", "FrozenFieldChanged"));
        assert!(cond(&s, condition::READY).message.contains("spec.model"));
    }

    #[test]
    fn transition_times_move_only_with_the_condition() {
        let none = Problems::default();
        let own = BTreeSet::new();
        let running = coordinator(5, 2, &[]);
        let first = run_status(&observe(&none, &none, Some(&running), &own, None, 10));
        let later = coordinator(6, 2, &[]);
        let second = run_status(&observe(&none, &none, Some(&later), &own, Some(&first), 20));
        assert_eq!(
            cond(&second, condition::PROGRESSING).last_transition_time,
            now(10)
        );
        assert!(transition(Some(&first), &second).is_none());
        let third = run_status(&observe(&none, &none, None, &own, Some(&second), 30));
        assert_eq!(
            cond(&third, condition::PROGRESSING).last_transition_time,
            now(30)
        );
        assert_eq!(
            transition(Some(&second), &third),
            Some((Some(RunPhase::Running), RunPhase::Degraded))
        );
    }
}
