//! Event-driven refresh: Secrets Manager events, in the shape EventBridge
//! delivers them, posted to moto's SQS queue that the agent long-polls.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::*;

fn create_queue(world: &World, name: &str) -> String {
    world.call("sqs", REGION, "create_queue", json!({"QueueName": name}))["QueueUrl"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn send(world: &World, queue_url: &str, body: &str) {
    world.call(
        "sqs",
        REGION,
        "send_message",
        json!({"QueueUrl": queue_url, "MessageBody": body}),
    );
}

/// Messages in the queue, visible or being handled.
fn left(world: &World, queue_url: &str) -> u64 {
    let attributes = world.call(
        "sqs",
        REGION,
        "get_queue_attributes",
        json!({"QueueUrl": queue_url, "AttributeNames": ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]}),
    )["Attributes"]
        .clone();
    let count = |k: &str| {
        attributes[k]
            .as_str()
            .unwrap_or("0")
            .parse::<u64>()
            .unwrap()
    };
    count("ApproximateNumberOfMessages") + count("ApproximateNumberOfMessagesNotVisible")
}

/// A CloudTrail-delivered API call, as an EventBridge rule sends it on.
fn api_call(event_name: &str, secret_id: &str) -> String {
    json!({
        "version": "0",
        "id": unique("event"),
        "detail-type": "AWS API Call via CloudTrail",
        "source": "aws.secretsmanager",
        "account": "123456789012",
        "time": "2026-11-30T23:59:59Z",
        "region": REGION,
        "resources": [],
        "detail": {
            "eventVersion": "1.08",
            "eventSource": "secretsmanager.amazonaws.com",
            "eventName": event_name,
            "awsRegion": REGION,
            "requestParameters": {"secretId": secret_id},
            "responseElements": null
        }
    })
    .to_string()
}

fn metric(text: &str, line_start: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test]
async fn an_event_refreshes_the_secret_it_names_within_seconds() {
    let f = Fixture::new();
    let secret = f.secret("evented", "v1");
    let other = f.secret("not-evented", "o1");
    let queue = create_queue(f.world, &unique("events"));
    let agent = Agent::start(
        &f.config()
            .resource("e", &secret.arn)
            .resource("o", &other.arn)
            .events(&queue, &f.world.moto)
            .cache(|c| c.ttl("1h")),
        &[],
    );
    let url = agent.url("/secrets/e");
    assert_eq!(get(&url).await.text(), "v1");
    assert_eq!(get(&agent.url("/secrets/o")).await.text(), "o1");
    f.world.put_secret_value(REGION, &secret.arn, "v2");
    f.world.put_secret_value(REGION, &other.arn, "o2");
    assert_eq!(get(&url).await.text(), "v1", "cached for an hour");

    // Foreign and malformed messages first: they are deleted, never fatal.
    send(
        f.world,
        &queue,
        &json!({"source": "aws.ec2", "detail-type": "EC2 Instance State-change Notification", "detail": {"state": "running"}}).to_string(),
    );
    send(f.world, &queue, "this is not an event");
    send(f.world, &queue, &api_call("DescribeSecret", &secret.name));
    // The change, naming the secret by its name.
    let started = Instant::now();
    send(f.world, &queue, &api_call("PutSecretValue", &secret.name));
    assert!(
        eventually(Duration::from_secs(5), async || get(&url).await.text()
            == "v2")
        .await,
        "the new version within 5 s\n{}",
        agent.log()
    );
    eprintln!("event to new version: {:?}", started.elapsed());
    let r = get(&url).await;
    assert_eq!(r.header("secret-agent-cache"), Some("hit"));
    // A secret no event named keeps its cached value.
    assert_eq!(get(&agent.url("/secrets/o")).await.text(), "o1");
    assert!(
        eventually(Duration::from_secs(5), async || left(f.world, &queue) == 0).await,
        "every message was deleted"
    );

    // The rotation service event, naming the secret by its ARN.
    f.world.put_secret_value(REGION, &secret.arn, "v3");
    let rotated = json!({
        "version": "0",
        "detail-type": "AWS Service Event via CloudTrail",
        "source": "aws.secretsmanager",
        "region": REGION,
        "resources": [],
        "detail": {"eventName": "RotationSucceeded", "eventSource": "secretsmanager.amazonaws.com",
                   "additionalEventData": {"SecretId": secret.arn}}
    });
    send(f.world, &queue, &rotated.to_string());
    assert!(
        eventually(Duration::from_secs(5), async || get(&url).await.text()
            == "v3")
        .await,
        "{}",
        agent.log()
    );

    let text = get(&agent.url("/metrics")).await.text();
    assert_eq!(
        metric(&text, "secret_agent_events_total{outcome=\"changed\"}"),
        Some(2.0)
    );
    assert_eq!(
        metric(&text, "secret_agent_events_total{outcome=\"foreign\"}"),
        Some(2.0)
    );
    assert_eq!(
        metric(&text, "secret_agent_events_total{outcome=\"malformed\"}"),
        Some(1.0)
    );
    let ready: Value = get(&agent.url("/readyz")).await.json();
    assert_eq!(ready["events"]["queue"], "ok", "{ready}");
    assert!(!agent.log().contains("this is not an event"));
}

#[tokio::test]
async fn a_failing_queue_is_retried_while_secrets_are_served() {
    let f = Fixture::new();
    let secret = f.secret("queue-down", "served");
    let name = unique("late-queue");
    let existing = create_queue(f.world, &unique("events"));
    let queue = existing.replace(existing.rsplit('/').next().unwrap(), &name);
    let agent = Agent::start(
        &f.config()
            .resource("q", &secret.arn)
            .events(&queue, &f.world.moto)
            .cache(|c| c.ttl("1h")),
        &[],
    );
    assert_eq!(get(&agent.url("/secrets/q")).await.text(), "served");
    assert!(
        eventually(Duration::from_secs(5), async || {
            let r = get(&agent.url("/readyz")).await;
            r.status == 200 && r.json()["events"]["queue"] == "failing"
        })
        .await,
        "{}",
        agent.log()
    );
    let text = get(&agent.url("/metrics")).await.text();
    assert!(metric(&text, "secret_agent_events_queue_failures_total").unwrap() >= 1.0);
    assert_eq!(get(&agent.url("/secrets/q")).await.text(), "served");

    // The queue appears: polling picks up again, with backoff, and works.
    assert_eq!(create_queue(f.world, &name), queue);
    f.world.put_secret_value(REGION, &secret.arn, "after");
    send(f.world, &queue, &api_call("PutSecretValue", &secret.arn));
    assert!(
        eventually(Duration::from_secs(10), async || {
            get(&agent.url("/secrets/q")).await.text() == "after"
        })
        .await,
        "{}",
        agent.log()
    );
    let ready: Value = get(&agent.url("/readyz")).await.json();
    assert_eq!(ready["events"]["queue"], "ok", "{ready}");
}
