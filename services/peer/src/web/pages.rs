//! The pages: rendered on the server, readable and usable without
//! JavaScript (plain forms that POST and redirect back), made live by the
//! small script in `assets/app.js` (the event stream, buttons that act in
//! place). Every name is escaped where it is written; the element names the
//! browser test relies on are in docs/WEB.md.

use std::{fmt::Write as _, time::Duration};

use axum::{
    Form, Router,
    extract::{Path, State},
    http::{StatusCode, header},
    response::{Html, IntoResponse, Redirect, Response},
    routing::{get, post},
};
use hive::pb::control as pb;
use hive_runtime::web::byte_size;
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use serde::Deserialize;

use super::{
    Web,
    api::{Action, Ops, transfer_json},
    chunks::ChunkMap,
    guard::CSRF_FIELD,
    reply::{ApiError, PageError},
};
use crate::config::parse_rate;

const APP_JS: &str = include_str!("assets/app.js");
const APP_CSS: &str = include_str!("assets/app.css");
/// The tracker's files offered in the fetch form's list.
const OFFERED: u32 = 500;
/// How long the transfers page waits for that list: a slow tracker costs
/// the page its list, never its answer.
const OFFERED_WAIT: Duration = Duration::from_secs(2);

type Page = Result<Response, PageError>;

pub fn routes() -> Router<Web> {
    Router::new()
        .route("/", get(transfers_page))
        .route("/files", get(files_page))
        .route("/files/{name}", get(chunk_page))
        .route("/fetch", post(fetch_form))
        .route("/transfers/{name}/{action}", post(action_form))
        .route("/files/{name}/unshare", post(unshare_form))
        .route("/limits", post(limits_form))
        .route("/login", get(login_page).post(login_form))
        .route("/assets/app.js", get(|| asset(APP_JS, "text/javascript")))
        .route("/assets/app.css", get(|| asset(APP_CSS, "text/css")))
}

async fn asset(body: &'static str, kind: &'static str) -> Response {
    ([(header::CONTENT_TYPE, kind)], body).into_response()
}

/// Escapes `s` for HTML text and quoted attributes.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
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

/// `name` as one path segment.
fn seg(name: &str) -> String {
    utf8_percent_encode(name, NON_ALPHANUMERIC).to_string()
}

/// The page around `main`; `body_attrs` go on `<body>`.
fn layout(title: &str, csrf: &str, body_attrs: &str, main: &str) -> String {
    format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="hive-csrf" content="{csrf}">
<title>{title} · hive peer</title>
<link rel="stylesheet" href="/assets/app.css">
</head><body {body_attrs}>
<header><strong>hive peer</strong><nav><a href="/">Transfers</a> <a href="/files">Shared files</a></nav></header>
<main>
<p id="message" role="status" hidden></p>
{main}
</main>
<script src="/assets/app.js" defer></script>
</body></html>
"#,
        title = esc(title),
        csrf = esc(csrf),
    )
}

pub fn error_page(code: &str, message: &str) -> String {
    let main = format!(
        r#"<h1>{}</h1><p class="error">{}</p><p><a href="/">Back to the transfers</a></p>"#,
        esc(code),
        esc(message)
    );
    layout(code, "", "", &main)
}

fn hidden_csrf(csrf: &str) -> String {
    format!(
        r#"<input type="hidden" name="{CSRF_FIELD}" value="{}">"#,
        esc(csrf)
    )
}

fn cap(rate: u64) -> String {
    if rate == 0 {
        "none".into()
    } else {
        format!("{}/s", byte_size(rate))
    }
}

