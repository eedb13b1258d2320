//! A session's timeline as inline SVG: one lane per job, a grey box per batch (from when it was
//! handed out to its last result) holding a bar per task (its reported duration, ending when
//! its result arrived), coloured by outcome; idle time is the hatched lane showing between
//! batches; the dashed line is the ideal makespan.

use std::fmt::Write as _;

use super::pages::escape;
use crate::state::view::{SessionDetail, TaskBar};

/// The drawing's width, in pixels.
const WIDTH: f64 = 1100.0;
/// Room for the lanes' names on the left.
const LEFT: f64 = 150.0;
/// One task bar's height.
const ROW: f64 = 12.0;
/// The most task rows one lane shows; larger batches share rows.
const MAX_ROWS: usize = 10;

/// The colour of an outcome.
fn colour(bar: &TaskBar) -> &'static str {
    match bar.outcome {
        None => "#1565c0",
        Some("PASSED") => "#2e7d32",
        Some("BUILT") => "#558b2f",
        Some("FLAKY") => "#ef6c00",
        Some("SKIPPED") => "#9e9e9e",
        Some("TIMEOUT") => "#6a1b9a",
        Some(_) => "#c62828",
    }
}

/// The CSS class naming a bar's outcome, e.g. `outcome-failed`.
fn class(bar: &TaskBar) -> String {
    let outcome = bar.outcome.unwrap_or("running");
    format!("outcome-{}", outcome.to_lowercase().replace(' ', "-"))
}

/// Seconds as shown: `1.2s`.
pub(crate) fn seconds(ms: u64) -> String {
    format!("{:.1}s", ms as f64 / 1000.0)
}

/// The SVG for `detail`.
pub(crate) fn svg(detail: &SessionDetail) -> String {
    let end = detail
        .batches
        .iter()
        .map(|b| b.end_ms)
        .chain([
            detail.ideal_makespan_ms,
            detail.summary.duration_ms.unwrap_or(detail.summary.age_ms),
            1,
        ])
        .max()
        .unwrap_or(1);
    let scale = (WIDTH - LEFT - 20.0) / end as f64;
    let x = |ms: u64| LEFT + ms as f64 * scale;
    // Each lane is as tall as its largest batch (up to MAX_ROWS).
    let rows: Vec<usize> = (0..detail.jobs.len())
        .map(|job| {
            let largest = detail.batches.iter().filter(|b| b.job == job);
            largest
                .map(|b| b.tasks.len())
                .max()
                .unwrap_or(1)
                .clamp(1, MAX_ROWS)
        })
        .collect();
    let mut tops = Vec::with_capacity(rows.len());
    let mut y = 24.0;
    for &n in &rows {
        tops.push(y);
        y += n as f64 * ROW + 10.0;
    }
    let height = y + 20.0;
    let mut out = String::new();
    let _ = write!(
        out,
        r##"<svg class="timeline" xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="11">
<defs><pattern id="idle" width="6" height="6" patternUnits="userSpaceOnUse" patternTransform="rotate(45)"><rect width="6" height="6" fill="#fafafa"/><line x1="0" y1="0" x2="0" y2="6" stroke="#ddd" stroke-width="2"/></pattern></defs>
"##
    );
    // The time axis.
    let step = nice_step(end);
    let mut tick = 0;
    while tick <= end {
        let _ = writeln!(
            out,
            r##"<line x1="{0:.1}" y1="18" x2="{0:.1}" y2="{1:.1}" stroke="#eee"/><text x="{0:.1}" y="12" text-anchor="middle" fill="#666">{2}</text>"##,
            x(tick),
            height - 16.0,
            seconds(tick)
        );
        tick += step;
    }
    for (job, top) in tops.iter().enumerate() {
        let lane_height = rows[job] as f64 * ROW + 4.0;
        let info = &detail.jobs[job];
        let state = if info.connected { "" } else { " (gone)" };
        let _ = writeln!(
            out,
            r##"<g class="lane" data-job="{name}"><text x="4" y="{ty:.1}">{name}{state}</text><rect x="{LEFT}" y="{top:.1}" width="{w:.1}" height="{lane_height:.1}" fill="url(#idle)"><title>{name}: idle where hatched</title></rect></g>"##,
            name = escape(&info.name),
            ty = top + lane_height / 2.0 + 4.0,
            w = x(end) - LEFT,
        );
    }
    for batch in &detail.batches {
        let top = tops[batch.job];
        let lane_height = rows[batch.job] as f64 * ROW + 4.0;
        let _ = writeln!(
            out,
            r##"<g class="batch"><rect x="{:.1}" y="{top:.1}" width="{:.1}" height="{lane_height:.1}" fill="#e3e3e3" stroke="#9e9e9e"><title>batch of {} on {}: {} to {}{}</title></rect>"##,
            x(batch.start_ms),
            (x(batch.end_ms) - x(batch.start_ms)).max(1.0),
            batch.tasks.len(),
            escape(&detail.jobs[batch.job].name),
            seconds(batch.start_ms),
            seconds(batch.end_ms),
            if batch.running { " (running)" } else { "" },
        );
        for (i, bar) in batch.tasks.iter().enumerate() {
            let row = i % MAX_ROWS;
            let from = bar
                .reported_ms
                .saturating_sub(bar.duration_ms)
                .max(batch.start_ms);
            let how = match (bar.outcome, bar.executed) {
                (None, _) => "running".to_string(),
                (Some(label), true) => format!("{label} in {}, executed", seconds(bar.duration_ms)),
                (Some(label), false) => format!("{label} in {}, cached", seconds(bar.duration_ms)),
            };
            let opacity = if bar.executed { "1" } else { "0.45" };
            let _ = writeln!(
                out,
                r##"<rect class="bar {}" data-task="{task}" x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="{}" fill-opacity="{opacity}"><title>{task}: {how} on {}</title></rect>"##,
                class(bar),
                x(from),
                top + 2.0 + row as f64 * ROW,
                (x(bar.reported_ms) - x(from)).max(2.0),
                ROW - 2.0,
                colour(bar),
                escape(&detail.jobs[batch.job].name),
                task = escape(&bar.task),
            );
        }
        out.push_str("</g>\n");
    }
    let ideal = x(detail.ideal_makespan_ms);
    let _ = writeln!(
        out,
        r##"<g class="ideal"><line x1="{ideal:.1}" y1="18" x2="{ideal:.1}" y2="{:.1}" stroke="#000" stroke-dasharray="4 3"/><text x="{ideal:.1}" y="{:.1}" text-anchor="middle">ideal makespan {}</text></g>"##,
        height - 16.0,
        height - 4.0,
        seconds(detail.ideal_makespan_ms)
    );
    out.push_str("</svg>\n");
    out
}

/// A tick spacing giving about ten ticks: 1, 2 or 5 times a power of ten, in milliseconds.
fn nice_step(end_ms: u64) -> u64 {
    let rough = (end_ms / 10).max(1);
    let mut step = 1;
    loop {
        for factor in [1, 2, 5] {
            if step * factor >= rough {
                return step * factor;
            }
        }
        step *= 10;
    }
}
