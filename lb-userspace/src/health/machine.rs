//! One real's checker state machine, with keepalived's semantics. Pure: the caller passes the
//! time and the probe outcomes, so every transition is unit-tested with a fake clock.
//!
//! - A check runs every `delay_loop`.
//! - One success brings a down real up.
//! - An up real goes down after `1 + retry` consecutive failures; between those tries it waits
//!   `delay_before_retry` instead of `delay_loop`.
//! - With `alpha`, a real starts down and needs a passing check to come up; without it, a real
//!   starts up.
//!
//! So a real that dies right after a passing check is declared down at most
//! `delay_loop + connect_timeout x (1 + retry) + delay_before_retry x retry` later (each try
//! takes at most `connect_timeout`).

use std::time::Duration;

/// Timing of one checker (keepalived's keys).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    /// Interval between checks of a healthy (or down) real.
    pub delay_loop: Duration,
    /// Extra tries after a failure before the real is declared down.
    pub retry: u32,
    /// Wait between those tries.
    pub delay_before_retry: Duration,
    /// Bound of one probe (connect, request, or script run).
    pub connect_timeout: Duration,
}

impl Timing {
    /// The longest a dead real can keep getting new connections: the detection bound.
    pub fn detection_bound(&self) -> Duration {
        self.delay_loop
            + self.connect_timeout * (1 + self.retry)
            + self.delay_before_retry * self.retry
    }
}

/// What a probe found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// The check passed.
    pub ok: bool,
    /// What was seen, e.g. "connected", "HTTP 200", "connect refused", "timeout", "HTTP 503".
    pub detail: String,
}

/// A change of the real's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transition {
    /// It came up.
    Up,
    /// It went down.
    Down,
}

/// One real's checker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Machine {
    timing: Timing,
    up: bool,
    consecutive_failures: u32,
    next_check: Duration,
    last: Option<Outcome>,
    checks: u64,
    failures: u64,
    since: Duration,
}

impl Machine {
    /// A checker starting at `now`: up unless `alpha`, first check at `now + first_delay`.
    pub fn new(timing: Timing, alpha: bool, now: Duration, first_delay: Duration) -> Self {
        Self {
            timing,
            up: !alpha,
            consecutive_failures: 0,
            next_check: now + first_delay,
            last: None,
            checks: 0,
            failures: 0,
            since: now,
        }
    }

    /// A checker that continues from a known state (after a restart, the data plane says
    /// whether the real was up).
    pub fn resume(timing: Timing, up: bool, now: Duration, first_delay: Duration) -> Self {
        Self {
            up,
            ..Self::new(timing, false, now, first_delay)
        }
    }

    /// Whether the real is up.
    pub fn is_up(&self) -> bool {
        self.up
    }

    /// When the next probe is due.
    pub fn next_check(&self) -> Duration {
        self.next_check
    }

    /// The last outcome.
    pub fn last(&self) -> Option<&Outcome> {
        self.last.as_ref()
    }

    /// Consecutive failures so far.
    pub fn consecutive_failures(&self) -> u32 {
        self.consecutive_failures
    }

    /// Probes run and probes failed since the checker started.
    pub fn counters(&self) -> (u64, u64) {
        (self.checks, self.failures)
    }

    /// When the current state began.
    pub fn since(&self) -> Duration {
        self.since
    }

    /// The timing.
    pub fn timing(&self) -> Timing {
        self.timing
    }

    /// New timing after a reload; state, counters and the next due time are kept.
    pub fn retime(&mut self, timing: Timing) {
        self.timing = timing;
    }

