//! What an apply changes: added, changed and removed objects, with breaking changes flagged.

use std::collections::BTreeMap;

use quiver_core::{Definitions, FeatureService, FeatureView, ObjectKind};
use serde::{Deserialize, Serialize};

/// What happens to an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// The object is new.
    Added,
    /// The object exists and its definition differs.
    Changed,
    /// The object is no longer defined.
    Removed,
}

impl Action {
    /// `+`, `~` or `-`.
    pub fn symbol(self) -> char {
        match self {
            Self::Added => '+',
            Self::Changed => '~',
            Self::Removed => '-',
        }
    }
}

/// A change to one object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    /// Kind of the object.
    pub kind: ObjectKind,
    /// Its name.
    pub name: String,
    /// Added, changed or removed.
    pub action: Action,
    /// What changed, one line per field (`ttl: 1d -> 2d`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<String>,
    /// Why this change may break consumers (empty if it does not).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub breaking: Vec<String>,
}

/// The changes between two sets of definitions, in kind then name order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// Every change.
    pub changes: Vec<Change>,
}

impl Plan {
    /// The changes that turn `old` into `new`.
    pub fn between(old: &Definitions, new: &Definitions) -> Plan {
        let mut changes = Vec::new();
        diff_kind(
            ObjectKind::Entity,
            &old.entities,
            &new.entities,
            &mut changes,
            |o, n, c| {
                if o.join_keys != n.join_keys {
                    c.breaking.push(format!(
                        "join keys changed: {} -> {}",
                        keys_text(&o.join_keys),
                        keys_text(&n.join_keys)
                    ));
                }
            },
        );
        diff_kind(
            ObjectKind::Source,
            &old.sources,
            &new.sources,
            &mut changes,
            |_, _, _| {},
        );
        diff_kind(
            ObjectKind::FeatureView,
            &old.feature_views,
            &new.feature_views,
            &mut changes,
            view_breaking,
        );
        diff_kind(
            ObjectKind::FeatureService,
            &old.feature_services,
            &new.feature_services,
            &mut changes,
            |o: &FeatureService, n, c| {
                for r in o.features.iter().filter(|r| !n.features.contains(r)) {
                    c.breaking
                        .push(format!("feature '{r}' removed from the service"));
                }
            },
        );
        diff_kind(
            ObjectKind::Permission,
            &old.permissions,
            &new.permissions,
            &mut changes,
            |_, _, _| {},
        );
        // A view removed while an old service used it breaks that service's consumers.
        for change in &mut changes {
            if change.kind == ObjectKind::FeatureView && change.action == Action::Removed {
                for service in old.feature_services.values() {
                    if service.features.iter().any(|r| r.view == change.name) {
                        change
                            .breaking
                            .push(format!("used by feature service '{}'", service.name));
                    }
                }
            }
        }
        Plan { changes }
    }

    /// Whether nothing changes.
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }

    /// The changes flagged as breaking.
    pub fn breaking(&self) -> impl Iterator<Item = &Change> {
        self.changes.iter().filter(|c| !c.breaking.is_empty())
    }

    /// Counts of added, changed and removed objects.
    pub fn counts(&self) -> (usize, usize, usize) {
        let count = |a| self.changes.iter().filter(|c| c.action == a).count();
        (
            count(Action::Added),
            count(Action::Changed),
            count(Action::Removed),
        )
    }
}

fn keys_text(keys: &[quiver_core::JoinKey]) -> String {
    keys.iter()
        .map(|k| format!("{}: {}", k.name, k.key_type))
        .collect::<Vec<_>>()
        .join(", ")
}

fn view_breaking(o: &FeatureView, n: &FeatureView, c: &mut Change) {
    // Describe features one by one rather than as two long lists.
    c.details.retain(|d| !d.starts_with("features:"));
    for f in n.features.iter().filter(|f| o.feature(&f.name).is_none()) {
        c.details
            .push(format!("feature '{}' added ({})", f.name, f.value_type));
    }
    if o.entities != n.entities {
        c.breaking.push(format!(
            "key changed: entities [{}] -> [{}]",
            o.entities.join(", "),
            n.entities.join(", ")
        ));
    }
    for f in &o.features {
        match n.feature(&f.name) {
            None => c.breaking.push(format!("feature '{}' removed", f.name)),
            Some(nf) if nf.value_type != f.value_type => c.breaking.push(format!(
                "feature '{}' type changed: {} -> {}",
                f.name, f.value_type, nf.value_type
            )),
            Some(nf) if nf != f => c
                .details
                .push(format!("feature '{}' description changed", f.name)),
            Some(_) => {}
        }
    }
    if o.online && !n.online {
        c.breaking
            .push("no longer online: its online data will be deleted".into());
    }
}

fn diff_kind<T: Serialize + PartialEq>(
    kind: ObjectKind,
    old: &BTreeMap<String, T>,
    new: &BTreeMap<String, T>,
    changes: &mut Vec<Change>,
    breaking: impl Fn(&T, &T, &mut Change),
) {
    let change = |name: &str, action| Change {
        kind,
        name: name.to_owned(),
        action,
        details: Vec::new(),
        breaking: Vec::new(),
    };
    let mut names: Vec<&String> = old.keys().chain(new.keys()).collect();
    names.sort();
    names.dedup();
    for name in names {
        match (old.get(name), new.get(name)) {
            (None, Some(_)) => changes.push(change(name, Action::Added)),
            (Some(_), None) => changes.push(change(name, Action::Removed)),
            (Some(o), Some(n)) if o != n => {
                let mut c = change(name, Action::Changed);
                c.details = field_diff(o, n);
                breaking(o, n, &mut c);
                changes.push(c);
            }
            _ => {}
        }
    }
}

/// One line per top-level field that differs, rendered compactly as JSON.
fn field_diff<T: Serialize>(old: &T, new: &T) -> Vec<String> {
    let (serde_json::Value::Object(o), serde_json::Value::Object(n)) = (
        serde_json::to_value(old).unwrap_or_default(),
        serde_json::to_value(new).unwrap_or_default(),
    ) else {
        return Vec::new();
    };
    let mut keys: Vec<&String> = o.keys().chain(n.keys()).collect();
    keys.sort();
    keys.dedup();
    let show = |v: Option<&serde_json::Value>| match v {
        None => "(none)".to_owned(),
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(v) => v.to_string(),
    };
    keys.into_iter()
        .filter(|k| o.get(*k) != n.get(*k))
        .map(|k| format!("{k}: {} -> {}", show(o.get(k)), show(n.get(k))))
        .collect()
}
