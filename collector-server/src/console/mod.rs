//! The web console: server-rendered pages on the API listener at `/`, same TLS, same tokens
//! and roles (plus `viewer`; a `trigger` token cannot sign in). Pages call the same domain
//! functions as the JSON API — one query engine, one collection lifecycle — and every value
//! they show goes through maud's escaping: argv, file names, log lines and hostnames are
//! attacker-controlled. Every asset is compiled in; nothing is fetched at run time.
//!
//! - [`auth`]: sign-in (token or one-time link), the session cookie, CSRF, roles.
//! - [`layout`]: the page shell, tables, time and size formatting.
//! - [`fleet`], [`architecture`], [`hosts`], [`collections`], [`timeline`]: the pages;
//!   [`cases`]: notes on events and collections, and cases that group them.

mod architecture;
mod assets;
mod auth;
mod cases;
mod collections;
mod containment;
mod events;
mod fleet;
mod hosts;
mod layout;
mod saved;
mod timeline;

use crate::error::Error;
use crate::state::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::Router;
use maud::html;
use std::sync::Arc;

type S = Arc<State>;

pub use auth::Viewer;

/// A page that could not be shown: its status and what to tell the person.
#[derive(Debug)]
pub struct PageError(pub StatusCode, pub String);

impl From<Error> for PageError {
    fn from(e: Error) -> Self {
        let code = match &e {
            Error::NotFound(_) => StatusCode::NOT_FOUND,
            Error::Conflict(_) => StatusCode::CONFLICT,
            Error::Invalid(_) => StatusCode::BAD_REQUEST,
            Error::Forbidden(_) => StatusCode::FORBIDDEN,
            Error::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            _ => {
                tracing::error!("console: {e}");
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        PageError(code, e.to_string())
    }
}

impl From<crate::storage::StorageError> for PageError {
    fn from(e: crate::storage::StorageError) -> Self {
        Error::from(e).into()
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let body = layout::bare(
            "cairn",
            html! {
                main.narrow {
                    h1 { (self.0.as_u16()) " " (self.0.canonical_reason().unwrap_or("")) }
                    p.error { (self.1) }
                    p { a href="/" { "Back to the fleet" } }
                }
            },
        );
        (self.0, body).into_response()
    }
}

pub(crate) type PageResult<T> = std::result::Result<T, PageError>;

/// Run store calls off the async workers: the store is synchronous.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> PageResult<T> + Send + 'static,
) -> PageResult<T> {
    tokio::task::spawn_blocking(f).await.map_err(|e| {
        PageError(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("console task: {e}"),
        )
    })?
}

/// After a form: go to the page that shows its result.
pub(crate) fn see_other(to: &str) -> Response {
    let mut r = axum::response::Redirect::to(to).into_response();
    *r.status_mut() = StatusCode::SEE_OTHER;
    r
}

/// Host id → hostname, for pages that name hosts.
pub(crate) fn hostnames(state: &S) -> PageResult<std::collections::HashMap<String, String>> {
    Ok(state
        .meta()
        .list_hosts()?
        .into_iter()
        .map(|h| (h.id, h.hostname))
        .collect())
}

/// The console's routes; every page but the sign-in ones needs a session.
pub fn router(state: S) -> Router {
    let pages = Router::new()
        .merge(fleet::routes())
        .merge(architecture::routes())
        .merge(hosts::routes())
        .merge(containment::routes())
        .merge(collections::routes())
        .merge(timeline::routes())
        .merge(cases::routes())
        .layer(middleware::from_fn_with_state(state.clone(), auth::session));
    Router::new()
        .merge(pages)
        .merge(auth::routes())
        .merge(assets::routes())
        .layer(middleware::map_response(security_headers))
        .with_state(state)
}

/// What every console answer carries: no framing, no sniffing, no referrer, only our own
/// scripts and styles.
async fn security_headers(mut r: Response) -> Response {
    let h = r.headers_mut();
    for (k, v) in [
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_FRAME_OPTIONS, "DENY"),
    ] {
        h.insert(k, HeaderValue::from_static(v));
    }
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    r
}
