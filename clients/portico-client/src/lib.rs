//! A typed client of the Portico REST API, so partners and internal services call
//! Portico without hand-crafting HTTP: the request and response bodies are the
//! gateway's own types (crate `portico-api`), errors are decoded problem+json
//! ([`ApiError`] with its stable `code` and field errors), list routes are
//! [`futures::Stream`]s over their cursor pages, and 429/503 answers are retried with
//! backoff, honouring `Retry-After` within a bound ([`RetryPolicy`]).
//!
//! ```no_run
//! # async fn demo() -> Result<(), portico_client::Error> {
//! use portico_client::{Auth, Client};
//! let client = Client::builder("http://127.0.0.1:8080")
//!     .auth(Auth::service("dev-service-token", "user-1"))
//!     .build()?;
//! # Ok(()) }
//! ```
//!
//! TLS uses rustls with the `ring` provider, which [`ClientBuilder::build`] installs
//! when no provider is installed yet (reqwest is built without one).

pub mod admin;
pub mod audit;
pub mod bulk_orders;
pub mod error;
pub mod events;
pub mod integrations;
pub mod listen;
pub mod pagination;
pub mod retry;
pub mod webhooks;

use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use reqwest::StatusCode;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde::Serialize;
use serde::de::DeserializeOwned;

pub use error::{ApiError, Error, Problem};
pub use pagination::{Paged, paginate};
/// The request and response bodies, the gateway's own types.
pub use portico_api as api;
/// The domain's enums the bodies hold (statuses, scopes, types).
pub use portico_domain as domain;
pub use portico_domain::FieldError;
/// Typed ids the methods take, so a webhook id and a delivery id cannot be swapped.
pub use portico_domain::ids;
/// HTTP method and header types of [`Client::send`], so callers need no reqwest import.
pub use reqwest::{Method, header};
pub use retry::RetryPolicy;

/// The header internal services name the user they act for with.
pub const USER_ID_HEADER: &str = "x-portico-user-id";
/// The header operators name themselves with (recorded in audit rows).
pub const OPERATOR_HEADER: &str = "x-portico-operator";

/// Who the client is. Portico tells callers apart by their `Authorization` header.
#[derive(Clone, PartialEq, Eq)]
pub enum Auth {
    /// No credentials (health checks, or to see the 401 answer).
    None,
    /// A user's HS256/JWKS token (`Authorization: Bearer <jwt>`).
    UserJwt(String),
    /// An internal service: the service token plus the user it acts for.
    Service {
        /// `PORTICO_SERVICE_TOKEN`.
        token: String,
        /// Sent as `x-portico-user-id`.
        user_id: String,
    },
    /// A partner integration's API key and secret (`Authorization: Basic`).
    Partner {
        /// The integration's API key.
        api_key: String,
        /// Its secret.
        api_secret: String,
    },
    /// An operator (`PORTICO_OPERATOR_TOKEN`), optionally naming themselves.
    Operator {
        /// The operator token.
        token: String,
        /// Sent as `x-portico-operator` when set.
        name: Option<String>,
    },
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Credentials never reach logs through Debug.
        match self {
            Auth::None => f.write_str("Auth::None"),
            Auth::UserJwt(_) => f.write_str("Auth::UserJwt(<redacted>)"),
            Auth::Service { user_id, .. } => write!(f, "Auth::Service(user {user_id:?})"),
            Auth::Partner { api_key, .. } => write!(f, "Auth::Partner(key {api_key:?})"),
            Auth::Operator { name, .. } => write!(f, "Auth::Operator({name:?})"),
        }
    }
}

impl Auth {
    /// The service token acting for `user_id`.
    pub fn service(token: impl Into<String>, user_id: impl Into<String>) -> Self {
        Auth::Service {
            token: token.into(),
            user_id: user_id.into(),
        }
    }

    /// A partner's Basic credentials.
    pub fn partner(api_key: impl Into<String>, api_secret: impl Into<String>) -> Self {
        Auth::Partner {
            api_key: api_key.into(),
            api_secret: api_secret.into(),
        }
    }

    fn headers(&self) -> Result<HeaderMap, Error> {
        let mut headers = HeaderMap::new();
        let value = |text: String| {
            let mut v = HeaderValue::from_str(&text)
                .map_err(|_| Error::Config("credentials contain invalid characters".into()))?;
            v.set_sensitive(true);
            Ok::<_, Error>(v)
        };
        match self {
            Auth::None => {}
            Auth::UserJwt(token) => {
                headers.insert(header::AUTHORIZATION, value(format!("Bearer {token}"))?);
            }
            Auth::Service { token, user_id } => {
                headers.insert(header::AUTHORIZATION, value(format!("Bearer {token}"))?);
                headers.insert(
                    HeaderName::from_static(USER_ID_HEADER),
                    HeaderValue::from_str(user_id)
                        .map_err(|_| Error::Config("the user id is not a header value".into()))?,
                );
            }
            Auth::Partner {
                api_key,
                api_secret,
            } => {
                let basic = base64::engine::general_purpose::STANDARD
                    .encode(format!("{api_key}:{api_secret}"));
                headers.insert(header::AUTHORIZATION, value(format!("Basic {basic}"))?);
            }
            Auth::Operator { token, name } => {
                headers.insert(header::AUTHORIZATION, value(format!("Bearer {token}"))?);
                if let Some(name) = name {
                    headers.insert(
                        HeaderName::from_static(OPERATOR_HEADER),
                        HeaderValue::from_str(name).map_err(|_| {
                            Error::Config("the operator name is not a header value".into())
                        })?,
                    );
                }
            }
        }
        Ok(headers)
    }
}