async fn transfers_page(State(web): State<Web>) -> Page {
    let ops = Ops(&web);
    let status = ops.status().await?;
    let list = ops.transfers().await?;
    // The list to pick from is a convenience: a tracker that fails or is
    // slow leaves it empty (and the page says so), not the page hanging.
    let offered = tokio::time::timeout(OFFERED_WAIT, ops.tracker_files(OFFERED, String::new()))
        .await
        .ok()
        .and_then(Result::ok)
        .map(|p| p.files);
    let unlisted = match offered {
        Some(_) => "",
        None => concat!(
            r#"<p id="tracker-files-missing" class="empty">The tracker did not list its files "#,
            "in time; type the name to fetch.</p>\n"
        ),
    };
    let csrf = web.guard.csrf();
    let mut main = String::new();
    let _ = write!(
        main,
        r#"<section id="status"><h2>This peer</h2>
<p>Served <span id="served">{}</span>, fetched <span id="fetched">{}</span>.
Upload cap <span id="cap-up">{}</span>, download cap <span id="cap-down">{}</span>.</p>
<form id="limits" method="post" action="/limits">{}
<label>Upload cap <input name="up" placeholder="e.g. 10MiB, 0 for none" size="12"></label>
<label>Download cap <input name="down" placeholder="e.g. 50Mbit" size="12"></label>
<button type="submit">Set caps</button></form></section>
"#,
        byte_size(status.bytes_served),
        byte_size(status.bytes_fetched),
        cap(status.max_upload_rate),
        cap(status.max_download_rate),
        hidden_csrf(csrf),
    );
    let _ = write!(
        main,
        r#"<section><h2>Fetch a file</h2>
<form id="fetch" method="post" action="/fetch">{}
<input id="fetch-name" name="name" list="tracker-files" required placeholder="a file the tracker lists" autocomplete="off">
<input name="max_rate" placeholder="max rate (optional)" size="14">
<button id="fetch-submit" type="submit">Fetch</button></form>
{}<datalist id="tracker-files">"#,
        hidden_csrf(csrf),
        unlisted
    );
    for f in offered.iter().flatten() {
        let _ = write!(
            main,
            r#"<option value="{}">{}, {} holders</option>"#,
            esc(&f.name),
            byte_size(f.size),
            f.holder_count
        );
    }
    main.push_str("</datalist></section>\n<section><h2>Transfers</h2><div id=\"transfers\">");
    if list.is_empty() {
        main.push_str(r#"<p class="empty">No transfers yet.</p>"#);
    }
    for t in &list {
        main.push_str(&transfer_html(t, csrf));
    }
    main.push_str("</div>");
    // What the script clones for a transfer that appears later.
    let template = pb::Transfer {
        state: pb::TransferState::Queued as i32,
        ..Default::default()
    };
    let _ = write!(
        main,
        "<template id=\"transfer-template\">{}</template></section>",
        transfer_html(&template, csrf)
    );
    Ok(Html(layout("Transfers", csrf, r#"data-page="transfers""#, &main)).into_response())
}

/// One transfer: `[data-transfer][data-state]` with its progress bar, its
/// figures and the buttons that apply.
fn transfer_html(t: &pb::Transfer, csrf: &str) -> String {
    let json = transfer_json(t);
    let state = json["state"].as_str().unwrap_or_default();
    let name = esc(&t.name);
    let path = seg(&t.name);
    let shown = |applies: bool| if applies { "" } else { " hidden" };
    let pausable = matches!(state, "queued" | "running" | "stalled");
    let resumable = matches!(state, "paused" | "failed");
    let button = |action: &str, label: &str, applies: bool| {
        format!(
            r#"<form method="post" action="/transfers/{path}/{action}">{}<button type="submit" data-action="{action}"{}>{label}</button></form>"#,
            hidden_csrf(csrf),
            shown(applies)
        )
    };
    let pct = (t.chunks_done * 100)
        .checked_div(t.chunk_count)
        .unwrap_or(0);
    format!(
        r#"<article class="transfer" data-transfer="{name}" data-state="{state}">
<h3><a class="chunks" href="/files/{path}">{name}</a> <span class="state">{state}</span></h3>
<progress value="{done}" max="{max}">{pct}%</progress>
<p class="figures"><span class="pct">{pct}%</span> of <span class="size">{size}</span> · <span class="rate">{rate}/s</span> · ETA <span class="eta">{eta}</span> · <span class="holders">{active} of {holders}</span> holders in use <span class="reason">{reason}</span></p>
<div class="actions">{pause}{resume}{cancel}</div>
</article>"#,
        done = t.chunks_done,
        max = t.chunk_count.max(1),
        size = byte_size(t.size),
        rate = byte_size(t.rate),
        eta = if t.eta_seconds > 0 {
            format!("{}s", t.eta_seconds)
        } else {
            "–".into()
        },
        active = t.holders_active,
        holders = t.holders,
        reason = esc(&t.reason),
        pause = button("pause", "Pause", pausable),
        resume = button("resume", "Resume", resumable),
        cancel = button("cancel", "Cancel", true),
    )
}

async fn files_page(State(web): State<Web>) -> Page {
    let status = Ops(&web).status().await?;
    let csrf = web.guard.csrf();
    let mut main = String::from(
        r#"<h2>Shared files</h2><table id="files"><thead><tr><th>Name</th><th>Size</th><th>Chunks held</th><th>State</th><th></th></tr></thead><tbody>"#,
    );
    for f in &status.files {
        let state = crate::json::file_state_name(f.state);
        let _ = write!(
            main,
            r#"<tr data-file="{name}"><td><a class="chunks" href="/files/{path}">{name}</a></td><td>{size}</td><td>{held} / {count}</td><td>{state}</td>
<td><form method="post" action="/files/{path}/unshare">{csrf}<button type="submit" data-action="unshare">Unshare</button></form></td></tr>"#,
            name = esc(&f.name),
            path = seg(&f.name),
            size = byte_size(f.size),
            held = f.chunks_held,
            count = f.chunk_count,
            csrf = hidden_csrf(csrf),
        );
    }
    main.push_str("</tbody></table>");
    if status.files.is_empty() {
        main.push_str(r#"<p class="empty">Nothing shared yet.</p>"#);
    }
    Ok(Html(layout("Shared files", csrf, r#"data-page="files""#, &main)).into_response())
}

async fn chunk_page(State(web): State<Web>, Path(raw): Path<String>) -> Page {
    let ops = Ops(&web);
    let name = crate::control::file_name(raw.clone())?;
    let map = match ops.chunk_map(raw) {
        Ok(map) => map,
        // A transfer not yet started has no chunks yet: the page fills in
        // once it has.
        Err(e) if e.0.code() == tonic::Code::NotFound => {
            let list = ops.transfers().await?;
            if !list.iter().any(|t| t.name == name.as_str()) {
                return Err(e.into());
            }
            ChunkMap {
                name: name.to_string(),
                chunk_count: 0,
                held: 0,
                chunks: Vec::new(),
            }
        }
        Err(e) => return Err(e.into()),
    };
    let csrf = web.guard.csrf();
    let n = esc(&map.name);
    let mut main = format!(
        r#"<h2>{n}</h2>
<p><span id="held-count">{held}</span> of <span id="total-count">{total}</span> chunks held.
<span class="legend"><span class="chunk held"></span> held <span class="chunk inflight"></span> in flight <span class="chunk missing"></span> missing</span></p>
<div id="chunk-map" data-name="{n}" data-total="{total}" data-held="{held}">"#,
        held = map.held,
        total = map.chunk_count,
    );
    for c in &map.chunks {
        let state = match c.state {
            super::chunks::CellState::Held => "held",
            super::chunks::CellState::Inflight => "inflight",
            super::chunks::CellState::Missing => "missing",
        };
        let _ = write!(
            main,
            r#"<span class="chunk {state}" title="{}"></span>"#,
            esc(&c.title)
        );
    }
    main.push_str("</div>");
    let attrs = format!(r#"data-page="chunks" data-file="{n}""#);
    Ok(Html(layout(&map.name, csrf, &attrs, &main)).into_response())
}

/// Where a form goes back to.
fn back(to: &str) -> Response {
    Redirect::to(to).into_response()
}

#[derive(Deserialize)]
struct FetchForm {
    name: String,
    #[serde(default)]
    max_rate: String,
}

async fn fetch_form(State(web): State<Web>, Form(f): Form<FetchForm>) -> Page {
    let max_rate = optional_rate("max rate", &f.max_rate)?.unwrap_or(0);
    Ops(&web).fetch(f.name, max_rate).await?;
    Ok(back("/"))
}

#[derive(Deserialize)]
struct ActionForm {
    #[serde(default)]
    remove: Option<String>,
}

async fn action_form(
    State(web): State<Web>,
    Path((name, action)): Path<(String, String)>,
    Form(f): Form<ActionForm>,
) -> Page {
    let action = match action.as_str() {
        "pause" => Action::Pause,
        "resume" => Action::Resume,
        "cancel" => Action::Cancel {
            remove: f.remove.is_some(),
        },
        other => {
            return Err(
                ApiError::invalid(format!("no action {other:?}: pause, resume or cancel")).into(),
            );
        }
    };
    Ops(&web).act(name, action).await?;
    Ok(back("/"))
}

async fn unshare_form(State(web): State<Web>, Path(name): Path<String>) -> Page {
    Ops(&web).unshare(name).await?;
    Ok(back("/files"))
}

#[derive(Deserialize)]
struct LimitsForm {
    #[serde(default)]
    up: String,
    #[serde(default)]
    down: String,
}

async fn limits_form(State(web): State<Web>, Form(f): Form<LimitsForm>) -> Page {
    let up = optional_rate("upload cap", &f.up)?;
    let down = optional_rate("download cap", &f.down)?;
    Ops(&web).set_limits(up, down).await?;
    Ok(back("/"))
}

/// A rate typed in a form (`10MiB`, `50Mbit`); empty is none given.
fn optional_rate(field: &str, raw: &str) -> Result<Option<u64>, ApiError> {
    let raw = raw.trim();
    if raw.is_empty() {
        return Ok(None);
    }
    parse_rate(raw)
        .map(Some)
        .map_err(|e| ApiError::invalid(format!("{field}: {e}")))
}

async fn login_page(State(web): State<Web>) -> Response {
    if !web.guard.locked() {
        return back("/");
    }
    let main = r#"<h2>Log in</h2>
<p>This web UI is not on loopback. Paste the daemon's cookie: the contents of <code>DIR/.hive/control.cookie</code>, readable by the daemon's user only.</p>
<form id="login" method="post" action="/login"><input type="password" name="secret" required autocomplete="off" size="40">
<button type="submit">Log in</button></form>"#;
    Html(layout("Log in", "", "", main)).into_response()
}

#[derive(Deserialize)]
struct LoginForm {
    secret: String,
}

async fn login_form(State(web): State<Web>, Form(f): Form<LoginForm>) -> Response {
    if !web.guard.locked() {
        return back("/");
    }
    match web.guard.login(&f.secret) {
        Some(cookie) => (
            StatusCode::SEE_OTHER,
            [(header::SET_COOKIE, cookie), (header::LOCATION, "/".into())],
        )
            .into_response(),
        None => {
            let page = error_page("UNAUTHENTICATED", "that is not the daemon's cookie");
            (StatusCode::UNAUTHORIZED, Html(page)).into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_escaped_in_text_attributes_and_paths() {
        let evil = r#"<img src=x onerror="alert('x')">&.bin"#;
        let html = transfer_html(
            &pb::Transfer {
                name: evil.into(),
                state: pb::TransferState::Running as i32,
                chunk_count: 4,
                chunks_done: 1,
                ..Default::default()
            },
            "tok",
        );
        assert!(!html.contains("<img"), "{html}");
        assert!(html.contains("&lt;img src=x onerror=&quot;alert(&#39;x&#39;)&quot;&gt;&amp;.bin"));
        assert!(html.contains("/transfers/%3Cimg%20src%3Dx"));
        assert!(html.contains(r#"data-state="running""#));
        assert!(html.contains(r#"<progress value="1" max="4">"#));
        // Running: pause applies, resume does not.
        assert!(html.contains(r#"data-action="pause">"#));
        assert!(html.contains(r#"data-action="resume" hidden>"#));
    }
}
