//! The settings page: one HTML document rendered on the server (the mount point, the
//! permissions of the profile, the plans that have keys), and a script and a style
//! sheet served beside it. Plain files with no build step; the script talks to the
//! router's JSON routes, so the page does nothing a script of the user's could not.

use std::{fmt::Write as _, sync::Arc};

use axum::{
    extract::{OriginalUri, Request, State},
    http::{header, HeaderName, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
    routing::get,
    Router,
};

use super::{html, mount_point, Gate, Session};
use crate::{plan::or_list, Profile};

const TEMPLATE: &str = include_str!("page.html");
const SIGN_IN: &str = include_str!("sign_in.html");
const SCRIPT: &str = include_str!("page.js");
const STYLE: &str = include_str!("page.css");

/// The application's links on the page.
#[derive(Debug, Default)]
pub(super) struct Links {
    /// Where the link back goes, and its text.
    pub(super) back: Option<(String, String)>,
    /// Where the sign-out button posts.
    pub(super) sign_out: Option<String>,
}

/// What the document says that depends on the application, rendered once.
pub(super) struct Page {
    title: String,
    links: String,
    permissions: String,
    required_plans: String,
}

impl Page {
    pub(super) fn new(profile: &Profile, links: &Links) -> Self {
        let title = match profile.product_name() {
            Some(product) => format!("API Keys · {}", escape(product)),
            None => "API Keys · Settings".to_owned(),
        };
        let mut nav = String::new();
        if let Some((href, text)) = &links.back {
            let _ = write!(
                nav,
                r#"<a href="{}" class="back">{}</a>"#,
                escape(href),
                escape(text)
            );
        }
        if let Some(action) = &links.sign_out {
            let _ = write!(
                nav,
                r#"<form method="post" action="{}" class="sign-out"><button type="submit">Sign out</button></form>"#,
                escape(action)
            );
        }
        let links = if nav.is_empty() {
            nav
        } else {
            format!(r#"<nav class="app" aria-label="Application">{nav}</nav>"#)
        };
        let mut permissions = String::new();
        for name in profile.permissions().names() {
            let name = escape(name);
            // Names are at most 64 and unique: their position makes a stable id.
            let _ = write!(
                permissions,
                r#"<li><label><input type="checkbox" name="permissions" value="{name}"> <code>{name}</code></label></li>"#
            );
        }
        let plans = profile.plans().with_api_keys().unwrap_or_default();
        let required_plans = escape(&or_list(plans.iter().map(crate::Plan::as_str)));
        Self {
            title,
            links,
            permissions,
            required_plans,
        }
    }

    fn render(&self, base: &str) -> String {
        TEMPLATE
            .replace("{{title}}", &self.title)
            .replace("{{links}}", &self.links)
            .replace("{{base}}", &escape(base))
            .replace("{{permissions}}", &self.permissions)
            .replace("{{required_plans}}", &self.required_plans)
    }
}

/// The page for a signed-in user; for nobody, 401 with a page that says to sign in.
pub(super) async fn serve<A: Session>(
    State((gate, page)): State<(Arc<Gate<A>>, Arc<Page>)>,
    request: Request,
) -> Response {
    let (parts, _) = request.into_parts();
    let uri = parts
        .extensions
        .get::<OriginalUri>()
        .cloned()
        .unwrap_or_else(|| OriginalUri(parts.uri.clone()));
    match gate.user(&parts).await {
        Ok(Some(_)) => html(StatusCode::OK, page.render(mount_point(&uri))),
        Ok(None) => html(StatusCode::UNAUTHORIZED, SIGN_IN.to_owned()),
        Err(own) => own,
    }
}

/// The script and the style sheet: public, since they hold nothing of anyone's.
pub(super) fn assets() -> Router {
    let asset = |content_type: &'static str, body: &'static str| {
        get(move || async move {
            (
                [
                    (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
                    (
                        header::X_CONTENT_TYPE_OPTIONS,
                        HeaderValue::from_static("nosniff"),
                    ),
                ],
                body,
            )
                .into_response()
        })
    };
    Router::new()
        .route(
            "/assets/settings.js",
            asset("text/javascript; charset=utf-8", SCRIPT),
        )
        .route(
            "/assets/settings.css",
            asset("text/css; charset=utf-8", STYLE),
        )
}

/// The page's policy: everything from this origin (and an empty icon), no inline script or
/// style, never in a frame, forms and requests to this origin only.
const POLICY: &str =
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
    connect-src 'self'; form-action 'self'; base-uri 'none'; object-src 'none'; \
    frame-ancestors 'none'";

/// The headers of every HTML answer.
pub(super) fn headers() -> [(HeaderName, HeaderValue); 4] {
    [
        (
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        ),
        (
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(POLICY),
        ),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
        (
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ),
    ]
}

/// `text` safe inside HTML text and quoted attributes.
fn escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#39;"),
            c => escaped.push(c),
        }
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mount_point_is_escaped() {
        let page = Page::new(&Profile::nouvel(), &Links::default());
        let html = page.render(r#"/a"><script>x</script>"#);
        assert!(!html.contains("<script>x"));
        assert!(html.contains("/a&quot;&gt;&lt;script&gt;"));
    }
}
