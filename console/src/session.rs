//! Who is looking: the person's access token (`quantrac token issue`) is
//! checked once at login by the query service's `WhoAmI`, then kept in an
//! HttpOnly, SameSite=Strict cookie and sent as the bearer token of every
//! gRPC call the page makes for them. The services decide what the token
//! may do; the page only hides what they would refuse.

use axum::extract::{Form, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use quantrac_proto::v1::WhoAmIRequest;
use serde::Deserialize;
use tonic::Code;

use crate::AppState;
use crate::html::{Viewer, esc, notice, page};
use crate::i18n::Lang;

const SESSION: &str = "quantrac_session";
const LANG: &str = "quantrac_lang";

/// A logged-in person's request.
#[derive(Debug, Clone)]
pub struct Ctx {
    pub token: String,
    pub viewer: Viewer,
    pub lang: Lang,
}

fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// The language of the page: the person's choice, else the configured one.
pub fn lang(state: &AppState, headers: &HeaderMap) -> Lang {
    cookie(headers, LANG)
        .and_then(Lang::parse)
        .or_else(|| Lang::parse(&state.config.language))
        .unwrap_or(Lang::Vi)
}

/// Tokens are ASCII letters, digits and `_-.`: anything else cannot be
/// one, and could not be a cookie value or a header either.
fn plausible(token: &str) -> bool {
    !token.is_empty()
        && token.len() <= 256
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b))
}

/// A gRPC request carrying `token`, with the page's call timeout.
pub fn authed<T>(state: &AppState, token: &str, message: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(message);
    r.set_timeout(state.config.call_timeout);
    if let Ok(v) = format!("Bearer {token}").parse() {
        r.metadata_mut().insert("authorization", v);
    }
    r
}

/// Asks the query service whose token this is.
async fn who(state: &AppState, token: &str) -> Result<Viewer, tonic::Status> {
    let me = state
        .query
        .clone()
        .who_am_i(authed(state, token, WhoAmIRequest {}))
        .await?
        .into_inner();
    Ok(Viewer {
        identity: me.identity,
        role: me.role,
    })
}

/// The logged-in person, or the response to send instead (the login page
/// when there is no valid session).
pub async fn require(state: &AppState, headers: &HeaderMap) -> Result<Ctx, Response> {
    let lang = lang(state, headers);
    let Some(token) = cookie(headers, SESSION).filter(|t| plausible(t)) else {
        return Err(Redirect::to("/login").into_response());
    };
    match who(state, token).await {
        Ok(viewer) => Ok(Ctx {
            token: token.to_owned(),
            viewer,
            lang,
        }),
        Err(s) if s.code() == Code::Unauthenticated => Err(to_login(state)),
        Err(s) => Err(failure(lang, None, &s)),
    }
}

/// A handler that takes a [`Ctx`] serves only a logged-in person; anyone
/// else is sent to the login page.
impl axum::extract::FromRequestParts<AppState> for Ctx {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        require(state, &parts.headers).await
    }
}

/// [`Ctx`] for what the page's script fetches: not logged in is 401 (the
/// script goes to the login page); a service down is its own answer, so
/// nobody is logged out by an outage.
#[derive(Debug, Clone)]
pub struct ApiCtx(pub Ctx);

impl axum::extract::FromRequestParts<AppState> for ApiCtx {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        match require(state, &parts.headers).await {
            Ok(c) => Ok(ApiCtx(c)),
            Err(r) if r.status().is_redirection() => Err(StatusCode::UNAUTHORIZED.into_response()),
            Err(r) => Err(r),
        }
    }
}

/// Forms are refused when the browser says they come from another site
/// (the SameSite cookie already keeps them from carrying the session).
pub fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    origin
        .split_once("://")
        .is_some_and(|(_, rest)| rest == host)
}

/// The page for a service's refusal or failure.
pub fn failure(lang: Lang, viewer: Option<&Viewer>, status: &tonic::Status) -> Response {
    let (code, key) = match status.code() {
        Code::PermissionDenied => (StatusCode::FORBIDDEN, "refused"),
        Code::InvalidArgument | Code::FailedPrecondition | Code::NotFound => {
            (StatusCode::BAD_REQUEST, "error")
        }
        _ => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
    };
    let body = format!(
        "{}{}",
        notice("error", lang.t(key)),
        notice("detail", status.message())
    );
    (code, Html(page(lang, viewer, "", lang.t(key), &body))).into_response()
}

