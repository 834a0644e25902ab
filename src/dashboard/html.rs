//! The dashboard page: HTML with inline SVG and a small stylesheet, no script. Every text taken from the
//! store goes through [`esc`].

use super::{ExecutionSummary, Snapshot, StageSpan, WorkerRow};
use chrono::NaiveDateTime;
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;
use uuid::Uuid;

/// Writing into a `String` cannot fail.
macro_rules! w {
    ($out:expr, $($arg:tt)*) => { let _ = write!($out, $($arg)*); };
}

/// HTML-escape text for element content and (quoted) attribute values.
pub fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// How a framework status is shown: CSS class, colour, label.
pub fn status_style(status: Option<&str>) -> (&'static str, &'static str, String) {
    match status {
        None => ("s-waiting", "#b0bec5", "Not started".into()),
        Some(s) => {
            let (class, colour) = match s {
                "Success" => ("s-success", "#2e7d32"),
                "Failed" => ("s-failed", "#c62828"),
                "Running" => ("s-running", "#1565c0"),
                "Blocked" => ("s-blocked", "#ef6c00"),
                "Cancelled" => ("s-cancelled", "#6d4c41"),
                "Unknown" => ("s-unknown", "#757575"),
                _ => ("s-other", "#5c6bc0"),
            };
            (class, colour, s.to_string())
        }
    }
}

fn when(t: Option<NaiveDateTime>) -> String {
    t.map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_else(|| "–".into())
}

/// `1h 02m 03s`, `4m 05s`, `6s`.
pub fn duration(seconds: i64) -> String {
    let s = seconds.max(0);
    match (s / 3600, (s % 3600) / 60, s % 60) {
        (0, 0, sec) => format!("{sec}s"),
        (0, m, sec) => format!("{m}m {sec:02}s"),
        (h, m, sec) => format!("{h}h {m:02}m {sec:02}s"),
    }
}

fn span_seconds(start: Option<NaiveDateTime>, end: Option<NaiveDateTime>) -> Option<i64> {
    match (start, end) {
        (Some(s), Some(e)) => Some((e - s).num_seconds()),
        _ => None,
    }
}

const STYLE: &str = "body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:0 auto;max-width:1280px;padding:1rem 1.5rem;color:#1f2933;background:#fafbfc}\
h1{margin:.2rem 0}h2{margin-top:2rem;border-bottom:2px solid #d9e2ec;padding-bottom:.2rem}h3{margin:1rem 0 .4rem}\
table{border-collapse:collapse;margin:.4rem 0;font-size:.85rem}th,td{border:1px solid #d9e2ec;padding:.2rem .5rem;text-align:left;vertical-align:top}\
th{background:#f0f4f8}td.num{text-align:right;font-variant-numeric:tabular-nums}\
.badge{display:inline-block;padding:0 .45rem;border-radius:.6rem;color:#fff;font-size:.8rem;font-weight:600}\
.s-success{background:#2e7d32}.s-failed{background:#c62828}.s-running{background:#1565c0}.s-blocked{background:#ef6c00}\
.s-cancelled{background:#6d4c41}.s-unknown{background:#757575}.s-other{background:#5c6bc0}.s-waiting{background:#b0bec5;color:#1f2933}\
tr.failed td{background:#fdecea}.muted{color:#627d98}.legend span{margin-right:.8rem}svg{display:block;margin:.3rem 0}\
svg text{font-size:11px;fill:#334e68}.stage-row{display:flex;align-items:center;gap:.8rem;margin:.2rem 0}.stage-row .name{width:16rem}\
details>summary{cursor:pointer;margin:.4rem 0}.error-message{max-width:48rem;white-space:pre-wrap;word-break:break-word}";

/// The whole page.
pub fn render(snapshot: &Snapshot) -> String {
    let mut out = String::with_capacity(64 * 1024);
    w!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<title>procfwk dashboard</title><style>{STYLE}</style></head><body>\n<header><h1>procfwk</h1>\
<p class=\"muted\">Metadata store read at {} UTC. Timeline: last {} execution(s); stage durations: last {}.</p>",
        when(Some(snapshot.now)),
        snapshot.options.executions,
        snapshot.options.history
    );
    legend(&mut out);
    out.push_str("</header>\n");
    current_section(&mut out, snapshot);
    timeline_section(&mut out, snapshot);
    failures_section(&mut out, snapshot);
    durations_section(&mut out, snapshot);
    pools_section(&mut out, snapshot);
    out.push_str("</body></html>\n");
    out
}

