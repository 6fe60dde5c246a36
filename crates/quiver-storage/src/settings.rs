//! `object_storage:` in `quiver.yaml`, and the clients made from it.

use std::sync::Arc;
use std::time::Duration;

use object_store::aws::AmazonS3Builder;
use object_store::azure::MicrosoftAzureBuilder;
use object_store::gcp::GoogleCloudStorageBuilder;
use object_store::{BackoffConfig, ClientOptions, ObjectStore, RetryConfig};
use quiver_core::Period;
use serde::{Deserialize, Serialize};

use crate::StaticCredentials;
use crate::url::{ObjectUrl, Scheme};

/// `object_storage:` settings (credentials are never among them: they come from the
/// environment and the standard chains).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageSettings {
    /// S3 and S3-compatible servers.
    #[serde(default)]
    pub s3: S3Settings,
    /// How long one request may take before it is retried (default 30s).
    #[serde(default)]
    pub timeout: Option<Period>,
    /// Retries of a transiently failed request, with exponential backoff (default 5).
    #[serde(default)]
    pub max_retries: Option<usize>,
    /// URL prefixes a client may ask `quiver serve` to write training sets under (the Flight
    /// command's `out`); none by default, so the server writes nowhere on a client's word.
    #[serde(default)]
    pub outputs: Vec<String>,
}

impl StorageSettings {
    /// Whether `url` is under one of [`StorageSettings::outputs`].
    pub fn is_output(&self, url: &str) -> bool {
        ObjectUrl::is_url(url)
            && self.outputs.iter().any(|prefix| {
                let folder = format!("{}/", prefix.trim_end_matches('/'));
                url.starts_with(&folder) && url.len() > folder.len()
            })
    }
}

/// `object_storage.s3`: where S3 is and how to address it (unset: AWS, from the
/// environment's `AWS_REGION` / `AWS_ENDPOINT_URL`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Settings {
    /// Endpoint of an S3-compatible server (`http://127.0.0.1:8333`); `http://` allows plain
    /// HTTP. Requests are then path-style unless `virtual_hosted_style` is set.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// The region (default: the environment's, else `us-east-1`).
    #[serde(default)]
    pub region: Option<String>,
    /// Address buckets as `bucket.endpoint` instead of `endpoint/bucket`.
    #[serde(default)]
    pub virtual_hosted_style: Option<bool>,
}

impl StorageSettings {
    fn timeout(&self) -> Duration {
        self.timeout.map_or(Duration::from_secs(30), |p| p.0)
    }

    fn retry(&self) -> RetryConfig {
        RetryConfig {
            backoff: BackoffConfig {
                init_backoff: Duration::from_millis(100),
                max_backoff: Duration::from_secs(5),
                base: 2.0,
            },
            max_retries: self.max_retries.unwrap_or(5),
            retry_timeout: self.timeout() * 4,
        }
    }

    fn client_options(&self, allow_http: bool) -> ClientOptions {
        ClientOptions::new()
            .with_timeout(self.timeout())
            .with_connect_timeout(Duration::from_secs(5).min(self.timeout()))
            .with_allow_http(allow_http)
    }
}

/// A client for the bucket of `url`.
pub(crate) fn build_client(
    settings: &StorageSettings,
    credentials: Option<&StaticCredentials>,
    url: &ObjectUrl,
) -> object_store::Result<Arc<dyn ObjectStore>> {
    Ok(match url.scheme() {
        Scheme::S3 => {
            let s3 = &settings.s3;
            let mut b = AmazonS3Builder::from_env().with_bucket_name(url.bucket());
            let mut allow_http = false;
            if let Some(endpoint) = &s3.endpoint {
                allow_http = endpoint.starts_with("http://");
                b = b
                    .with_endpoint(endpoint)
                    .with_virtual_hosted_style_request(s3.virtual_hosted_style.unwrap_or(false));
            }
            if let Some(region) = &s3.region {
                b = b.with_region(region);
            }
            if let Some(c) = credentials {
                b = b
                    .with_access_key_id(&c.key_id)
                    .with_secret_access_key(&c.secret_key);
            }
            Arc::new(
                b.with_client_options(settings.client_options(allow_http))
                    .with_retry(settings.retry())
                    .build()?,
            )
        }
        Scheme::Gcs => Arc::new(
            GoogleCloudStorageBuilder::from_env()
                .with_bucket_name(url.bucket())
                .with_client_options(settings.client_options(false))
                .with_retry(settings.retry())
                .build()?,
        ),
        Scheme::Azure => Arc::new(
            MicrosoftAzureBuilder::from_env()
                .with_container_name(url.bucket())
                .with_client_options(settings.client_options(false))
                .with_retry(settings.retry())
                .build()?,
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outputs_are_prefixes_taken_as_folders() {
        let settings = StorageSettings {
            outputs: vec!["s3://b/training".into()],
            ..StorageSettings::default()
        };
        assert!(settings.is_output("s3://b/training/x.parquet"));
        assert!(settings.is_output("s3://b/training/a/b.parquet"));
        for refused in [
            "s3://b/training",
            "s3://b/training2/x",
            "s3://c/training/x",
            "training/x",
        ] {
            assert!(!settings.is_output(refused), "{refused}");
        }
        assert!(!StorageSettings::default().is_output("s3://b/training/x"));
    }
}
