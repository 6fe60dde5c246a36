//! The newest version of every key of a scan: what materialization and Feast's
//! `pull_latest_from_table_or_query` keep of a window.

use std::collections::HashMap;

use arrow::array::ArrayRef;
use quiver_core::KeyColumns;

use crate::scan::{ROW_BITS, Task};

/// Orders two versions of a key for newest-wins: event time, then created time, then
/// sequence (file, then row: [`Task::sequence`]), exactly the point-in-time join's order.
pub type RowVersion = (i64, i64, u64);

/// The newest version of every key of a window, by canonical key bytes (about 100 bytes per
/// key; foldhash: SipHash dominated this pass).
pub type NewestVersions = HashMap<Vec<u8>, RowVersion, foldhash::fast::RandomState>;

/// Newest rows per key computed away from a scan (on a Spark cluster), for materialization
/// to write: keys, versions and features in a view's declared types.
#[derive(Debug)]
pub struct VersionedRows {
    /// Canonical keys, none null.
    pub keys: KeyColumns,
    /// Each row's version.
    pub versions: Vec<RowVersion>,
    /// The view's feature columns, in its order and declared types.
    pub features: Vec<ArrayRef>,
}

/// Keeps `version` for `key` if it is newer than the one held.
pub fn merge_version(map: &mut NewestVersions, key: &[u8], version: RowVersion) {
    match map.get_mut(key) {
        Some(v) if *v < version => *v = version,
        Some(_) => {}
        None => {
            map.insert(key.to_vec(), version);
        }
    }
}

/// For each task, the offsets in its row group of the rows that are some key's newest,
/// ascending (what [`crate::SourceScan::reader`] takes).
pub fn winners_by_task(tasks: &[Task], newest: &NewestVersions) -> Vec<Vec<u32>> {
    let mut by_file: HashMap<usize, Vec<u64>> = HashMap::new();
    for (_, _, seq) in newest.values() {
        by_file
            .entry(usize::try_from(seq >> ROW_BITS).unwrap_or(usize::MAX))
            .or_default()
            .push(seq & ((1 << ROW_BITS) - 1));
    }
    for rows in by_file.values_mut() {
        rows.sort_unstable();
    }
    tasks
        .iter()
        .map(|t| {
            let rows = by_file.get(&t.file).map_or(&[][..], Vec::as_slice);
            let from = rows.partition_point(|&r| r < t.first_row);
            let to = rows.partition_point(|&r| r < t.first_row + t.rows);
            rows[from..to]
                .iter()
                .map(|r| u32::try_from(r - t.first_row).unwrap_or(u32::MAX))
                .collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_version_of_each_key_is_kept_and_found_in_its_row_group() {
        let mut newest = NewestVersions::default();
        let task = |file: usize, first_row: u64| Task {
            file,
            row_group: 0,
            first_row,
            rows: 10,
        };
        let tasks = [task(0, 0), task(0, 10), task(1, 0)];
        merge_version(&mut newest, b"a", (5, 0, tasks[0].sequence(3)));
        merge_version(&mut newest, b"a", (5, 0, tasks[1].sequence(2)));
        merge_version(&mut newest, b"a", (4, 9, tasks[2].sequence(0)));
        merge_version(&mut newest, b"b", (1, 0, tasks[2].sequence(7)));
        assert_eq!(newest[&b"a"[..]], (5, 0, tasks[1].sequence(2)));
        assert_eq!(
            winners_by_task(&tasks, &newest),
            vec![vec![], vec![2], vec![7]]
        );
    }
}