fn legend(out: &mut String) {
    out.push_str("<p class=\"legend\">");
    for s in [
        Some("Success"),
        Some("Failed"),
        Some("Running"),
        Some("Blocked"),
        Some("Cancelled"),
        Some("Unknown"),
        None,
    ] {
        let (class, _, label) = status_style(s);
        w!(out, "<span class=\"badge {class}\">{}</span>", esc(&label));
    }
    out.push_str("</p>");
}

fn badge(status: Option<&str>) -> String {
    let (class, _, label) = status_style(status);
    format!(
        "<span class=\"badge {class}\" data-status=\"{0}\">{0}</span>",
        esc(&label)
    )
}

fn stage_name(snapshot: &Snapshot, stage_id: i64) -> String {
    snapshot
        .stages
        .get(&stage_id)
        .map(|n| format!("{stage_id} {n}"))
        .unwrap_or_else(|| stage_id.to_string())
}

fn run_cell(snapshot: &Snapshot, worker: &WorkerRow) -> String {
    match (snapshot.run_link(worker), worker.run_id) {
        (Some(link), Some(run)) => format!(
            "<a class=\"run-link\" href=\"{}\" target=\"_blank\" rel=\"noopener\">{run}</a>",
            esc(&link)
        ),
        (None, Some(run)) => run.to_string(),
        _ => "–".into(),
    }
}

/// Group rows by execution, keeping the rows' order.
fn by_execution(rows: &[WorkerRow]) -> Vec<(Uuid, Vec<&WorkerRow>)> {
    let mut order: Vec<(Uuid, Vec<&WorkerRow>)> = Vec::new();
    for row in rows {
        match order.iter_mut().find(|(id, _)| *id == row.execution_id) {
            Some((_, rows)) => rows.push(row),
            None => order.push((row.execution_id, vec![row])),
        }
    }
    order
}

fn is_done(status: Option<&str>) -> bool {
    matches!(
        status,
        Some("Success" | "Failed" | "Blocked" | "Cancelled" | "Unknown")
    )
}

fn current_section(out: &mut String, snapshot: &Snapshot) {
    out.push_str("<section id=\"current\"><h2>Current execution</h2>\n");
    if snapshot.current.is_empty() {
        out.push_str("<p class=\"muted\">No execution is in progress.</p></section>\n");
        return;
    }
    for (execution, rows) in by_execution(&snapshot.current) {
        current_execution(out, snapshot, execution, &rows);
    }
    out.push_str("</section>\n");
}

/// When a group of workers ran, as far as known.
#[derive(Clone, Copy)]
struct Window {
    start: Option<NaiveDateTime>,
    end: Option<NaiveDateTime>,
}

impl Window {
    fn elapsed(self) -> String {
        span_seconds(self.start, self.end)
            .map(duration)
            .unwrap_or_else(|| "–".into())
    }
}

/// One execution in progress: a summary line, each stage's progress, its workers, its Gantt chart.
fn current_execution(out: &mut String, snapshot: &Snapshot, execution: Uuid, rows: &[&WorkerRow]) {
    let start = rows.iter().filter_map(|r| r.start).min();
    let running = rows.iter().any(|r| r.status.as_deref() == Some("Running"));
    let end = if running {
        Some(snapshot.now)
    } else {
        rows.iter().filter_map(|r| r.end).max()
    };
    let window = Window { start, end };
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for r in rows {
        *counts
            .entry(status_style(r.status.as_deref()).2)
            .or_default() += 1;
    }
    w!(
        out,
        "<div class=\"execution\" data-execution-id=\"{execution}\"><h3>Execution {execution}</h3><p>Started {} · elapsed {} · ",
        when(start),
        window.elapsed()
    );
    let parts: Vec<String> = counts
        .iter()
        .map(|(k, v)| format!("{v} {}", esc(k)))
        .collect();
    w!(out, "{} worker(s): {}</p>\n", rows.len(), parts.join(", "));
    let mut stages: BTreeMap<i64, Vec<&WorkerRow>> = BTreeMap::new();
    for r in rows {
        stages.entry(r.stage_id).or_default().push(r);
    }
    for (stage_id, workers) in &stages {
        stage_progress(out, snapshot, *stage_id, workers);
    }
    current_workers_table(out, snapshot, rows);
    gantt(out, snapshot, rows, window);
    out.push_str("</div>\n");
}

