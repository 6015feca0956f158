//! `--mode e2e`: the real lead path, measured as a user sees it.
//!
//! C clients post leads (`POST /v1/leads` with each tenant's key) or signed Chatwoot
//! `message_created` webhooks (`--source chatwoot`) for T tenants the bench creates, to a
//! running API (`--api`) or to `leadq api` and `leadq worker` it starts itself with the
//! environment's settings; the real worker runs them into PostgreSQL (audit rows, `job_runs`).
//! It then waits until every accepted job has completed and reports: ingest requests/s and the
//! HTTP latency the clients saw; enqueue→done latency and jobs completed per second from
//! `job_runs` (server clocks, `finished_at - enqueued_at`); PostgreSQL transactions and WAL
//! bytes per job (`pg_stat_database`, `pg_current_wal_lsn` deltas: the whole server, so run it
//! on a quiet one); the peak RSS of the processes it started; CPU ms per lead of each of them,
//! of the bench, and of the rest of the machine (`cpu_ms_per_lead`: PostgreSQL and Redis are
//! most of `rest`); and whether every lead was stored exactly once and the audit chains verify.
//! `ok` is all of those.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use leadq_jobs::integrations::{chatwoot, settings as integrations};
use leadq_platform::config::{Needs, Settings};
use leadq_platform::db::{self, Scope};
use leadq_platform::secret::Secret;
use leadq_platform::tenant::{self, CreatedTenant};
use serde_json::json;
use sqlx::PgPool;

use super::args::Source;
use super::cpu;
use super::worker::summarize;
use super::{round_to, BenchArgs};

/// One tenant of the run, and its Chatwoot account and secret when the source is Chatwoot.
struct Tenant {
    created: CreatedTenant,
    chatwoot: Option<(i64, String)>,
}