fn to_login(state: &AppState) -> Response {
    let mut r = Redirect::to("/login").into_response();
    if let Ok(v) = HeaderValue::from_str(&clear_cookie(state)) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

fn clear_cookie(state: &AppState) -> String {
    format!(
        "{SESSION}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{}",
        if state.config.secure_cookies {
            "; Secure"
        } else {
            ""
        }
    )
}

fn login_body(lang: Lang, message: Option<&str>) -> String {
    format!(
        r#"<section class="login"><h1>{title}</h1>{msg}<form method="post" action="/login"><label>{token}<input type="password" name="token" id="token" autocomplete="current-password" required></label><p class="help">{help}</p><button type="submit" id="login">{login}</button></form></section>"#,
        title = lang.t("login"),
        msg = message.map(|m| notice("error", m)).unwrap_or_default(),
        token = lang.t("token"),
        help = esc(lang.t("token_help")),
        login = lang.t("login"),
    )
}

pub async fn login_form(State(state): State<AppState>, headers: HeaderMap) -> Html<String> {
    let lang = lang(&state, &headers);
    Html(page(
        lang,
        None,
        "",
        lang.t("login"),
        &login_body(lang, None),
    ))
}

#[derive(Debug, Deserialize)]
pub struct LoginForm {
    token: String,
}

pub async fn login(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    let lang = lang(&state, &headers);
    if !same_origin(&headers) {
        return (StatusCode::FORBIDDEN, "cross-site form refused").into_response();
    }
    let token = form.token.trim();
    let refused = || {
        (
            StatusCode::UNAUTHORIZED,
            Html(page(
                lang,
                None,
                "",
                lang.t("login"),
                &login_body(lang, Some(lang.t("bad_token"))),
            )),
        )
            .into_response()
    };
    if !plausible(token) {
        return refused();
    }
    match who(&state, token).await {
        Ok(viewer) => {
            tracing::info!(identity = %viewer.identity, role = %viewer.role, "console login");
            metrics::counter!("console_logins_total", "result" => "ok").increment(1);
            let cookie = format!(
                "{SESSION}={token}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{}",
                state.config.session.as_secs(),
                if state.config.secure_cookies {
                    "; Secure"
                } else {
                    ""
                }
            );
            let mut r = Redirect::to("/alerts").into_response();
            if let Ok(v) = HeaderValue::from_str(&cookie) {
                r.headers_mut().insert(header::SET_COOKIE, v);
            }
            r
        }
        Err(s) if s.code() == Code::Unauthenticated => {
            metrics::counter!("console_logins_total", "result" => "refused").increment(1);
            refused()
        }
        Err(s) => failure(lang, None, &s),
    }
}

pub async fn logout(State(state): State<AppState>) -> Response {
    to_login(&state)
}

#[derive(Debug, Deserialize)]
pub struct SwitchLanguage {
    to: String,
}

/// Sets the language cookie and goes back to the page it came from.
pub async fn switch_language(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<SwitchLanguage>,
) -> Response {
    let lang = Lang::parse(&q.to).unwrap_or(Lang::Vi);
    // Back to the same path on this site, never to another.
    let back = headers
        .get(header::REFERER)
        .and_then(|v| v.to_str().ok())
        .and_then(|r| r.split_once("://").map(|(_, rest)| rest))
        .and_then(|rest| rest.find('/').map(|i| rest[i..].to_owned()))
        .filter(|p| p.starts_with('/') && !p.starts_with("//") && !p.starts_with("/lang"))
        .unwrap_or_else(|| "/alerts".into());
    let mut r = Redirect::to(&back).into_response();
    let cookie = format!(
        "{LANG}={}; Path=/; SameSite=Lax; Max-Age=31536000{}",
        lang.code(),
        if state.config.secure_cookies {
            "; Secure"
        } else {
            ""
        }
    );
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_and_tokens() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; quantrac_session=qt_abc.DEF-1; quantrac_lang=en"),
        );
        assert_eq!(cookie(&h, SESSION), Some("qt_abc.DEF-1"));
        assert_eq!(cookie(&h, LANG), Some("en"));
        assert_eq!(cookie(&h, "b"), None);
        assert!(plausible("qt_abc.DEF-1"));
        assert!(!plausible("qt abc"));
        assert!(!plausible("x;Path=/"));
        assert!(!plausible(""));
    }

    #[test]
    fn forms_from_another_origin_are_refused() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("127.0.0.1:8080"));
        assert!(same_origin(&h), "no Origin: a same-site navigation");
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://127.0.0.1:8080"),
        );
        assert!(same_origin(&h));
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://evil.example"),
        );
        assert!(!same_origin(&h));
    }
}