/// A stage of the current execution: its state, a progress bar and how many of its workers are done.
fn stage_progress(out: &mut String, snapshot: &Snapshot, stage_id: i64, workers: &[&WorkerRow]) {
    let total = workers.len();
    let done = workers
        .iter()
        .filter(|w| is_done(w.status.as_deref()))
        .count();
    let any_running = workers
        .iter()
        .any(|w| w.status.as_deref() == Some("Running"));
    let state = if any_running {
        "running"
    } else if done == total {
        "done"
    } else if done == 0 {
        "waiting"
    } else {
        "partial"
    };
    let percent = (done * 100).checked_div(total).unwrap_or(0);
    w!(
        out,
        "<div class=\"stage-row stage\" data-stage-id=\"{stage_id}\" data-state=\"{state}\" data-done=\"{done}\" data-total=\"{total}\"><span class=\"name\">Stage {}</span>",
        esc(&stage_name(snapshot, stage_id))
    );
    progress_bar(out, workers);
    w!(
        out,
        "<span class=\"progress-text\">{state}: {done} of {total} worker(s) done ({percent}%)</span></div>\n"
    );
}

/// The current execution's workers, one row each.
fn current_workers_table(out: &mut String, snapshot: &Snapshot, rows: &[&WorkerRow]) {
    out.push_str("<table class=\"workers\"><tr><th>Stage</th><th>Worker</th><th>Status</th><th>Started</th><th>Elapsed</th><th>Last status check</th><th>Run</th></tr>\n");
    for r in rows {
        let elapsed_end = if r.status.as_deref() == Some("Running") {
            Some(snapshot.now)
        } else {
            r.end
        };
        let class = if r.status.as_deref() == Some("Failed") {
            " class=\"failed\""
        } else {
            ""
        };
        w!(
            out,
            "<tr{class} data-worker=\"{}\" data-status=\"{}\"><td>{}</td><td>{}</td><td>{}{}</td><td>{}</td><td class=\"num\">{}</td><td>{}</td><td>{}</td></tr>\n",
            esc(&r.pipeline_name),
            esc(&status_style(r.status.as_deref()).2),
            esc(&stage_name(snapshot, r.stage_id)),
            esc(&r.pipeline_name),
            badge(r.status.as_deref()),
            if r.blocked { " <span class=\"muted\">(blocked)</span>" } else { "" },
            when(r.start),
            Window { start: r.start, end: elapsed_end }.elapsed(),
            when(r.last_check),
            run_cell(snapshot, r)
        );
    }
    out.push_str("</table>\n");
}

