//! The dashboard: HTML pages under `/dashboard` (and `/` for a browser), a sign-in that puts
//! the API key in an HttpOnly, SameSite=Strict cookie, and the API itself re-mounted at
//! `/dashboard/api/v1` behind that cookie, so the dashboard sees exactly what the key sees
//! through the same handlers. Every state-changing request needs the page's CSRF token.
//! Pages are shells; `app.js` renders every value with `textContent`, never as HTML. Not part
//! of `/openapi.json`.

mod data;
mod feed;

use axum::Router;
use axum::body::Body;
use axum::extract::{Form, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use base64::Engine;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::AppState;
use crate::auth::Owner;
use crate::error::{ApiError, ApiResult};

const APP_JS: &str = include_str!("app.js");
const APP_CSS: &str = include_str!("app.css");

/// The session cookie: the API key, base64url-encoded.
const COOKIE: &str = "smoothd_dashboard";

/// How long a sign-in lasts (the cookie's Max-Age); signing in again renews it.
const SESSION_SECS: u64 = 12 * 3600;

/// The dashboard routes; `v1` is the API router, mounted again behind the cookie.
pub fn router(state: AppState, v1: Router<AppState>) -> Router<AppState> {
    let feed = feed::Feed::new(state);
    let api = v1.layer(axum::middleware::from_fn(cookie_to_apikey));
    Router::new()
        .route("/", get(root))
        .route("/dashboard", get(tasks_page))
        .route("/dashboard/", get(tasks_page))
        .route("/dashboard/task/{id}", get(task_page))
        .route("/dashboard/resources", get(resources_page))
        .route("/dashboard/health", get(health_page))
        .route("/dashboard/login", get(login_page).post(login))
        .route("/dashboard/logout", post(logout))
        .route("/dashboard/static/app.js", get(app_js))
        .route("/dashboard/static/app.css", get(app_css))
        .merge(data::routes())
        .merge(feed::routes(feed))
        .nest("/dashboard/api/v1", api)
}

/// `/`: a browser goes to the dashboard; anything else gets the API's 404.
async fn root(headers: HeaderMap) -> Response {
    let html = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/html"));
    if html {
        Redirect::to("/dashboard").into_response()
    } else {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "no such route; the dashboard is at /dashboard",
        )
        .into_response()
    }
}

/// The API key in the session cookie, if there is one.
fn cookie_key(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .and_then(|(_, v)| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(v).ok())
        .and_then(|b| String::from_utf8(b).ok())
        .filter(|k| !k.is_empty())
}

/// The CSRF token of a session: derived from its key, so it needs no server state, and only
/// a page that can read the key's pages (same origin) learns it.
fn csrf_token(key: &str) -> String {
    let mut h = Sha256::new();
    h.update(b"smoothd-dashboard-csrf\0");
    h.update(key.as_bytes());
    hex::encode(&h.finalize()[..16])
}

/// Whether a request's `Origin` (when the browser sends one) is this server.
fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    origin
        .split_once("://")
        .is_some_and(|(_, rest)| rest.trim_end_matches('/') == host)
}

/// Whether a state-changing request carries the session's CSRF token (header or form field)
/// from this origin.
fn csrf_ok(headers: &HeaderMap, key: &str, form_token: Option<&str>) -> bool {
    let sent = headers
        .get("x-csrf-token")
        .and_then(|v| v.to_str().ok())
        .or(form_token);
    same_origin(headers) && sent.is_some_and(|t| smoothd_core::ids::same_secret(t, &csrf_token(key)))
}

/// The signed-in key, checked exactly as the API checks an `apikey` header.
pub(crate) async fn session(state: &AppState, headers: &HeaderMap) -> ApiResult<Option<(Owner, String)>> {
    let Some(key) = cookie_key(headers) else {
        return Ok(None);
    };
    Ok(state.store.find_key(&key).await?.map(|row| {
        (
            Owner {
                id: row.id,
                name: row.name,
            },
            key,
        )
    }))
}

/// The signed-in owner of a dashboard JSON request, or 401.
pub(crate) async fn require(state: &AppState, headers: &HeaderMap) -> ApiResult<Owner> {
    session(state, headers).await?.map(|(o, _)| o).ok_or_else(|| {
        ApiError::unauthorized("not signed in, or the key was revoked: sign in at /dashboard/login")
    })
}

