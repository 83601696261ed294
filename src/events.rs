//! Event-driven refresh: an EventBridge rule sends Secrets Manager events
//! to an SQS queue; the agent long-polls it (20 s waits) and refreshes the
//! cached secrets an event names, so a rotation is served within seconds
//! whatever the TTL. Handled messages are deleted, and so are foreign and
//! malformed ones (logged, never fatal). A queue that fails is retried with
//! backoff while secrets keep being served; [`EventsStatus`] says how it goes.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use aws_config::SdkConfig;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_sqs::Client;
use aws_sdk_sqs::config::Region;
use aws_sdk_sqs::types::DeleteMessageBatchRequestEntry;
use serde_json::Value;

use crate::backoff::Backoff;
use crate::cache::Cache;
use crate::config::EventsConfig;
use crate::domain::Arn;

/// Seconds a receive waits for a message (SQS's longest long poll).
const WAIT_SECONDS: i32 = 20;
/// The deadline of one receive: the long poll and a margin.
const RECEIVE_TIMEOUT: Duration = Duration::from_secs(30);
/// Retries of a failing queue: from 1 s, doubling up to a minute.
const BACKOFF: Backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));

/// The Secrets Manager events that change what a secret reads as.
const EVENT_NAMES: &[&str] = &[
    "PutSecretValue",
    "UpdateSecret",
    "UpdateSecretVersionStage",
    "RotateSecret",
    "RotationSucceeded",
    "DeleteSecret",
    "RestoreSecret",
];

/// How the queue is doing, for `/readyz` (the log has the errors).
#[derive(Debug, Default)]
pub(crate) struct EventsStatus {
    /// Receives that failed in a row; 0 while the queue answers.
    pub failures: AtomicU64,
}

/// What one message says.
#[derive(Debug, PartialEq, Eq)]
enum Message {
    /// A Secrets Manager event naming these secrets (ARNs or names).
    Changed(Vec<String>),
    /// Valid JSON, but no Secrets Manager change.
    Foreign,
    Malformed,
}

/// What the event source counts; the agent's is [`crate::metrics::Metrics`].
pub(crate) trait EventsMetrics: Send + Sync + 'static {
    /// A message was handled: `changed`, `foreign` or `malformed`.
    fn event(&self, outcome: &'static str);
    /// A receive from the queue failed.
    fn queue_failure(&self);
}

/// Builds the SQS client: the same credentials and settings as every AWS
/// client, a deadline that fits a long poll, the queue's region.
pub(crate) fn client(sdk: &SdkConfig, config: &EventsConfig) -> Client {
    let mut builder = aws_sdk_sqs::config::Builder::from(sdk).timeout_config(
        TimeoutConfig::builder()
            .connect_timeout(Duration::from_secs(2))
            .operation_timeout(RECEIVE_TIMEOUT)
            .build(),
    );
    if let Some(region) = queue_region(&config.queue_url) {
        builder = builder.region(Region::new(region));
    }
    if let Some(endpoint) = &config.endpoint {
        builder = builder.endpoint_url(endpoint);
    }
    Client::from_conf(builder.build())
}

/// `sqs.<region>.amazonaws.com` in the queue URL names the region.
fn queue_region(url: &str) -> Option<String> {
    let host = url.split("://").nth(1)?.split('/').next()?;
    let region = host.strip_prefix("sqs.")?.split('.').next()?;
    (!region.is_empty() && host.contains(".amazonaws.com")).then(|| region.to_owned())
}

