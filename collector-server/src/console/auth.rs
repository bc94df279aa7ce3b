//! Signing in and staying signed in. A person signs in with an API token (admin, analyst or
//! viewer — a trigger token is a machine's and cannot) or a one-time link printed by
//! `cairn-collector console-link`, and gets a server-side session: an HttpOnly, Secure,
//! SameSite=Strict cookie holding a random secret (stored hashed), with an expiry. Every
//! state-changing request carries the session's CSRF token, in a form field or a header.

use super::{layout, PageError, PageResult, S};
use crate::storage::Role;
use axum::extract::{Form, Path, Query, Request, State as AxState};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use maud::html;
use serde::Deserialize;

/// How long a console session lasts.
pub const SESSION_SECS: i64 = 12 * 3600;
const COOKIE: &str = "cairn_session";

/// Who is looking at the page.
#[derive(Debug, Clone)]
pub struct Viewer {
    pub name: String,
    pub role: Role,
    pub csrf: String,
}

impl Viewer {
    /// How the person appears in custody records.
    pub fn actor(&self) -> String {
        format!("console:{}", self.name)
    }

    /// Whether they may request collections and annotate (everyone but a viewer).
    pub fn can_act(&self) -> bool {
        matches!(self.role, Role::Admin | Role::Analyst)
    }

    pub fn require_act(&self) -> PageResult<()> {
        if self.can_act() {
            Ok(())
        } else {
            Err(PageError(
                StatusCode::FORBIDDEN,
                format!(
                    "{} signed in as {} may look, not act",
                    self.name,
                    self.role.as_str()
                ),
            ))
        }
    }

    /// A state-changing request must carry this session's CSRF token.
    pub fn check_csrf(&self, given: &str) -> PageResult<()> {
        if !given.is_empty() && constant_time_eq(given.as_bytes(), self.csrf.as_bytes()) {
            Ok(())
        } else {
            Err(PageError(
                StatusCode::FORBIDDEN,
                "this form is stale or was not sent from the console (no valid CSRF token): reload the page and try again".into(),
            ))
        }
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn cookie_secret(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.to_string())
}

/// The middleware of every page: a live session, or the sign-in page (401 for anything but
/// a plain GET, which is sent there).
pub(super) async fn session(AxState(state): AxState<S>, mut req: Request, next: Next) -> Response {
    let found = match cookie_secret(req.headers()) {
        Some(secret) => match state.meta().session(&secret) {
            Ok(s) => s,
            Err(e) => return PageError::from(e).into_response(),
        },
        None => None,
    };
    let Some(s) = found else {
        if req.method() == axum::http::Method::GET {
            let next_url = req
                .uri()
                .path_and_query()
                .map(|p| p.as_str())
                .unwrap_or("/");
            let target = format!("/login?next={}", urlencode(next_url));
            let mut r = Redirect::to(&target).into_response();
            *r.status_mut() = StatusCode::SEE_OTHER;
            return r;
        }
        return PageError(StatusCode::UNAUTHORIZED, "sign in first".into()).into_response();
    };
    req.extensions_mut().insert(Viewer {
        name: s.name,
        role: s.role,
        csrf: s.csrf,
    });
    next.run(req).await
}

/// Percent-encoding for a query parameter.
pub fn urlencode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// Only paths of this console are followed after sign-in, never another site.
pub(super) fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n) if n.starts_with('/') && !n.starts_with("//") && !n.contains('\\') => n.to_string(),
        _ => "/".to_string(),
    }
}

pub(super) fn routes() -> Router<S> {
    Router::new()
        .route("/login", get(login_page).post(login))
        .route("/login/link/{code}", get(login_link))
        .route("/logout", post(logout))
}

#[derive(Deserialize)]
struct NextQuery {
    next: Option<String>,
}

async fn login_page(Query(q): Query<NextQuery>) -> Response {
    render_login(q.next.as_deref(), None, StatusCode::OK)
}