/// Builds a [`Client`]; every setting has a default except the base URL.
#[derive(Debug, Clone)]
pub struct ClientBuilder {
    base_url: String,
    auth: Auth,
    retry: RetryPolicy,
    timeout: Duration,
    user_agent: String,
}

impl ClientBuilder {
    /// Credentials sent with every request.
    pub fn auth(mut self, auth: Auth) -> Self {
        self.auth = auth;
        self
    }

    /// Retries of 429/503 answers.
    pub fn retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// Time limit of one attempt (default 30 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The `User-Agent` (default `portico-client/<version>`).
    pub fn user_agent(mut self, user_agent: impl Into<String>) -> Self {
        self.user_agent = user_agent.into();
        self
    }

    /// Checks the URL and credentials and builds the HTTP client.
    pub fn build(self) -> Result<Client, Error> {
        // reqwest is built with `rustls-no-provider`: without a process-wide provider,
        // building a client panics. Installing twice is harmless (the second is refused).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let base = url::Url::parse(self.base_url.trim_end_matches('/'))
            .map_err(|e| Error::Config(format!("base URL {:?}: {e}", self.base_url)))?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(Error::Config(format!(
                "base URL {:?} must be http or https",
                self.base_url
            )));
        }
        let auth_headers = self.auth.headers()?;
        let http = reqwest::Client::builder()
            .timeout(self.timeout)
            .user_agent(self.user_agent)
            .build()?;
        Ok(Client {
            http,
            base: self.base_url.trim_end_matches('/').to_owned(),
            auth_headers,
            retry: self.retry,
        })
    }
}

/// The Portico REST client. Cheap to clone (one connection pool).
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    auth_headers: HeaderMap,
    retry: RetryPolicy,
}

/// A request body, kept as bytes so a retried request sends the same body again.
#[derive(Debug, Clone)]
pub enum Body {
    /// No body.
    Empty,
    /// A JSON document.
    Json(Bytes),
    /// Bytes with their own media type (NDJSON uploads).
    Raw {
        /// The bytes.
        bytes: Bytes,
        /// Their `Content-Type`.
        content_type: &'static str,
    },
}

impl Body {
    /// Serialises a value as JSON.
    pub fn json<T: Serialize + ?Sized>(value: &T) -> Result<Self, Error> {
        serde_json::to_vec(value)
            .map(|v| Body::Json(v.into()))
            .map_err(|e| Error::Config(format!("request body: {e}")))
    }
}

/// A successful answer: status, head and body bytes.
#[derive(Debug, Clone)]
pub struct RawResponse {
    /// The status (2xx).
    pub status: u16,
    /// The response headers.
    pub headers: HeaderMap,
    /// The body.
    pub body: Bytes,
}

impl RawResponse {
    /// Decodes the body as `T`.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, Error> {
        serde_json::from_slice(&self.body).map_err(|source| Error::Decode {
            status: self.status,
            source,
        })
    }
}

impl Client {
    /// Starts a builder for the server at `base_url` (the root, e.g.
    /// `http://127.0.0.1:8080`; routes go under `/api/v1`).
    pub fn builder(base_url: impl Into<String>) -> ClientBuilder {
        ClientBuilder {
            base_url: base_url.into(),
            auth: Auth::None,
            retry: RetryPolicy::default(),
            timeout: Duration::from_secs(30),
            user_agent: concat!("portico-client/", env!("CARGO_PKG_VERSION")).to_owned(),
        }
    }

    /// The server root this client calls.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// The credential headers every request carries, for connections the client does
    /// not make itself (the live WebSocket).
    pub fn auth_headers(&self) -> &HeaderMap {
        &self.auth_headers
    }