/// Turns the cookie into the `apikey` header for the re-mounted API, after the CSRF check on
/// anything but reads. A caller's own `apikey` header is dropped: this mount is cookie-only.
async fn cookie_to_apikey(mut req: Request, next: Next) -> Response {
    req.headers_mut().remove("apikey");
    let Some(key) = cookie_key(req.headers()) else {
        return ApiError::unauthorized("not signed in: sign in at /dashboard/login").into_response();
    };
    let reads = matches!(*req.method(), Method::GET | Method::HEAD);
    if !reads && !csrf_ok(req.headers(), &key, None) {
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "x-csrf-token: missing or wrong; reload the page",
        )
        .into_response();
    }
    match HeaderValue::from_str(&key) {
        Ok(v) => {
            req.headers_mut().insert("apikey", v);
            next.run(req).await
        }
        Err(_) => {
            ApiError::unauthorized("the session cookie holds no valid key; sign in again").into_response()
        }
    }
}

/// Escapes text for HTML element content and quoted attribute values.
pub(crate) fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Headers of every page: no caching, no framing, scripts only from this server.
fn html(status: StatusCode, body: String) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob: http: https:; \
                 media-src 'self' blob: http: https:; frame-src 'self' http: https:; connect-src 'self'; \
                 object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
            ),
            (header::REFERRER_POLICY, "same-origin"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response()
}

fn head(title: &str) -> String {
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <title>{} · smoothd</title><link rel=\"stylesheet\" href=\"/dashboard/static/app.css\">",
        esc(title)
    )
}

/// A signed-in page: the shell `app.js` fills in.
async fn shell(
    state: &AppState,
    headers: &HeaderMap,
    page: &str,
    title: &str,
    id: &str,
) -> ApiResult<Response> {
    let Some((owner, key)) = session(state, headers).await? else {
        let to = if cookie_key(headers).is_some() {
            "/dashboard/login?m=revoked"
        } else {
            "/dashboard/login"
        };
        return Ok(Redirect::to(to).into_response());
    };
    let csrf = csrf_token(&key);
    let nav = |p: &str, href: &str, label: &str| {
        let cur = if p == page { " aria-current=\"page\"" } else { "" };
        format!("<a href=\"{href}\"{cur}>{label}</a>")
    };
    let body = format!(
        "{head}<meta name=\"csrf-token\" content=\"{csrf}\"></head>\
         <body data-page=\"{page}\" data-id=\"{id}\">\
         <header class=\"top\"><a class=\"brand\" href=\"/dashboard\">smoothd</a><nav>{t}{r}{h}</nav>\
         <form class=\"who\" method=\"post\" action=\"/dashboard/logout\"><span title=\"API key\">{name}</span>\
         <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\"><button type=\"submit\">Sign out</button></form></header>\
         <div id=\"banner\" role=\"status\" hidden></div>\
         <main id=\"app\"><noscript>The dashboard needs JavaScript.</noscript></main>\
         <script src=\"/dashboard/static/app.js\"></script></body></html>",
        head = head(title),
        csrf = esc(&csrf),
        page = esc(page),
        id = esc(id),
        t = nav("tasks", "/dashboard", "Tasks"),
        r = nav("resources", "/dashboard/resources", "Resources"),
        h = nav("health", "/dashboard/health", "Health"),
        name = esc(&owner.name),
    );
    Ok(html(StatusCode::OK, body))
}

async fn tasks_page(State(state): State<AppState>, headers: HeaderMap) -> ApiResult<Response> {
    shell(&state, &headers, "tasks", "Tasks", "").await
}

