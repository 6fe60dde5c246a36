//! The drift report as one self-contained HTML page: no scripts, no links, every chart an
//! inline SVG, so it can be mailed, attached to a CI run, or opened from disk.

use std::fmt::Write;

use quiver_ops::profile::ViewProfile;
use quiver_stats::{Chart, DriftReport, Verdict};

/// Chart size, px.
const WIDTH: f64 = 640.0;
const HEIGHT: f64 = 180.0;

/// Escapes text for HTML.
fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The page: a summary table, then per feature (drifted, then without data, then stable) its
/// verdict, scores against thresholds, and the two distributions overlaid.
pub fn html(report: &DriftReport, profiles: &[ViewProfile; 2]) -> String {
    let mut out = String::new();
    let title = format!("Drift of feature view '{}'", report.view);
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title>\n<style>\
body{{font-family:system-ui,sans-serif;margin:2em;color:#222}}table{{border-collapse:collapse}}\
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:left}}.drifted{{color:#b00020;font-weight:bold}}\
.no_data{{color:#a66a00;font-weight:bold}}.stable{{color:#1b7a2f}}section{{margin:2em 0}}\
.ref{{fill:#1f77b4;opacity:.55}}.cur{{fill:#ff7f0e;opacity:.55}}</style></head><body>\n<h1>{}</h1>\n",
        esc(&title),
        esc(&title)
    );
    for (label, p) in [("Reference", &profiles[0]), ("Current", &profiles[1])] {
        let window = p
            .window
            .as_ref()
            .map_or_else(String::new, |[s, e]| format!(" [{s}, {e})"));
        let _ = writeln!(
            out,
            "<p><b>{label}</b>: {}{} — {} rows, {} files</p>",
            esc(&p.data),
            esc(&window),
            p.profile.rows,
            p.files
        );
    }
    let drifted = report
        .features
        .iter()
        .filter(|f| f.verdict == Verdict::Drifted)
        .count();
    let _ = writeln!(
        out,
        "<p>{drifted} of {} features drifted.</p>\n<table><tr><th>feature</th><th>verdict</th>\
<th>scores</th></tr>",
        report.features.len()
    );
    for f in &report.features {
        let _ = writeln!(
            out,
            "<tr><td><a href=\"#{0}\">{0}</a></td><td class=\"{1}\">{1}</td><td>{2}</td></tr>",
            esc(&f.feature),
            f.verdict.name(),
            esc(&f.scores_text())
        );
    }
    out.push_str("</table>\n");
    for f in &report.features {
        let _ = writeln!(
            out,
            "<section id=\"{0}\"><h2>{0} <small>({1})</small> — <span class=\"{2}\">{2}</span></h2>\n\
<p>rows {3} / {4}; missing {5:.2}% / {6:.2}% (reference / current)</p>\n<p>{7}</p>",
            esc(&f.feature),
            f.value_type,
            f.verdict.name(),
            f.rows[0],
            f.rows[1],
            100.0 * f.null_rates[0],
            100.0 * f.null_rates[1],
            esc(&f.scores_text())
        );
        out.push_str(&svg(&f.chart));
        out.push_str("\n<p><svg width=\"12\" height=\"12\"><rect class=\"ref\" width=\"12\" height=\"12\"/></svg> reference \
<svg width=\"12\" height=\"12\"><rect class=\"cur\" width=\"12\" height=\"12\"/></svg> current</p></section>\n");
    }
    out.push_str("</body></html>\n");
    out
}

/// Both distributions as overlaid bars, one pair per bin, with the bins' labels as titles.
fn svg(chart: &Chart) -> String {
    let bins = chart.labels.len();
    if bins == 0 {
        return "<p>No data on one side: nothing to draw.</p>".into();
    }
    let top = chart
        .reference
        .iter()
        .chain(&chart.current)
        .fold(0.0_f64, |a, &b| a.max(b))
        .max(1e-12);
    let width = WIDTH / bins as f64;
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{}\" role=\"img\">",
        HEIGHT + 20.0
    );
    for (i, label) in chart.labels.iter().enumerate() {
        let x = i as f64 * width;
        for (class, shares) in [("ref", &chart.reference), ("cur", &chart.current)] {
            let share = shares.get(i).copied().unwrap_or(0.0);
            let h = HEIGHT * share / top;
            let _ = write!(
                out,
                "<rect class=\"{class}\" x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{h:.1}\">\
<title>{}: {class} {:.2}%</title></rect>",
                x + 1.0,
                HEIGHT - h,
                (width - 2.0).max(1.0),
                esc(label),
                100.0 * share
            );
        }
    }
    let first = chart.labels.first().map_or("", String::as_str);
    let last = chart.labels.last().map_or("", String::as_str);
    let _ = write!(
        out,
        "<text x=\"0\" y=\"{0}\" font-size=\"11\">{1}</text><text x=\"{WIDTH}\" y=\"{0}\" \
font-size=\"11\" text-anchor=\"end\">{2}</text></svg>",
        HEIGHT + 15.0,
        esc(first),
        esc(last)
    );
    out
}
