//! The default chain: its sources tried in turn, each failure labelled with
//! the source that failed, and an error that lists what was tried.

use std::fmt;

use aws_config::ecs::EcsCredentialsProvider;
use aws_config::environment::EnvironmentVariableCredentialsProvider;
use aws_config::imds::credentials::ImdsCredentialsProvider;
use aws_config::provider_config::ProviderConfig;
use aws_config::web_identity_token::WebIdentityTokenCredentialsProvider;
use aws_credential_types::provider::error::CredentialsError;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider, future};
use aws_sdk_secretsmanager::config::Region;
use aws_smithy_runtime_api::client::http::SharedHttpClient;

use super::shared_file::SharedFile;
use super::{Source, describe_error, imds_client};
use crate::config::ChainSource;

/// Names the credentials of an inner provider, so the chain can tell sources apart.
pub(super) struct Named<P> {
    name: String,
    inner: P,
}

impl<P: ProvideCredentials> Named<P> {
    pub(super) fn new(name: impl Into<String>, inner: P) -> Self {
        Named {
            name: name.into(),
            inner,
        }
    }
}

impl<P: ProvideCredentials> fmt::Debug for Named<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

impl<P: ProvideCredentials> ProvideCredentials for Named<P> {
    fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        future::ProvideCredentials::new(async move {
            match self.inner.provide_credentials().await {
                Ok(mut creds) => {
                    creds.set_property(Source(self.name.clone()));
                    Ok(creds)
                }
                // A source with nothing to offer: the chain moves on.
                Err(err @ CredentialsError::CredentialsNotLoaded(_)) => Err(err),
                Err(err) => Err(labelled(&self.name, err)),
            }
        })
    }
}

/// `err`, of the same kind, its message starting with the source that failed.
fn labelled(name: &str, err: CredentialsError) -> CredentialsError {
    let message = format!("{name}: {}", describe_error(&err));
    match err {
        CredentialsError::InvalidConfiguration(_) => {
            CredentialsError::invalid_configuration(message)
        }
        CredentialsError::Unhandled(_) => CredentialsError::unhandled(message),
        CredentialsError::ProviderTimedOut(_) => err,
        _ => CredentialsError::provider_error(message),
    }
}

/// The provider of one source of the chain.
fn provider(
    source: ChainSource,
    profile: Option<&str>,
    region: Option<&Region>,
    http: Option<&SharedHttpClient>,
) -> SharedCredentialsProvider {
    // Region and environment for the providers that call STS themselves
    // (web identity; profiles with role_arn).
    // The agent's HTTP client too, answer bodies capped (src/aws_http.rs).
    let provider_config = || {
        let config = ProviderConfig::default().with_region(region.cloned());
        match http {
            Some(client) => config.with_http_client(client.clone()),
            None => config,
        }
    };
    match source {
        ChainSource::Environment => SharedCredentialsProvider::new(Named::new(
            "environment keys (AWS_ACCESS_KEY_ID)",
            EnvironmentVariableCredentialsProvider::new(),
        )),
        ChainSource::SharedFile => SharedCredentialsProvider::new(SharedFile::new(
            profile.map(str::to_owned),
            region.cloned(),
            http.cloned(),
        )),
        ChainSource::WebIdentity => SharedCredentialsProvider::new(Named::new(
            "web identity token (IRSA)",
            WebIdentityTokenCredentialsProvider::builder()
                .configure(&provider_config())
                .build(),
        )),
        ChainSource::Container => SharedCredentialsProvider::new(Named::new(
            "container credentials (ECS, EKS Pod Identity)",
            EcsCredentialsProvider::builder()
                .configure(&provider_config())
                .build(),
        )),
        ChainSource::InstanceRole => SharedCredentialsProvider::new(Named::new(
            "instance role via IMDSv2",
            ImdsCredentialsProvider::builder()
                .imds_client(imds_client())
                .build(),
        )),
    }
}

