//! A source's schema after `field_mapping`, and the check that a file has every column a view
//! reads.

use arrow::datatypes::{DataType, Field, FieldRef, Schema};
use quiver_core::{Feature, JoinKey, Source};

/// The files of a source and their common Arrow schema, with columns renamed by `field_mapping`.
#[derive(Debug, Clone)]
pub struct SourceSchema {
    /// The source's files, sorted (this order breaks remaining ties in joins).
    pub files: Vec<crate::SourceFile>,
    /// Columns after `field_mapping`.
    pub schema: Schema,
    /// The path as written in the definition, for messages.
    pub path: String,
}

impl SourceSchema {
    /// The column with this name (after mapping).
    pub fn column(&self, name: &str) -> Option<&FieldRef> {
        self.schema.fields().iter().find(|f| f.name() == name)
    }

    /// Column names, in file order.
    pub fn column_names(&self) -> Vec<&str> {
        self.schema
            .fields()
            .iter()
            .map(|f| f.name().as_str())
            .collect()
    }

    /// "'path' (N files)" for messages.
    pub fn describe_files(&self) -> String {
        match self.files.len() {
            1 => format!("'{}'", self.path),
            n => format!("'{}' ({n} files)", self.path),
        }
    }
}

/// `schema` of one file with its columns renamed by the source's `field_mapping`.
pub(crate) fn mapped_schema(source: &Source, schema: &Schema) -> Schema {
    Schema::new(
        schema
            .fields()
            .iter()
            .map(|f| {
                let name = source.field_mapping.get(f.name()).unwrap_or(f.name());
                Field::new(name, f.data_type().clone(), f.is_nullable())
            })
            .collect::<Vec<_>>(),
    )
}

/// Checks that a file of `source` (its unmapped Arrow `schema`) has every column a view reads:
/// the event time, the created time, the join `keys` and `features`, each of a type its
/// declaration accepts. The error names the column, its type and the type expected.
pub fn check_view_columns<'a>(
    schema: &Schema,
    source: &Source,
    keys: impl IntoIterator<Item = &'a JoinKey>,
    features: impl IntoIterator<Item = &'a Feature>,
) -> Result<(), String> {
    let expect = |name: &str, what: &str, ok: &dyn Fn(&DataType) -> bool, want: &str| {
        let column = source.column_for(name);
        match schema.field_with_name(column) {
            Err(_) => Err(format!("{what} column '{column}' is missing")),
            Ok(f) if !ok(f.data_type()) => Err(format!(
                "{what} column '{column}' has type {}, expected {want}",
                f.data_type()
            )),
            Ok(_) => Ok(()),
        }
    };
    let is_ts = |t: &DataType| matches!(t, DataType::Timestamp(_, _));
    expect(&source.timestamp_field, "timestamp", &is_ts, "a timestamp")?;
    if let Some(created) = &source.created_timestamp_column {
        expect(created, "created timestamp", &is_ts, "a timestamp")?;
    }
    for k in keys {
        let t = k.key_type.value_type();
        expect(&k.name, "join key", &|d| t.accepts(d), &t.to_string())?;
    }
    for f in features {
        let t = f.value_type;
        expect(&f.name, "feature", &|d| t.accepts(d), &t.to_string())?;
    }
    Ok(())
}
