//! Terminal output: aligned tables, indented object trees, and plans.

use std::fmt::Write;

use quiver_registry::Plan;
use serde_json::Value;

/// Renders rows under a header as left-aligned columns separated by two spaces.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header: Vec<String> = header.iter().map(|h| (*h).to_owned()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for (i, (cell, w)) in row.iter().zip(&widths).enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                let _ = write!(line, "{cell:<w$}  ");
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Renders a JSON value as indented `key: value` lines, lists as `- item`.
pub fn tree(value: &Value) -> String {
    let mut out = String::new();
    render(value, 0, &mut out);
    out
}

fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Null => Some("-".into()),
        Value::Bool(_) | Value::Number(_) => Some(v.to_string()),
        Value::Array(a) if a.is_empty() => Some("[]".into()),
        Value::Array(a) if a.iter().all(|x| matches!(x, Value::String(_))) => Some(
            a.iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(", "),
        ),
        Value::Object(o) if o.is_empty() => Some("{}".into()),
        _ => None,
    }
}

fn render(value: &Value, indent: usize, out: &mut String) {
    let pad = " ".repeat(indent);
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                match scalar(v) {
                    Some(s) => {
                        let _ = writeln!(out, "{pad}{k}: {s}");
                    }
                    None => {
                        let _ = writeln!(out, "{pad}{k}:");
                        render(v, indent + 2, out);
                    }
                }
            }
        }
        Value::Array(items) => {
            for item in items {
                match scalar(item) {
                    Some(s) => {
                        let _ = writeln!(out, "{pad}- {s}");
                    }
                    None => {
                        // Put the first field on the dash line, like YAML.
                        let mut nested = String::new();
                        render(item, indent + 2, &mut nested);
                        let _ = write!(out, "{pad}- {}", nested.trim_start());
                    }
                }
            }
        }
        other => {
            let _ = writeln!(out, "{pad}{}", scalar(other).unwrap_or_default());
        }
    }
}

/// Renders a plan: one line per change, details and breaking flags indented under it.
pub fn plan(plan: &Plan) -> String {
    let mut out = String::new();
    if plan.is_empty() {
        out.push_str("No changes.\n");
        return out;
    }
    let width = plan
        .changes
        .iter()
        .map(|c| c.kind.label().len())
        .max()
        .unwrap_or(0);
    for c in &plan.changes {
        let _ = writeln!(
            out,
            "  {} {:<width$}  {}",
            c.action.symbol(),
            c.kind.label(),
            c.name
        );
        for d in &c.details {
            let _ = writeln!(out, "        {d}");
        }
        for b in &c.breaking {
            let _ = writeln!(out, "        ! BREAKING: {b}");
        }
    }
    let (added, changed, removed) = plan.counts();
    let _ = writeln!(
        out,
        "{added} to add, {changed} to change, {removed} to remove{}.",
        match plan.breaking().count() {
            0 => String::new(),
            n => format!(" ({n} breaking)"),
        }
    );
    out
}

