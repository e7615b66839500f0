//! Bearer-token authentication. `Authorization: Bearer TOKEN`, or HTTP Basic with the token as
//! the password (what MLflow's client sends for `MLFLOW_TRACKING_PASSWORD`).

use std::sync::Arc;

use axum::extract::{FromRef, FromRequestParts};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use base64::Engine;
use runstream_views::registry::{Principal, Registry};

use crate::ApiError;

/// The registry a service authenticates against, as axum state.
#[derive(Clone)]
pub struct RegistryState(pub Arc<Registry>);

/// The principal of an authenticated request.
pub struct Authenticated(pub Principal);

impl<S> FromRequestParts<S> for Authenticated
where
    S: Send + Sync,
    RegistryState: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let RegistryState(registry) = RegistryState::from_ref(state);
        let header = parts.headers.get(AUTHORIZATION).ok_or_else(|| {
            ApiError::unauthenticated("missing Authorization header; send 'Authorization: Bearer <token>'")
        })?;
        let header = header
            .to_str()
            .map_err(|_| ApiError::unauthenticated("Authorization header is not visible ASCII"))?;
        let token = token_from_header(header)?;
        Ok(Authenticated(registry.authenticate(&token)?))
    }
}

fn token_from_header(h: &str) -> Result<String, ApiError> {
    let (scheme, rest) = h.trim().split_once(' ').unwrap_or((h, ""));
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("bearer") && !rest.is_empty() {
        return Ok(rest.to_string());
    }
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(rest)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(|| ApiError::unauthenticated("malformed Basic credentials"))?;
        if let Some((_, password)) = decoded.split_once(':').filter(|(_, p)| !p.is_empty()) {
            return Ok(password.to_string());
        }
        return Err(ApiError::unauthenticated(
            "Basic credentials need the token as password",
        ));
    }
    Err(ApiError::unauthenticated(
        "malformed Authorization header; expected 'Bearer <token>'",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_and_basic_headers() {
        assert_eq!(token_from_header("Bearer abc").unwrap(), "abc");
        assert_eq!(token_from_header("bearer  abc ").unwrap(), "abc");
        let basic = base64::engine::general_purpose::STANDARD.encode("user:tok");
        assert_eq!(token_from_header(&format!("Basic {basic}")).unwrap(), "tok");
        assert!(token_from_header("Bearer").is_err());
        assert!(token_from_header("Token abc").is_err());
        assert!(token_from_header("Basic !!!").is_err());
    }
}
