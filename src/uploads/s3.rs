//! Uploads in an S3 bucket, as objects `uploads/ID`. Clients PUT to a
//! presigned URL and GET through a redirect to a presigned URL, so bytes
//! never pass through chorus. The client reads the standard `AWS_*`
//! variables (`AWS_ENDPOINT_URL` included); [`S3Overrides`] lets an embedder
//! or a test give them in code instead.

use std::fmt;
use std::time::{Duration, SystemTime};

use aws_config::BehaviorVersion;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::{Credentials, Region};
use aws_sdk_s3::presigning::PresigningConfig;

use super::{Checked, PutTarget, StoreError};
use crate::domain::{MAGIC_BYTES, MediaType, UploadId};

/// How long one S3 call may take before the caller hears `unavailable`.
const OPERATION_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a redirect's presigned GET works: long enough to follow it,
/// short enough that a leaked URL soon stops working.
const GET_WINDOW: Duration = Duration::from_secs(5 * 60);
/// The region when none is configured: S3-compatible servers (MinIO,
/// moto) accept any, and signing needs one.
const DEFAULT_REGION: &str = "us-east-1";

/// S3 client settings given in code rather than by `AWS_*` variables
/// (tests run many nodes in one process, each against its own endpoint).
#[derive(Clone, Default)]
pub struct S3Overrides {
    /// The endpoint, like `AWS_ENDPOINT_URL`.
    pub endpoint: Option<String>,
    /// The region, like `AWS_REGION`.
    pub region: Option<String>,
    /// Access key id and secret, like `AWS_ACCESS_KEY_ID` and
    /// `AWS_SECRET_ACCESS_KEY`.
    pub credentials: Option<(String, String)>,
}

impl fmt::Debug for S3Overrides {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Overrides")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("credentials", &self.credentials.as_ref().map(|_| "…"))
            .finish()
    }
}

/// An upload bucket.
pub struct S3Uploads {
    client: Client,
    bucket: String,
}

fn store_error(error: impl std::error::Error + Send + Sync + 'static) -> StoreError {
    StoreError(Box::new(error))
}

fn key(id: &UploadId) -> String {
    format!("uploads/{id}")
}

impl S3Uploads {
    /// A client for `bucket`, checked once: a missing or forbidden bucket
    /// stops start-up instead of failing every upload later.
    pub async fn connect(bucket: &str, overrides: &S3Overrides) -> anyhow::Result<Self> {
        let mut loader = aws_config::defaults(BehaviorVersion::latest()).timeout_config(
            TimeoutConfig::builder()
                .operation_timeout(OPERATION_TIMEOUT)
                .build(),
        );
        if let Some(endpoint) = &overrides.endpoint {
            loader = loader.endpoint_url(endpoint);
        }
        if let Some(region) = &overrides.region {
            loader = loader.region(Region::new(region.clone()));
        }
        if let Some((id, secret)) = &overrides.credentials {
            loader =
                loader.credentials_provider(Credentials::new(id, secret, None, None, "chorus"));
        }
        let sdk = loader.load().await;
        let mut config = aws_sdk_s3::config::Builder::from(&sdk);
        if sdk.region().is_none() {
            config = config.region(Region::new(DEFAULT_REGION));
        }
        // A local S3 (moto, MinIO on 127.0.0.1:PORT) cannot serve
        // `bucket.127.0.0.1`: with an endpoint set, the bucket goes in the path.
        if sdk.endpoint_url().is_some() || std::env::var_os("AWS_ENDPOINT_URL_S3").is_some() {
            config = config.force_path_style(true);
        }
        let client = Client::from_conf(config.build());
        client
            .head_bucket()
            .bucket(bucket)
            .send()
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "bucket {bucket:?}: {}",
                    aws_sdk_s3::error::DisplayErrorContext(e)
                )
            })?;
        Ok(Self {
            client,
            bucket: bucket.to_owned(),
        })
    }

    /// A presigned PUT of exactly `size` bytes of `media_type`.
    pub(super) async fn target(
        &self,
        id: &UploadId,
        media_type: &MediaType,
        size: u64,
    ) -> Result<PutTarget, StoreError> {
        let presigned = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(key(id))
            .content_type(media_type.as_str())
            .content_length(i64::try_from(size).unwrap_or(i64::MAX))
            .presigned(PresigningConfig::expires_in(super::PUT_WINDOW).map_err(store_error)?)
            .await
            .map_err(store_error)?;
        let headers = presigned
            .headers()
            // A browser sets these itself and refuses to be told.
            .filter(|(name, _)| {
                !name.eq_ignore_ascii_case("content-length") && !name.eq_ignore_ascii_case("host")
            })
            .map(|(name, value)| (name.to_ascii_lowercase(), value.to_owned()))
            .collect();
        Ok(PutTarget {
            url: presigned.uri().to_owned(),
            headers,
            expires_at: SystemTime::now() + super::PUT_WINDOW,
        })
    }

    /// Whether the object is there with the announced size and type, and
    /// if so whether its first bytes allow showing it inline.
    pub(super) async fn check(
        &self,
        id: &UploadId,
        media_type: &MediaType,
        size: u64,
    ) -> Result<Checked, StoreError> {
        let head = match self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(key(id))
            .send()
            .await
        {
            Ok(head) => head,
            Err(error) => {
                return match error.into_service_error() {
                    e if e.is_not_found() => Ok(Checked::Missing),
                    e => Err(store_error(e)),
                };
            }
        };
        let stored_type = head.content_type().and_then(|t| MediaType::parse(t).ok());
        let size_ok = head.content_length().and_then(|n| u64::try_from(n).ok()) == Some(size);
        if !size_ok || stored_type.as_ref() != Some(media_type) {
            return Ok(Checked::Mismatch);
        }
        let object = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key(id))
            .range(format!("bytes=0-{}", MAGIC_BYTES - 1))
            .send()
            .await
            .map_err(store_error)?;
        let head = object
            .body
            .collect()
            .await
            .map_err(store_error)?
            .into_bytes();
        Ok(Checked::Matches {
            inline: media_type.inline(&head),
        })
    }

    /// Deletes the object; a failure leaves it to the bucket's lifecycle
    /// rule.
    pub(super) async fn delete(&self, id: &UploadId) {
        if let Err(error) = self
            .client
            .delete_object()
            .bucket(&self.bucket)
            .key(key(id))
            .send()
            .await
        {
            tracing::warn!(error = %aws_sdk_s3::error::DisplayErrorContext(error), "could not delete an upload's object");
        }
    }

    /// A short-lived URL that serves the object with these headers.
    pub(super) async fn presigned_get(
        &self,
        id: &UploadId,
        content_type: &str,
        disposition: &str,
    ) -> Result<String, StoreError> {
        let presigned = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key(id))
            .response_content_type(content_type)
            .response_content_disposition(disposition)
            .presigned(PresigningConfig::expires_in(GET_WINDOW).map_err(store_error)?)
            .await
            .map_err(store_error)?;
        Ok(presigned.uri().to_owned())
    }
}