    /// Any route: `path` below `/api/v1` (e.g. `/webhooks`), query pairs whose `None`
    /// values are left out, a body and extra headers. Retries 429/503 per the policy;
    /// an error status becomes [`Error::Api`].
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        query: &[(String, String)],
        body: Body,
        extra_headers: HeaderMap,
    ) -> Result<RawResponse, Error> {
        let mut url = url::Url::parse(&format!("{}/api/v1{path}", self.base))
            .map_err(|e| Error::Config(format!("URL for {path}: {e}")))?;
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        // One request id for every attempt, so the gateway's logs tie retries together.
        let request_id = uuid::Uuid::new_v4().to_string();
        let mut retry = 0;
        loop {
            let mut request = self
                .http
                .request(method.clone(), url.clone())
                .headers(self.auth_headers.clone())
                .headers(extra_headers.clone())
                .header("x-request-id", &request_id)
                .header(header::ACCEPT, "application/json");
            request = match &body {
                Body::Empty => request,
                Body::Json(bytes) => request
                    .header(header::CONTENT_TYPE, "application/json")
                    .body(bytes.clone()),
                Body::Raw {
                    bytes,
                    content_type,
                } => request
                    .header(header::CONTENT_TYPE, *content_type)
                    .body(bytes.clone()),
            };
            let response = request.send().await?;
            let status = response.status();
            let headers = response.headers().clone();
            let bytes = response.bytes().await?;
            if status.is_success() {
                return Ok(RawResponse {
                    status: status.as_u16(),
                    headers,
                    body: bytes,
                });
            }
            let err = ApiError::from_parts(status.as_u16(), &headers, &bytes);
            retry += 1;
            if RetryPolicy::retryable_status(status.as_u16())
                && let Some(wait) = self.retry.delay(retry, err.retry_after)
            {
                tokio::time::sleep(wait).await;
                continue;
            }
            return Err(Error::Api(Box::new(err)));
        }
    }

    /// A JSON call whose answer decodes as `R`.
    pub async fn call<R: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        query: &[(String, String)],
        body: Body,
    ) -> Result<R, Error> {
        self.send(method, path, query, body, HeaderMap::new())
            .await?
            .json()
    }

    /// A call whose success answer has no body worth reading (204).
    pub async fn call_empty(
        &self,
        method: Method,
        path: &str,
        query: &[(String, String)],
        body: Body,
    ) -> Result<StatusCode, Error> {
        let response = self
            .send(method, path, query, body, HeaderMap::new())
            .await?;
        Ok(StatusCode::from_u16(response.status).unwrap_or(StatusCode::OK))
    }
}

/// The query pairs of a parameter struct, from its serde form (so the names are the
/// API type's own): every field that is not null, as text.
pub fn query_of<T: Serialize>(params: &T) -> Result<Vec<(String, String)>, Error> {
    let value = serde_json::to_value(params).map_err(|e| Error::Config(format!("query: {e}")))?;
    let serde_json::Value::Object(map) = value else {
        return Err(Error::Config("query parameters must be a struct".into()));
    };
    Ok(map
        .into_iter()
        .filter_map(|(k, v)| match v {
            serde_json::Value::Null => None,
            serde_json::Value::String(s) => Some((k, s)),
            other => Some((k, other.to_string())),
        })
        .collect())
}

/// Query pairs from names and optional values; `None` values are left out.
pub fn query_pairs(pairs: &[(&str, Option<String>)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| ((*k).to_owned(), v.clone())))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A parameter struct becomes its camelCase pairs, nulls left out.
    #[test]
    fn query_from_a_struct() {
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct Q {
            event_type: Option<String>,
            limit: Option<u32>,
            cursor: Option<String>,
        }
        let q = Q {
            event_type: Some("order.created".into()),
            limit: Some(5),
            cursor: None,
        };
        assert_eq!(
            query_of(&q).unwrap(),
            vec![
                ("eventType".to_owned(), "order.created".to_owned()),
                ("limit".to_owned(), "5".to_owned())
            ]
        );
        assert_eq!(
            query_pairs(&[("a", None), ("b", Some("x".into()))]),
            vec![("b".to_owned(), "x".to_owned())]
        );
    }

    /// Each kind of caller sends the header the gateway authenticates.
    #[test]
    fn auth_headers_per_caller() {
        let h = Auth::service("tok", "user-1").headers().unwrap();
        assert_eq!(h[header::AUTHORIZATION], "Bearer tok");
        assert_eq!(h[USER_ID_HEADER], "user-1");
        let h = Auth::partner("pk_1", "sk_2").headers().unwrap();
        // base64("pk_1:sk_2")
        assert_eq!(h[header::AUTHORIZATION], "Basic cGtfMTpza18y");
        let h = Auth::UserJwt("a.b.c".into()).headers().unwrap();
        assert_eq!(h[header::AUTHORIZATION], "Bearer a.b.c");
        assert!(h.get(USER_ID_HEADER).is_none());
        assert!(Auth::None.headers().unwrap().is_empty());
        assert!(Auth::UserJwt("bad\ntoken".into()).headers().is_err());
        assert!(!format!("{:?}", Auth::service("secret-tok", "u")).contains("secret-tok"));
    }

    /// A base URL must be http(s).
    #[test]
    fn base_url_is_checked() {
        assert!(Client::builder("ftp://x").build().is_err());
        assert!(Client::builder("not a url").build().is_err());
        let c = Client::builder("http://127.0.0.1:1/").build().unwrap();
        assert_eq!(c.base_url(), "http://127.0.0.1:1");
    }
}
