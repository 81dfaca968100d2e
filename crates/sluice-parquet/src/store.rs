//! The object store a sink writes to, from its `url`: a local directory or an S3 bucket
//! (AWS, or any S3-compatible server by `endpoint`).

use std::sync::Arc;

use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::ObjectStore;
use sluice_core::{ConnectorError, ErrorClass};

use crate::config::{Location, ParquetSinkConfig};

/// The first of the environment variables that is set and not empty.
fn env(names: &[&str]) -> Option<String> {
    names.iter().find_map(|n| std::env::var(n).ok().filter(|v| !v.is_empty()))
}

/// The store and the prefix every file goes under.
pub fn open(cfg: &ParquetSinkConfig) -> Result<(Arc<dyn ObjectStore>, Path), ConnectorError> {
    let fatal = |m: String| ConnectorError::msg(ErrorClass::Fatal, m);
    match cfg.location().map_err(fatal)? {
        Location::Local(dir) => {
            std::fs::create_dir_all(&dir).map_err(|e| {
                fatal(format!("cannot create {dir}: {e}; check the url and the directory's permissions"))
            })?;
            let store = LocalFileSystem::new_with_prefix(&dir)
                .map_err(|e| fatal(format!("cannot open {dir}: {e}")))?
                .with_automatic_cleanup(true);
            Ok((Arc::new(store), Path::default()))
        }
        Location::S3 { bucket, prefix } => {
            let mut b = AmazonS3Builder::new().with_bucket_name(&bucket);
            let region = cfg.region.clone().or_else(|| env(&["AWS_REGION", "AWS_DEFAULT_REGION"]));
            b = b.with_region(region.unwrap_or_else(|| "us-east-1".into()));
            if let Some(endpoint) = cfg.endpoint.clone().or_else(|| env(&["AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"])) {
                // S3-compatible servers (MinIO, Ceph, moto) take the bucket in the path.
                b = b
                    .with_allow_http(endpoint.starts_with("http://"))
                    .with_virtual_hosted_style_request(false)
                    .with_endpoint(endpoint);
            }
            match (&cfg.access_key_id, &cfg.secret_access_key) {
                (Some(k), Some(s)) => {
                    b = b.with_access_key_id(k.expose()).with_secret_access_key(s.expose());
                    if let Some(t) = &cfg.session_token {
                        b = b.with_token(t.expose());
                    }
                }
                _ => {
                    if let (Some(k), Some(s)) = (env(&["AWS_ACCESS_KEY_ID"]), env(&["AWS_SECRET_ACCESS_KEY"])) {
                        b = b.with_access_key_id(k).with_secret_access_key(s);
                        if let Some(t) = env(&["AWS_SESSION_TOKEN"]) {
                            b = b.with_token(t);
                        }
                    }
                    // Otherwise the builder's own chain: web identity, ECS or instance metadata.
                }
            }
            let store = b
                .build()
                .map_err(|e| fatal(format!("the S3 store for s3://{bucket}: {e}; check url, endpoint and region")))?;
            Ok((Arc::new(store), Path::from(prefix)))
        }
    }
}
