//! Extractors whose rejections speak the API's error shape instead of axum's plain text.

use axum::extract::{FromRequestParts, Path};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use crate::ApiError;

/// URL path parameters. Put it after `Authenticated` in a handler's arguments, so that a request
/// without credentials is refused with 401 before its URL is looked at.
pub struct UrlPath<T>(pub T);

impl<S, T> FromRequestParts<S> for UrlPath<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(v)) => Ok(UrlPath(v)),
            Err(e) => Err(ApiError::invalid("path", e.body_text())),
        }
    }
}