/// Polls until the task is dropped. `resolve` gives the configured ARNs an
/// event's secret id (an ARN or a name) stands for.
pub(crate) async fn run(
    client: Client,
    queue_url: String,
    cache: Cache,
    resolve: impl Fn(&str) -> Vec<Arn> + Send + Sync,
    status: Arc<EventsStatus>,
    metrics: Arc<dyn EventsMetrics>,
) {
    log::info!("events: polling SQS queue {queue_url}");
    loop {
        let received = client
            .receive_message()
            .queue_url(&queue_url)
            .wait_time_seconds(WAIT_SECONDS)
            .max_number_of_messages(10)
            .send()
            .await;
        let out = match received {
            Ok(out) => out,
            Err(err) => {
                let failures = status.failures.fetch_add(1, Ordering::Relaxed) + 1;
                let text =
                    crate::text::chain_text(err.to_string(), std::error::Error::source(&err));
                let delay = BACKOFF.delay(failures);
                log::warn!(
                    "events: receiving from {queue_url} failed ({text}); retrying in {}ms",
                    delay.as_millis()
                );
                metrics.queue_failure();
                tokio::time::sleep(delay).await;
                continue;
            }
        };
        if status.failures.swap(0, Ordering::Relaxed) > 0 {
            log::info!("events: {queue_url} answers again");
        }
        let mut arns: Vec<Arn> = Vec::new();
        let mut handled = Vec::new();
        for message in out.messages.unwrap_or_default() {
            match parse(message.body.as_deref().unwrap_or("")) {
                Message::Changed(ids) => {
                    metrics.event("changed");
                    for id in ids {
                        let named = resolve(&id);
                        if named.is_empty() {
                            log::debug!("events: a change of a secret not configured here");
                        }
                        for arn in named {
                            if !arns.contains(&arn) {
                                arns.push(arn);
                            }
                        }
                    }
                }
                Message::Foreign => {
                    metrics.event("foreign");
                    log::debug!("events: a message that is no Secrets Manager change; deleted");
                }
                Message::Malformed => {
                    metrics.event("malformed");
                    log::warn!("events: a message that is not an EventBridge event; deleted");
                }
            }
            handled.extend(message.receipt_handle);
        }
        if !arns.is_empty() {
            log::info!("events: refreshing {} changed secret(s)", arns.len());
            cache.refresh_cached(arns).await;
        }
        // Deleted once acted on: a message whose refresh never ran (the
        // agent stopped) comes again.
        delete(&client, &queue_url, handled).await;
    }
}

