//! The operator console (`/console`) over HTTP, as a browser drives it: sign-in with an
//! operator token or a tenant key, server-side sessions that end (sign-out, idle, a revoked
//! key), CSRF and origin checks on every change, confirmation before a change, a tenant that
//! sees only its own page, and every action audited as its operator. The real-browser run is
//! `scripts/console-test`.

use std::time::Duration;

use leadq_platform::keys;
use leadq_testkit::{spawn_app_with, TestApp};
use reqwest::redirect::Policy;
use reqwest::{Response, StatusCode};

/// A browser without a cookie jar of its own: the test keeps the cookies and sends them.
struct Browser<'a> {
    app: &'a TestApp,
    client: reqwest::Client,
    session: Option<String>,
    /// The sign-in form's cookie and token.
    login: Option<(String, String)>,
}

impl<'a> Browser<'a> {
    fn new(app: &'a TestApp) -> Self {
        let client = reqwest::Client::builder()
            .redirect(Policy::none())
            .build()
            .unwrap();
        Self {
            app,
            client,
            session: None,
            login: None,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.app.address)
    }

    fn origin(&self) -> String {
        self.app.address.clone()
    }

    async fn get(&self, path: &str) -> Response {
        let mut req = self.client.get(self.url(path));
        if let Some(s) = &self.session {
            req = req.header("cookie", format!("leadq_console={s}"));
        }
        req.send().await.unwrap()
    }

    /// A form POST from this console's own page (or from `origin`).
    async fn post(&self, path: &str, fields: &[(&str, &str)], origin: &str) -> Response {
        let mut req = self
            .client
            .post(self.url(path))
            .header("origin", origin)
            .form(fields);
        let mut cookies = Vec::new();
        if let Some(s) = &self.session {
            cookies.push(format!("leadq_console={s}"));
        }
        if let Some((c, _)) = &self.login {
            cookies.push(format!("leadq_console_login={c}"));
        }
        if !cookies.is_empty() {
            req = req.header("cookie", cookies.join("; "));
        }
        req.send().await.unwrap()
    }

    /// Opens the sign-in page (its form token and cookie).
    async fn open_login(&mut self) {
        let res = self.get("/console/login").await;
        assert_eq!(res.status(), 200);
        let cookie = set_cookie(&res, "leadq_console_login").expect("a sign-in cookie");
        let body = res.text().await.unwrap();
        let token = field_value(&body, "csrf").expect("a form token");
        self.login = Some((cookie, token));
    }

    /// Signs in with `token`; the response (a redirect when it worked).
    async fn sign_in(&mut self, token: &str) -> Response {
        self.open_login().await;
        let csrf = self.login.as_ref().unwrap().1.clone();
        let origin = self.origin();
        let res = self
            .post(
                "/console/login",
                &[("csrf", &csrf), ("token", token)],
                &origin,
            )
            .await;
        if let Some(s) = set_cookie(&res, "leadq_console").filter(|s| !s.is_empty()) {
            self.session = Some(s);
        }
        res
    }

    /// The CSRF token of the session, from a page's sign-out form.
    async fn csrf(&self, page: &str) -> String {
        let body = self.get(page).await.text().await.unwrap();
        field_value(&body, "csrf").expect("the page's CSRF token")
    }
}

fn set_cookie(res: &Response, name: &str) -> Option<String> {
    res.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| v.strip_prefix(&format!("{name}=")))
        .map(|v| v.split(';').next().unwrap_or("").to_owned())
}

/// The value of the first hidden input named `name` in `html`.
fn field_value(html: &str, name: &str) -> Option<String> {
    let at = html.find(&format!("name=\"{name}\" value=\""))?;
    let rest = &html[at + name.len() + 15..];
    Some(rest[..rest.find('"')?].to_owned())
}

fn location(res: &Response) -> String {
    res.headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned()
}

