//! One module per console page; each reads and acts through the same functions as its JSON
//! endpoint (see the console's module docs) and renders with [`super::layout`].

pub mod audit;
pub mod dead_letters;
pub mod jobs;
pub mod login;
pub mod overview;
pub mod tenant_view;
pub mod tenants;
pub mod workers;

use maud::{html, Markup};

use super::layout;
use super::session::SignedIn;

/// The confirmation every change asks for: what will happen (and to how many), the form that
/// does it (`fields` carried over, plus `confirm=yes`), and a way back.
pub fn confirm(
    who: &SignedIn,
    text: &str,
    count: Option<usize>,
    action: &str,
    fields: &[(String, String)],
    cancel: &str,
) -> axum::response::Response {
    let body = html! {
        form id="confirm" method="post" action=(action) {
            (layout::csrf(who))
            @for (name, value) in fields {
                @if name != "csrf" && name != "confirm" {
                    input type="hidden" name=(name) value=(value);
                }
            }
            input type="hidden" name="confirm" value="yes";
            p id="confirm-text" { (text) }
            @if let Some(n) = count {
                p { "Dead letters affected: " strong id="confirm-count" { (n) } }
            }
            div class="actions" {
                button id="confirm-button" type="submit" autofocus { "Confirm" }
                " "
                a id="cancel" href=(cancel) { "Cancel" }
            }
        }
    };
    layout::page(who, "Please confirm", "", None, body)
}

/// A table header cell for a column of numbers.
pub fn num_th(label: &str) -> Markup {
    html! { th scope="col" class="num" { (label) } }
}
