//! `secret-manager.aws.events`: the SQS queue that brings change events.

use super::Validator;
use crate::config::raw::RawEvents;
use crate::config::{ConfigError, EventsConfig};

impl Validator<'_> {
    pub(super) fn events(&self, raw: RawEvents) -> Result<EventsConfig, ConfigError> {
        Ok(EventsConfig {
            queue_url: self.url("secret-manager.aws.events.queue-url", raw.queue_url)?,
            endpoint: raw
                .endpoint
                .map(|e| self.url("secret-manager.aws.events.endpoint", e))
                .transpose()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::config::EventsConfig;
    use crate::config::tests::SAMPLE;
    use crate::config::validate::tests::check;

    #[test]
    fn events_name_a_queue_url_and_an_optional_endpoint() {
        assert_eq!(check(SAMPLE).unwrap().aws.events, None);
        let with = |events: &str| {
            check(&SAMPLE.replace(
                "    region: us-west-1\n",
                &format!("    region: us-west-1\n    events:\n{events}"),
            ))
        };
        let config = with(
            "      queue-url: https://sqs.us-west-1.amazonaws.com/123456789012/q\n      endpoint: http://localhost:4566\n",
        )
        .unwrap();
        assert_eq!(
            config.aws.events,
            Some(EventsConfig {
                queue_url: "https://sqs.us-west-1.amazonaws.com/123456789012/q".into(),
                endpoint: Some("http://localhost:4566".into()),
            })
        );
        assert!(
            config
                .summary()
                .contains("events: SQS queue https://sqs.us-west-1.amazonaws.com/123456789012/q")
        );
        let err = with("      queue-url: my-queue\n").unwrap_err().to_string();
        assert!(err.contains("secret-manager.aws.events.queue-url"), "{err}");
        let err = with("      queue: x\n").unwrap_err().to_string();
        assert!(err.contains("queue-url"), "{err}");
    }
}
