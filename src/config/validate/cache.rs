//! `cache`: lifetimes, bounds and rates of the cache, each with its default.

use super::Validator;
use crate::config::raw::RawCache;
use crate::config::{CacheConfig, ConfigError, MIN_MAX_BYTES};

impl Validator<'_> {
    pub(super) fn cache(&self, raw: RawCache) -> Result<CacheConfig, ConfigError> {
        let defaults = CacheConfig::default();
        let ttl = raw.ttl.map_or(defaults.ttl, |d| d.0);
        let refresh_ahead = raw.refresh_ahead.map_or(ttl / 5, |d| d.0);
        if refresh_ahead > ttl {
            return Err(self.invalid(
                "cache.refresh-ahead",
                format!(
                    "`{}` is longer than cache.ttl (`{}`)",
                    humantime::format_duration(refresh_ahead),
                    humantime::format_duration(ttl)
                ),
            ));
        }
        let max_entries = raw.max_entries.unwrap_or(defaults.max_entries);
        if max_entries == 0 {
            return Err(self.invalid("cache.max-entries", "must be at least 1"));
        }
        let max_bytes = raw.max_bytes.unwrap_or(defaults.max_bytes);
        if max_bytes < MIN_MAX_BYTES {
            return Err(self.invalid(
                "cache.max-bytes",
                format!("`{max_bytes}` is less than {MIN_MAX_BYTES} (1 MiB)"),
            ));
        }
        let fetch_timeout = raw.fetch_timeout.map_or(defaults.fetch_timeout, |d| d.0);
        if fetch_timeout.is_zero() {
            return Err(self.invalid("cache.fetch-timeout", "must be more than 0"));
        }
        Ok(CacheConfig {
            ttl,
            refresh_ahead,
            max_stale: raw.max_stale.map_or(defaults.max_stale, |d| d.0),
            max_entries,
            max_bytes,
            prefetch: raw.prefetch.unwrap_or(defaults.prefetch),
            fetch_timeout,
            min_refresh_interval: raw
                .min_refresh_interval
                .map_or(defaults.min_refresh_interval, |d| d.0),
            negative_ttl: raw.negative_ttl.map_or(defaults.negative_ttl, |d| d.0),
            stale_wait: raw.stale_wait.map_or(defaults.stale_wait, |d| d.0),
            new_names_per_second: raw
                .new_names_per_second
                .unwrap_or(defaults.new_names_per_second),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::config::tests::SAMPLE;
    use crate::config::validate::tests::check;
    use crate::config::{
        DEFAULT_MAX_BYTES, DEFAULT_MAX_ENTRIES, DEFAULT_MAX_STALE, DEFAULT_MIN_REFRESH_INTERVAL,
        DEFAULT_NEGATIVE_TTL, DEFAULT_STALE_WAIT,
    };

    #[test]
    fn cache_settings_and_their_validation() {
        let cache = |body: &str| check(&format!("{SAMPLE}cache:\n{body}")).map(|c| c.cache);
        let c = cache("  ttl: 10m\n").unwrap();
        assert_eq!(c.refresh_ahead, Duration::from_secs(120));
        assert_eq!(c.max_stale, DEFAULT_MAX_STALE);
        assert_eq!(c.max_entries, DEFAULT_MAX_ENTRIES);
        assert_eq!(c.max_bytes, DEFAULT_MAX_BYTES);
        assert!(!c.prefetch);
        assert_eq!(cache("  max-bytes: 1048576\n").unwrap().max_bytes, 1 << 20);
        for (bad, shown) in [
            ("0", "`0`"),
            ("1048575", "`1048575`"),
            ("-1", "max-bytes"),
            ("64MiB", "max-bytes"),
        ] {
            let err = cache(&format!("  max-bytes: {bad}\n"))
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("max-bytes") && err.contains(shown),
                "{bad}: {err}"
            );
        }
        let c = cache("  ttl: 60\n  refresh-ahead: 30s\n  max-stale: 2m\n  max-entries: 5\n  prefetch: true\n  fetch-timeout: 1500ms\n").unwrap();
        assert_eq!(
            (
                c.refresh_ahead,
                c.max_stale,
                c.max_entries,
                c.prefetch,
                c.fetch_timeout
            ),
            (
                Duration::from_secs(30),
                Duration::from_secs(120),
                5,
                true,
                Duration::from_millis(1500)
            )
        );
        let err = cache("  ttl: 10s\n  refresh-ahead: 20s\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("cache.refresh-ahead") && err.contains("longer than cache.ttl"),
            "{err}"
        );
        assert!(
            cache("  max-entries: 0\n")
                .unwrap_err()
                .to_string()
                .contains("cache.max-entries")
        );
        assert!(
            cache("  max-entries: -1\n")
                .unwrap_err()
                .to_string()
                .contains("max-entries")
        );
        assert!(
            cache("  fetch-timeout: 0s\n")
                .unwrap_err()
                .to_string()
                .contains("cache.fetch-timeout")
        );
        assert!(
            cache("  max-stale: -1m\n")
                .unwrap_err()
                .to_string()
                .contains("negative")
        );
    }

    #[test]
    fn cost_bounds_have_defaults_and_parse() {
        let config = check(SAMPLE).unwrap();
        assert_eq!(
            (
                config.cache.min_refresh_interval,
                config.cache.negative_ttl,
                config.aws.max_concurrent_calls
            ),
            (DEFAULT_MIN_REFRESH_INTERVAL, DEFAULT_NEGATIVE_TTL, 32)
        );
        let yaml = format!("{SAMPLE}cache:\n  min-refresh-interval: 500ms\n  negative-ttl: 2m\n")
            .replace(
                "    region: us-west-1\n",
                "    region: us-west-1\n    max-concurrent-calls: 4\n",
            );
        let config = check(&yaml).unwrap();
        assert_eq!(
            (
                config.cache.min_refresh_interval,
                config.cache.negative_ttl,
                config.aws.max_concurrent_calls
            ),
            (Duration::from_millis(500), Duration::from_secs(120), 4)
        );
        // 0 turns the refresh limit and negative caching off.
        let off = check(&format!(
            "{SAMPLE}cache:\n  min-refresh-interval: 0\n  negative-ttl: 0s\n"
        ))
        .unwrap();
        assert!(off.cache.min_refresh_interval.is_zero() && off.cache.negative_ttl.is_zero());
        let summary = config.summary();
        assert!(
            summary.contains("min-refresh-interval 500ms, negative-ttl 2m")
                && summary.contains("max-concurrent-calls 4"),
            "{summary}"
        );

        let err = check(&SAMPLE.replace(
            "    region: us-west-1\n",
            "    region: us-west-1\n    max-concurrent-calls: 0\n",
        ))
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("test.yaml: secret-manager.aws.max-concurrent-calls: must be at least 1"),
            "{err}"
        );
        let err = check(&format!("{SAMPLE}cache:\n  negative-ttl: soon\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("cache.negative-ttl"), "{err}");
        let err = check(&format!("{SAMPLE}cache:\n  min-refresh-intervall: 1s\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("did you mean `min-refresh-interval`"), "{err}");
    }

    #[test]
    fn stale_wait_has_a_default_and_parses() {
        assert_eq!(check(SAMPLE).unwrap().cache.stale_wait, DEFAULT_STALE_WAIT);
        let config = check(&format!("{SAMPLE}cache:\n  stale-wait: 50ms\n")).unwrap();
        assert_eq!(config.cache.stale_wait, Duration::from_millis(50));
        assert!(config.summary().contains("stale-wait 50ms"));
        let zero = check(&format!("{SAMPLE}cache:\n  stale-wait: 0\n")).unwrap();
        assert!(zero.cache.stale_wait.is_zero());
        let err = check(&format!("{SAMPLE}cache:\n  stale-wait: soon\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("cache.stale-wait"), "{err}");
    }
}
