//! Key layout in Redis.
//!
//! ```text
//! q:<project>:<view>:<generation>:{<bucket>}<entity key>   one row (a string: the encoded row)
//! {q:<project>}:ranges                                     set of "<view>:<generation>" with rows
//! {q:<project>}:watermarks                                 hash "<view>:<generation>" -> ns
//! {q:<project>}:run-views                                  set of views with run records
//! {q:<project>}:runs:<view>                                hash run id (20 digits) -> JSON
//! {q-lease}:<name>                                         a lease: its holder, expiring
//! ```
//!
//! A row key's hash tag is its *bucket*, a stable hash of the entity key alone (1,024 of
//! them): every view's row of one entity lands in the same slot, so a read of many views
//! asks few slots, and a materialization batch groups into one script call per bucket
//! rather than one per row. Project and view names are identifiers (letters, digits, `_`,
//! `-`), so the prefix of a generation's rows is unambiguous and matches no other key. A
//! project's metadata shares one slot, so its scripts touch one node.

use quiver_online::ViewId;

/// Buckets per view (hash tags of row keys).
pub(crate) const BUCKETS: u32 = 1024;

/// The bucket of an entity key: FNV-1a, stable across processes and releases.
pub(crate) fn bucket(entity_key: &[u8]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in entity_key {
        h ^= u32::from(*b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h % BUCKETS
}

/// `q:<project>:<view>:<generation>:`, the prefix of a view generation's row keys.
pub(crate) fn range_prefix(view: &ViewId) -> String {
    format!(
        "q:{}:{}:{}:",
        view.project(),
        view.view(),
        view.generation()
    )
}

/// The key of one row.
pub(crate) fn row_key(prefix: &str, bucket: u32, entity_key: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(prefix.len() + 5 + entity_key.len());
    key.extend_from_slice(prefix.as_bytes());
    key.extend_from_slice(format!("{{{bucket:03x}}}").as_bytes());
    key.extend_from_slice(entity_key);
    key
}

/// A `SCAN MATCH` pattern for every row key of a view generation.
pub(crate) fn range_pattern(view: &ViewId) -> String {
    format!("{}{{*", range_prefix(view))
}

/// `<view>:<generation>`: a view generation inside its project's metadata.
pub(crate) fn range_member(view: &ViewId) -> String {
    format!("{}:{}", view.view(), view.generation())
}

/// The view generation named by a [`range_member`] of `project`.
pub(crate) fn parse_range_member(project: &str, member: &str) -> Option<ViewId> {
    let (view, generation) = member.rsplit_once(':')?;
    Some(ViewId::new(project, view, generation.parse().ok()?))
}

/// Metadata keys of one project (one hash slot).
pub(crate) struct Meta {
    tag: String,
}

impl Meta {
    pub(crate) fn of(project: &str) -> Self {
        Self {
            tag: format!("{{q:{project}}}"),
        }
    }

    pub(crate) fn ranges(&self) -> String {
        format!("{}:ranges", self.tag)
    }

    pub(crate) fn watermarks(&self) -> String {
        format!("{}:watermarks", self.tag)
    }

    pub(crate) fn run_views(&self) -> String {
        format!("{}:run-views", self.tag)
    }

    pub(crate) fn runs(&self, view: &str) -> String {
        format!("{}:runs:{view}", self.tag)
    }
}

/// The key of a lease.
pub(crate) fn lease(name: &str) -> String {
    format!("{{q-lease}}:{name}")
}

/// A run id as a hash field that sorts like the number.
pub(crate) fn run_field(id: u64) -> String {
    format!("{id:020}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_name_their_range_and_bucket() {
        let v = ViewId::new("proj", "trips", 7);
        let prefix = range_prefix(&v);
        assert_eq!(prefix, "q:proj:trips:7:");
        let key = row_key(&prefix, 0x2a, b"\x01k");
        assert_eq!(key, b"q:proj:trips:7:{02a}\x01k");
        assert_eq!(range_pattern(&v), "q:proj:trips:7:{*");
        assert!(
            !range_pattern(&ViewId::new("proj", "trips", 70)).starts_with(&prefix),
            "generation 7's pattern is not a prefix of generation 70's"
        );
        assert_eq!(parse_range_member("proj", &range_member(&v)), Some(v));
        assert_eq!(parse_range_member("proj", "nogeneration"), None);
    }

    #[test]
    fn buckets_spread_and_are_stable() {
        assert_eq!(bucket(b""), 0x811c_9dc5 % BUCKETS);
        let mut seen = std::collections::HashSet::new();
        for i in 0u64..10_000 {
            seen.insert(bucket(&i.to_be_bytes()));
        }
        assert!(seen.len() > 1000, "{} buckets used", seen.len());
        assert!(run_field(5) < run_field(40));
    }
}
