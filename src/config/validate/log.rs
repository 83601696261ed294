//! `log`: the level, which `RUST_LOG` overrides.

use log::LevelFilter;

use super::Validator;
use crate::config::ConfigError;
use crate::config::error::shown;
use crate::config::raw::RawLog;

impl Validator<'_> {
    /// `log.level`, any case; default info.
    pub(super) fn log_level(&self, raw: RawLog) -> Result<LevelFilter, ConfigError> {
        match raw.level {
            None => Ok(LevelFilter::Info),
            Some(level) => level.parse().map_err(|_| {
                self.invalid(
                    "log.level",
                    format!(
                        "`{}` is not a log level; use debug, info, warn, error or off",
                        shown(&level)
                    ),
                )
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use log::LevelFilter;

    use crate::config::tests::SAMPLE;
    use crate::config::validate::tests::check;

    #[test]
    fn log_level_any_case_and_bad_level() {
        let yaml = SAMPLE.replace("level: info", "level: DEBUG");
        assert_eq!(check(&yaml).unwrap().log_level, LevelFilter::Debug);
        let yaml = SAMPLE.replace("level: info", "level: loud");
        let err = check(&yaml).unwrap_err().to_string();
        assert!(err.contains("log.level") && err.contains("loud"), "{err}");
        // A huge value is echoed as a short prefix.
        let long = "x".repeat(900_000);
        let yaml = SAMPLE.replace("level: info", &format!("level: {long}"));
        let err = check(&yaml).unwrap_err().to_string();
        assert!(err.contains("log.level") && err.len() < 300, "{err}");
        assert!(err.contains(&format!("{}...", "x".repeat(80))), "{err}");
    }
}
