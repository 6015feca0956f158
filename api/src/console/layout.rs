//! The page frame every console page shares: head (stylesheet, htmx, no inline code),
//! a skip link, the navigation, who is signed in and the sign-out form; and small helpers
//! that render numbers and times the same way on every page.

use axum::response::{Html, IntoResponse, Response};
use chrono::{DateTime, Utc};
use maud::{html, Markup, PreEscaped, DOCTYPE};

use super::session::{SignedIn, Viewer};

/// The pages in the navigation: (path, label).
const OPERATOR_NAV: &[(&str, &str)] = &[
    ("/console", "Overview"),
    ("/console/tenants", "Tenants"),
    ("/console/workers", "Workers"),
    ("/console/dead-letters", "Dead letters"),
    ("/console/jobs", "Find a job"),
    ("/console/audit", "Audit"),
];

/// htmx settings: no inline styles (the CSP forbids them), no eval, no script tags in swaps.
const HTMX_CONFIG: &str =
    r#"{"includeIndicatorStyles":false,"allowEval":false,"allowScriptTags":false}"#;

fn head(title: &str) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            meta name="htmx-config" content=(HTMX_CONFIG);
            title { (title) " · leadq console" }
            link rel="stylesheet" href="/console/assets/console.css";
            script src="/console/assets/htmx.min.js" defer {}
        }
    }
}

/// A page without navigation (sign-in, errors).
pub fn bare(title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body {
                main id="main" class="narrow" {
                    h1 { (title) }
                    (body)
                }
            }
        }
    }
}

/// A signed-in page: `current` is the navigation entry it belongs to; `notice` a one-line
/// result of the previous action.
pub fn page(
    who: &SignedIn,
    title: &str,
    current: &str,
    notice: Option<&str>,
    body: Markup,
) -> Response {
    let nav: Vec<(String, String)> = match &who.viewer {
        Viewer::Operator(_) => OPERATOR_NAV
            .iter()
            .map(|(p, l)| ((*p).to_owned(), (*l).to_owned()))
            .collect(),
        Viewer::Tenant(p) => vec![(
            format!("/console/tenants/{}", p.tenant_slug),
            "My queues".to_owned(),
        )],
    };
    let markup = html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body {
                a class="skip" href="#main" { "Skip to content" }
                header {
                    span class="brand" { "leadq console" }
                    nav aria-label="Console" {
                        ul {
                            @for (path, label) in &nav {
                                li {
                                    @if path == current {
                                        a href=(path) aria-current="page" { (label) }
                                    } @else {
                                        a href=(path) { (label) }
                                    }
                                }
                            }
                        }
                    }
                    span id="whoami" { (who.whoami()) }
                    form id="logout" method="post" action="/console/logout" {
                        input type="hidden" name="csrf" value=(who.csrf);
                        button id="logout-button" type="submit" { "Sign out" }
                    }
                }
                main id="main" {
                    h1 { (title) }
                    @if let Some(n) = notice {
                        p id="notice" role="status" { (n) }
                    }
                    (body)
                }
            }
        }
    };
    Html(markup.into_string()).into_response()
}

/// A fragment for htmx to swap in (the auto-refreshing parts).
pub fn fragment(markup: Markup) -> Response {
    Html(markup.into_string()).into_response()
}

/// A time, machine-readable in `datetime` and readable as UTC.
pub fn time(t: &DateTime<Utc>) -> Markup {
    html! { time datetime=(t.to_rfc3339()) { (t.format("%Y-%m-%d %H:%M:%S UTC")) } }
}

/// An optional value, or an em dash.
pub fn maybe<T: std::fmt::Display>(v: Option<T>) -> Markup {
    match v {
        Some(v) => html! { (v) },
        None => html! { (PreEscaped("&mdash;")) },
    }
}

/// A hidden CSRF field for a form of `who`'s session.
pub fn csrf(who: &SignedIn) -> Markup {
    html! { input type="hidden" name="csrf" value=(who.csrf); }
}

/// Whether the request is htmx's (it wants a fragment, not the page).
pub fn is_htmx(headers: &axum::http::HeaderMap) -> bool {
    headers.contains_key("hx-request")
}
