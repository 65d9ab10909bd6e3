//! The floor between forced fetches: the policy that keeps `max_age=0` from becoming a way to
//! spend a tenant's quota.

use std::time::Duration;

/// Layer 0 of the stack, applied by the cache before any flight: a caller's `max_age` shorter
/// than the floor is raised to it, so that a reading fetched less than the floor ago answers a
/// forced fetch. One caller looping on `max_age=0` then makes one upstream call per floor at
/// most, and neither spends the tenant's quota nor starves the refresher
/// (`[cache] min_forced_interval_ms`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ForcedFetchFloor {
    /// The shortest `max_age` honoured.
    pub min_interval: Duration,
}

impl ForcedFetchFloor {
    /// The `max_age` the cache applies for a caller asking `max_age` (`None`: any age will do).
    pub fn max_age(&self, max_age: Option<Duration>) -> Option<Duration> {
        max_age.map(|max_age| max_age.max(self.min_interval))
    }

    /// Whether a reading `age` old answers a caller asking `max_age`.
    pub fn allows(&self, age: Duration, max_age: Option<Duration>) -> bool {
        self.max_age(max_age).is_none_or(|max_age| age <= max_age)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_max_age_below_the_floor_is_raised_to_it_and_none_stays_none() {
        let floor = ForcedFetchFloor {
            min_interval: Duration::from_secs(1),
        };
        assert_eq!(
            floor.max_age(Some(Duration::ZERO)),
            Some(Duration::from_secs(1))
        );
        assert_eq!(
            floor.max_age(Some(Duration::from_secs(5))),
            Some(Duration::from_secs(5))
        );
        assert_eq!(floor.max_age(None), None);
        assert!(floor.allows(Duration::from_millis(999), Some(Duration::ZERO)));
        assert!(!floor.allows(Duration::from_millis(1001), Some(Duration::ZERO)));
        assert!(floor.allows(Duration::from_secs(3600), None));
    }
}
