//! Off loopback, the dashboard shows what the coordinator's token holders may see: every request
//! (but `/healthz` and the login form) must carry the token as `Authorization: Bearer TOKEN`, or
//! the cookie the login form sets. The cookie holds a digest of the token made for the
//! dashboard only, so a leaked cookie cannot join sessions.

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq as _;

use super::AppState;

/// The name of the login cookie.
pub(crate) const COOKIE: &str = "task_sharding_dashboard";

/// The token, and the cookie value it grants.
#[derive(Clone)]
pub(crate) struct Credentials {
    /// SHA-256 of the token: what a bearer header is compared with.
    token_digest: [u8; 32],
    /// The cookie's value: a digest of the token for this use only.
    cookie: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Credentials(..)")
    }
}

fn sha256(parts: &[&[u8]]) -> [u8; 32] {
    use sha2::Digest as _;
    let mut hasher = sha2::Sha256::new();
    for part in parts {
        hasher.update(part);
    }
    hasher.finalize().into()
}

impl Credentials {
    /// Credentials for `token`.
    pub(crate) fn new(token: &str) -> Self {
        Credentials {
            token_digest: sha256(&[token.as_bytes()]),
            cookie: hex::encode(sha256(&[
                b"task-sharding dashboard cookie\0",
                token.as_bytes(),
            ])),
        }
    }

    /// Whether `presented` is the token (compared as digests, in constant time).
    pub(crate) fn is_token(&self, presented: &str) -> bool {
        bool::from(sha256(&[presented.as_bytes()]).ct_eq(&self.token_digest))
    }

    /// The `Set-Cookie` value that logs a browser in.
    pub(crate) fn set_cookie(&self) -> String {
        format!(
            "{COOKIE}={}; Path=/; HttpOnly; Secure; SameSite=Strict; Max-Age=86400",
            self.cookie
        )
    }

    fn allows(&self, headers: &HeaderMap) -> bool {
        let bearer = headers
            .get_all(header::AUTHORIZATION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .filter_map(|v| v.strip_prefix("Bearer "))
            .any(|token| self.is_token(token.trim()));
        let cookie = headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|pair| pair.trim().strip_prefix(COOKIE)?.strip_prefix('='))
            .any(|value| bool::from(value.as_bytes().ct_eq(self.cookie.as_bytes())));
        bearer || cookie
    }
}

/// Lets a request through when no token is required or it carries one; otherwise answers 401
/// (with the login form, for a page).
pub(crate) async fn require_token(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let Some(credentials) = &state.auth else {
        return next.run(request).await;
    };
    let path = request.uri().path();
    if path == "/healthz" || path == "/login" || credentials.allows(request.headers()) {
        return next.run(request).await;
    }
    let page = !(path.starts_with("/api") || path == "/metrics");
    let body = if page {
        super::pages::login(false).into_response()
    } else {
        "this dashboard requires the coordinator's token: Authorization: Bearer TOKEN\n"
            .into_response()
    };
    let mut response = (StatusCode::UNAUTHORIZED, body).into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer"),
    );
    response
}
