//! A Contributor's `Ready` condition and the Events of its changes, from what the reconciler
//! observed. Pure, so each transition is tested.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::runtime::events::{Event, EventType};
use tributary_crds::{ContributorStatus, condition};

/// Why the Contributor runs no workers, when something outside it decides so.
pub(super) type Blocker = (&'static str, String);

/// What `Ready` is computed from.
pub(super) struct Observed<'a> {
    pub blocker: Option<Blocker>,
    pub ready: i32,
    pub wanted: i32,
    pub external: bool,
    pub generation: Option<i64>,
    pub previous: Option<&'a ContributorStatus>,
    pub now: Time,
}

/// `Ready`: every wanted worker is ready (an external record is ready by itself), unless a
/// blocker (invalid spec, missing or ended run) says why none run.
pub(super) fn ready_condition(o: &Observed<'_>) -> Condition {
    let (ok, reason, message) = match &o.blocker {
        Some((reason, message)) => (false, *reason, message.clone()),
        None if o.external => (true, "External", "a peer outside the cluster".to_owned()),
        None if o.ready >= o.wanted => (
            true,
            "AllReady",
            format!("{}/{} workers ready", o.ready, o.wanted),
        ),
        None => (
            false,
            "Scaling",
            format!("{}/{} workers ready", o.ready, o.wanted),
        ),
    };
    let status = if ok { "True" } else { "False" };
    let since = o
        .previous
        .and_then(|s| ready_of(s))
        .filter(|c| c.status == status)
        .map_or_else(|| o.now.clone(), |c| c.last_transition_time.clone());
    Condition {
        type_: condition::READY.into(),
        status: status.into(),
        reason: reason.into(),
        message,
        last_transition_time: since,
        observed_generation: o.generation,
    }
}

fn ready_of(s: &ContributorStatus) -> Option<&Condition> {
    s.conditions.iter().find(|c| c.type_ == condition::READY)
}

