//! Who is calling: the bearer token names a caller and a role; each handler says which roles
//! may do what it does.

use super::{ApiError, ApiResult, S};
use crate::storage::Role;
use axum::extract::{Request, State as AxState};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// Who is calling, from their token.
#[derive(Debug, Clone)]
pub struct Caller {
    pub name: String,
    pub role: Role,
}

pub(super) const READERS: &[Role] = &[Role::Admin, Role::Analyst, Role::Viewer];
pub(super) const COLLECTORS: &[Role] = &[Role::Admin, Role::Analyst, Role::Trigger];
pub(super) const ADMINS: &[Role] = &[Role::Admin];

impl Caller {
    /// How the caller appears in custody records.
    pub(crate) fn actor(&self) -> String {
        format!("api:{}", self.name)
    }

    pub(crate) fn require(&self, allowed: &[Role]) -> ApiResult<()> {
        if allowed.contains(&self.role) {
            Ok(())
        } else {
            Err(ApiError::new(
                StatusCode::FORBIDDEN,
                format!(
                    "token {:?} has role {} which may not do this",
                    self.name,
                    self.role.as_str()
                ),
            ))
        }
    }
}

/// The middleware: a valid bearer token, or 401.
pub(super) async fn bearer(AxState(state): AxState<S>, mut req: Request, next: Next) -> Response {
    let token = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let Some(token) = token else {
        return ApiError::new(
            StatusCode::UNAUTHORIZED,
            "missing bearer token: send `Authorization: Bearer <token>` (the admin token is in the collector's admin.token)",
        )
        .into_response();
    };
    match state.meta().check_api_token(token) {
        Ok(Some((name, role))) => {
            // A machine's token may leak: every request it makes counts against its budget.
            if role == Role::Trigger {
                if let Err(e) = state.triggers.admit_request(&name) {
                    return ApiError::from(e).into_response();
                }
            }
            req.extensions_mut().insert(Caller { name, role });
            next.run(req).await
        }
        Ok(None) => ApiError::new(StatusCode::UNAUTHORIZED, "unknown API token").into_response(),
        Err(e) => ApiError::from(e).into_response(),
    }
}