async fn audited(app: &TestApp, actor: &str, action: &str) -> i64 {
    sqlx::query_scalar("select count(*) from audit_log where actor = $1 and action = $2")
        .bind(actor)
        .bind(action)
        .fetch_one(&mut *app.platform().await)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_sign_in_and_change_a_tenant_only_from_the_console_page_after_confirming() {
    let app = spawn_app_with(&[]).await;
    let mut b = Browser::new(&app);

    // A wrong token: 401, the form again with an alert, no session.
    let res = b.sign_in("not-a-token").await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert!(res.text().await.unwrap().contains("id=\"login-error\""));
    assert!(b.session.is_none());
    // Without the form's token, or from another site: refused before the token is looked at.
    b.open_login().await;
    let op = app.operator_token().to_owned();
    let res = b
        .post("/console/login", &[("token", &op)], &b.origin())
        .await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    let csrf = b.login.as_ref().unwrap().1.clone();
    let res = b
        .post(
            "/console/login",
            &[("csrf", &csrf), ("token", &op)],
            "https://evil.example",
        )
        .await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);

    // The operator's token: a session, HttpOnly and SameSite=Strict, landing on the overview.
    let res = b.sign_in(&op).await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&res), "/console");
    let cookie = res
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .find(|v| v.starts_with("leadq_console="))
        .unwrap();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let res = b.get("/console").await;
    assert_eq!(res.status(), 200);
    let csp = res.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    let body = res.text().await.unwrap();
    assert!(body.contains("operator:oncall") && body.contains("id=\"kinds\""));

    // Pausing a tenant: refused without the session's token, then a confirmation page that
    // changes nothing, then the change.
    let slug = app.tenant.slug.clone();
    let path = format!("/console/tenants/{slug}/lead_score");
    let res = b.post(&path, &[("action", "pause")], &b.origin()).await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert!(res.text().await.unwrap().contains("csrf_failed"));
    let csrf = b.csrf("/console/tenants").await;
    let res = b
        .post(
            &path,
            &[("csrf", &csrf), ("action", "pause")],
            "https://evil.example",
        )
        .await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    let res = b
        .post(&path, &[("csrf", &csrf), ("action", "pause")], &b.origin())
        .await;
    assert_eq!(res.status(), 200);
    assert!(res.text().await.unwrap().contains("id=\"confirm-button\""));
    let state = app
        .queue
        .tenant_state("lead_score", app.tenant.tenant_id)
        .await
        .unwrap();
    assert!(!state.paused, "a confirmation page changes nothing");
    let res = b
        .post(
            &path,
            &[("csrf", &csrf), ("action", "pause"), ("confirm", "yes")],
            &b.origin(),
        )
        .await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let state = app
        .queue
        .tenant_state("lead_score", app.tenant.tenant_id)
        .await
        .unwrap();
    assert!(state.paused);
    let page = b
        .get(&format!("/console/tenants?tenant={slug}"))
        .await
        .text()
        .await
        .unwrap();
    assert!(page.contains(&format!(
        "data-tenant=\"{slug}\" data-kind=\"lead_score\" class=\"paused\""
    )));
    assert_eq!(audited(&app, "operator:oncall", "console.login").await, 1);
    assert_eq!(
        audited(&app, "operator:oncall", "queue.tenant.pause").await,
        1
    );
    assert!(audited(&app, "operator:oncall", "queue.tenants.view").await >= 1);

    // Signing out ends the session on the server, not just in the browser.
    let csrf = b.csrf("/console").await;
    let res = b
        .post("/console/logout", &[("csrf", &csrf)], &b.origin())
        .await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let res = b.get("/console").await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&res), "/console/login?expired=1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_session_sees_its_own_page_and_no_other() {
    let app = spawn_app_with(&[]).await;
    let other = app.other_tenant().await;
    let reader = keys::create(
        &app.db.pool,
        "operator:test",
        &app.tenant.slug,
        vec!["status:read".into()],
        None,
    )
    .await
    .unwrap();
    let writer = keys::create(
        &app.db.pool,
        "operator:test",
        &app.tenant.slug,
        vec!["leads:write".into()],
        None,
    )
    .await
    .unwrap();

    // A key without `status:read` may not use the console.
    let mut b = Browser::new(&app);
    let res = b.sign_in(writer.api_key.expose()).await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert!(b.session.is_none());

    let res = b.sign_in(reader.api_key.expose()).await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let own = format!("/console/tenants/{}", app.tenant.slug);
    assert_eq!(location(&res), own);
    let res = b.get(&own).await;
    assert_eq!(res.status(), 200);
    let body = res.text().await.unwrap();
    assert!(body.contains("id=\"tenant-view\"") && !body.contains("name=\"job_id\""));

    // Another tenant's page, and every operator page: 403, and nothing of theirs shown.
    let res = b.get(&format!("/console/tenants/{}", other.slug)).await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    let body = res.text().await.unwrap();
    assert!(body.contains("id=\"forbidden\"") && !body.contains("tenant-view"));
    for page in [
        "/console/tenants",
        "/console/workers",
        "/console/dead-letters",
        "/console/jobs",
        "/console/audit",
    ] {
        assert_eq!(b.get(page).await.status(), StatusCode::FORBIDDEN, "{page}");
    }
    // The overview sends a tenant to its own page.
    assert_eq!(location(&b.get("/console").await), own);

    // Revoking the key ends the session at its next request.
    keys::revoke(&app.db.pool, "operator:test", reader.key_id)
        .await
        .unwrap();
    let res = b.get(&own).await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&res), "/console/login?expired=1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_ends_when_idle_and_its_auto_refresh_does_not_keep_it_alive() {
    let app = spawn_app_with(&[
        ("LEADQ_CONSOLE_IDLE_SECS", "2"),
        ("LEADQ_CONSOLE_MAX_SECS", "60"),
    ])
    .await;
    let mut b = Browser::new(&app);
    let op = app.operator_token().to_owned();
    assert_eq!(b.sign_in(&op).await.status(), StatusCode::SEE_OTHER);
    // Activity renews it.
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(1200)).await;
        assert_eq!(b.get("/console/workers").await.status(), 200);
    }
    // The overview's auto-refresh does not.
    let session = b.session.clone().unwrap();
    let poll = || async {
        b.client
            .get(b.url("/console"))
            .header("cookie", format!("leadq_console={session}"))
            .header("hx-request", "true")
            .header("x-console-poll", "1")
            .send()
            .await
            .unwrap()
            .status()
    };
    assert_eq!(poll().await, 200);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(poll().await, 200);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    // An auto-refresh of an ended session is told to load the sign-in page as a page (htmx
    // would follow a redirect into the swapped part).
    assert_eq!(poll().await, StatusCode::NO_CONTENT);
    let res = b.get("/console").await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&res), "/console/login?expired=1");
    let body = b
        .get("/console/login?expired=1")
        .await
        .text()
        .await
        .unwrap();
    assert!(body.contains("id=\"login-notice\""));
}