/// The Events of a status change: the worker pods scaled, became ready or stopped being so
/// (a warning unless it is only scaling or the run ended), peers newly excluded.
pub(super) fn events(before: Option<&ContributorStatus>, after: &ContributorStatus) -> Vec<Event> {
    let event = |type_, reason: &str, note: String| Event {
        type_,
        reason: reason.into(),
        note: Some(note.chars().take(1000).collect()),
        action: "Reconcile".into(),
        secondary: None,
    };
    let mut out = Vec::new();
    let old_replicas = before.map_or(0, |s| s.replicas);
    if old_replicas != after.replicas {
        out.push(event(
            EventType::Normal,
            "Scaled",
            format!("worker pods {old_replicas} → {}", after.replicas),
        ));
    }
    let was = before.and_then(ready_of);
    if let Some(now) = ready_of(after)
        && was.map(|c| (&c.status, &c.reason)) != Some((&now.status, &now.reason))
    {
        match (now.status.as_str(), now.reason.as_str()) {
            ("True", _) if was.is_some_and(|c| c.status == "True") => {}
            ("True", _) => out.push(event(EventType::Normal, "Ready", now.message.clone())),
            // Pods on their way: the Scaled event said so.
            (_, "Scaling") => {}
            (_, reason @ "RunFinished") => {
                out.push(event(EventType::Normal, reason, now.message.clone()))
            }
            (_, reason) => out.push(event(EventType::Warning, reason, now.message.clone())),
        }
    }
    let excluded_before = |peer: &str| {
        before.is_some_and(|s| s.scores.iter().any(|p| p.peer_id == peer && p.excluded))
    };
    let newly: Vec<String> = after
        .scores
        .iter()
        .filter(|p| p.excluded && !excluded_before(&p.peer_id))
        .map(|p| match &p.reason {
            Some(reason) => format!("{} ({reason})", p.peer_id),
            None => format!("{} (no longer a member)", p.peer_id),
        })
        .collect();
    if !newly.is_empty() {
        out.push(event(
            EventType::Warning,
            "PeersExcluded",
            format!("excluded from aggregation: {}", newly.join(", ")),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use k8s_openapi::jiff::Timestamp;
    use tributary_crds::PeerScore;

    use super::*;

    fn at(secs: i64) -> Time {
        Time(Timestamp::from_second(secs).unwrap_or(Timestamp::UNIX_EPOCH))
    }

    fn observed<'a>(
        ready: i32,
        wanted: i32,
        previous: Option<&'a ContributorStatus>,
        t: i64,
    ) -> Observed<'a> {
        Observed {
            blocker: None,
            ready,
            wanted,
            external: false,
            generation: Some(2),
            previous,
            now: at(t),
        }
    }

    fn status(replicas: i32, ready: Condition, scores: Vec<PeerScore>) -> ContributorStatus {
        ContributorStatus {
            replicas,
            ready_replicas: replicas,
            conditions: vec![ready],
            scores,
            ..ContributorStatus::default()
        }
    }

    fn score(peer: &str, excluded: bool) -> PeerScore {
        PeerScore {
            peer_id: peer.into(),
            score: 0.5,
            round: 3,
            excluded,
            reason: excluded.then(|| "consecutive-negatives".into()),
            last_score: Some(-99.0),
            aggregated: !excluded,
        }
    }

    fn reasons(events: &[Event]) -> Vec<(&str, bool)> {
        events
            .iter()
            .map(|e| (e.reason.as_str(), e.type_ == EventType::Warning))
            .collect()
    }

    #[test]
    fn ready_when_every_wanted_worker_is_and_blockers_win() {
        let c = ready_condition(&observed(1, 2, None, 1));
        assert_eq!((c.status.as_str(), c.reason.as_str()), ("False", "Scaling"));
        assert_eq!(c.message, "1/2 workers ready");
        let c = ready_condition(&observed(2, 2, None, 1));
        assert_eq!((c.status.as_str(), c.reason.as_str()), ("True", "AllReady"));
        assert_eq!(c.type_, "Ready");
        assert_eq!(c.observed_generation, Some(2));

        let mut blocked = observed(2, 2, None, 1);
        blocked.blocker = Some(("RunNotFound", "no run".into()));
        let c = ready_condition(&blocked);
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("False", "RunNotFound")
        );

        let mut external = observed(0, 0, None, 1);
        external.external = true;
        assert_eq!(ready_condition(&external).reason, "External");
    }

    #[test]
    fn the_transition_time_moves_only_with_the_status() {
        let first = status(2, ready_condition(&observed(1, 2, None, 10)), vec![]);
        let still = ready_condition(&observed(0, 2, Some(&first), 20));
        assert_eq!(still.last_transition_time, at(10));
        let ready = ready_condition(&observed(2, 2, Some(&first), 30));
        assert_eq!(ready.last_transition_time, at(30));
    }

    #[test]
    fn scaling_then_ready_then_exclusions_are_events() {
        let zero = status(0, ready_condition(&observed(0, 0, None, 1)), vec![]);
        assert_eq!(
            reasons(&events(None, &zero)),
            [("Ready", false)],
            "no workers wanted: ready at once"
        );
        let scaling = status(2, ready_condition(&observed(0, 2, Some(&zero), 2)), vec![]);
        assert_eq!(reasons(&events(Some(&zero), &scaling)), [("Scaled", false)]);
        assert_eq!(
            events(Some(&zero), &scaling)[0].note.as_deref(),
            Some("worker pods 0 → 2")
        );
        let ready = status(
            2,
            ready_condition(&observed(2, 2, Some(&scaling), 3)),
            vec![score("a", false), score("b", false)],
        );
        assert_eq!(reasons(&events(Some(&scaling), &ready)), [("Ready", false)]);
        // Nothing changed: nothing to say.
        assert!(events(Some(&ready), &ready).is_empty());

        let excluded = status(
            2,
            ready_condition(&observed(2, 2, Some(&ready), 4)),
            vec![score("a", true), score("b", false)],
        );
        let e = events(Some(&ready), &excluded);
        assert_eq!(reasons(&e), [("PeersExcluded", true)]);
        assert_eq!(
            e[0].note.as_deref(),
            Some("excluded from aggregation: a (consecutive-negatives)")
        );
        // Still excluded is not news.
        assert!(events(Some(&excluded), &excluded).is_empty());
    }

    #[test]
    fn losing_the_run_is_a_warning_and_its_end_is_not() {
        let ready = status(2, ready_condition(&observed(2, 2, None, 1)), vec![]);
        let mut gone = observed(2, 2, Some(&ready), 2);
        gone.blocker = Some(("RunNotFound", "TrainingRun \"r\" does not exist".into()));
        let gone = status(0, ready_condition(&gone), vec![]);
        assert_eq!(
            reasons(&events(Some(&ready), &gone)),
            [("Scaled", false), ("RunNotFound", true)]
        );
        let mut finished = observed(2, 2, Some(&ready), 2);
        finished.blocker = Some(("RunFinished", "the run has finished".into()));
        let finished = status(2, ready_condition(&finished), vec![]);
        assert_eq!(
            reasons(&events(Some(&ready), &finished)),
            [("RunFinished", false)]
        );
    }
}
