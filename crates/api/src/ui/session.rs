//! Dashboard sessions and CSRF.
//!
//! The login form takes an API key, checks it with the API's own
//! constant-time comparison, and creates a row in `ui_sessions`. The browser
//! gets only a random 256-bit token in an `HttpOnly; SameSite=Strict;
//! Path=/ui` cookie (`Secure` when the request came over https); the table
//! holds its SHA-256, never the token, and never the key. Every page asks for
//! a [`Session`]: without a live one it redirects (303) to `/ui/login`. Every
//! state-changing form carries the session's CSRF token, compared in constant
//! time ([`Session::check_csrf`]); the login form, which has no session yet,
//! is refused when the browser says it was posted from another site
//! ([`check_same_origin`]).

use std::future::Future;
use std::pin::Pin;

use actix_web::cookie::{Cookie, SameSite};
use actix_web::{web, FromRequest, HttpRequest};
use sha2::{Digest, Sha256};

use super::UiError;
use crate::AppState;

/// The cookie that holds the session token.
pub const COOKIE: &str = "connectra_ui_session";
/// How long a session lives after its login.
pub const SESSION_TTL_SECS: i64 = 8 * 3600;

/// 32 random bytes from the operating system, hex-encoded.
pub(super) fn random_token() -> Result<String, UiError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| {
        tracing::error!(error = %e, "no randomness for a session token");
        UiError::Internal
    })?;
    Ok(hex::encode(bytes))
}

/// What `ui_sessions` stores of a token.
pub(super) fn token_hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// The `Set-Cookie` of a new session.
pub(super) fn session_cookie(req: &HttpRequest, token: String) -> Cookie<'static> {
    Cookie::build(COOKIE, token)
        .path("/ui")
        .http_only(true)
        .same_site(SameSite::Strict)
        .secure(is_https(req))
        .max_age(actix_web::cookie::time::Duration::seconds(SESSION_TTL_SECS))
        .finish()
}

/// The `Set-Cookie` that removes the session cookie.
pub(super) fn removal_cookie(req: &HttpRequest) -> Cookie<'static> {
    let mut cookie = session_cookie(req, String::new());
    cookie.make_removal();
    cookie
}

fn is_https(req: &HttpRequest) -> bool {
    req.connection_info().scheme() == "https"
}

/// Refuses a login posted from another site. Browsers send `Sec-Fetch-Site`
/// (and `Origin` on every POST); a value saying the form came from elsewhere
/// is 403. `Sec-Fetch-Site` decides when present; otherwise `Origin` must be
/// this server's. A client that sends neither (curl, a test) is not a browser that
/// could be tricked into posting.
pub(super) fn check_same_origin(req: &HttpRequest) -> Result<(), UiError> {
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    // a browser that sends Sec-Fetch-Site says where the form came from
    if let Some(site) = header("sec-fetch-site") {
        if !matches!(site.as_str(), "same-origin" | "none") {
            return Err(UiError::Forbidden(format!(
                "this form was posted from another site (Sec-Fetch-Site: {site})"
            )));
        }
        return Ok(());
    }
    // an older one only its Origin (`null` from a sandboxed or privacy-restricted context)
    if let Some(origin) = header("origin") {
        let info = req.connection_info();
        let expected = format!("{}://{}", info.scheme(), info.host());
        if origin != expected {
            return Err(UiError::Forbidden(format!(
                "this form was posted from another origin ({origin}, not {expected})"
            )));
        }
    }
    Ok(())
}

/// A live session, found from the request's cookie. As an extractor it
/// fails with [`UiError::Login`] (a redirect to the login page) when the
/// cookie is missing, unknown or expired.
#[derive(Debug, Clone)]
pub struct Session {
    pub csrf_token: String,
    token_hash: [u8; 32],
}

impl Session {
    /// Compares a form's CSRF token with the session's in constant time;
    /// a missing or wrong one is 403.
    pub fn check_csrf(&self, given: Option<&str>) -> Result<(), UiError> {
        match given {
            Some(given)
                if crate::constant_time_eq(given.as_bytes(), self.csrf_token.as_bytes()) =>
            {
                Ok(())
            }
            _ => Err(UiError::Forbidden(
                "the form's CSRF token is missing or wrong; reload the page and try again".into(),
            )),
        }
    }

    pub(super) fn token_hash(&self) -> &[u8] {
        &self.token_hash
    }
}

impl FromRequest for Session {
    type Error = UiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, UiError>>>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        let state = req.app_data::<web::Data<AppState>>().cloned();
        let token = req.cookie(COOKIE).map(|c| c.value().to_string());
        Box::pin(async move {
            let (Some(state), Some(token)) = (state, token) else {
                return Err(UiError::Login);
            };
            if token.len() != 64 {
                return Err(UiError::Login);
            }
            let hash = token_hash(&token);
            match connectra_persistence::dashboard::touch_session(state.inner.repo.pool(), &hash)
                .await
            {
                Ok(Some(session)) => Ok(Session {
                    csrf_token: session.csrf_token,
                    token_hash: hash,
                }),
                Ok(None) => Err(UiError::Login),
                Err(e) => Err(e.into()),
            }
        })
    }
}
