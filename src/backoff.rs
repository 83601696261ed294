//! The one jittered exponential backoff: the wait before retrying after a
//! run of failures, doubling from a first delay up to a cap.

use std::time::Duration;

/// Delays that double with each failure from `first` up to `max`, each
/// jittered in its upper half (between half the delay and all of it), so
/// that retries started together spread out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Backoff {
    /// The delay after the first failure (before jitter).
    first: Duration,
    /// No delay is longer.
    max: Duration,
}

/// Figures a [`Backoff`] cannot work with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum InvalidBackoff {
    #[error("the first delay of a backoff must be longer than zero")]
    ZeroFirst,
    #[error("the first delay of a backoff must not exceed its cap")]
    FirstOverMax,
}

impl Backoff {
    /// Checks the figures: `first` above zero, and at most `max`.
    pub(crate) const fn try_new(first: Duration, max: Duration) -> Result<Backoff, InvalidBackoff> {
        if first.is_zero() {
            return Err(InvalidBackoff::ZeroFirst);
        }
        if first.as_nanos() > max.as_nanos() {
            return Err(InvalidBackoff::FirstOverMax);
        }
        Ok(Backoff { first, max })
    }

    /// [`Backoff::try_new`] for constants: invalid figures fail the build.
    pub(crate) const fn new(first: Duration, max: Duration) -> Backoff {
        match Backoff::try_new(first, max) {
            Ok(backoff) => backoff,
            Err(_) => panic!("invalid backoff figures"),
        }
    }

    /// The wait after `failures` failures in a row (the first is 1):
    /// `first * 2^(failures - 1)`, at most `max`, jittered.
    pub(crate) fn delay(&self, failures: u64) -> Duration {
        jitter(self.base(failures), fastrand::f64())
    }

    /// The delay before jitter.
    fn base(&self, failures: u64) -> Duration {
        let mut base = self.first;
        // Stops doubling at the cap: never overflows, however many failures.
        for _ in 1..failures {
            if base >= self.max {
                break;
            }
            base = base.saturating_mul(2);
        }
        base.min(self.max)
    }
}

/// `base` jittered in its upper half by `unit`, in `[0, 1)`.
fn jitter(base: Duration, unit: f64) -> Duration {
    base / 2 + base.mul_f64(unit / 2.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIRST: Duration = Duration::from_millis(500);
    const MAX: Duration = Duration::from_secs(30);
    const BACKOFF: Backoff = Backoff::new(FIRST, MAX);

    #[test]
    fn the_delay_doubles_from_the_first_up_to_the_cap() {
        assert_eq!(BACKOFF.base(0), FIRST);
        assert_eq!(BACKOFF.base(1), FIRST);
        assert_eq!(BACKOFF.base(2), FIRST * 2);
        assert_eq!(BACKOFF.base(5), FIRST * 16);
        assert_eq!(BACKOFF.base(6), Duration::from_secs(16));
        assert_eq!(BACKOFF.base(7), MAX);
        for failures in [8, 64, 1 << 20, u64::MAX] {
            assert_eq!(BACKOFF.base(failures), MAX, "{failures}");
        }
        let whole = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
        assert_eq!(whole.base(6), Duration::from_secs(32));
        assert_eq!(whole.base(7), Duration::from_secs(60));
    }

    #[test]
    fn the_jitter_stays_in_the_upper_half() {
        assert_eq!(jitter(Duration::from_secs(8), 0.0), Duration::from_secs(4));
        assert!(jitter(Duration::from_secs(8), 0.999_999) < Duration::from_secs(8));
        for failures in 1..40 {
            let (base, delay) = (BACKOFF.base(failures), BACKOFF.delay(failures));
            assert!(delay >= base / 2 && delay <= base, "{failures}: {delay:?}");
        }
    }

    #[test]
    fn figures_are_checked_at_construction() {
        assert_eq!(
            Backoff::try_new(Duration::ZERO, MAX),
            Err(InvalidBackoff::ZeroFirst)
        );
        assert_eq!(
            Backoff::try_new(MAX, FIRST),
            Err(InvalidBackoff::FirstOverMax)
        );
        assert_eq!(Backoff::try_new(FIRST, FIRST).map(|b| b.base(9)), Ok(FIRST));
    }
}
