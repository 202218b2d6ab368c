//! Which failures of reaching and joining a run are worth retrying, decided in one place: a
//! typo (address, run id, key) fails at once with what to do, a coordinator that is down or
//! full is retried.

use std::time::Duration;

use tonic::Code;

/// The coordinator refused a join because the run has no free slot (the label the coordinator
/// sends in its RESOURCE_EXHAUSTED message): a slot may free up, so it is retried.
const RUN_FULL: &str = "run-full";

/// A failure that retrying will not fix; ends `join` with this one line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what}; {fix}")]
pub(crate) struct Permanent {
    /// What is wrong, with the coordinator's own words where it gave some.
    pub what: String,
    /// What the user can do about it.
    pub fix: &'static str,
}

/// How the peer treats one failed call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Failure {
    Permanent(Permanent),
    /// May go away (the coordinator restarts, the network recovers, a slot frees up): retried
    /// with backoff.
    Transient(String),
}

/// Classifies a gRPC error of `Join` by its code and the coordinator's message.
pub(crate) fn classify_join(code: Code, message: &str) -> Failure {
    let permanent = |what: &str, fix| {
        Failure::Permanent(Permanent {
            what: format!("{what}: {message}"),
            fix,
        })
    };
    match code {
        Code::NotFound => permanent(
            "unknown run",
            "check --run-id (the TrainingRun's name) and --coordinator (each run has its own coordinator)",
        ),
        Code::FailedPrecondition => permanent(
            "protocol version mismatch",
            "install a tributary-worker release that speaks the coordinator's protocol version",
        ),
        Code::PermissionDenied => permanent(
            "join refused",
            "ask the run's owner to add this peer's key to the allowlist (participation.allowlist)",
        ),
        Code::Unauthenticated => permanent(
            "join not accepted as signed by this key",
            "check this machine's clock (joins are signed with the time) and that --key is an ed25519 key from `tributary-worker keygen`",
        ),
        Code::InvalidArgument | Code::Unimplemented => permanent(
            "the coordinator cannot read this peer's join",
            "check that --coordinator is a Tributary coordinator and this worker's version matches it",
        ),
        Code::ResourceExhausted if message.contains(RUN_FULL) => {
            Failure::Transient(format!("the run is full ({message}); waiting for a slot"))
        }
        _ => Failure::Transient(format!("coordinator unavailable ({code:?}: {message})")),
    }
}

/// Checks a coordinator address before any connection: a malformed one is a typo, not an
/// outage.
pub(crate) fn check_coordinator_url(url: &str) -> Result<(), Permanent> {
    let bad = |why: String| Permanent {
        what: format!("malformed coordinator address {url:?}: {why}"),
        fix: "give it as http://HOST:PORT (e.g. --coordinator http://10.0.0.7:50051)",
    };
    let uri: http::Uri = url.parse().map_err(|e| bad(format!("{e}")))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some(other) => {
            return Err(bad(format!(
                "scheme {other:?} (this build speaks plain http)"
            )));
        }
        None => return Err(bad("no scheme".into())),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(bad("no host".into()));
    }
    Ok(())
}

/// The coordinator answered for a different key than the one that signed the join.
pub(crate) fn foreign_peer_id(named: &str, ours: &str) -> Permanent {
    Permanent {
        what: format!("the coordinator named this peer {named:?}, but its key gives {ours:?}"),
        fix: "check that --coordinator points at the run's Tributary coordinator",
    }
}

/// Waits between retries: doubling from 200 ms, capped at 5 s, back to the start after a
/// successful join.
#[derive(Debug, Default)]
pub(crate) struct Backoff {
    failures: u32,
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(200);
    const MAX: Duration = Duration::from_secs(5);

    /// The attempt number (1 for the first retry) and how long to wait before it.
    pub(crate) fn next_delay(&mut self) -> (u32, Duration) {
        let delay = Self::FIRST
            .saturating_mul(1 << self.failures.min(16))
            .min(Self::MAX);
        self.failures = self.failures.saturating_add(1);
        (self.failures, delay)
    }

    pub(crate) fn reset(&mut self) {
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_permanent(f: &Failure) -> bool {
        matches!(f, Failure::Permanent(_))
    }

    #[test]
    fn what_the_user_must_fix_is_permanent() {
        for code in [
            Code::NotFound,
            Code::FailedPrecondition,
            Code::PermissionDenied,
            Code::Unauthenticated,
            Code::InvalidArgument,
            Code::Unimplemented,
        ] {
            assert!(is_permanent(&classify_join(code, "x")), "{code:?}");
        }
    }

    #[test]
    fn outages_and_a_full_run_are_transient() {
        for code in [
            Code::Unavailable,
            Code::DeadlineExceeded,
            Code::Internal,
            Code::Unknown,
            Code::Aborted,
            Code::Cancelled,
        ] {
            assert!(!is_permanent(&classify_join(code, "x")), "{code:?}");
        }
        let full = classify_join(Code::ResourceExhausted, "join refused: run-full");
        assert!(matches!(full, Failure::Transient(m) if m.contains("waiting for a slot")));
    }

    #[test]
    fn a_permanent_failure_quotes_the_coordinator_and_says_what_to_do() {
        let Failure::Permanent(p) = classify_join(
            Code::NotFound,
            "this coordinator serves run \"a\", not \"b\"",
        ) else {
            panic!("not permanent")
        };
        let line = p.to_string();
        assert!(
            line.starts_with("unknown run: this coordinator serves run"),
            "{line}"
        );
        assert!(line.contains("--run-id"), "{line}");
        assert!(!line.contains('\n'));
    }

    #[test]
    fn coordinator_addresses_need_http_and_a_host() {
        assert!(check_coordinator_url("http://127.0.0.1:7400").is_ok());
        assert!(check_coordinator_url("http://coordinator.ns.svc:50051").is_ok());
        for bad in [
            "127.0.0.1:7400",
            "localhost",
            "http//host:1",
            "https://host:1",
            "ftp://host",
            "http://",
            "",
        ] {
            let err = check_coordinator_url(bad).expect_err(bad);
            assert!(err.to_string().contains("http://HOST:PORT"), "{err}");
        }
    }

    #[test]
    fn backoff_doubles_to_its_cap_and_restarts_after_a_join() {
        let mut b = Backoff::default();
        let waits: Vec<u64> = (0..8)
            .map(|_| b.next_delay().1.as_millis() as u64)
            .collect();
        assert_eq!(waits, [200, 400, 800, 1600, 3200, 5000, 5000, 5000]);
        assert_eq!(b.next_delay().0, 9);
        for _ in 0..100 {
            b.next_delay();
        }
        assert_eq!(b.next_delay().1, Duration::from_secs(5));
        b.reset();
        assert_eq!(b.next_delay(), (1, Duration::from_millis(200)));
    }
}