/// Deletes the messages (at most 10, as received) in one call; one that
/// fails comes again after its visibility timeout, and is handled again.
async fn delete(client: &Client, queue_url: &str, handles: Vec<String>) {
    if handles.is_empty() {
        return;
    }
    let entries: Result<Vec<_>, _> = handles
        .into_iter()
        .enumerate()
        .map(|(i, handle)| {
            DeleteMessageBatchRequestEntry::builder()
                .id(i.to_string())
                .receipt_handle(handle)
                .build()
        })
        .collect();
    let deleted = match entries {
        Ok(entries) => client
            .delete_message_batch()
            .queue_url(queue_url)
            .set_entries(Some(entries))
            .send()
            .await
            .map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    match deleted {
        Ok(out) if out.failed.is_empty() => {}
        Ok(out) => log::warn!(
            "events: {} message(s) could not be deleted; they will come again",
            out.failed.len()
        ),
        Err(err) => log::warn!("events: deleting messages failed ({err}); they will come again"),
    }
}

/// Reads an EventBridge event: the CloudTrail-delivered API calls (the
/// secret in `requestParameters.secretId`, or `responseElements.arn`) and
/// the `RotationSucceeded` service event (`additionalEventData.SecretId`).
fn parse(body: &str) -> Message {
    let Ok(event) = serde_json::from_str::<Value>(body) else {
        return Message::Malformed;
    };
    let (Some(source), Some(detail)) = (event["source"].as_str(), event.get("detail")) else {
        return Message::Malformed;
    };
    if source != "aws.secretsmanager" {
        return Message::Foreign;
    }
    let Some(name) = detail["eventName"].as_str() else {
        return Message::Malformed;
    };
    if !EVENT_NAMES.contains(&name) {
        return Message::Foreign;
    }
    let ids: Vec<String> = [
        &detail["requestParameters"]["secretId"],
        &detail["responseElements"]["arn"],
        &detail["additionalEventData"]["SecretId"],
    ]
    .into_iter()
    .chain(event["resources"].as_array().into_iter().flatten())
    .filter_map(|v| v.as_str().map(str::to_owned))
    .collect();
    if ids.is_empty() {
        Message::Malformed
    } else {
        Message::Changed(ids)
    }
}

/// Whether the secret id of an event (a full ARN, or a name) stands for
/// `arn`, which may leave AWS's random suffix off.
pub(crate) fn names_secret(arn: &Arn, id: &str) -> bool {
    let arn = arn.as_str();
    if id.starts_with("arn:") {
        return id == arn || without_suffix(id) == arn;
    }
    let name = arn.split_once(":secret:").map_or("", |(_, name)| name);
    name == id || without_suffix(name) == id
}

/// `name` without AWS's random suffix (`-` and six characters).
fn without_suffix(s: &str) -> &str {
    match s.rsplit_once('-') {
        Some((head, suffix)) if suffix.len() == 6 => head,
        _ => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arn(text: &str) -> Arn {
        Arn::parse(text).unwrap()
    }

    #[test]
    fn reads_eventbridge_events() {
        let put = r#"{"version":"0","source":"aws.secretsmanager","detail-type":"AWS API Call via CloudTrail",
            "detail":{"eventSource":"secretsmanager.amazonaws.com","eventName":"PutSecretValue",
            "requestParameters":{"secretId":"prod/db"},"responseElements":{"arn":"arn:aws:secretsmanager:us-west-1:123456789012:secret:prod/db-AbCdEf"}}}"#;
        assert_eq!(
            parse(put),
            Message::Changed(vec![
                "prod/db".into(),
                "arn:aws:secretsmanager:us-west-1:123456789012:secret:prod/db-AbCdEf".into()
            ])
        );
        let rotated = r#"{"source":"aws.secretsmanager","detail-type":"AWS Service Event via CloudTrail",
            "detail":{"eventName":"RotationSucceeded","additionalEventData":{"SecretId":"arn:aws:secretsmanager:us-west-1:123456789012:secret:x-AbCdEf"}}}"#;
        assert!(matches!(parse(rotated), Message::Changed(ids) if ids.len() == 1));
        let describe = r#"{"source":"aws.secretsmanager","detail":{"eventName":"DescribeSecret","requestParameters":{"secretId":"x"}}}"#;
        assert_eq!(parse(describe), Message::Foreign);
        assert_eq!(
            parse(r#"{"source":"aws.ec2","detail":{"eventName":"RunInstances"}}"#),
            Message::Foreign
        );
        assert_eq!(parse("not json"), Message::Malformed);
        assert_eq!(parse("[1,2]"), Message::Malformed);
        assert_eq!(
            parse(r#"{"source":"aws.secretsmanager","detail":{"eventName":"PutSecretValue"}}"#),
            Message::Malformed
        );
    }

    #[test]
    fn secret_ids_match_configured_arns_with_or_without_suffix() {
        let bare = arn("arn:aws:secretsmanager:us-west-1:123456789012:secret:prod/db");
        let full = arn("arn:aws:secretsmanager:us-west-1:123456789012:secret:prod/db-AbCdEf");
        for configured in [&bare, &full] {
            assert!(names_secret(configured, "prod/db"));
            assert!(names_secret(
                configured,
                "arn:aws:secretsmanager:us-west-1:123456789012:secret:prod/db-AbCdEf"
            ));
            assert!(!names_secret(configured, "prod/dbx"));
            assert!(!names_secret(configured, "prod"));
        }
        assert!(!names_secret(
            &full,
            "arn:aws:secretsmanager:us-west-1:123456789012:secret:prod/db-XyZxYz"
        ));
    }

    #[test]
    fn queue_urls_name_their_region() {
        assert_eq!(
            queue_region("https://sqs.eu-west-2.amazonaws.com/123456789012/q").as_deref(),
            Some("eu-west-2")
        );
        assert_eq!(queue_region("http://127.0.0.1:5000/123456789012/q"), None);
    }
}