fn render_login(next: Option<&str>, error: Option<&str>, code: StatusCode) -> Response {
    let page = layout::bare(
        "Sign in — cairn",
        html! {
            main.narrow {
                h1 { "cairn" }
                p { "Sign in with an API token (admin, analyst or viewer), or open a link from "
                    code { "cairn-collector console-link" } "." }
                @if let Some(e) = error { p.error { (e) } }
                form method="post" action="/login" {
                    input type="hidden" name="next" value=(safe_next(next));
                    label for="token" { "API token" }
                    input #token type="password" name="token" autocomplete="off" autofocus;
                    button type="submit" { "Sign in" }
                }
            }
        },
    );
    (code, page).into_response()
}

#[derive(Deserialize)]
struct LoginForm {
    token: String,
    next: Option<String>,
}

fn signed_in(state: &S, name: &str, role: Role, next: &str) -> PageResult<Response> {
    let (secret, _) = state.meta().create_session(name, role, SESSION_SECS)?;
    let mut r = Redirect::to(next).into_response();
    *r.status_mut() = StatusCode::SEE_OTHER;
    let cookie = format!(
        "{COOKIE}={secret}; HttpOnly; Secure; SameSite=Strict; Path=/; Max-Age={SESSION_SECS}"
    );
    r.headers_mut().insert(
        header::SET_COOKIE,
        cookie
            .parse()
            .map_err(|_| PageError(StatusCode::INTERNAL_SERVER_ERROR, "cookie".into()))?,
    );
    tracing::info!("console: {name} ({}) signed in", role.as_str());
    Ok(r)
}

async fn login(AxState(state): AxState<S>, Form(f): Form<LoginForm>) -> Response {
    let next = safe_next(f.next.as_deref());
    match state.meta().check_api_token(f.token.trim()) {
        Ok(Some((_, Role::Trigger))) => render_login(
            Some(&next),
            Some("a trigger token belongs to a detection system and cannot sign in; use an admin, analyst or viewer token"),
            StatusCode::FORBIDDEN,
        ),
        Ok(Some((name, role))) => signed_in(&state, &name, role, &next).unwrap_or_else(|e| e.into_response()),
        Ok(None) => render_login(
            Some(&next),
            Some("unknown API token: make one with `cairn-collector token api --role analyst`, or use the admin token in the collector's admin.token"),
            StatusCode::UNAUTHORIZED,
        ),
        Err(e) => PageError::from(e).into_response(),
    }
}

async fn login_link(AxState(state): AxState<S>, Path(code): Path<String>) -> Response {
    match state.meta().use_link(&code) {
        Ok(Some((name, role))) => signed_in(&state, &name, role, "/").unwrap_or_else(|e| e.into_response()),
        Ok(None) => render_login(
            None,
            Some("this sign-in link was used already or has expired: ask for a new one (`cairn-collector console-link`)"),
            StatusCode::UNAUTHORIZED,
        ),
        Err(e) => PageError::from(e).into_response(),
    }
}

#[derive(Deserialize)]
struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

async fn logout(
    AxState(state): AxState<S>,
    headers: HeaderMap,
    Form(f): Form<CsrfForm>,
) -> Response {
    let Some(secret) = cookie_secret(&headers) else {
        return Redirect::to("/login").into_response();
    };
    match state.meta().session(&secret) {
        Ok(Some(s)) if constant_time_eq(f.csrf.as_bytes(), s.csrf.as_bytes()) => {}
        Ok(_) => {
            return PageError(
                StatusCode::FORBIDDEN,
                "sign-out needs the page's CSRF token".into(),
            )
            .into_response()
        }
        Err(e) => return PageError::from(e).into_response(),
    }
    if let Err(e) = state.meta().end_session(&secret) {
        return PageError::from(e).into_response();
    }
    let mut r = Redirect::to("/login").into_response();
    *r.status_mut() = StatusCode::SEE_OTHER;
    if let Ok(v) =
        format!("{COOKIE}=; HttpOnly; Secure; SameSite=Strict; Path=/; Max-Age=0").parse()
    {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}
