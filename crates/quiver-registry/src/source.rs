//! Finding a source's Parquet files and reading their schema (after `field_mapping`).

use std::fs::File;
use std::path::{Path, PathBuf};

use arrow::datatypes::{DataType, Field, FieldRef, Schema};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use quiver_core::{Feature, JoinKey, Source};

use crate::error::{RegistryError, Result};

/// The files of a source and their common Arrow schema, with columns renamed by `field_mapping`.
#[derive(Debug, Clone)]
pub struct SourceSchema {
    /// The source's files, sorted (this order breaks remaining ties in joins).
    pub files: Vec<PathBuf>,
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

/// Resolves a source path (file, folder of `*.parquet` files, or glob) under `data_root`.
pub fn source_files(data_root: &Path, path: &str) -> Result<Vec<PathBuf>> {
    let full = data_root.join(path);
    let not_found = |what: &str| RegistryError::Source {
        path: full.clone(),
        message: what.to_owned(),
    };
    let mut files = if path.contains(['*', '?', '[']) {
        let pattern = full.to_string_lossy().into_owned();
        glob::glob(&pattern)
            .map_err(|e| not_found(&format!("invalid glob: {e}")))?
            .filter_map(std::result::Result::ok)
            .filter(|p| p.is_file())
            .collect()
    } else if full.is_dir() {
        let mut out = Vec::new();
        collect_parquet_files(&full, &mut out)?;
        out
    } else if full.is_file() {
        vec![full.clone()]
    } else {
        return Err(not_found("source path not found"));
    };
    if files.is_empty() {
        return Err(not_found("no Parquet files match this source path"));
    }
    files.sort();
    Ok(files)
}

fn collect_parquet_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for entry in std::fs::read_dir(dir).map_err(RegistryError::io(dir))? {
        let path = entry.map_err(RegistryError::io(dir))?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.starts_with('.') || name.starts_with('_') {
            continue;
        }
        if path.is_dir() {
            collect_parquet_files(&path, out)?;
        } else if name.ends_with(".parquet") {
            out.push(path);
        }
    }
    Ok(())
}

/// Reads the Arrow schema of one Parquet file from its footer.
pub fn parquet_schema(path: &Path) -> Result<Schema> {
    let file = File::open(path).map_err(RegistryError::io(path))?;
    let builder =
        ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| RegistryError::Source {
            path: path.to_path_buf(),
            message: format!("not a readable Parquet file: {e}"),
        })?;
    Ok(builder.schema().as_ref().clone())
}

/// Finds a source's files, reads their schemas, checks they agree, and applies `field_mapping`.
pub fn read_source_schema(data_root: &Path, source: &Source) -> Result<SourceSchema> {
    let files = source_files(data_root, &source.path)?;
    let first = parquet_schema(&files[0])?;
    for file in &files[1..] {
        let other = parquet_schema(file)?;
        for field in first.fields() {
            match other.field_with_name(field.name()) {
                Ok(f) if f.data_type() == field.data_type() => {}
                Ok(f) => {
                    return Err(RegistryError::Source {
                        path: file.clone(),
                        message: format!(
                            "column '{}' is {} here but {} in '{}'",
                            field.name(),
                            f.data_type(),
                            field.data_type(),
                            files[0].display()
                        ),
                    });
                }
                Err(_) => {
                    return Err(RegistryError::Source {
                        path: file.clone(),
                        message: format!(
                            "column '{}' of '{}' is missing here",
                            field.name(),
                            files[0].display()
                        ),
                    });
                }
            }
        }
    }
    let mut mapped = Vec::with_capacity(first.fields().len());
    for field in first.fields() {
        let name = source
            .field_mapping
            .get(field.name())
            .unwrap_or(field.name());
        mapped.push(Field::new(
            name,
            field.data_type().clone(),
            field.is_nullable(),
        ));
    }
    for from in source.field_mapping.keys() {
        if first.field_with_name(from).is_err() {
            return Err(RegistryError::Source {
                path: files[0].clone(),
                message: format!(
                    "field_mapping names column '{from}', which this file does not have"
                ),
            });
        }
    }
    Ok(SourceSchema {
        files,
        schema: Schema::new(mapped),
        path: source.path.clone(),
    })
}

/// Opens a reader of the named `columns` of one row group of a source file whose footer was
/// already decoded, decoding only `rows` (ascending offsets in the row group of
/// `row_group_rows` rows) when given. Errors are the parquet crate's message.
pub fn row_group_reader(
    path: &Path,
    footer: &parquet::arrow::arrow_reader::ArrowReaderMetadata,
    columns: &[&str],
    row_group: usize,
    row_group_rows: u64,
    rows: Option<&mut dyn Iterator<Item = usize>>,
    batch_rows: usize,
) -> std::result::Result<parquet::arrow::arrow_reader::ParquetRecordBatchReader, String> {
    use parquet::arrow::ProjectionMask;
    use parquet::arrow::arrow_reader::RowSelection;
    let file = File::open(path).map_err(|e| e.to_string())?;
    let builder = ParquetRecordBatchReaderBuilder::new_with_metadata(file, footer.clone());
    let indices: Vec<usize> = builder
        .schema()
        .fields()
        .iter()
        .enumerate()
        .filter(|(_, f)| columns.contains(&f.name().as_str()))
        .map(|(i, _)| i)
        .collect();
    let mask = ProjectionMask::roots(builder.parquet_schema(), indices);
    let builder = match rows {
        Some(rows) => builder.with_row_selection(RowSelection::from_consecutive_ranges(
            rows.map(|r| r..r + 1),
            usize::try_from(row_group_rows).unwrap_or(usize::MAX),
        )),
        None => builder,
    };
    builder
        .with_projection(mask)
        .with_row_groups(vec![row_group])
        .with_batch_size(batch_rows)
        .build()
        .map_err(|e| e.to_string())
}

/// Checks that a file of `source` (its unmapped Arrow `schema`) has every column a view reads:
/// the event time, the created time, the join `keys` and `features`, each of a type its
/// declaration accepts. The error names the column, its type and the type expected.
pub fn check_view_columns<'a>(
    schema: &Schema,
    source: &Source,
    keys: impl IntoIterator<Item = &'a JoinKey>,
    features: impl IntoIterator<Item = &'a Feature>,
) -> std::result::Result<(), String> {
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