    /// Records a probe that finished at `now`; returns the transition it caused, if any.
    pub fn record(&mut self, now: Duration, outcome: Outcome) -> Option<Transition> {
        self.checks += 1;
        let ok = outcome.ok;
        self.last = Some(outcome);
        if ok {
            self.consecutive_failures = 0;
            self.next_check = now + self.timing.delay_loop;
            if !self.up {
                self.up = true;
                self.since = now;
                return Some(Transition::Up);
            }
            return None;
        }
        self.failures += 1;
        self.consecutive_failures = self.consecutive_failures.saturating_add(1);
        if !self.up {
            self.next_check = now + self.timing.delay_loop;
            return None;
        }
        if self.consecutive_failures > self.timing.retry {
            self.up = false;
            self.since = now;
            self.next_check = now + self.timing.delay_loop;
            return Some(Transition::Down);
        }
        self.next_check = now + self.timing.delay_before_retry;
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    fn timing(retry: u32) -> Timing {
        Timing {
            delay_loop: 6 * S,
            retry,
            delay_before_retry: 3 * S,
            connect_timeout: 3 * S,
        }
    }

    fn ok() -> Outcome {
        Outcome {
            ok: true,
            detail: "connected".into(),
        }
    }

    fn fail() -> Outcome {
        Outcome {
            ok: false,
            detail: "connect refused".into(),
        }
    }

    #[test]
    fn starts_up_and_checks_after_the_first_delay() {
        let m = Machine::new(timing(3), false, 10 * S, 2 * S);
        assert!(m.is_up());
        assert_eq!(m.next_check(), 12 * S);
        assert!(m.last().is_none());
    }

    #[test]
    fn goes_down_after_one_plus_retry_consecutive_failures() {
        let mut m = Machine::new(timing(3), false, Duration::ZERO, Duration::ZERO);
        let mut now = Duration::ZERO;
        for attempt in 1..=3 {
            assert_eq!(
                m.record(now, fail()),
                None,
                "attempt {attempt} only retries"
            );
            assert_eq!(
                m.next_check(),
                now + 3 * S,
                "retries wait delay_before_retry"
            );
            assert_eq!(m.consecutive_failures(), attempt);
            now = m.next_check();
        }
        assert_eq!(m.record(now, fail()), Some(Transition::Down));
        assert!(!m.is_up());
        assert_eq!(m.next_check(), now + 6 * S, "down: back to delay_loop");
        assert_eq!(m.since(), now);
        // Further failures change nothing.
        assert_eq!(m.record(now + 6 * S, fail()), None);
        assert_eq!(m.counters(), (5, 5));
    }

    #[test]
    fn retry_zero_goes_down_on_the_first_failure() {
        let mut m = Machine::new(timing(0), false, Duration::ZERO, Duration::ZERO);
        assert_eq!(m.record(S, fail()), Some(Transition::Down));
    }

    #[test]
    fn a_success_between_failures_resets_the_count() {
        let mut m = Machine::new(timing(1), false, Duration::ZERO, Duration::ZERO);
        assert_eq!(m.record(S, fail()), None);
        assert_eq!(m.record(4 * S, ok()), None);
        assert_eq!(m.consecutive_failures(), 0);
        assert_eq!(m.next_check(), 10 * S);
        assert_eq!(m.record(10 * S, fail()), None, "count restarted");
        assert_eq!(m.record(13 * S, fail()), Some(Transition::Down));
    }

    #[test]
    fn one_success_brings_it_up() {
        let mut m = Machine::new(timing(3), false, Duration::ZERO, Duration::ZERO);
        for i in 0..4 {
            m.record(i * S, fail());
        }
        assert!(!m.is_up());
        assert_eq!(m.record(20 * S, ok()), Some(Transition::Up));
        assert!(m.is_up());
        assert_eq!(m.last().unwrap().detail, "connected");
        assert_eq!(m.record(26 * S, ok()), None);
    }

    #[test]
    fn alpha_starts_down_until_a_check_passes() {
        let mut m = Machine::new(timing(3), true, Duration::ZERO, S);
        assert!(!m.is_up());
        assert_eq!(m.record(S, fail()), None, "a down real stays down");
        assert_eq!(m.next_check(), 7 * S);
        assert_eq!(m.record(7 * S, ok()), Some(Transition::Up));
    }

    #[test]
    fn reload_keeps_state_and_counters() {
        let mut m = Machine::new(timing(3), false, Duration::ZERO, Duration::ZERO);
        m.record(S, fail());
        m.record(4 * S, fail());
        let next = m.next_check();
        m.retime(Timing {
            retry: 1,
            ..timing(3)
        });
        assert_eq!(m.consecutive_failures(), 2);
        assert_eq!(m.next_check(), next);
        // The new retry count applies: 2 failures already exceed retry 1.
        assert_eq!(m.record(7 * S, fail()), Some(Transition::Down));
    }

    #[test]
    fn resume_continues_from_a_known_state() {
        let m = Machine::resume(timing(3), false, Duration::ZERO, S);
        assert!(!m.is_up());
        let m = Machine::resume(timing(3), true, Duration::ZERO, S);
        assert!(m.is_up());
    }

    #[test]
    fn detection_bound_is_keepalived_worst_case() {
        // delay_loop 6 + connect_timeout 3 x 4 + delay_before_retry 3 x 3 = 27 s.
        assert_eq!(timing(3).detection_bound(), 27 * S);
        // Walk it: last pass at 0, dies at once; probes time out at connect_timeout.
        let mut m = Machine::new(timing(3), false, Duration::ZERO, Duration::ZERO);
        m.record(Duration::ZERO, ok());
        let mut now = m.next_check();
        loop {
            let done = now + 3 * S; // the probe times out
            if m.record(done, fail()) == Some(Transition::Down) {
                assert_eq!(done, timing(3).detection_bound());
                break;
            }
            now = m.next_check();
        }
    }
}
