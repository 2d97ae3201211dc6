//! The jobs dashboard at `/ui`: HTML rendered on the server from askama
//! templates (`crates/api/templates/`), checked at compile time, with a
//! vendored htmx for the live progress bars and a few lines of script
//! (`assets/ui.js`) for local times, confirmations and the browser's
//! presigned upload. No JavaScript framework, nothing from a CDN.
//!
//! These routes are HTML, not the JSON API: they are not in
//! [`ENDPOINTS`](crate::ENDPOINTS) nor in the OpenAPI document, and their
//! errors are HTML pages. Authentication is a session cookie
//! ([`session`]), not the `X-API-Key` header.

mod pages;
mod session;
mod view;

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::middleware::DefaultHeaders;
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use askama::Template;

pub use session::{Session, COOKIE, SESSION_TTL_SECS};

/// The largest form body the dashboard reads (login, cancel, retry, create).
const FORM_LIMIT: usize = 16 * 1024;

/// What a dashboard page can fail with, each rendered as an HTML page.
#[derive(Debug, thiserror::Error)]
pub enum UiError {
    /// No live session: a redirect (303) to the login page.
    #[error("log in first")]
    Login,
    /// A client's mistake: a bad uuid, filter or page number.
    #[error("{0}")]
    BadRequest(String),
    /// A wrong or missing CSRF token, or a login posted from another site.
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("the request failed on the server")]
    Internal,
}

impl From<connectra_persistence::Error> for UiError {
    fn from(e: connectra_persistence::Error) -> Self {
        use connectra_persistence::Error as E;
        tracing::error!(error = %e, "database error while serving a dashboard page");
        match e {
            E::Pool(_) | E::Connection(_) => {
                Self::Unavailable("the database is unavailable; try again shortly".into())
            }
            _ => Self::Internal,
        }
    }
}

impl From<crate::ApiError> for UiError {
    fn from(e: crate::ApiError) -> Self {
        match actix_web::ResponseError::status_code(&e) {
            StatusCode::NOT_FOUND => Self::NotFound(e.0.message.clone()),
            StatusCode::SERVICE_UNAVAILABLE => Self::Unavailable(e.0.message.clone()),
            s if s.is_client_error() => Self::BadRequest(e.0.message.clone()),
            _ => Self::Internal,
        }
    }
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    title: &'a str,
    message: String,
    logged_in: bool,
    csrf: &'a str,
    v: &'static str,
}

impl ResponseError for UiError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::Login => StatusCode::SEE_OTHER,
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        if let Self::Login = self {
            // htmx follows redirects inside a fragment; tell it to load the page instead
            return HttpResponse::SeeOther()
                .insert_header((header::LOCATION, "/ui/login"))
                .insert_header(("HX-Redirect", "/ui/login"))
                .finish();
        }
        let status = self.status_code();
        let page = ErrorPage {
            title: status.canonical_reason().unwrap_or("Error"),
            message: self.to_string(),
            logged_in: false,
            csrf: "",
            v: ASSET_VERSION,
        };
        html(status, page.render())
    }
}

/// A rendered template as a response; a template that fails to render is 500.
fn html(status: StatusCode, rendered: askama::Result<String>) -> HttpResponse {
    match rendered {
        Ok(body) => HttpResponse::build(status)
            .content_type("text/html; charset=utf-8")
            .body(body),
        Err(e) => {
            tracing::error!(error = %e, "a dashboard template failed to render");
            HttpResponse::InternalServerError()
                .content_type("text/plain; charset=utf-8")
                .body("the page could not be rendered")
        }
    }
}

/// A 303 to `location`, the answer to every successful form post.
fn see_other(location: &str) -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, location))
        .finish()
}

/// The vendored and hand-written assets, compiled into the binary.
const ASSETS: &[(&str, &str, &str)] = &[
    (
        "htmx.min.js",
        "text/javascript; charset=utf-8",
        include_str!("../../assets/htmx.min.js"),
    ),
    (
        "ui.js",
        "text/javascript; charset=utf-8",
        include_str!("../../assets/ui.js"),
    ),
    (
        "ui.css",
        "text/css; charset=utf-8",
        include_str!("../../assets/ui.css"),
    ),
];

/// Bumped with the crate's version, so a long cache never serves an old asset
/// to a new server; pages link `/ui/assets/{name}?v={ASSET_VERSION}`.
pub const ASSET_VERSION: &str = env!("CARGO_PKG_VERSION");

async fn asset(path: web::Path<String>) -> Result<HttpResponse, UiError> {
    let name = path.into_inner();
    let (_, content_type, body) = ASSETS
        .iter()
        .find(|(n, _, _)| *n == name)
        .ok_or_else(|| UiError::NotFound(format!("no asset named '{name}'")))?;
    Ok(HttpResponse::Ok()
        .content_type(*content_type)
        .insert_header((header::CACHE_CONTROL, "public, max-age=604800, immutable"))
        .body(*body))
}

async fn not_found(req: HttpRequest) -> HttpResponse {
    UiError::NotFound(format!("the dashboard has no page {}", req.path())).error_response()
}

/// The Content-Security-Policy of every dashboard response: scripts and
/// styles only from `/ui/assets`, requests to this server and (for the
/// presigned upload) to S3, never framed.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self' http: https:; form-action 'self'; frame-ancestors 'none'; \
                   base-uri 'none'";

/// The `/ui` scope, mounted by [`configure`](crate::configure).
pub fn scope() -> actix_web::Scope<
    impl actix_web::dev::ServiceFactory<
        actix_web::dev::ServiceRequest,
        Config = (),
        Response = actix_web::dev::ServiceResponse<impl actix_web::body::MessageBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    let headers = DefaultHeaders::new()
        .add((header::CACHE_CONTROL, HeaderValue::from_static("no-store")))
        .add((
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CSP),
        ))
        .add((header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")))
        .add((
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
        .add((
            header::REFERRER_POLICY,
            HeaderValue::from_static("same-origin"),
        ));
    web::scope("/ui")
        .wrap(headers)
        .app_data(
            web::FormConfig::default()
                .limit(FORM_LIMIT)
                .error_handler(|e, _| {
                    UiError::BadRequest(format!("the form cannot be read: {e}")).into()
                }),
        )
        .route("", web::get().to(pages::overview))
        .route("/", web::get().to(pages::overview))
        .route("/login", web::get().to(pages::login_page))
        .route("/login", web::post().to(pages::login))
        .route("/logout", web::post().to(pages::logout))
        .route("/jobs", web::get().to(pages::job_list))
        .route("/jobs/{uuid}", web::get().to(pages::job_detail))
        .route("/jobs/{uuid}/progress", web::get().to(pages::progress))
        .route("/jobs/{uuid}/cancel", web::post().to(pages::cancel))
        .route("/jobs/{uuid}/retry", web::post().to(pages::retry))
        .route("/jobs/{uuid}/report", web::get().to(pages::report))
        .route("/jobs/{uuid}/download", web::get().to(pages::download))
        .route("/imports/new", web::get().to(pages::new_import))
        .route("/imports", web::post().to(pages::create_import))
        .route("/upload-url", web::get().to(pages::upload_url))
        .route("/assets/{name}", web::get().to(asset))
        .default_service(web::to(not_found))
}
