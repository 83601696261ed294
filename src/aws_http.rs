//! The HTTP client every AWS call goes through: the SDK's own default
//! client, with each answer's body capped before the SDK buffers it.
//!
//! The SDK reads a whole answer into memory before it parses it, so an
//! upstream that answers without end (a custom `endpoint`, a proxy, a
//! compromised path) would grow the agent until `fetch-timeout`. Past its
//! cap, the body fails with [`BodyTooLarge`] and the connection is dropped;
//! a `Content-Length` over the cap fails before any of the body is read.

use std::pin::Pin;
use std::task::{Context, Poll};

use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpClient,
    SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::HttpRequest;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::body::SdkBody;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

/// Largest answer body read from AWS, in bytes (1 MiB): ample for one
/// secret (AWS caps a value at 64 KiB; JSON escaping and base64 at most
/// sextuple it), a parameter, STS and the other calls.
pub(crate) const MAX_ANSWER_BYTES: usize = 1 << 20;

/// Largest BatchGetSecretValue answer body, in bytes (8 MiB): 20 secrets of
/// up to 64 KiB each, escaped.
pub(crate) const MAX_BATCH_ANSWER_BYTES: usize = 8 << 20;

/// Largest SQS ReceiveMessage answer body, in bytes (16 MiB): 10 messages
/// of up to 1 MiB each (SQS's limit), escaped.
pub(crate) const MAX_RECEIVE_ANSWER_BYTES: usize = 16 << 20;

/// The cap of the answer to `request`, by the operation its
/// `X-Amz-Target` names (the JSON protocols' header; STS has none).
fn cap_of(request: &HttpRequest) -> usize {
    match request.headers().get("x-amz-target") {
        Some("secretsmanager.BatchGetSecretValue") => MAX_BATCH_ANSWER_BYTES,
        Some("AmazonSQS.ReceiveMessage") => MAX_RECEIVE_ANSWER_BYTES,
        _ => MAX_ANSWER_BYTES,
    }
}

/// An answer's body was larger than the agent reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the answer's body is larger than {limit} bytes")]
pub(crate) struct BodyTooLarge {
    /// The cap, in bytes.
    pub(crate) limit: usize,
}

/// `inner` with every answer body capped (see [`cap_of`]).
pub(crate) fn capped(inner: SharedHttpClient) -> SharedHttpClient {
    SharedHttpClient::new(CappedClient { inner })
}

/// The SDK's default HTTP client (hyper 1, rustls), as the SDK's clients
/// build it when none is given: proxies from the environment included.
pub(crate) fn default_client() -> Option<SharedHttpClient> {
    use aws_smithy_runtime_api::client::behavior_version::BehaviorVersion;
    use aws_smithy_runtime_api::client::runtime_components::RuntimeComponentsBuilder;
    use aws_smithy_runtime_api::client::runtime_plugin::RuntimePlugin;

    let plugin = aws_smithy_runtime::client::defaults::default_http_client_plugin_v2(
        BehaviorVersion::latest(),
    )?;
    plugin
        .runtime_components(&RuntimeComponentsBuilder::new("secret-agent"))
        .http_client()
}

#[derive(Debug)]
struct CappedClient {
    inner: SharedHttpClient,
}

impl HttpClient for CappedClient {
    fn http_connector(
        &self,
        settings: &HttpConnectorSettings,
        components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        SharedHttpConnector::new(CappedConnector {
            inner: self.inner.http_connector(settings, components),
        })
    }

    fn connector_metadata(
        &self,
    ) -> Option<aws_smithy_runtime_api::client::connector_metadata::ConnectorMetadata> {
        self.inner.connector_metadata()
    }
}

#[derive(Debug)]
struct CappedConnector {
    inner: SharedHttpConnector,
}

impl HttpConnector for CappedConnector {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let limit = cap_of(&request);
        let answer = self.inner.call(request);
        HttpConnectorFuture::new(async move {
            let response = answer.await?;
            Ok(response.map(|body| SdkBody::from_body_1_x(Capped::new(body, limit))))
        })
    }
}

pin_project_lite::pin_project! {
    /// A body that fails with [`BodyTooLarge`] once more than its cap has
    /// come, or at once when its length is known to be over it.
    struct Capped<B> {
        #[pin]
        inner: B,
        limit: usize,
        // Bytes it may still yield.
        left: usize,
        // It failed: nothing more is read.
        failed: bool,
    }
}

