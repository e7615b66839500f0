//! Requests and errors as MLflow's client sends and expects them.
//!
//! The client sends a GET's fields as query parameters (a repeated field as a repeated
//! parameter) and a POST's as a JSON object, with int64 fields as numbers or decimal strings
//! (protobuf's JSON mapping) and non-finite doubles as the bare words `NaN` and `Infinity`
//! (Python's `json.dumps`). Errors go back as `{"error_code", "message"}` with the HTTP status
//! MLflow uses for the code, which the client turns into its exception.

use axum::body::Body;
use axum::extract::{FromRequest, Request};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use runstream_http::ApiError;
use serde_json::{Map, Value};

/// Largest request body: a log-batch at MLflow's limits is well under 1 MiB.
const BODY_LIMIT: usize = 16 << 20;

#[derive(Debug)]
pub struct MlflowError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl MlflowError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "INVALID_PARAMETER_VALUE", message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "RESOURCE_DOES_NOT_EXIST", message)
    }

    pub fn exists(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "RESOURCE_ALREADY_EXISTS", message)
    }

    pub fn missing(field: &str) -> Self {
        Self::invalid(format!(
            "Missing value for required parameter '{field}'. See the API docs for more information about request parameters."
        ))
    }
}

impl From<ApiError> for MlflowError {
    fn from(e: ApiError) -> Self {
        let code = match e.status {
            StatusCode::BAD_REQUEST | StatusCode::PAYLOAD_TOO_LARGE | StatusCode::UNSUPPORTED_MEDIA_TYPE => {
                "INVALID_PARAMETER_VALUE"
            }
            StatusCode::UNAUTHORIZED => "UNAUTHENTICATED",
            StatusCode::FORBIDDEN => "PERMISSION_DENIED",
            StatusCode::NOT_FOUND => "RESOURCE_DOES_NOT_EXIST",
            StatusCode::CONFLICT => "RESOURCE_ALREADY_EXISTS",
            StatusCode::TOO_MANY_REQUESTS => "REQUEST_LIMIT_EXCEEDED",
            StatusCode::SERVICE_UNAVAILABLE | StatusCode::GATEWAY_TIMEOUT => "TEMPORARILY_UNAVAILABLE",
            _ => "INTERNAL_ERROR",
        };
        Self::new(e.status, code, e.message)
    }
}

impl From<runstream_views::ViewError> for MlflowError {
    fn from(e: runstream_views::ViewError) -> Self {
        ApiError::from(e).into()
    }
}

impl From<runstream_log::LogError> for MlflowError {
    fn from(e: runstream_log::LogError) -> Self {
        ApiError::from(e).into()
    }
}

impl From<runstream_views::registry::AuthError> for MlflowError {
    fn from(e: runstream_views::registry::AuthError) -> Self {
        ApiError::from(e).into()
    }
}

impl IntoResponse for MlflowError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error_code": self.code, "message": self.message });
        let mut resp = (self.status, axum::Json(body)).into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            resp.headers_mut()
                .insert(axum::http::header::RETRY_AFTER, axum::http::HeaderValue::from(1));
        }
        resp
    }
}

pub type Answer = Result<axum::Json<Value>, MlflowError>;

async fn body_bytes(req: Request<Body>) -> Result<axum::body::Bytes, MlflowError> {
    axum::body::to_bytes(req.into_body(), BODY_LIMIT)
        .await
        .map_err(|e| MlflowError::invalid(format!("reading the request body failed: {e}")))
}

/// A request body as JSON, with Python's bare `NaN` / `Infinity` words read as strings; `None`
/// for an empty body.
fn json_body<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<Option<T>, MlflowError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let text = quote_non_finite(bytes);
    serde_json::from_slice::<T>(&text).map(Some).map_err(|e| {
        if e.is_data() {
            MlflowError::invalid(format!(
                "the request body must be a JSON object of the request's fields: {e}"
            ))
        } else {
            MlflowError::new(
                StatusCode::BAD_REQUEST,
                "MALFORMED_REQUEST",
                format!("the request body is not valid JSON: {e}"),
            )
        }
    })
}

/// A `runs/log-batch` body, typed: its thousand metrics are read into plain structs rather than
/// a JSON object each. Fields keep their JSON values, checked as every other request's are.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
pub struct BatchReq {
    pub run_id: Option<Value>,
    pub run_uuid: Option<Value>,
    pub metrics: Option<Vec<MetricIn>>,
    pub params: Option<Vec<Value>>,
    pub tags: Option<Vec<Value>>,
}

/// One metric of a log-batch.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
pub struct MetricIn {
    pub key: Option<Value>,
    pub value: Option<Value>,
    pub timestamp: Option<Value>,
    pub step: Option<Value>,
    pub model_id: Option<Value>,
}

impl<S: Send + Sync> FromRequest<S> for BatchReq {
    type Rejection = MlflowError;

    async fn from_request(req: Request<Body>, _: &S) -> Result<Self, Self::Rejection> {
        let bytes = body_bytes(req).await?;
        // serde reads a struct from an array too (fields by position); MLflow sends objects.
        match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
            None => return Ok(BatchReq::default()),
            Some(b'{') => {}
            Some(_) => return Err(MlflowError::invalid("the request body must be a JSON object")),
        }
        Ok(json_body::<BatchReq>(&bytes)?.unwrap_or_default())
    }
}