/// Rotating an operator's token (a leaked one, as the compromise runbook says) ends the console
/// sessions it opened, on every API process, although the operator's name is still listed.
/// (A session kept only the name, and lived on for up to the console's maximum age.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotating_an_operators_token_ends_the_sessions_it_opened() {
    let app = spawn_app_with(&[]).await;
    let mut b = Browser::new(&app);
    let op = app.operator_token().to_owned();
    assert_eq!(b.sign_in(&op).await.status(), StatusCode::SEE_OTHER);
    assert_eq!(b.get("/console/workers").await.status(), 200);
    let session = b.session.clone().unwrap();
    // Another API process of the same deployment, after the rotation: same operator, same
    // Redis and database, a new token.
    let mut rotated = app.settings.clone();
    for (name, token) in rotated.operator_tokens.iter_mut() {
        if name == leadq_testkit::TEST_OPERATOR {
            *token = leadq_platform::secret::Secret::new(uuid::Uuid::new_v4().simple().to_string());
        }
    }
    let api = leadq_api::Application::build(&rotated).await.unwrap();
    let address = format!("http://{}", api.addr());
    tokio::spawn(api.run_until_stopped(std::future::pending()));
    let res = b
        .client
        .get(format!("{address}/console/workers"))
        .header("cookie", format!("leadq_console={session}"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&res), "/console/login?expired=1");
    // And it stays ended on the first process too.
    let res = b.get("/console/workers").await;
    assert_eq!(location(&res), "/console/login?expired=1");
}

/// Dead letters are the `dlq` permission's to list: an operator with `console` alone sees on a
/// tenant's page that there are some, not their jobs, message ids or reasons; one with `dlq`
/// sees them. (The page listed them to every operator.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenants_page_lists_its_dead_letters_only_to_operators_holding_dlq() {
    let viewer = uuid::Uuid::new_v4().simple().to_string();
    let oncall = uuid::Uuid::new_v4().simple().to_string();
    let tokens = format!("oncall:{oncall},viewer:{viewer}");
    let app = spawn_app_with(&[("LEADQ_OPERATOR_TOKENS", &tokens)]).await;
    app.db.register_operator("viewer", &["console"]).await;
    // One dead letter of the tenant, as a worker buries one.
    let job = leadq_testkit::lead_job(
        app.tenant.tenant_id,
        "api_key:x",
        "m-buried-1",
        "c-1",
        leadq_testkit::sample_lead("tg-buried"),
    );
    let id = uuid::Uuid::new_v4().to_string();
    let prefix = app.settings.queue.prefix.clone();
    let key = |name: &str| format!("{{{prefix}:lead_score}}:{name}");
    let _: () = redis::pipe()
        .zadd(key("dead"), &id, chrono::Utc::now().timestamp_millis())
        .hset_multiple(
            key("dead_data"),
            &[
                (id.clone(), serde_json::to_string(&job.envelope).unwrap()),
                (format!("{id}:r"), "max_attempts".to_owned()),
                (format!("{id}:c"), "db_error".to_owned()),
                (format!("{id}:a"), "5".to_owned()),
            ],
        )
        .query_async(&mut crate::redis_conn().await)
        .await
        .unwrap();
    let page = format!("/console/tenants/{}", app.tenant.slug);
    let mut b = Browser::new(&app);
    assert_eq!(b.sign_in(&viewer).await.status(), StatusCode::SEE_OTHER);
    let body = b.get(&page).await.text().await.unwrap();
    assert!(body.contains("id=\"tenant-dead-letters-hidden\""), "{body}");
    assert!(
        !body.contains(&id) && !body.contains("m-buried-1"),
        "{body}"
    );
    let mut b = Browser::new(&app);
    assert_eq!(b.sign_in(&oncall).await.status(), StatusCode::SEE_OTHER);
    let body = b.get(&page).await.text().await.unwrap();
    assert!(body.contains(&id) && body.contains("m-buried-1"), "{body}");
}