impl<B> Capped<B> {
    fn new(inner: B, limit: usize) -> Capped<B> {
        Capped {
            inner,
            limit,
            left: limit,
            failed: false,
        }
    }
}

impl<B> Body for Capped<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<aws_smithy_types::body::Error>,
{
    type Data = Bytes;
    type Error = aws_smithy_types::body::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.project();
        if *this.failed {
            return Poll::Ready(None);
        }
        let too_large = |failed: &mut bool, limit: usize| {
            *failed = true;
            Poll::Ready(Some(Err(BodyTooLarge { limit }.into())))
        };
        if this.inner.size_hint().lower() > *this.left as u64 {
            return too_large(this.failed, *this.limit);
        }
        match this.inner.poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    match this.left.checked_sub(data.len()) {
                        Some(left) => *this.left = left,
                        None => return too_large(this.failed, *this.limit),
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(err))) => Poll::Ready(Some(Err(err.into()))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.failed || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    /// A body of `chunks` chunks of `size` bytes, counting what is read.
    fn chunks(size: usize, count: usize) -> impl Body<Data = Bytes, Error = std::io::Error> {
        let frames = (0..count).map(move |_| Ok(Frame::data(Bytes::from(vec![b'x'; size]))));
        http_body_util::StreamBody::new(futures_util::stream::iter(frames))
    }

    fn is_too_large(err: &aws_smithy_types::body::Error, limit: usize) -> bool {
        err.downcast_ref::<BodyTooLarge>() == Some(&BodyTooLarge { limit })
    }

    #[tokio::test]
    async fn a_body_within_the_cap_is_read_whole() {
        let body = Capped::new(chunks(100, 10), 1000);
        let bytes = body.collect().await.unwrap().to_bytes();
        assert_eq!(bytes.len(), 1000);
    }

    #[tokio::test]
    async fn a_body_past_the_cap_fails_when_it_passes_it() {
        let mut body = Capped::new(chunks(100, usize::MAX), 1000);
        let mut read = 0;
        let err = loop {
            match body.frame().await.expect("the body fails before its end") {
                Ok(frame) => read += frame.into_data().unwrap().len(),
                Err(err) => break err,
            }
        };
        assert_eq!(read, 1000);
        assert!(is_too_large(&err, 1000), "{err}");
        assert!(
            body.frame().await.is_none(),
            "nothing is read after the failure"
        );
    }

    #[tokio::test]
    async fn a_known_length_over_the_cap_fails_before_reading() {
        let full = http_body_util::Full::new(Bytes::from(vec![0u8; 1001]));
        let err = Capped::new(full, 1000).collect().await.unwrap_err();
        assert!(is_too_large(&err, 1000), "{err}");
        let exact = http_body_util::Full::new(Bytes::from(vec![0u8; 1000]));
        assert_eq!(
            Capped::new(exact, 1000)
                .collect()
                .await
                .unwrap()
                .to_bytes()
                .len(),
            1000
        );
    }

    #[tokio::test]
    async fn the_sdk_body_carries_the_typed_error() {
        let body = SdkBody::from_body_1_x(Capped::new(chunks(4096, 1000), MAX_ANSWER_BYTES));
        let err = body.collect().await.unwrap_err();
        assert!(is_too_large(&err, MAX_ANSWER_BYTES), "{err}");
    }

    #[test]
    fn caps_follow_the_operation() {
        let request = |target: Option<&str>| {
            let mut request = HttpRequest::empty();
            if let Some(target) = target {
                request
                    .headers_mut()
                    .insert("x-amz-target", target.to_owned());
            }
            request
        };
        assert_eq!(cap_of(&request(None)), MAX_ANSWER_BYTES);
        assert_eq!(
            cap_of(&request(Some("secretsmanager.GetSecretValue"))),
            MAX_ANSWER_BYTES
        );
        assert_eq!(
            cap_of(&request(Some("secretsmanager.BatchGetSecretValue"))),
            MAX_BATCH_ANSWER_BYTES
        );
        assert_eq!(
            cap_of(&request(Some("AmazonSQS.ReceiveMessage"))),
            MAX_RECEIVE_ANSWER_BYTES
        );
    }

    #[test]
    fn the_default_client_is_there() {
        assert!(default_client().is_some());
    }
}