/// A progress bar with `template`, hidden for `--json` (indicatif also hides it off a
/// terminal).
pub fn progress_bar(as_json: bool, template: &str) -> indicatif::ProgressBar {
    let bar = if as_json {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::new(0)
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template(template)
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar
}

/// Prints a skew report: a table per feature (or JSON), then the differing rows it kept.
pub fn skew(report: &quiver_ops::skew::SkewReport, as_json: bool) -> anyhow::Result<()> {
    if as_json {
        let features: Vec<Value> = report
            .features
            .iter()
            .map(|f| {
                let mut v = serde_json::to_value(f).unwrap_or_default();
                v["match_rate"] = serde_json::json!(f.match_rate());
                v
            })
            .collect();
        return crate::print_json(&serde_json::json!({
            "service": report.service,
            "files": report.files,
            "rows": report.rows,
            "features": features,
        }));
    }
    println!(
        "Feature service '{}': {} logged rows in {} files.",
        report.service, report.rows, report.files
    );
    let rows: Vec<Vec<String>> = report
        .features
        .iter()
        .map(|f| {
            vec![
                f.feature.clone(),
                format!("{:.4}", f.match_rate()),
                f.served_missing.to_string(),
                f.offline_missing.to_string(),
                f.different.to_string(),
                f.difference_quantiles.map_or_else(
                    || "-".into(),
                    |q| format!("{:.4} / {:.4} / {:.4}", q[0], q[2], q[3]),
                ),
            ]
        })
        .collect();
    print!(
        "{}",
        table(
            &[
                "FEATURE",
                "MATCH",
                "SERVED MISSING",
                "OFFLINE MISSING",
                "DIFFERENT",
                "|DIFF| P50 / P99 / MAX"
            ],
            &rows
        )
    );
    for f in report.features.iter().filter(|f| !f.examples.is_empty()) {
        for (key, served, offline) in &f.examples {
            println!(
                "  {}: key {key}: served {served}, training {offline}",
                f.feature
            );
        }
    }
    Ok(())
}

/// A number in a table: up to four decimals, trailing zeros dropped.
fn number(x: f64) -> String {
    if x != 0.0 && (x.abs() >= 1e7 || x.abs() < 1e-4) {
        format!("{x:.3e}")
    } else {
        let s = format!("{x:.4}");
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    }
}

/// Prints a view's profile: a line per feature (or the whole summary as JSON).
pub fn profile(p: &quiver_ops::profile::ViewProfile, as_json: bool) -> anyhow::Result<()> {
    let summaries: Vec<quiver_stats::FeatureSummary> = p
        .profile
        .features
        .iter()
        .map(quiver_stats::FeatureProfile::summary)
        .collect();
    if as_json {
        return crate::print_json(&serde_json::json!({
            "view": p.view,
            "data": p.data,
            "window": p.window,
            "files": p.files,
            "rows": p.profile.rows,
            "computed_at": p.computed_at,
            "stored": p.stored,
            "features": summaries,
        }));
    }
    let window = p
        .window
        .as_ref()
        .map_or_else(String::new, |[s, e]| format!(" [{s}, {e})"));
    println!(
        "Feature view '{}', {}{window}: {} rows in {} files{}.",
        p.view,
        p.data,
        p.profile.rows,
        p.files,
        if p.stored { " (stored profile)" } else { "" }
    );
    let rows: Vec<Vec<String>> = summaries
        .iter()
        .map(|s| {
            let numeric = |f: fn(&quiver_stats::NumericSummary) -> f64| {
                s.numeric
                    .as_ref()
                    .map_or_else(|| "-".into(), |n| number(f(n)))
            };
            let median = s
                .numeric
                .as_ref()
                .and_then(|n| n.quantiles.iter().find(|(q, _)| *q == 0.5))
                .map_or_else(|| "-".into(), |(_, v)| number(*v));
            let top = s
                .top
                .iter()
                .take(3)
                .map(|(v, c)| format!("{v} ({c})"))
                .collect::<Vec<_>>()
                .join(", ");
            vec![
                s.name.clone(),
                s.value_type.to_string(),
                s.rows.to_string(),
                format!("{:.2}%", 100.0 * s.null_rate),
                numeric(|n| n.min),
                median,
                numeric(|n| n.max),
                numeric(|n| n.mean),
                numeric(|n| n.stddev),
                s.distinct.map_or_else(|| "-".into(), |d| format!("~{d}")),
                if top.is_empty() { "-".into() } else { top },
            ]
        })
        .collect();
    print!(
        "{}",
        table(
            &[
                "FEATURE", "TYPE", "ROWS", "MISSING", "MIN", "P50", "MAX", "MEAN", "STDDEV",
                "DISTINCT", "TOP"
            ],
            &rows
        )
    );
    Ok(())
}

/// Prints a drift report: a line per feature, drifted first (or JSON).
pub fn drift(report: &quiver_stats::DriftReport, as_json: bool) -> anyhow::Result<()> {
    if as_json {
        return crate::print_json(&serde_json::to_value(report)?);
    }
    println!(
        "Feature view '{}': {} against reference {}.",
        report.view, report.current, report.reference
    );
    let rows: Vec<Vec<String>> = report
        .features
        .iter()
        .map(|f| {
            vec![
                f.feature.clone(),
                f.verdict.name().to_owned(),
                format!("{} / {}", f.rows[0], f.rows[1]),
                format!(
                    "{:.2}% / {:.2}%",
                    100.0 * f.null_rates[0],
                    100.0 * f.null_rates[1]
                ),
                f.scores_text(),
            ]
        })
        .collect();
    print!(
        "{}",
        table(
            &[
                "FEATURE",
                "VERDICT",
                "ROWS (REF / CUR)",
                "MISSING (REF / CUR)",
                "SCORES"
            ],
            &rows
        )
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns_columns() {
        let t = table(
            &["NAME", "TTL"],
            &[
                vec!["a".into(), "1d".into()],
                vec!["longer_name".into(), "0".into()],
            ],
        );
        assert_eq!(t, "NAME         TTL\na            1d\nlonger_name  0\n");
    }

    #[test]
    fn tree_nests_objects_and_lists() {
        let v = serde_json::json!({"name": "v", "features": [{"name": "x", "type": "int64"}], "entities": ["a", "b"]});
        assert_eq!(
            tree(&v),
            "name: v\nfeatures:\n  - name: x\n    type: int64\nentities: a, b\n"
        );
    }
}