impl BatchReq {
    pub fn run_id(&self) -> Result<String, MlflowError> {
        run_id_of(self.run_id.as_ref(), self.run_uuid.as_ref())
    }
}

/// `run_id`, or the older `run_uuid` the client still sends.
fn run_id_of(run_id: Option<&Value>, run_uuid: Option<&Value>) -> Result<String, MlflowError> {
    let text = |v: Option<&Value>, field: &str| match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(other) => Err(MlflowError::invalid(format!(
            "Invalid value {other} for parameter '{field}' supplied: expected a string"
        ))),
    };
    match text(run_id, "run_id")?.filter(|s| !s.is_empty()) {
        Some(id) => Ok(id),
        None => text(run_uuid, "run_uuid")?
            .filter(|s| !s.is_empty())
            .ok_or_else(|| MlflowError::missing("run_id")),
    }
}

/// The fields of a request, from its query (GET) or its JSON body (other methods).
#[derive(Debug, Default)]
pub struct Req(pub Map<String, Value>);

impl<S: Send + Sync> FromRequest<S> for Req {
    type Rejection = MlflowError;

    async fn from_request(req: Request<Body>, _: &S) -> Result<Self, Self::Rejection> {
        if req.method() == Method::GET || req.method() == Method::DELETE {
            return Ok(Req(query_fields(req.uri().query().unwrap_or(""))));
        }
        let bytes = body_bytes(req).await?;
        match json_body::<Value>(&bytes)? {
            None => Ok(Req::default()),
            Some(Value::Object(m)) => Ok(Req(m)),
            Some(_) => Err(MlflowError::invalid("the request body must be a JSON object")),
        }
    }
}

/// A query string as fields: a parameter given once is a string, one repeated an array.
fn query_fields(q: &str) -> Map<String, Value> {
    let mut m = Map::new();
    for (k, v) in form_urlencoded::parse(q.as_bytes()) {
        let v = Value::String(v.into_owned());
        match m.get_mut(k.as_ref()) {
            Some(Value::Array(a)) => a.push(v),
            Some(prev) => {
                let first = prev.take();
                *prev = Value::Array(vec![first, v]);
            }
            None => {
                m.insert(k.into_owned(), v);
            }
        }
    }
    m
}

/// Puts the bare words `NaN`, `Infinity` and `-Infinity` that Python writes into JSON in quotes,
/// outside strings, so a standard parser reads them; [`Req::f64`] turns them back into numbers.
fn quote_non_finite(body: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    // `contains` on bytes is a memchr: most bodies have neither letter and skip the scan.
    let maybe = (body.contains(&b'N') || body.contains(&b'I')) && body.windows(3).any(|w| w == b"NaN" || w == b"Inf");
    if !maybe {
        return std::borrow::Cow::Borrowed(body);
    }
    let mut out = Vec::with_capacity(body.len() + 16);
    let (mut in_str, mut escaped) = (false, false);
    let mut i = 0;
    while i < body.len() {
        let c = body[i];
        if in_str {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == b'\\' {
                escaped = true;
            } else if c == b'"' {
                in_str = false;
            }
            i += 1;
            continue;
        }
        let word = [&b"-Infinity"[..], b"Infinity", b"NaN"]
            .into_iter()
            .find(|w| body[i..].starts_with(w));
        match word {
            Some(w) => {
                out.push(b'"');
                out.extend_from_slice(w);
                out.push(b'"');
                i += w.len();
            }
            None => {
                in_str = c == b'"';
                out.push(c);
                i += 1;
            }
        }
    }
    std::borrow::Cow::Owned(out)
}

impl Req {
    pub fn get(&self, field: &str) -> Option<&Value> {
        self.0.get(field).filter(|v| !v.is_null())
    }

    /// A string field; numbers are taken as their decimal text (ids sent as numbers).
    pub fn str(&self, field: &str) -> Result<Option<String>, MlflowError> {
        match self.get(field) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(Value::Number(n)) => Ok(Some(n.to_string())),
            Some(other) => Err(MlflowError::invalid(format!(
                "Invalid value {other} for parameter '{field}' supplied: expected a string"
            ))),
        }
    }

    pub fn required_str(&self, field: &str) -> Result<String, MlflowError> {
        self.str(field)?
            .filter(|s| !s.is_empty())
            .ok_or_else(|| MlflowError::missing(field))
    }

    /// `run_id`, or the older `run_uuid` the client still sends.
    pub fn run_id(&self) -> Result<String, MlflowError> {
        run_id_of(self.get("run_id"), self.get("run_uuid"))
    }

    pub fn i64(&self, field: &str) -> Result<Option<i64>, MlflowError> {
        value_i64(self.get(field), field)
    }

    /// A repeated field: an array, or one value given alone.
    pub fn list(&self, field: &str) -> &[Value] {
        match self.get(field) {
            None => &[],
            Some(Value::Array(a)) => a,
            Some(v) => std::slice::from_ref(v),
        }
    }
}