async fn task_page(
    State(state): State<AppState>,
    headers: HeaderMap,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> ApiResult<Response> {
    shell(&state, &headers, "task", &format!("Task {id}"), &id).await
}

async fn resources_page(State(state): State<AppState>, headers: HeaderMap) -> ApiResult<Response> {
    shell(&state, &headers, "resources", "Resources", "").await
}

async fn health_page(State(state): State<AppState>, headers: HeaderMap) -> ApiResult<Response> {
    shell(&state, &headers, "health", "Health", "").await
}

fn login_html(status: StatusCode, message: Option<&str>) -> Response {
    let msg = message
        .map(|m| format!("<p class=\"error\" role=\"alert\">{}</p>", esc(m)))
        .unwrap_or_default();
    html(
        status,
        format!(
            "{head}</head><body class=\"login\"><main class=\"card narrow\"><h1>smoothd</h1>\
             <p class=\"muted\">Sign in with an API key. You will see that key's tasks, sessions and \
             resources, as the API does.</p>{msg}\
             <form method=\"post\" action=\"/dashboard/login\">\
             <label for=\"key\">API key</label>\
             <input id=\"key\" name=\"key\" type=\"password\" autocomplete=\"current-password\" required autofocus \
             placeholder=\"smd_…\">\
             <button type=\"submit\" class=\"primary\">Sign in</button></form>\
             <p class=\"muted small\">No key yet? Create one on the server with <code>smoothd keys create --name me</code>.</p>\
             </main></body></html>",
            head = head("Sign in"),
        ),
    )
}

#[derive(Deserialize)]
struct LoginQuery {
    m: Option<String>,
}

async fn login_page(axum::extract::Query(q): axum::extract::Query<LoginQuery>) -> Response {
    let m = match q.m.as_deref() {
        Some("revoked") => {
            Some("Your session's key is no longer valid (revoked?). Sign in with another key.")
        }
        Some("out") => Some("Signed out."),
        _ => None,
    };
    login_html(StatusCode::OK, m)
}

#[derive(Deserialize)]
struct LoginForm {
    key: String,
}

/// `https` deployments get a `Secure` cookie.
fn cookie(state: &AppState, value: &str, max_age: u64) -> String {
    let secure = if state.config.public_url.starts_with("https://") {
        "; Secure"
    } else {
        ""
    };
    format!("{COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}")
}

async fn login(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(f): Form<LoginForm>,
) -> ApiResult<Response> {
    if !same_origin(&headers) {
        return Ok(login_html(
            StatusCode::FORBIDDEN,
            Some("Sign-in must come from this server's own page."),
        ));
    }
    let key = f.key.trim();
    if key.is_empty() {
        return Ok(login_html(
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("key: enter an API key."),
        ));
    }
    if state.store.find_key(key).await?.is_none() {
        tracing::info!("dashboard sign-in refused: unknown or revoked key");
        return Ok(login_html(
            StatusCode::UNAUTHORIZED,
            Some("That key is not valid, or it was revoked. Check it and try again."),
        ));
    }
    let value = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(key);
    let mut resp = Redirect::to("/dashboard").into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie(&state, &value, SESSION_SECS)) {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    Ok(resp)
}

#[derive(Deserialize)]
struct LogoutForm {
    csrf: Option<String>,
}

async fn logout(State(state): State<AppState>, headers: HeaderMap, Form(f): Form<LogoutForm>) -> Response {
    if let Some(key) = cookie_key(&headers)
        && !csrf_ok(&headers, &key, f.csrf.as_deref())
    {
        return ApiError::new(StatusCode::FORBIDDEN, "csrf: missing or wrong; reload the page")
            .into_response();
    }
    let mut resp = Redirect::to("/dashboard/login?m=out").into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie(&state, "", 0)) {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    resp
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        Body::from(body),
    )
        .into_response()
}

async fn app_js() -> Response {
    asset("text/javascript; charset=utf-8", APP_JS)
}

async fn app_css() -> Response {
    asset("text/css; charset=utf-8", APP_CSS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup() {
        assert_eq!(
            esc("<script>a&'\"</script>"),
            "&lt;script&gt;a&amp;&#39;&quot;&lt;/script&gt;"
        );
    }

    #[test]
    fn csrf_needs_the_token_and_the_origin() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("127.0.0.1:8080"));
        assert!(!csrf_ok(&h, "k", None));
        let t = csrf_token("k");
        assert!(csrf_ok(&h, "k", Some(&t)));
        assert!(!csrf_ok(&h, "other", Some(&t)));
        h.insert(header::ORIGIN, HeaderValue::from_static("http://evil.example"));
        assert!(!csrf_ok(&h, "k", Some(&t)));
        h.insert(header::ORIGIN, HeaderValue::from_static("http://127.0.0.1:8080"));
        assert!(csrf_ok(&h, "k", Some(&t)));
    }

    #[test]
    fn reads_the_cookie() {
        let mut h = HeaderMap::new();
        let v = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode("smd_x");
        h.insert(
            header::COOKIE,
            HeaderValue::from_str(&format!("a=b; {COOKIE}={v}; c=d")).unwrap_or(HeaderValue::from_static("")),
        );
        assert_eq!(cookie_key(&h).as_deref(), Some("smd_x"));
    }
}
