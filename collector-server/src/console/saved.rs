//! Saved searches from the console: save the search on screen (a relative range stays
//! relative), rename, delete. The same `timeline::search` functions as the API's.

use super::auth::urlencode;
use super::layout;
use super::{blocking, see_other, PageError, PageResult, Viewer, S};
use crate::timeline::search::{self, Params};
use axum::extract::{Form, Path, State as AxState};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::post;
use axum::{Extension, Router};
use maud::{html, Markup};
use serde::Deserialize;

pub(super) fn routes() -> Router<S> {
    Router::new()
        .route("/timeline/searches", post(save_search))
        .route("/timeline/searches/{name}/rename", post(rename_search))
        .route("/timeline/searches/{name}/delete", post(delete_search))
}

pub(super) fn saved_block(viewer: &Viewer, p: &Params, saved: &[serde_json::Value]) -> Markup {
    html! {
        section.saved {
            h3 { "Saved searches" }
            ul {
                @for s in saved {
                    @let name = s["name"].as_str().unwrap_or("");
                    li {
                        a href={"/timeline?saved=" (urlencode(name))} { (layout::clean(name)) }
                        @if viewer.can_act() {
                            details.manage {
                                summary { "…" }
                                form method="post" action={"/timeline/searches/" (urlencode(name)) "/rename"} {
                                    input type="hidden" name="csrf" value=(viewer.csrf);
                                    input type="text" name="to" value=(name) aria-label="new name";
                                    button type="submit" { "Rename" }
                                }
                                form method="post" action={"/timeline/searches/" (urlencode(name)) "/delete"} data-confirm={"Delete the saved search " (name) "?"} {
                                    input type="hidden" name="csrf" value=(viewer.csrf);
                                    button type="submit" { "Delete" }
                                }
                            }
                        }
                    }
                }
            }
            @if viewer.can_act() {
                form.save method="post" action="/timeline/searches" {
                    input type="hidden" name="csrf" value=(viewer.csrf);
                    @for (k, v) in [("query", &p.query), ("last", &p.last), ("from", &p.from), ("to", &p.to)] {
                        @if let Some(v) = v { input type="hidden" name=(k) value=(v); }
                    }
                    input type="text" name="name" placeholder="name this search" aria-label="name" required;
                    button type="submit" { "Save search" }
                }
            }
        }
    }
}

#[derive(Deserialize)]
struct SaveForm {
    #[serde(default)]
    csrf: String,
    name: String,
    query: Option<String>,
    last: Option<String>,
    from: Option<String>,
    to: Option<String>,
}

async fn save_search(
    AxState(state): AxState<S>,
    Extension(viewer): Extension<Viewer>,
    Form(f): Form<SaveForm>,
) -> PageResult<Response> {
    viewer.check_csrf(&f.csrf)?;
    viewer.require_act()?;
    let blank = |v: Option<String>| v.filter(|v| !v.trim().is_empty());
    let params = Params {
        query: blank(f.query),
        last: blank(f.last),
        from: blank(f.from),
        to: blank(f.to),
        ..Params::default()
    };
    let st = state.clone();
    let name = f.name.trim().to_string();
    let by = viewer.actor();
    let n = name.clone();
    blocking(move || {
        search::save(st.meta(), &n, params, &by)?;
        Ok(())
    })
    .await?;
    Ok(see_other(&format!("/timeline?saved={}", urlencode(&name))))
}

#[derive(Deserialize)]
struct RenameForm {
    #[serde(default)]
    csrf: String,
    to: String,
}

async fn rename_search(
    AxState(state): AxState<S>,
    Extension(viewer): Extension<Viewer>,
    Path(name): Path<String>,
    Form(f): Form<RenameForm>,
) -> PageResult<Response> {
    viewer.check_csrf(&f.csrf)?;
    viewer.require_act()?;
    let to = f.to.trim().to_string();
    let st = state.clone();
    let t = to.clone();
    blocking(move || {
        search::rename(st.meta(), &name, &t)?;
        Ok(())
    })
    .await?;
    Ok(see_other(&format!("/timeline?saved={}", urlencode(&to))))
}

#[derive(Deserialize)]
struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

async fn delete_search(
    AxState(state): AxState<S>,
    Extension(viewer): Extension<Viewer>,
    Path(name): Path<String>,
    Form(f): Form<CsrfForm>,
) -> PageResult<Response> {
    viewer.check_csrf(&f.csrf)?;
    viewer.require_act()?;
    let st = state.clone();
    blocking(move || {
        if !st.meta().delete_saved_search(&name)? {
            return Err(PageError(
                StatusCode::NOT_FOUND,
                format!("no saved search {name:?}"),
            ));
        }
        Ok(())
    })
    .await?;
    Ok(see_other("/timeline"))
}
