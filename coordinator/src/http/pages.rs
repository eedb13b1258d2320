//! The pages and their JSON twins. Each handler takes a snapshot through the hub, then renders
//! without the lock.

use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::{Form, Json};

use super::timeline::{self, seconds};
use super::AppState;
use crate::state::view::{ScopeHistory, SessionDetail, SessionSummary};

/// The most sessions the list shows.
const MAX_LISTED: usize = 200;
/// The most scopes the history page shows.
const MAX_SCOPES: usize = 50;

/// `text` safe inside HTML and SVG, text or attribute.
pub(crate) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() && c != '\n' && c != '\t' => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "body{font-family:sans-serif;margin:1.5em;color:#222}\
table{border-collapse:collapse}td,th{padding:.3em .8em;border-bottom:1px solid #ddd;text-align:left}\
.pass{color:#2e7d32;font-weight:bold}.fail{color:#c62828;font-weight:bold}.run{color:#1565c0}\
pre{background:#f5f5f5;padding:.8em;overflow-x:auto;max-height:30em}nav a{margin-right:1em}\
progress{width:8em}";

/// A whole page; `refresh` reloads it every so many seconds (while something is running).
fn page(title: &str, refresh: Option<u32>, body: &str) -> Html<String> {
    let refresh = refresh
        .map(|s| format!("<meta http-equiv=\"refresh\" content=\"{s}\">"))
        .unwrap_or_default();
    Html(format!(
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\">{refresh}<title>{}</title>\
         <style>{STYLE}</style></head><body><nav><a href=\"/\">sessions</a>\
         <a href=\"/history\">history</a><a href=\"/metrics\">metrics</a></nav>\
         <h1>{}</h1>\n{body}</body></html>\n",
        escape(title),
        escape(title)
    ))
}

/// When something `age_ms` old started, as UTC.
fn started_at(age_ms: u64) -> String {
    let when = SystemTime::now()
        .checked_sub(Duration::from_millis(age_ms))
        .unwrap_or(SystemTime::UNIX_EPOCH);
    humantime::format_rfc3339_seconds(when).to_string()
}

fn verdict(summary: &SessionSummary) -> String {
    match summary.passed {
        Some(true) => "<span class=\"pass\">passed</span>".into(),
        Some(false) => format!("<span class=\"fail\">failed ({})</span>", summary.failed),
        None if summary.failed > 0 => {
            format!(
                "<span class=\"run\">running</span>, <span class=\"fail\">{} failed</span>",
                summary.failed
            )
        }
        None => "<span class=\"run\">running</span>".into(),
    }
}

/// `/`: every session.
pub(crate) async fn overview(State(state): State<AppState>) -> Html<String> {
    let sessions = state.hub.read(|c, now| c.overview(now, MAX_LISTED));
    let mut body = String::from(
        "<table class=\"sessions\"><tr><th>session</th><th>schema</th><th>scope</th>\
         <th>progress</th><th>jobs</th><th>started</th><th>took</th><th>verdict</th></tr>\n",
    );
    for s in &sessions {
        let _ = writeln!(
            body,
            "<tr class=\"session\"><td><a href=\"/sessions/{id}\">{label}</a></td><td>{schema}</td>\
             <td>{scope}</td><td><progress max=\"{tasks}\" value=\"{finished}\"></progress> \
             {finished}/{tasks}</td><td>{connected} connected of {members}</td><td>{started}</td>\
             <td>{took}</td><td>{verdict}</td></tr>",
            id = s.id,
            label = escape(&s.label),
            schema = escape(&s.schema_name),
            scope = escape(&s.scope),
            tasks = s.tasks,
            finished = s.finished,
            connected = s.connected,
            members = s.members,
            started = started_at(s.age_ms),
            took = s.duration_ms.map(seconds).unwrap_or_else(|| "…".into()),
            verdict = verdict(s),
        );
    }
    body.push_str("</table>\n");
    if sessions.is_empty() {
        body.push_str("<p>No sessions yet.</p>\n");
    }
    let running = sessions.iter().any(|s| s.passed.is_none());
    page("task-sharding sessions", running.then_some(5), &body)
}

fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        page(
            "no such session",
            None,
            "<p>The coordinator holds no session with this id (finished sessions are forgotten \
             after --session-ttl).</p>",
        ),
    )
        .into_response()
}

/// `/sessions/{id}`: one session's timeline and failures.
pub(crate) async fn session(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    let Some(detail) = state.hub.read(|c, now| c.detail(&id, now)) else {
        return not_found();
    };
    let body = session_body(&detail);
    let refresh = detail.summary.passed.is_none().then_some(2);
    page(&format!("session {}", detail.summary.label), refresh, &body).into_response()
}

fn session_body(detail: &SessionDetail) -> String {
    let s = &detail.summary;
    let mut body = format!(
        "<p>Schema <b>{}</b>, scope <code>{}</code>: {}/{} tasks done, {} queued; {} of {} jobs \
         connected; started {}; {}.</p>\n",
        escape(&s.schema_name),
        escape(&s.scope),
        s.finished,
        s.tasks,
        detail.queued,
        s.connected,
        s.members,
        started_at(s.age_ms),
        verdict(s),
    );
    let makespan = s.duration_ms.unwrap_or(s.age_ms);
    let _ = writeln!(
        body,
        "<p>Took {} so far; the ideal makespan for what executed is {} (work / jobs, or the \
         longest task). Grey boxes are batches; hatched lane is a job idle; bars are tasks \
         (faded: served from a cache); hover for details.</p>",
        seconds(makespan),
        seconds(detail.ideal_makespan_ms)
    );
    body.push_str(&timeline::svg(detail));
    if !detail.failing.is_empty() {
        body.push_str("<h2>Failing</h2>\n");
    }
    for failing in &detail.failing {
        let _ = writeln!(
            body,
            "<section class=\"failing\"><h3><code>{}</code> <span class=\"fail\">{}</span> on {}</h3>",
            escape(&failing.task),
            failing.outcome,
            escape(&failing.job)
        );
        match &failing.log_tail {
            Some(log) => {
                let _ = writeln!(body, "<pre class=\"log\">{}</pre>", escape(log));
            }
            None => body.push_str("<p>Its job sent no log.</p>\n"),
        }
        body.push_str("</section>\n");
    }
    body
}