/// The processes the bench started (killed when dropped).
struct Stack {
    api_url: String,
    worker_url: String,
    children: Vec<(&'static str, tokio::process::Child)>,
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

async fn wait_ready(client: &reqwest::Client, url: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Ok(r) = client.get(url).send().await {
            if r.status().is_success() {
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    anyhow::bail!("{url} did not become ready within 60 s")
}

/// `leadq api` and `leadq worker`, this binary, on free loopback ports.
async fn start_stack(client: &reqwest::Client) -> anyhow::Result<Stack> {
    let exe = std::env::current_exe()?;
    let (api_port, worker_port) = (free_port()?, free_port()?);
    let mut children = Vec::new();
    for role in ["api", "worker"] {
        let child = tokio::process::Command::new(&exe)
            .arg(role)
            .env("LEADQ_API_ADDR", format!("127.0.0.1:{api_port}"))
            .env("LEADQ_WORKER_ADDR", format!("127.0.0.1:{worker_port}"))
            .env("LEADQ_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("start leadq {role}"))?;
        children.push((role, child));
    }
    let api_url = format!("http://127.0.0.1:{api_port}");
    wait_ready(client, &format!("{api_url}/readyz")).await?;
    let worker_url = format!("http://127.0.0.1:{worker_port}");
    wait_ready(client, &format!("{worker_url}/readyz")).await?;
    Ok(Stack {
        api_url,
        worker_url,
        children,
    })
}

/// Peak resident memory of a process in MB (`VmHWM`), if it can be read.
fn peak_rss_mb(pid: Option<u32>) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{}/status", pid?)).ok()?;
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(round_to(kb / 1024.0, 1))
}

/// The mean time a run of `kind` spent in each phase, in ms (`leadq_job_phase_seconds`,
/// scraped from the worker the bench started); `None` if it cannot be read.
async fn phases_ms(
    settings: &Settings,
    worker_url: &str,
    kind: &str,
) -> Option<serde_json::Map<String, serde_json::Value>> {
    let mut req = reqwest::Client::new().get(format!("{worker_url}/metrics"));
    if let Some(token) = &settings.edge.metrics_token {
        req = req.bearer_auth(token.expose());
    }
    let text = req.send().await.ok()?.text().await.ok()?;
    let value = |series: &str, phase: &str| -> Option<f64> {
        let head = format!(
            "{}_{series}{{kind=\"{kind}\",phase=\"{phase}\"}} ",
            leadq_platform::metrics::JOB_PHASE_SECONDS
        );
        text.lines()
            .find_map(|l| l.strip_prefix(head.as_str()))
            .and_then(|v| v.trim().parse().ok())
    };
    let mut out = serde_json::Map::new();
    for phase in leadq_platform::metrics::phase::ALL {
        let (sum, count) = (value("sum", phase)?, value("count", phase)?);
        let mean = if count > 0.0 {
            sum / count * 1000.0
        } else {
            0.0
        };
        out.insert(phase.to_owned(), json!(round_to(mean, 2)));
    }
    Some(out)
}

/// Lifts the tenant's ingest limits out of the way (the bench measures the path, not the
/// admission that protects it), as an operator would for a high-volume tenant: the same row
/// `update_billing_limit` writes, with its audit entry.
async fn unlimit(pool: &PgPool, tenant: uuid::Uuid) -> anyhow::Result<()> {
    let mut tx = db::begin(pool, Scope::Tenant(tenant)).await?;
    sqlx::query(
        "insert into tenant_limits (tenant_id, ingest_per_second, ingest_burst, leads_per_day)
         values ($1, 1000000, 1000000, 1000000000)
         on conflict (tenant_id) do update set ingest_per_second = excluded.ingest_per_second,
             ingest_burst = excluded.ingest_burst, leads_per_day = excluded.leads_per_day",
    )
    .bind(tenant)
    .execute(&mut *tx)
    .await?;
    leadq_platform::audit::Auditor {
        tenant_id: Some(tenant),
        actor: "operator:bench",
        correlation_id: "bench",
    }
    .entry("billing.limit_update", &format!("tenant:{tenant}"))
    .details(json!({"new": "unlimited for the e2e bench"}))
    .record(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

async fn create_tenants(
    pool: &PgPool,
    settings: &Settings,
    a: &BenchArgs,
    run: &str,
) -> anyhow::Result<Vec<Tenant>> {
    let mut out = Vec::new();
    for i in 0..a.tenants.max(1) {
        let slug = format!("e2e-{run}-{i}");
        let created = tenant::create(pool, &slug, "e2e bench").await?;
        unlimit(pool, created.tenant_id).await?;
        let chatwoot = if a.source == Source::Chatwoot {
            let account = 100_000 + i as i64;
            let secret = uuid::Uuid::new_v4().simple().to_string();
            let update = integrations::TenantUpdate {
                chatwoot_account_id: Some(account),
                chatwoot_secret: Some(Secret::new(secret.clone())),
                ..Default::default()
            };
            let sealer = leadq_jobs::pii::Sealer::from_settings(settings);
            integrations::update(pool, &sealer, &slug, &update, "operator:bench").await?;
            Some((account, secret))
        } else {
            None
        };
        out.push(Tenant { created, chatwoot });
    }
    Ok(out)
}

/// The `i`th request of the run.
fn request(
    client: &reqwest::Client,
    api: &str,
    t: &Tenant,
    run: &str,
    i: usize,
) -> reqwest::RequestBuilder {
    match &t.chatwoot {
        None => client
            .post(format!("{api}/v1/leads"))
            .bearer_auth(t.created.api_key.expose())
            .json(&json!({
                "external_id": format!("e2e-{run}-{i}"),
                "source": "telegram",
                "name": "Ada Lovelace",
                "email": format!("ada+{i}@example.com"),
                "answers": {"budget": "50k+", "timeline": "this_month",
                            "company_size": "51-200",
                            "need": "We need a CRM integration for our sales team"}
            })),
        Some((account, secret)) => {
            let body = serde_json::to_vec(&json!({
                "event": "message_created", "id": i + 1, "account": {"id": account},
                "message_type": "incoming", "private": false, "content_type": "text",
                "content": "Hello, we need a CRM for 50 people",
                "created_at": chrono::Utc::now().to_rfc3339(),
                "sender": {"id": i + 1, "type": "contact", "name": "Ada Lovelace",
                           "email": format!("ada+{i}@example.com"), "phone_number": null},
                "conversation": {"id": i + 1, "status": "open"}
            }))
            .expect("a JSON value serialises");
            let ts = chrono::Utc::now().timestamp();
            client
                .post(format!("{api}/v1/webhooks/chatwoot/{}", t.created.slug))
                .header("content-type", "application/json")
                .header("x-chatwoot-delivery", uuid::Uuid::new_v4().to_string())
                .header("x-chatwoot-timestamp", ts.to_string())
                .header(
                    "x-chatwoot-signature",
                    chatwoot::sign(secret.as_bytes(), ts, &body),
                )
                .body(body)
        }
    }
}

/// What the clients saw.
#[derive(Default)]
struct Posted {
    http_ms: Vec<f64>,
    accepted: usize,
    refused: usize,
    read_ms: Vec<f64>,
    reads_found: usize,
    reads_missed: usize,
}

/// How many leads the reader tenant holds for `--reads-per-lead`.
const READ_SET: usize = 256;

/// The tenant whose leads the clients read back (`--reads-per-lead`): its own, so the timed
/// tenants' completions count only what they posted; its [`READ_SET`] leads are posted and
/// scored before the timed run, so every read finds its lead (a miss is not an audited read).
struct Reader {
    tenant: Tenant,
    run: String,
}

async fn prepare_reader(
    pool: &PgPool,
    client: &reqwest::Client,
    api: &str,
    run: &str,
    timeout: Duration,
) -> anyhow::Result<Reader> {
    let created = tenant::create(pool, &format!("e2e-{run}-reader"), "e2e bench reads").await?;
    unlimit(pool, created.tenant_id).await?;
    let reader = Reader {
        tenant: Tenant {
            created,
            chatwoot: None,
        },
        run: format!("{run}r"),
    };
    for k in 0..READ_SET {
        let res = request(client, api, &reader.tenant, &reader.run, k)
            .send()
            .await?;
        anyhow::ensure!(
            res.status().is_success(),
            "reader lead {k}: {}",
            res.status()
        );
    }
    let deadline = Instant::now() + timeout;
    let tenants = std::slice::from_ref(&reader.tenant);
    while completed(pool, tenants, leadq_jobs::kinds::LEAD_SCORE).await? < READ_SET {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the reader's leads were not scored in time"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(reader)
}

/// Reads `reads` of the reader's leads (`GET /v1/leads/{id}`, each an audited read) after
/// lead `i` was posted; each read's time and whether it found the lead go into `posted`.
async fn read_back(
    client: &reqwest::Client,
    api: &str,
    reader: &Reader,
    i: usize,
    reads: usize,
    posted: &Mutex<Posted>,
) {
    for r in 0..reads {
        let k = (i * reads + r) % READ_SET;
        let started = Instant::now();
        let found = client
            .get(format!("{api}/v1/leads/e2e-{}-{k}", reader.run))
            .bearer_auth(reader.tenant.created.api_key.expose())
            .send()
            .await
            .is_ok_and(|res| res.status().is_success());
        let ms = started.elapsed().as_secs_f64() * 1000.0;
        let mut p = posted.lock().expect("no panic while held");
        p.read_ms.push(ms);
        if found {
            p.reads_found += 1;
        } else {
            p.reads_missed += 1;
        }
    }
}

async fn post_all(
    client: &reqwest::Client,
    api: &str,
    tenants: Arc<Vec<Tenant>>,
    reader: Option<Arc<Reader>>,
    a: &BenchArgs,
    run: &str,
) -> Posted {
    let next = Arc::new(AtomicUsize::new(0));
    let posted = Arc::new(Mutex::new(Posted::default()));
    let deadline = Instant::now() + Duration::from_secs_f64(a.duration);
    let limit = a.leads;
    let reads = a.reads_per_lead;
    let mut tasks = Vec::new();
    for _ in 0..a.c.max(1) {
        let (client, api, tenants, run) = (
            client.clone(),
            api.to_owned(),
            tenants.clone(),
            run.to_owned(),
        );
        let (next, posted, reader) = (next.clone(), posted.clone(), reader.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let done = match limit {
                    Some(n) => i >= n,
                    None => Instant::now() >= deadline,
                };
                if done {
                    return;
                }
                let t = &tenants[i % tenants.len()];
                let started = Instant::now();
                let ok = request(&client, &api, t, &run, i)
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success());
                let ms = started.elapsed().as_secs_f64() * 1000.0;
                {
                    let mut p = posted.lock().expect("no panic while held");
                    p.http_ms.push(ms);
                    if ok {
                        p.accepted += 1;
                    } else {
                        p.refused += 1;
                    }
                }
                if let Some(reader) = &reader {
                    read_back(&client, &api, reader, i, reads, &posted).await;
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    Arc::try_unwrap(posted)
        .ok()
        .and_then(|m| m.into_inner().ok())
        .unwrap_or_default()
}

/// How many of `kind`'s jobs of the run's tenants have completed: what the bench polls while
/// the worker drains, so it is a count (each query names its tenant, so an index serves it
/// rather than a scan of every tenant's rows under row-level security).
async fn completed(pool: &PgPool, tenants: &[Tenant], kind: &str) -> anyhow::Result<usize> {
    let mut done = 0i64;
    for t in tenants {
        let mut tx = db::begin(pool, Scope::Tenant(t.created.tenant_id)).await?;
        let n: i64 = sqlx::query_scalar(
            "select count(*) from job_runs
              where tenant_id = $1 and kind = $2 and status = 'completed'",
        )
        .bind(t.created.tenant_id)
        .bind(kind)
        .fetch_one(&mut *tx)
        .await?;
        done += n;
    }
    Ok(done as usize)
}

/// `(completed, enqueue→done ms of each, first enqueue → last finish seconds)` of `kind`'s jobs
/// of the run's tenants.
async fn completions(
    pool: &PgPool,
    tenants: &[Tenant],
    kind: &str,
) -> anyhow::Result<(usize, Vec<f64>, f64)> {
    let (mut lat, mut first, mut last) = (Vec::new(), f64::MAX, f64::MIN);
    for t in tenants {
        let mut tx = db::begin(pool, Scope::Tenant(t.created.tenant_id)).await?;
        let rows: Vec<(f64, f64, f64)> = sqlx::query_as(
            "select extract(epoch from enqueued_at)::float8,
                    extract(epoch from finished_at)::float8,
                    (extract(epoch from finished_at - enqueued_at) * 1000)::float8
               from job_runs where tenant_id = $1 and kind = $2 and status = 'completed'",
        )
        .bind(t.created.tenant_id)
        .bind(kind)
        .fetch_all(&mut *tx)
        .await?;
        for (enq, fin, ms) in rows {
            first = first.min(enq);
            last = last.max(fin);
            lat.push(ms);
        }
    }
    Ok((lat.len(), lat, (last - first).max(0.001)))
}

/// Whether every accepted request was stored exactly once.
async fn stored_once(
    pool: &PgPool,
    tenants: &[Tenant],
    source: Source,
    accepted: usize,
) -> anyhow::Result<bool> {
    let mut stored = 0i64;
    for t in tenants {
        let mut tx = db::begin(pool, Scope::Tenant(t.created.tenant_id)).await?;
        let sql = match source {
            Source::Lead => {
                "select count(*), count(distinct external_id) from leads where tenant_id = $1"
            }
            Source::Chatwoot => {
                "select count(*), count(distinct source_id) from lead_messages
                  where tenant_id = $1"
            }
        };
        let (n, distinct): (i64, i64) = sqlx::query_as(sql)
            .bind(t.created.tenant_id)
            .fetch_one(&mut *tx)
            .await?;
        if n != distinct {
            return Ok(false);
        }
        stored += n;
    }
    Ok(stored == accepted as i64)
}

/// `(transactions committed, WAL position)` of the whole server.
async fn pg_counters(pool: &PgPool) -> anyhow::Result<(i64, String)> {
    Ok(sqlx::query_as(
        "select (select sum(xact_commit)::bigint from pg_stat_database),
                pg_current_wal_lsn()::text",
    )
    .fetch_one(pool)
    .await?)
}

async fn wal_bytes(pool: &PgPool, from: &str, to: &str) -> anyhow::Result<f64> {
    Ok(
        sqlx::query_scalar("select pg_wal_lsn_diff($2::pg_lsn, $1::pg_lsn)::float8")
            .bind(from)
            .bind(to)
            .fetch_one(pool)
            .await?,
    )
}

/// Runs the mode (see the module docs) and fills `out`.
pub(super) async fn run(a: &BenchArgs, out: &mut serde_json::Value) -> anyhow::Result<()> {
    let needs = Needs {
        database: true,
        redis: false,
        keys: true,
    };
    let settings = Settings::from_env(needs, &[]).map_err(|e| anyhow::anyhow!("{e}"))?;
    let pool = db::connect(settings.database_url(), 4).await?;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(a.c.max(1))
        .build()?;
    let run = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
    let tenants = Arc::new(create_tenants(&pool, &settings, a, &run).await?);
    let mut stack = None;
    let api = match &a.api {
        Some(url) => url.trim_end_matches('/').to_owned(),
        None => {
            let s = start_stack(&client).await?;
            let url = s.api_url.clone();
            stack = Some(s);
            url
        }
    };
    let kind = match a.source {
        Source::Lead => leadq_jobs::kinds::LEAD_SCORE,
        Source::Chatwoot => leadq_jobs::kinds::CHATWOOT_EVENT,
    };
    let timeout = Duration::from_secs(a.timeout_s);
    let reader = match (a.reads_per_lead, a.source) {
        (1.., Source::Lead) => Some(Arc::new(
            prepare_reader(&pool, &client, &api, &run, timeout).await?,
        )),
        _ => None,
    };
    let pids: Vec<(&'static str, Option<u32>)> = match &stack {
        Some(s) => s.children.iter().map(|(r, c)| (*r, c.id())).collect(),
        None => Vec::new(),
    };
    let (tx0, wal0) = pg_counters(&pool).await?;
    let cpu0 = cpu::read(&pids);
    let started = Instant::now();
    let posted = post_all(&client, &api, tenants.clone(), reader, a, &run).await;
    let ingest_s = started.elapsed().as_secs_f64();
    // Wait for every accepted job to complete (or the timeout). Once a second: each poll
    // counts every tenant's `job_runs` rows (tens of milliseconds of PostgreSQL's CPU at
    // 100,000 rows), and the figures come from the rows' own times, not from when the poll
    // saw them (`completions`), so polling more often only took CPU from the run.
    let deadline = Instant::now() + Duration::from_secs(a.timeout_s);
    while completed(&pool, &tenants, kind).await? < posted.accepted && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let cpu1 = cpu::read(&pids);
    let (done, lat, span_s) = completions(&pool, &tenants, kind).await?;
    // Other sessions' statistics reach pg_stat_database within a second.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (tx1, wal1) = pg_counters(&pool).await?;
    let wal = wal_bytes(&pool, &wal0, &wal1).await?;
    let rss = |role: &str| {
        stack.as_ref().and_then(|s: &Stack| {
            s.children
                .iter()
                .find(|(r, _)| *r == role)
                .and_then(|(_, c)| peak_rss_mb(c.id()))
        })
    };
    let (api_rss, worker_rss) = (rss("api"), rss("worker"));
    let phases = match &stack {
        Some(s) => phases_ms(&settings, &s.worker_url, kind).await,
        None => None,
    };
    let once = stored_once(&pool, &tenants, a.source, posted.accepted).await?;
    let (audit_ok, audit_summary) = leadq_platform::audit::summary(
        &leadq_platform::audit::verify_all(&pool, settings.audit_keys()).await?,
    );
    drop(stack);
    let per = |x: f64| round_to(x / posted.accepted.max(1) as f64, 1);
    let (reads_found, reads_missed) = (posted.reads_found, posted.reads_missed);
    let read = summarize(posted.read_ms);
    let http = summarize(posted.http_ms);
    let e2e = summarize(lat);
    let o = out.as_object_mut().expect("the base line is an object");
    for (k, v) in [
        ("tenants", json!(tenants.len())),
        ("source", json!(a.source)),
        ("concurrency", json!(a.c)),
        ("n", json!(posted.accepted)),
        ("refused", json!(posted.refused)),
        ("completed", json!(done)),
        (
            "ingest_per_s",
            json!(round_to(posted.accepted as f64 / ingest_s, 1)),
        ),
        ("scored_per_s", json!(round_to(done as f64 / span_s, 1))),
        ("http_ms", json!({"p50": http["p50"], "p99": http["p99"]})),
        ("reads_per_lead", json!(a.reads_per_lead)),
        ("reads_found", json!(reads_found)),
        ("reads_missed", json!(reads_missed)),
        ("read_ms", json!({"p50": read["p50"], "p99": read["p99"]})),
        ("reads_audited", json!(!cfg!(feature = "unaudited-reads"))),
        ("e2e_ms", json!({"p50": e2e["p50"], "p99": e2e["p99"]})),
        ("tx_per_lead", json!(per((tx1 - tx0) as f64))),
        ("wal_bytes_per_lead", json!(per(wal))),
        ("cpu_ms_per_lead", cpu::usage(&cpu0, &cpu1, posted.accepted)),
        ("api_rss_mb", json!(api_rss)),
        ("worker_rss_mb", json!(worker_rss)),
        ("phases_ms", json!(phases)),
        ("stored_once", json!(once)),
        ("audit_verified", json!(audit_ok)),
        ("audit", json!(audit_summary)),
        (
            "ok",
            json!(once && audit_ok && done == posted.accepted && posted.refused == 0),
        ),
    ] {
        o.insert(k.to_owned(), v);
    }
    // The handler field means nothing here; the kind does.
    o.insert("handler".into(), json!(kind));
    Ok(())
}
