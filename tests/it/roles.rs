//! Least privilege in PostgreSQL: the runtime role reads and writes rows, and nothing more.
//! The test database is set up as in production (testkit): the migration owner created and
//! migrated it and granted the runtime role, and the app connects as the runtime role.

use leadq_platform::db::{self, DbError};
use leadq_platform::secret::Secret;
use leadq_testkit::spawn_app;
use sqlx::{Connection, PgConnection};

/// Runs `sql` as the runtime role on a fresh connection and returns the error it must cause.
async fn refused(url: &str, sql: &str) -> String {
    let mut conn = PgConnection::connect(url).await.unwrap();
    let err = sqlx::query(sql)
        .execute(&mut conn)
        .await
        .expect_err(&format!("the runtime role ran: {sql}"));
    let code = err
        .as_database_error()
        .and_then(|d| d.code())
        .map(|c| c.into_owned())
        .unwrap_or_default();
    // 42501 insufficient_privilege: "permission denied" or "must be owner of …".
    assert_eq!(code, "42501", "{sql}: {err}");
    err.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_runtime_role_cannot_rewrite_the_audit_trail_or_switch_off_row_level_security_even_with_raw_sql(
) {
    let app = spawn_app().await;
    let url = &app.db.url;
    // The trail has rows (tenant.create), visible to the runtime role in their scope.
    let rows: i64 = sqlx::query_scalar("select count(*) from audit_log")
        .fetch_one(&mut *app.own().await)
        .await
        .unwrap();
    assert!(rows > 0);

    // Raw SQL on a plain connection: no scope, no trigger to blame, only privileges.
    for sql in [
        "update audit_log set outcome = 'tampered'",
        "delete from audit_log",
        "truncate audit_log",
        "alter table audit_log disable trigger audit_log_append_only",
        "alter table audit_log disable row level security",
        "alter table audit_log no force row level security",
        "alter table leads disable row level security",
        "drop policy tenant_isolation on leads",
        "drop policy tenant_isolation on audit_log",
        "drop table audit_log",
        "create table shadow_copy (id int)",
        "create or replace function leadq_scope() returns text language sql as $$ select 'x' $$",
    ] {
        refused(url, sql).await;
    }
    // Superuser-only switches are out of reach too.
    let mut conn = PgConnection::connect(url).await.unwrap();
    assert!(sqlx::query("set session_replication_role = replica")
        .execute(&mut conn)
        .await
        .is_err());

    // Nor does it hold, or could it hand on, what it was not given.
    let (update, delete, truncate, create): (bool, bool, bool, bool) = sqlx::query_as(
        "select has_table_privilege('audit_log', 'UPDATE'), has_table_privilege('audit_log', 'DELETE'),
                has_table_privilege('audit_log', 'TRUNCATE'), has_schema_privilege('public', 'CREATE')",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert!(!(update || delete || truncate || create));
    sqlx::query("grant update on audit_log to public")
        .execute(&mut conn)
        .await
        .unwrap(); // a warning only: "no privileges were granted"
    let public_update: bool =
        sqlx::query_scalar("select has_table_privilege('public', 'audit_log', 'UPDATE')")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    assert!(!public_update);

    // What it needs still works: the trail grows, rows change in scope.
    let mut tx = app.own().await;
    leadq_platform::audit::Auditor {
        tenant_id: Some(app.tenant.tenant_id),
        actor: "operator:test",
        correlation_id: "roles",
    }
    .entry("roles.check", "audit")
    .record(&mut *tx)
    .await
    .unwrap();
    tx.commit().await.unwrap();
    db::check_runtime_role(&app.db.pool).await.unwrap();
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leadq_refuses_to_run_as_the_owner_and_migrate_regrants_the_runtime_role_idempotently() {
    let app = spawn_app().await;
    // As the owner: refused, with the fix in the message.
    let owner = db::connect(&Secret::new(app.db.owner_url.clone()), 1)
        .await
        .unwrap();
    let err = db::check_runtime_role(&owner).await.unwrap_err();
    assert!(matches!(err, DbError::OwnerRole { .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.contains("LEADQ_MIGRATION_DATABASE_URL"), "{msg}");
    assert!(msg.contains("REASSIGN OWNED BY"), "{msg}");
    let settings = leadq_testkit::settings(&app.db.owner_url, "roles", &[]);
    let built = leadq_api::Application::build(&settings).await;
    assert!(built.is_err(), "leadq api started as the owner");

    // `leadq migrate` as the owner, granting the runtime role: again and again.
    for _ in 0..2 {
        let out = crate::leadq_cmd(&app)
            .arg("migrate")
            .env("LEADQ_MIGRATION_DATABASE_URL", &app.db.owner_url)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    db::check_runtime_role(&app.db.pool).await.unwrap();
    refused(&app.db.url, "delete from audit_log").await;
    assert_eq!(app.get("/v1/leads/none", app.key()).await.status(), 404);
    // The runtime role by name (LEADQ_RUNTIME_ROLE) must exist.
    let out = crate::leadq_cmd(&app)
        .arg("migrate")
        .env("LEADQ_MIGRATION_DATABASE_URL", &app.db.owner_url)
        .env("LEADQ_RUNTIME_ROLE", "no_such_role")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not exist"));
    owner.close().await;
    app.stop().await;
}

/// The SQLSTATE of `sql` run in `tx`, which must fail.
async fn code_of(tx: &mut sqlx::PgConnection, sql: &str, tenant: uuid::Uuid) -> String {
    let err = sqlx::query(sql)
        .bind(tenant)
        .execute(tx)
        .await
        .expect_err(&format!("ran: {sql}"));
    err.as_database_error()
        .and_then(|d| d.code())
        .map(|c| c.into_owned())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_per_job_tables_refuse_a_tenant_that_does_not_exist_and_no_tenant_can_be_deleted() {
    // The per-job tables check their tenant with a trigger instead of a foreign key (no lock on
    // the tenant's row, migrations/*_tenant_refs_without_row_locks.sql): the rule holds as
    // before, with the foreign key's SQLSTATE, because a tenant can never go away.
    let app = spawn_app().await;
    let ghost = uuid::Uuid::new_v4();
    for sql in [
        "insert into leads (tenant_id, external_id, source) values ($1, 'x', 'telegram')",
        "insert into audit_log (tenant_id, actor, action, subject, outcome, correlation_id, details)
         values ($1, 'cli', 'x', 'x', 'ok', 'cli', '{}')",
        "insert into job_runs (job_id, tenant_id, kind, message_id, correlation_id, status,
                               attempts, enqueued_at, first_started_at, last_started_at)
         values (gen_random_uuid(), $1, 'lead_score', 'm', 'c', 'running', 1, now(), now(), now())",
    ] {
        let mut tx = app.scoped(ghost).await;
        assert_eq!(code_of(&mut tx, sql, ghost).await, "23503", "{sql}");
    }
    // The check reads every row of a statement: one bad row among good ones fails it all, as
    // in the run recorder's batches of every tenant's runs.
    let mut tx = leadq_platform::db::begin_service(&app.db.pool, "run-recorder")
        .await
        .unwrap();
    let batch = format!(
        "insert into job_runs (job_id, tenant_id, kind, message_id, correlation_id, status,
                               attempts, enqueued_at, first_started_at, last_started_at)
         select gen_random_uuid(), t, 'lead_score', 'm', 'c', 'running', 1, now(), now(), now()
           from unnest(array['{}'::uuid, $1, '{}'::uuid]) as t",
        app.tenant.tenant_id, app.tenant.tenant_id
    );
    assert_eq!(code_of(&mut tx, &batch, ghost).await, "23503");
    drop(tx);
    // Moving a row to a tenant that does not exist is refused the same way (as the owner,
    // whom row-level security would not stop either).
    let mut tx = app.own().await;
    sqlx::query("insert into leads (tenant_id, external_id, source) values ($1, 'y', 'telegram')")
        .bind(app.tenant.tenant_id)
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let mut owner = app.db.owner_tx(app.tenant.tenant_id).await;
    let moved = "update leads set tenant_id = $1 where external_id = 'y'";
    assert_eq!(code_of(&mut owner, moved, ghost).await, "23503");
    drop(owner);
    // A real tenant's rows are written as before; a tenant is never deleted, by anyone.
    let mut owner = app.db.owner_tx(app.tenant.tenant_id).await;
    let delete = "delete from tenants where id = $1";
    assert_eq!(
        code_of(&mut owner, delete, app.tenant.tenant_id).await,
        "23001"
    );
    drop(owner);
    let mut owner = app.db.owner_tx(app.tenant.tenant_id).await;
    let truncate = "truncate tenants cascade";
    let err = sqlx::query(truncate)
        .execute(&mut *owner)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("never deleted"), "{err}");
    app.stop().await;
}