pub fn value_i64(v: Option<&Value>, field: &str) -> Result<Option<i64>, MlflowError> {
    let bad = |v: &Value| {
        MlflowError::invalid(format!(
            "Invalid value {v} for parameter '{field}' supplied: expected an integer"
        ))
    };
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(v @ Value::Number(n)) => n
            .as_i64()
            .or_else(|| {
                n.as_f64()
                    .filter(|f| f.fract() == 0.0 && f.abs() < 9.2e18)
                    .map(|f| f as i64)
            })
            .map(Some)
            .ok_or_else(|| bad(v)),
        Some(v @ Value::String(s)) => s.trim().parse::<i64>().map(Some).map_err(|_| bad(v)),
        Some(v) => Err(bad(v)),
    }
}

pub fn value_f64(v: Option<&Value>, field: &str) -> Result<Option<f64>, MlflowError> {
    let bad = |v: &Value| {
        MlflowError::invalid(format!(
            "Invalid value {v} for parameter '{field}' supplied: expected a number"
        ))
    };
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(v @ Value::Number(n)) => n.as_f64().map(Some).ok_or_else(|| bad(v)),
        Some(v @ Value::String(s)) => match s.trim() {
            "NaN" | "nan" => Ok(Some(f64::NAN)),
            "Infinity" | "inf" => Ok(Some(f64::INFINITY)),
            "-Infinity" | "-inf" => Ok(Some(f64::NEG_INFINITY)),
            t => t.parse::<f64>().map(Some).map_err(|_| bad(v)),
        },
        Some(v) => Err(bad(v)),
    }
}

/// A double as protobuf's JSON mapping writes it: non-finite values as strings.
pub fn double(v: f64) -> Value {
    if v.is_nan() {
        Value::from("NaN")
    } else if v == f64::INFINITY {
        Value::from("Infinity")
    } else if v == f64::NEG_INFINITY {
        Value::from("-Infinity")
    } else {
        Value::from(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_finite_words_are_quoted_outside_strings_only() {
        let body = br#"{"value": NaN, "a": -Infinity, "b": Infinity, "s": "NaN Infinity \" NaN"}"#;
        let v: Value = serde_json::from_slice(&quote_non_finite(body)).unwrap();
        assert_eq!(v["s"], "NaN Infinity \" NaN");
        assert!(value_f64(v.get("value"), "value").unwrap().unwrap().is_nan());
        assert_eq!(value_f64(v.get("a"), "a").unwrap(), Some(f64::NEG_INFINITY));
        assert_eq!(value_f64(v.get("b"), "b").unwrap(), Some(f64::INFINITY));
    }

    #[test]
    fn repeated_query_parameters_become_arrays() {
        let m = query_fields("run_ids=a&run_ids=b&metric_key=loss%2Fx&x=");
        assert_eq!(m["run_ids"], serde_json::json!(["a", "b"]));
        assert_eq!(m["metric_key"], "loss/x");
        assert_eq!(m["x"], "");
    }

    #[test]
    fn int64_fields_take_numbers_and_decimal_strings() {
        let v = serde_json::json!({"a": 5, "b": "-7", "c": "x", "d": 1.5});
        assert_eq!(value_i64(v.get("a"), "a").unwrap(), Some(5));
        assert_eq!(value_i64(v.get("b"), "b").unwrap(), Some(-7));
        let e = value_i64(v.get("c"), "c").unwrap_err();
        assert!(e.message.contains("'c'"), "{}", e.message);
        assert!(value_i64(v.get("d"), "d").is_err());
    }

    async fn batch(body: &str) -> Result<BatchReq, MlflowError> {
        let req = Request::builder()
            .method("POST")
            .body(Body::from(body.to_string()))
            .unwrap();
        BatchReq::from_request(req, &()).await
    }

    #[tokio::test]
    async fn log_batch_bodies_are_read_typed() {
        let b = batch(r#"{"run_uuid": "r1", "metrics": [{"key": "a", "value": NaN, "timestamp": "12", "step": 3, "extra": 1}, {"key": "b"}], "tags": null}"#)
            .await
            .unwrap();
        assert_eq!(b.run_id().unwrap(), "r1");
        let m = b.metrics.as_deref().unwrap();
        assert_eq!(m.len(), 2);
        assert!(value_f64(m[0].value.as_ref(), "value").unwrap().unwrap().is_nan());
        assert_eq!(value_i64(m[0].timestamp.as_ref(), "timestamp").unwrap(), Some(12));
        assert!(m[1].value.is_none() && b.tags.is_none() && b.params.is_none());
        // An empty body has no fields; a body that is not an object, or not JSON, is refused.
        assert!(batch("  ").await.unwrap().run_id().is_err());
        assert_eq!(batch("[1]").await.unwrap_err().code, "INVALID_PARAMETER_VALUE");
        assert_eq!(
            batch(r#"{"metrics": 5}"#).await.unwrap_err().code,
            "INVALID_PARAMETER_VALUE"
        );
        assert_eq!(batch("{nope").await.unwrap_err().code, "MALFORMED_REQUEST");
    }
}