/// A stage's workers as one bar of coloured segments, finished ones first.
fn progress_bar(out: &mut String, workers: &[&WorkerRow]) {
    const WIDTH: f64 = 320.0;
    let total = workers.len().max(1) as f64;
    let mut order: BTreeMap<u8, (usize, &'static str, String)> = BTreeMap::new();
    for w in workers {
        let status = w.status.as_deref();
        let rank = match status {
            Some("Success") => 0,
            Some("Failed") => 1,
            Some("Blocked" | "Cancelled" | "Unknown") => 2,
            Some("Running") => 3,
            None => 5,
            _ => 4,
        };
        let (_, colour, label) = status_style(status);
        order.entry(rank).or_insert((0, colour, label)).0 += 1;
    }
    w!(
        out,
        "<svg class=\"progress\" width=\"{WIDTH}\" height=\"14\" role=\"img\"><rect width=\"{WIDTH}\" height=\"14\" fill=\"#e4e7eb\"/>"
    );
    let mut x = 0.0;
    for (count, colour, label) in order.values() {
        let width = WIDTH * *count as f64 / total;
        w!(
            out,
            "<rect x=\"{x:.1}\" width=\"{width:.1}\" height=\"14\" fill=\"{colour}\"><title>{count} {}</title></rect>",
            esc(label)
        );
        x += width;
    }
    out.push_str("</svg>");
}

/// One bar per worker on a time axis, grouped by stage; a bar links to the worker's run.
fn gantt(out: &mut String, snapshot: &Snapshot, rows: &[&WorkerRow], window: Window) {
    let Some(start) = window
        .start
        .or_else(|| rows.iter().filter_map(|r| r.start).min())
    else {
        return;
    };
    let end = window
        .end
        .or_else(|| rows.iter().filter_map(|r| r.end).max())
        .unwrap_or(snapshot.now)
        .max(start + chrono::Duration::seconds(1));
    let mut sorted: Vec<&WorkerRow> = rows.to_vec();
    sorted.sort_by_key(|r| (r.stage_id, r.start, r.pipeline_id));
    let labels = sorted.len() <= 60;
    let chart = Gantt {
        snapshot,
        start,
        total: (end - start).num_milliseconds().max(1) as f64,
        labels,
        row_h: if labels { 16.0 } else { 7.0 },
    };
    let stage_count = sorted
        .iter()
        .map(|r| r.stage_id)
        .collect::<std::collections::BTreeSet<_>>()
        .len();
    let height = 20.0 + chart.row_h * sorted.len() as f64 + 16.0 * stage_count as f64;
    w!(
        out,
        "<svg class=\"timeline\" width=\"{}\" height=\"{height:.0}\" role=\"img\" aria-label=\"workers over time\">",
        GANTT_LABEL_W + GANTT_CHART_W + 10.0
    );
    w!(
        out,
        "<text x=\"{GANTT_LABEL_W}\" y=\"12\">{}</text><text x=\"{}\" y=\"12\" text-anchor=\"end\">{} (+{})</text>",
        when(Some(start)),
        GANTT_LABEL_W + GANTT_CHART_W,
        when(Some(end)),
        duration((end - start).num_seconds())
    );
    let mut y = 20.0;
    let mut stage = None;
    for r in sorted {
        if stage != Some(r.stage_id) {
            stage = Some(r.stage_id);
            chart.stage_heading(out, r.stage_id, y);
            y += 16.0;
        }
        chart.bar(out, r, y);
        y += chart.row_h;
    }
    out.push_str("</svg>\n");
}

/// Width of the Gantt chart's label column and of its time axis.
const GANTT_LABEL_W: f64 = 220.0;
const GANTT_CHART_W: f64 = 900.0;

/// A Gantt chart's time axis and row height.
struct Gantt<'a> {
    snapshot: &'a Snapshot,
    start: NaiveDateTime,
    /// Milliseconds the axis spans.
    total: f64,
    /// Whether each bar has its worker's name beside it (not when there are many).
    labels: bool,
    row_h: f64,
}

