//! Patterns in `resources`: `prod/*` maps a name prefix to an ARN prefix,
//! `*` every name of one account and region; token scopes take the same.

use crate::support::*;

const ACCOUNT: &str = "123456789012";
const TOKEN: &str = "pattern-token-all-1";
const PROD_TOKEN: &str = "pattern-token-prod-2";

fn arn_prefix() -> String {
    format!("arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:")
}

#[tokio::test]
async fn a_prefix_pattern_serves_secrets_created_after_start() {
    let f = Fixture::new();
    let prod = unique("prod");
    let team = unique("team");
    let exact = f.secret("pattern-exact", "exact-value");
    let config = f
        .config()
        .resource(&format!("{prod}/*"), &format!("{}{prod}/*", arn_prefix()))
        // A longer pattern, to secrets under another prefix.
        .resource(
            &format!("{prod}/team/*"),
            &format!("{}{team}/*", arn_prefix()),
        )
        // An exact name under the pattern wins over it.
        .resource(&format!("{prod}/special"), &exact.arn)
        .token_env("ALL", &["*"])
        .token_env("PROD", &[&format!("{prod}/team/*")]);
    let agent = Agent::start(&config, &[("ALL", TOKEN), ("PROD", PROD_TOKEN)]);
    let bearer = |token: &str| format!("Bearer {token}");
    let read = async |path: &str, token: &str| {
        get_with(&agent.url(path), &[("Authorization", &bearer(token))]).await
    };

    // Created after the agent started.
    let db_arn = f
        .world
        .create_secret(REGION, &format!("{prod}/db"), r#"{"user":"u1"}"#);
    f.world
        .create_secret(REGION, &format!("{team}/app"), "team-app-value");
    f.world
        .create_secret(REGION, &format!("{prod}/team/app"), "not-this-one");

    let r = read(&format!("/secrets/{prod}/db"), TOKEN).await;
    assert_eq!((r.status, r.text().as_str()), (200, r#"{"user":"u1"}"#));
    // The suffix-less partial ARN is what is requested.
    let asked: Vec<String> = f
        .proxy
        .calls()
        .into_iter()
        .filter(|c| c.action == "GetSecretValue")
        .filter_map(|c| c.secret_id)
        .collect();
    assert_eq!(asked, [format!("{}{prod}/db", arn_prefix())]);
    assert_ne!(asked[0], db_arn, "not the full ARN");

    // The longer pattern wins; the exact name wins over both.
    let r = read(&format!("/secrets/{prod}/team/app"), TOKEN).await;
    assert_eq!(r.text(), "team-app-value");
    let r = read(&format!("/secrets/{prod}/special"), TOKEN).await;
    assert_eq!(r.text(), "exact-value");

    // A pattern-scoped token: its prefix only.
    let r = read(&format!("/secrets/{prod}/team/app"), PROD_TOKEN).await;
    assert_eq!(r.text(), "team-app-value");
    read(&format!("/secrets/{prod}/db"), PROD_TOKEN)
        .await
        .assert_error(403, "forbidden");
    let r = get_with(
        &agent.url(&format!("/v1/{prod}/db")),
        &[("X-Aws-Parameters-Secrets-Token", PROD_TOKEN)],
    )
    .await;
    assert_eq!((r.status, r.text().as_str()), (403, "Bad Token"));

    // Outside every pattern: not configured, and never fetched.
    let outside = f.secret("pattern-outside", "outside-value");
    read(&format!("/secrets/{}", outside.name), TOKEN)
        .await
        .assert_error(404, "resource_not_found");
    // A name under a pattern whose secret does not exist: unknown, as any.
    read(&format!("/secrets/{prod}/nothing-here"), TOKEN)
        .await
        .assert_error(404, "resource_not_found");
    assert_eq!(f.proxy.gets(&outside.name), 0);
}

#[tokio::test]
async fn star_maps_one_account_and_region_and_arns_are_matched_against_it() {
    let f = Fixture::new();
    let config = f
        .config()
        .resource("*", &format!("{}*", arn_prefix()))
        .token_env("ALL", &["*"]);
    let agent = Agent::start(&config, &[("ALL", TOKEN)]);
    let secret = f.secret("pattern-star", "star-value");
    let compat = async |path: &str| {
        get_with(
            &agent.url(path),
            &[("X-Aws-Parameters-Secrets-Token", TOKEN)],
        )
        .await
    };

    let r = get_with(
        &agent.url(&format!("/secrets/{}", secret.name)),
        &[("Authorization", &format!("Bearer {TOKEN}"))],
    )
    .await;
    assert_eq!(r.text(), "star-value");
    // secretId: a name, a full ARN, a partial ARN.
    let partial = format!("{}{}", arn_prefix(), secret.name);
    for id in [secret.name.as_str(), secret.arn.as_str(), partial.as_str()] {
        let r = compat(&format!(
            "/secretsmanager/get?secretId={}",
            crate::aws_agent::url_encode(id)
        ))
        .await;
        assert_eq!(r.status, 200, "{id}: {}", r.text());
        assert_eq!(r.json()["SecretString"], "star-value");
        assert_eq!(r.json()["ARN"], secret.arn.as_str());
    }
    // Another account or region: outside the pattern, never fetched.
    for other in [
        format!(
            "arn:aws:secretsmanager:{REGION}:210987654321:secret:{}",
            secret.name
        ),
        format!(
            "arn:aws:secretsmanager:eu-west-3:{ACCOUNT}:secret:{}",
            secret.name
        ),
    ] {
        let r = compat(&format!(
            "/secretsmanager/get?secretId={}",
            crate::aws_agent::url_encode(&other)
        ))
        .await;
        assert_eq!(r.status, 400, "{other}: {}", r.text());
        assert!(
            r.text().contains("ResourceNotFoundException"),
            "{}",
            r.text()
        );
    }
    let fetched: Vec<String> = f
        .proxy
        .calls()
        .into_iter()
        .filter_map(|c| c.secret_id)
        .filter(|id| id.contains("210987654321") || id.contains("eu-west-3"))
        .collect();
    assert!(fetched.is_empty(), "{fetched:?}");
}
