//! Object URLs: `s3://bucket/key`, `gs://bucket/key`, `az://container/key`.

use std::fmt;

use crate::error::{Result, StorageError};

/// The object storage services Quiver speaks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scheme {
    /// Amazon S3 and S3-compatible servers (`s3://`).
    S3,
    /// Google Cloud Storage (`gs://`).
    Gcs,
    /// Azure Blob Storage (`az://`).
    Azure,
}

impl Scheme {
    fn prefix(self) -> &'static str {
        match self {
            Self::S3 => "s3://",
            Self::Gcs => "gs://",
            Self::Azure => "az://",
        }
    }
}

/// An object, or a prefix of objects, in a bucket.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectUrl {
    scheme: Scheme,
    bucket: String,
    key: String,
}

impl ObjectUrl {
    /// Parses `text` when it is an object URL; `Ok(None)` for anything else (a local path).
    pub fn parse(text: &str) -> Result<Option<Self>> {
        let Some((scheme, rest)) = [Scheme::S3, Scheme::Gcs, Scheme::Azure]
            .into_iter()
            .find_map(|s| text.strip_prefix(s.prefix()).map(|rest| (s, rest)))
        else {
            return Ok(None);
        };
        let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
        let valid_bucket = !bucket.is_empty()
            && bucket
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b));
        if !valid_bucket {
            return Err(StorageError::InvalidUrl {
                url: text.to_owned(),
                message: "expected <scheme>://<bucket>/<key> with a bucket name of letters, digits, '-', '.' and '_'".into(),
            });
        }
        if key.split('/').any(|part| part == "." || part == "..") {
            return Err(StorageError::InvalidUrl {
                url: text.to_owned(),
                message: "'.' and '..' are not allowed in an object key".into(),
            });
        }
        Ok(Some(Self {
            scheme,
            bucket: bucket.to_owned(),
            key: key.trim_start_matches('/').to_owned(),
        }))
    }

    /// Whether `text` names an object URL (a scheme Quiver knows).
    pub fn is_url(text: &str) -> bool {
        ["s3://", "gs://", "az://"]
            .iter()
            .any(|p| text.starts_with(p))
    }

    /// The service.
    pub fn scheme(&self) -> Scheme {
        self.scheme
    }

    /// The bucket (an Azure container).
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// The key within the bucket, without a leading `/` (may end in `/` for a prefix).
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The same bucket, another key.
    pub fn with_key(&self, key: impl Into<String>) -> Self {
        Self {
            scheme: self.scheme,
            bucket: self.bucket.clone(),
            key: key.into(),
        }
    }

    /// `name` under this URL taken as a folder (`a/b` + `c` = `a/b/c`).
    pub fn join(&self, name: &str) -> Self {
        let key = match self.key.trim_end_matches('/') {
            "" => name.to_owned(),
            folder => format!("{folder}/{name}"),
        };
        self.with_key(key)
    }

    /// The key as a prefix of objects "in" it (ending in `/`, or empty for the bucket).
    pub fn folder_prefix(&self) -> String {
        match self.key.trim_end_matches('/') {
            "" => String::new(),
            folder => format!("{folder}/"),
        }
    }

    /// The last component of the key.
    pub fn file_name(&self) -> &str {
        self.key
            .trim_end_matches('/')
            .rsplit('/')
            .next()
            .unwrap_or("")
    }

    pub(crate) fn store_key(&self) -> (Scheme, String) {
        (self.scheme, self.bucket.clone())
    }

    pub(crate) fn object_path(&self) -> object_store::path::Path {
        object_store::path::Path::from(self.key.trim_end_matches('/'))
    }
}

impl fmt::Display for ObjectUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}/{}", self.scheme.prefix(), self.bucket, self.key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_and_print_back() {
        let u = ObjectUrl::parse("s3://features/drivers/a.parquet")
            .unwrap()
            .unwrap();
        assert_eq!(u.scheme(), Scheme::S3);
        assert_eq!(u.bucket(), "features");
        assert_eq!(u.key(), "drivers/a.parquet");
        assert_eq!(u.file_name(), "a.parquet");
        assert_eq!(u.to_string(), "s3://features/drivers/a.parquet");
        let folder = ObjectUrl::parse("gs://b/drivers/").unwrap().unwrap();
        assert_eq!(folder.folder_prefix(), "drivers/");
        assert_eq!(folder.join("x.parquet").key(), "drivers/x.parquet");
        let bucket = ObjectUrl::parse("az://c").unwrap().unwrap();
        assert_eq!(bucket.folder_prefix(), "");
        assert_eq!(bucket.join("x").key(), "x");
    }

    #[test]
    fn local_paths_are_not_urls_and_bad_urls_are_refused() {
        assert!(ObjectUrl::parse("data/drivers").unwrap().is_none());
        assert!(ObjectUrl::parse("/abs/file.parquet").unwrap().is_none());
        for bad in ["s3://", "s3:///key", "s3://b/../x", "s3://b a/x"] {
            let e = ObjectUrl::parse(bad).unwrap_err().to_string();
            assert!(e.contains(bad), "{e}");
        }
    }
}