impl Gantt<'_> {
    fn stage_heading(&self, out: &mut String, stage_id: i64, y: f64) {
        w!(
            out,
            "<text x=\"0\" y=\"{:.1}\" font-weight=\"600\">Stage {}</text><line x1=\"{GANTT_LABEL_W}\" x2=\"{}\" y1=\"{:.1}\" y2=\"{:.1}\" stroke=\"#d9e2ec\"/>",
            y + 12.0,
            esc(&stage_name(self.snapshot, stage_id)),
            GANTT_LABEL_W + GANTT_CHART_W,
            y + 14.0,
            y + 14.0
        );
    }

    /// A worker's bar (and name), linked to its run when it has one.
    fn bar(&self, out: &mut String, r: &WorkerRow, y: f64) {
        let (class, colour, label) = status_style(r.status.as_deref());
        let bar_start = r.start.unwrap_or(self.start);
        let bar_end = match r.end {
            Some(e) => e,
            None if r.status.as_deref() == Some("Running") => self.snapshot.now,
            None => bar_start,
        };
        let x = GANTT_LABEL_W
            + GANTT_CHART_W
                * ((bar_start - self.start).num_milliseconds().max(0) as f64 / self.total);
        let width = (GANTT_CHART_W
            * ((bar_end - bar_start).num_milliseconds().max(0) as f64 / self.total))
            .max(2.0);
        if self.labels {
            w!(
                out,
                "<text x=\"12\" y=\"{:.1}\">{}</text>",
                y + self.row_h - 4.0,
                esc(&r.pipeline_name)
            );
        }
        let bar = format!(
            "<rect class=\"bar {class}\" data-worker=\"{name}\" data-status=\"{status}\" x=\"{x:.1}\" y=\"{:.1}\" width=\"{width:.1}\" height=\"{:.1}\" fill=\"{colour}\"><title>{name}: {status}, {} → {}</title></rect>",
            y + 1.0,
            self.row_h - 2.0,
            when(r.start),
            when(r.end),
            name = esc(&r.pipeline_name),
            status = esc(&label),
        );
        match self.snapshot.run_link(r) {
            Some(link) => {
                w!(
                    out,
                    "<a href=\"{}\" target=\"_blank\" rel=\"noopener\">{bar}</a>",
                    esc(&link)
                );
            }
            None => out.push_str(&bar),
        }
    }
}

fn timeline_section(out: &mut String, snapshot: &Snapshot) {
    out.push_str("<section id=\"timeline\"><h2>Last executions</h2>\n");
    let rows = by_execution(&snapshot.timeline);
    if rows.is_empty() {
        out.push_str("<p class=\"muted\">The execution log is empty.</p></section>\n");
        return;
    }
    let summaries: HashMap<Uuid, &ExecutionSummary> = snapshot
        .executions
        .iter()
        .map(|e| (e.execution_id, e))
        .collect();
    // Newest first.
    let mut ordered = rows;
    ordered
        .sort_by_key(|(id, _)| std::cmp::Reverse(summaries.get(id).map_or(0, |s| s.last_log_id)));
    for (i, (execution, workers)) in ordered.iter().enumerate() {
        let summary = summaries.get(execution);
        let start = summary.and_then(|s| s.start);
        let end = summary.and_then(|s| s.end);
        let failed = summary.map_or(0, |s| s.failed);
        let outcome = if failed > 0 {
            badge(Some("Failed"))
        } else if workers
            .iter()
            .all(|w| w.status.as_deref() == Some("Success"))
        {
            badge(Some("Success"))
        } else {
            badge(Some("Unknown"))
        };
        w!(
            out,
            "<details class=\"execution\" data-execution-id=\"{execution}\"{}><summary>{outcome} Execution {execution} · {} · {} · {} of {} worker(s) succeeded, {failed} failed</summary>\n",
            if i == 0 { " open" } else { "" },
            when(start),
            Window { start, end }.elapsed(),
            summary.map_or(0, |s| s.succeeded),
            summary.map_or(workers.len() as i64, |s| s.workers),
        );
        gantt(out, snapshot, workers, Window { start, end });
        out.push_str("</details>\n");
    }
    out.push_str("</section>\n");
}