/// The default chain, tried in turn; a source that has nothing moves on to
/// the next, and the final error lists what was tried. Ours rather than
/// aws-config's `CredentialsProviderChain` for that error, and for the
/// shared file that is re-read when it changes.
#[derive(Debug)]
pub(super) struct Chain {
    sources: Vec<(String, SharedCredentialsProvider)>,
}

impl Chain {
    pub(super) fn standard(
        profile: Option<String>,
        region: Option<Region>,
        http: Option<SharedHttpClient>,
    ) -> Chain {
        let profile = profile.as_deref();
        Chain {
            sources: ChainSource::ALL
                .iter()
                .map(|s| {
                    let provider = provider(*s, profile, region.as_ref(), http.as_ref());
                    (s.label(profile), provider)
                })
                .collect(),
        }
    }
}

impl ProvideCredentials for Chain {
    fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        future::ProvideCredentials::new(async move {
            let mut tried = Vec::new();
            for (name, source) in &self.sources {
                match source.provide_credentials().await {
                    Ok(creds) => return Ok(creds),
                    Err(CredentialsError::CredentialsNotLoaded(e)) => {
                        log::debug!("no credentials from {name}: {e:?}");
                        tried.push(name.as_str());
                    }
                    Err(other) => return Err(other),
                }
            }
            Err(CredentialsError::not_loaded(format!(
                "credentials could not be found; tried {}",
                tried.join(", then ")
            )))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{AssumeRole, CredentialSource};

    #[tokio::test]
    async fn the_description_lists_what_the_chain_tries() {
        let source = CredentialSource::Chain {
            profile: Some("ops".into()),
        };
        let chain = Chain::standard(Some("ops".into()), None, None);
        let tried: Vec<&str> = chain
            .sources
            .iter()
            .map(|(name, _)| name.as_str())
            .collect();
        assert_eq!(tried.len(), ChainSource::ALL.len());
        assert_eq!(
            source.describe(),
            format!("default chain: {}", tried.join(", then "))
        );
        assert!(tried[1].contains("(profile ops)"), "{tried:?}");
        let role = CredentialSource::AssumeRole {
            role: AssumeRole {
                role_arn: "arn:aws:iam::123456789012:role/R".into(),
                external_id: None,
                session_name: None,
                duration: None,
                sts_endpoint: None,
                sts_region: None,
            },
            base: Box::new(source.clone()),
        };
        assert_eq!(
            role.describe(),
            format!(
                "assume role arn:aws:iam::123456789012:role/R over {}",
                source.describe()
            )
        );
    }

    #[tokio::test]
    async fn chain_error_names_every_source_tried() {
        let chain = Chain {
            sources: vec![
                ("first".into(), SharedCredentialsProvider::new(Nothing)),
                ("second".into(), SharedCredentialsProvider::new(Nothing)),
            ],
        };
        let err = describe_error(&chain.provide_credentials().await.unwrap_err());
        assert_eq!(
            err,
            "credentials could not be found; tried first, then second"
        );
    }

    #[tokio::test]
    async fn failures_name_the_source_and_keep_their_kind() {
        let failing = Named::new("assume role arn:aws:iam::123456789012:role/R", Down);
        let err = failing.provide_credentials().await.unwrap_err();
        assert!(matches!(err, CredentialsError::ProviderError(_)), "{err:?}");
        assert_eq!(
            describe_error(&err),
            "assume role arn:aws:iam::123456789012:role/R: down"
        );
        let nothing = Named::new("environment keys", Nothing);
        assert!(matches!(
            nothing.provide_credentials().await,
            Err(CredentialsError::CredentialsNotLoaded(_))
        ));
    }

    #[derive(Debug)]
    struct Nothing;
    impl ProvideCredentials for Nothing {
        fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
        where
            Self: 'a,
        {
            future::ProvideCredentials::ready(Err(CredentialsError::not_loaded("none here")))
        }
    }

    /// Fails as a provider that is down.
    #[derive(Debug)]
    struct Down;
    impl ProvideCredentials for Down {
        fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
        where
            Self: 'a,
        {
            future::ProvideCredentials::ready(Err(CredentialsError::provider_error("down")))
        }
    }
}