/// `/history`: per scope, the slowest, most variable, recently flaky and failing tasks.
pub(crate) async fn history(State(state): State<AppState>) -> Html<String> {
    let scopes = state.hub.read(|c, _| c.history_view(MAX_SCOPES));
    let mut body = String::new();
    if scopes.is_empty() {
        body.push_str("<p>Nothing ran yet.</p>\n");
    }
    for scope in &scopes {
        body.push_str(&scope_section(scope));
    }
    page("task-sharding history", None, &body)
}

fn scope_section(scope: &ScopeHistory) -> String {
    let mut out = format!("<h2><code>{}</code></h2>\n", escape(&scope.scope));
    let mut table = |title: &str, head: &str, rows: Vec<String>| {
        let _ = write!(out, "<h3>{title}</h3>");
        if rows.is_empty() {
            out.push_str("<p>none</p>\n");
            return;
        }
        let _ = write!(out, "<table><tr>{head}</tr>");
        for row in rows {
            out.push_str(&row);
        }
        out.push_str("</table>\n");
    };
    table(
        "Slowest",
        "<th>task</th><th>expected</th>",
        scope
            .slowest
            .iter()
            .map(|(task, ms)| {
                format!(
                    "<tr><td><code>{}</code></td><td>{}</td></tr>",
                    escape(task),
                    seconds(*ms)
                )
            })
            .collect(),
    );
    table(
        "Most variable (recent runs)",
        "<th>task</th><th>mean</th><th>spread (σ)</th><th>runs</th>",
        scope
            .most_variable
            .iter()
            .map(|v| {
                format!(
                    "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td></tr>",
                    escape(&v.task),
                    seconds(v.mean_ms),
                    seconds(v.spread_ms),
                    v.runs
                )
            })
            .collect(),
    );
    table(
        "Recently flaky",
        "<th>task</th><th>times</th>",
        count_rows(&scope.flaky),
    );
    table(
        "Recently failing",
        "<th>task</th><th>times</th>",
        count_rows(&scope.failing),
    );
    out
}

/// Table rows of tasks and how many times.
fn count_rows(tasks: &[(String, u32)]) -> Vec<String> {
    tasks
        .iter()
        .map(|(task, n)| {
            format!(
                "<tr><td><code>{}</code></td><td>{n}</td></tr>",
                escape(task)
            )
        })
        .collect()
}

/// `/api/sessions`.
pub(crate) async fn api_sessions(State(state): State<AppState>) -> Json<Vec<SessionSummary>> {
    Json(state.hub.read(|c, now| c.overview(now, MAX_LISTED)))
}

/// `/api/sessions/{id}`.
pub(crate) async fn api_session(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    match state.hub.read(|c, now| c.detail(&id, now)) {
        Some(detail) => Json(detail).into_response(),
        None => (StatusCode::NOT_FOUND, "no such session\n").into_response(),
    }
}

/// `/api/history`.
pub(crate) async fn api_history(State(state): State<AppState>) -> Json<Vec<ScopeHistory>> {
    Json(state.hub.read(|c, _| c.history_view(MAX_SCOPES)))
}

/// `/metrics`.
pub(crate) async fn metrics(State(state): State<AppState>) -> Response {
    let snapshot = state.hub.snapshot();
    let text = super::metrics::render(&snapshot, &state.metrics);
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

/// The login form; `wrong` says the last try failed.
pub(crate) fn login(wrong: bool) -> Html<String> {
    let note = if wrong {
        "<p class=\"fail\">That is not the token.</p>"
    } else {
        "<p>This dashboard shows what the coordinator's token holders may see. Enter the token \
         (the contents of the coordinator's --token-file).</p>"
    };
    page(
        "task-sharding: log in",
        None,
        &format!(
            "{note}<form method=\"post\" action=\"/login\"><input type=\"password\" \
             name=\"token\" autofocus> <button>Log in</button></form>"
        ),
    )
}

/// `GET /login`.
pub(crate) async fn login_form(State(state): State<AppState>) -> Response {
    match state.auth {
        Some(_) => login(false).into_response(),
        None => Redirect::to("/").into_response(),
    }
}

/// What the login form posts.
#[derive(Debug, serde::Deserialize)]
pub(crate) struct LoginForm {
    token: String,
}

/// `POST /login`: sets the cookie when the token is right.
pub(crate) async fn log_in(State(state): State<AppState>, Form(form): Form<LoginForm>) -> Response {
    let Some(credentials) = &state.auth else {
        return Redirect::to("/").into_response();
    };
    if !credentials.is_token(form.token.trim()) {
        return (StatusCode::UNAUTHORIZED, login(true)).into_response();
    }
    (
        [(header::SET_COOKIE, credentials.set_cookie())],
        Redirect::to("/"),
    )
        .into_response()
}