fn failures_section(out: &mut String, snapshot: &Snapshot) {
    out.push_str("<section id=\"failures\"><h2>Failures</h2>\n");
    let failed: Vec<&WorkerRow> = snapshot
        .current
        .iter()
        .chain(snapshot.timeline.iter())
        .filter(|w| w.status.as_deref() == Some("Failed"))
        .collect();
    let mut shown_errors = std::collections::HashSet::new();
    if failed.is_empty() {
        out.push_str(
            "<p class=\"muted\">No failed worker in the current or the last executions.</p>\n",
        );
    } else {
        out.push_str("<table class=\"failures\"><tr><th>Execution</th><th>Stage</th><th>Worker</th><th>Ended</th><th>Run</th><th>ErrorLog</th></tr>\n");
        for wkr in failed {
            let errors: Vec<_> = snapshot
                .errors
                .iter()
                .filter(|e| e.execution_id == wkr.execution_id && Some(e.run_id) == wkr.run_id)
                .collect();
            w!(
                out,
                "<tr class=\"failed\" data-worker=\"{}\"><td>{}</td><td>{}</td><td>{} {}</td><td>{}</td><td>{}</td><td>",
                esc(&wkr.pipeline_name),
                wkr.execution_id,
                esc(&stage_name(snapshot, wkr.stage_id)),
                esc(&wkr.pipeline_name),
                badge(Some("Failed")),
                when(wkr.end),
                run_cell(snapshot, wkr)
            );
            if errors.is_empty() {
                out.push_str("<span class=\"muted\">no ErrorLog row</span>");
            } else {
                error_table(out, &errors);
                shown_errors.extend(errors.iter().map(|e| e.log_id));
            }
            out.push_str("</td></tr>\n");
        }
        out.push_str("</table>\n");
    }
    let rest: Vec<_> = snapshot
        .errors
        .iter()
        .filter(|e| !shown_errors.contains(&e.log_id))
        .rev()
        .take(50)
        .collect();
    if !rest.is_empty() {
        w!(
            out,
            "<details><summary>{} other recent ErrorLog row(s)</summary>",
            rest.len()
        );
        error_table(out, &rest);
        out.push_str("</details>\n");
    }
    out.push_str("</section>\n");
}

fn error_table(out: &mut String, errors: &[&super::ErrorRow]) {
    out.push_str("<table class=\"errors\"><tr><th>Activity</th><th>Type</th><th>Error code</th><th>Error type</th><th>Message</th><th>Activity run</th></tr>");
    for e in errors {
        w!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"error-message\">{}</td><td>{}</td></tr>",
            esc(&e.activity_name),
            esc(&e.activity_type),
            esc(&e.error_code),
            esc(&e.error_type),
            esc(e.message.as_deref().unwrap_or("")),
            e.activity_run_id
        );
    }
    out.push_str("</table>");
}

const PALETTE: [&str; 8] = [
    "#1565c0", "#2e7d32", "#ef6c00", "#6a1b9a", "#00838f", "#ad1457", "#558b2f", "#4e342e",
];

fn durations_section(out: &mut String, snapshot: &Snapshot) {
    out.push_str("<section id=\"stage-durations\"><h2>Stage durations over time</h2>\n");
    let Some(durations) = StageDurations::of(snapshot) else {
        out.push_str("<p class=\"muted\">No finished stage in the log yet.</p></section>\n");
        return;
    };
    w!(
        out,
        "<svg class=\"durations\" width=\"{}\" height=\"{}\" role=\"img\" aria-label=\"stage durations\">",
        PLOT_W + PLOT_LEFT + 10.0,
        PLOT_H + PLOT_BOTTOM + 10.0
    );
    durations.axes(out);
    durations.lines(out, snapshot);
    out.push_str("</svg>\n<p class=\"legend\">minutes per stage, per execution: ");
    for (k, stage_id) in durations.series.keys().enumerate() {
        w!(
            out,
            "<span style=\"color:{}\">■ Stage {}</span>",
            PALETTE[k % PALETTE.len()],
            esc(&stage_name(snapshot, *stage_id))
        );
    }
    out.push_str("</p>\n");
    durations.average_table(out, snapshot);
    out.push_str("</section>\n");
}

/// The plot area of the stage-duration chart: width, height, and the margins for the axis labels.
const PLOT_W: f64 = 900.0;
const PLOT_H: f64 = 220.0;
const PLOT_LEFT: f64 = 50.0;
const PLOT_BOTTOM: f64 = 20.0;

/// Each stage's minutes in each execution of the history.
struct StageDurations<'a> {
    /// Oldest first.
    executions: Vec<&'a ExecutionSummary>,
    /// By stage: (index in `executions`, minutes), in execution order.
    series: BTreeMap<i64, Vec<(usize, f64)>>,
    /// The longest stage, in minutes (the top of the chart; at least 0.1).
    max: f64,
}

