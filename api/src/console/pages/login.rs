//! The sign-in form (`GET /console/login`); signing in is `super::super::session::login`.

use maud::{html, Markup};

/// The form, with its CSRF token, a notice (session ended) and an error (refused token).
pub fn form(token: &str, notice: Option<&str>, error: Option<&str>) -> Markup {
    html! {
        @if let Some(n) = notice {
            p id="login-notice" role="status" { (n) }
        }
        @if let Some(e) = error {
            p id="login-error" role="alert" { (e) }
        }
        form id="login" method="post" action="/console/login" {
            input type="hidden" name="csrf" value=(token);
            label for="token" { "Operator token or tenant API key" }
            input id="token" name="token" type="password" autocomplete="current-password"
                required autofocus aria-describedby="token-help";
            p id="token-help" class="help" {
                "Operators sign in with their token from LEADQ_OPERATOR_TOKENS; tenants with an \
                 API key that has the status:read scope."
            }
            button id="login-button" type="submit" { "Sign in" }
        }
    }
}