impl<'a> StageDurations<'a> {
    /// `None` when no stage of the history has finished.
    fn of(snapshot: &'a Snapshot) -> Option<Self> {
        let mut executions: Vec<&ExecutionSummary> = snapshot.executions.iter().collect();
        executions.sort_by_key(|e| (e.start, e.last_log_id));
        let index: HashMap<Uuid, usize> = executions
            .iter()
            .enumerate()
            .map(|(i, e)| (e.execution_id, i))
            .collect();
        let mut series: BTreeMap<i64, Vec<(usize, f64)>> = BTreeMap::new();
        for span in &snapshot.stage_spans {
            if let (Some(i), Some(m)) = (index.get(&span.execution_id), StageSpan::minutes(span)) {
                series.entry(span.stage_id).or_default().push((*i, m));
            }
        }
        if series.is_empty() {
            return None;
        }
        for points in series.values_mut() {
            points.sort_by_key(|p| p.0);
        }
        let max = series
            .values()
            .flatten()
            .map(|p| p.1)
            .fold(0.0f64, f64::max)
            .max(0.1);
        Some(Self {
            executions,
            series,
            max,
        })
    }

    /// Gridlines with their minutes, and the first and last execution's start under the axis.
    fn axes(&self, out: &mut String) {
        let (w, h, left, bottom) = (PLOT_W, PLOT_H, PLOT_LEFT, PLOT_BOTTOM);
        let max = self.max;
        for tick in 0..=4 {
            let v = max * tick as f64 / 4.0;
            let y = 5.0 + h - h * tick as f64 / 4.0;
            let digits = if max < 1.0 { 2 } else { 1 };
            w!(
                out,
                "<line x1=\"{left}\" x2=\"{}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"#e4e7eb\"/><text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{v:.digits$}</text>",
                left + w,
                left - 4.0,
                y + 4.0
            );
        }
        if let (Some(first), Some(last)) = (self.executions.first(), self.executions.last()) {
            w!(
                out,
                "<text x=\"{left}\" y=\"{}\">{}</text><text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>",
                h + bottom + 5.0,
                when(first.start),
                left + w,
                h + bottom + 5.0,
                when(last.start)
            );
        }
    }

    /// One line per stage, a dot on each execution.
    fn lines(&self, out: &mut String, snapshot: &Snapshot) {
        let (w, h, left) = (PLOT_W, PLOT_H, PLOT_LEFT);
        let n = self.executions.len().max(2) - 1;
        for (k, (stage_id, points)) in self.series.iter().enumerate() {
            let colour = PALETTE[k % PALETTE.len()];
            let path: Vec<String> = points
                .iter()
                .map(|(i, m)| {
                    format!(
                        "{:.1},{:.1}",
                        left + w * *i as f64 / n as f64,
                        5.0 + h - h * m / self.max
                    )
                })
                .collect();
            w!(
                out,
                "<polyline class=\"stage-line\" data-stage-id=\"{stage_id}\" fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\" points=\"{}\"><title>Stage {}</title></polyline>",
                path.join(" "),
                esc(&stage_name(snapshot, *stage_id))
            );
            for point in &path {
                if let Some((x, y)) = point.split_once(',') {
                    w!(
                        out,
                        "<circle cx=\"{x}\" cy=\"{y}\" r=\"2.5\" fill=\"{colour}\"/>"
                    );
                }
            }
        }
    }

    /// procfwk's AverageStageDuration view over the history: per stage, average, shortest, longest and
    /// latest minutes.
    fn average_table(&self, out: &mut String, snapshot: &Snapshot) {
        w!(out, "<h3>AverageStageDuration (last {} execution(s))</h3><table class=\"average-stage-duration\"><tr><th>StageId</th><th>StageName</th><th>Executions</th><th>Average minutes</th><th>Shortest</th><th>Longest</th><th>Latest</th></tr>", self.executions.len());
        for (stage_id, points) in &self.series {
            let minutes: Vec<f64> = points.iter().map(|p| p.1).collect();
            let avg = minutes.iter().sum::<f64>() / minutes.len().max(1) as f64;
            let min = minutes.iter().copied().fold(f64::INFINITY, f64::min);
            let max = minutes.iter().copied().fold(0.0, f64::max);
            let latest = minutes.last().copied().unwrap_or(0.0);
            w!(
                out,
                "<tr><td class=\"num\">{stage_id}</td><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{avg:.1}</td><td class=\"num\">{min:.1}</td><td class=\"num\">{max:.1}</td><td class=\"num\">{latest:.1}</td></tr>",
                esc(snapshot.stages.get(stage_id).map(String::as_str).unwrap_or("")),
                minutes.len()
            );
        }
        out.push_str("</table>");
    }
}

fn pools_section(out: &mut String, snapshot: &Snapshot) {
    out.push_str("<section id=\"vm-pools\"><h2>VM pools</h2>\n");
    if snapshot.pools.is_empty() {
        out.push_str("<p class=\"muted\">No VM pool is managed by VmPower.</p></section>\n");
        return;
    }
    for pool in &snapshot.pools {
        w!(
            out,
            "<div class=\"pool\" data-pool=\"{0}\"><h3>{0}</h3>",
            esc(&pool.key)
        );
        if let Some(rt) = &pool.runtime {
            w!(out, "<p>Integration runtime {}</p>", esc(rt));
        }
        match &pool.cost {
            Some(c) => pool_cost(out, c),
            None => out.push_str("<p class=\"muted\">No power log yet.</p>"),
        }
        pool_nodes(out, &pool.nodes);
        pool_leases(out, &pool.leases);
        pool_events(out, &pool.events);
        out.push_str("</div>\n");
    }
    out.push_str("</section>\n");
}

/// `procfwk db vm-report`'s numbers for one pool.
fn pool_cost(out: &mut String, c: &crate::leases::report::PoolCost) {
    let ratio = if c.leased_hours > 0.0 {
        format!("{:.2}", c.allocated_hours / c.leased_hours)
    } else {
        "–".into()
    };
    w!(
        out,
        "<table class=\"cost\"><tr><th>Allocated VM-hours</th><th>Lower bound (hours leased)</th><th>Ratio</th><th>Starts</th><th>Deallocations</th><th>Leases</th></tr>\
<tr><td class=\"num\">{:.2}</td><td class=\"num\">{:.2}</td><td class=\"num\">{ratio}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr></table>",
        c.allocated_hours, c.leased_hours, c.starts, c.deallocations, c.leases
    );
}

fn pool_nodes(out: &mut String, nodes: &[super::PoolNode]) {
    out.push_str("<table class=\"nodes\"><tr><th>VM</th><th>Power state</th><th>Pending</th><th>Idle since</th></tr>");
    for n in nodes {
        w!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&n.vm_name),
            esc(n.power_state.as_deref().unwrap_or("–")),
            esc(n.pending.as_deref().unwrap_or("–")),
            when(n.idle_since)
        );
    }
    out.push_str("</table>");
}

fn pool_leases(out: &mut String, leases: &[super::PoolLease]) {
    if leases.is_empty() {
        out.push_str("<p class=\"muted\">No live lease.</p>");
        return;
    }
    out.push_str(
        "<table class=\"leases\"><tr><th>Lease holder</th><th>Taken</th><th>Expires</th></tr>",
    );
    for l in leases {
        w!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&l.holder),
            when(l.acquired),
            when(l.expires)
        );
    }
    out.push_str("</table>");
}

fn pool_events(out: &mut String, events: &[super::PowerEvent]) {
    if events.is_empty() {
        return;
    }
    w!(
        out,
        "<details><summary>{} recent power event(s)</summary><table class=\"events\"><tr><th>At</th><th>VM</th><th>Event</th><th>Holder</th><th>Power state</th><th>Active leases</th></tr>",
        events.len()
    );
    for e in events {
        w!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"num\">{}</td></tr>",
            when(Some(e.at)),
            esc(e.vm_name.as_deref().unwrap_or("–")),
            esc(&e.event),
            esc(e.holder.as_deref().unwrap_or("–")),
            esc(e.power_state.as_deref().unwrap_or("–")),
            e.active_leases
        );
    }
    out.push_str("</table></details>");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_quotes() {
        assert_eq!(
            esc("<script>alert('x')</script> & \"y\""),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;y&quot;"
        );
    }

    #[test]
    fn durations_read_like_a_clock() {
        assert_eq!(duration(6), "6s");
        assert_eq!(duration(245), "4m 05s");
        assert_eq!(duration(3723), "1h 02m 03s");
        assert_eq!(duration(-5), "0s");
    }
}
