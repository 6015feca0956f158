//! leadq on a Redis Cluster of three primaries (three `redis-server` processes on loopback,
//! made into a cluster by this test with `redis-cli --cluster create`): the API and a worker
//! reach it through its seed nodes, tenants' jobs spread over the queue shards and so over the
//! primaries, and every accepted lead is stored once.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use leadq_testkit::{sample_lead, spawn_app_with, wait_for};
use serde_json::json;

/// Three cluster-enabled redis-server processes, stopped when dropped.
struct LocalCluster {
    dir: PathBuf,
    ports: Vec<u16>,
    children: Vec<Child>,
}

/// A port that is free, and whose cluster bus port (+10000) is free too.
fn free_port() -> u16 {
    loop {
        let p = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if p < 55_000 && std::net::TcpListener::bind(("127.0.0.1", p + 10_000)).is_ok() {
            return p;
        }
    }
}

fn cli(port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["-p", &port.to_string()])
        .args(args)
        .output()
        .expect("run redis-cli");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl LocalCluster {
    fn start() -> Self {
        let dir = std::env::temp_dir().join(format!("leadq-cluster-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let children = ports
            .iter()
            .map(|p| {
                Command::new("redis-server")
                    .args(["--port", &p.to_string(), "--bind", "127.0.0.1"])
                    .args(["--cluster-enabled", "yes"])
                    .args(["--cluster-config-file", &format!("nodes-{p}.conf")])
                    .args(["--save", "", "--appendonly", "no"])
                    .arg("--dir")
                    .arg(&dir)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("start redis-server")
            })
            .collect();
        let c = Self {
            dir,
            ports,
            children,
        };
        for p in &c.ports {
            for _ in 0..100 {
                if cli(*p, &["PING"]).trim() == "PONG" {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        let nodes: Vec<String> = c.ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let mut args = vec!["--cluster", "create"];
        args.extend(nodes.iter().map(String::as_str));
        args.extend(["--cluster-replicas", "0", "--cluster-yes"]);
        let out = Command::new("redis-cli")
            .args(&args)
            .output()
            .expect("redis-cli --cluster create");
        assert!(
            out.status.success(),
            "cluster create failed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        for p in &c.ports {
            for i in 0..200 {
                if cli(*p, &["CLUSTER", "INFO"]).contains("cluster_state:ok") {
                    break;
                }
                assert!(i < 199, "the cluster did not reach state ok");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        c
    }

    fn url(&self) -> String {
        self.ports
            .iter()
            .map(|p| format!("redis://127.0.0.1:{p}/"))
            .collect::<Vec<_>>()
            .join(",")
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_three_primary_cluster_tenants_spread_over_the_primaries_and_every_lead_is_stored() {
    let cluster = LocalCluster::start();
    let url = cluster.url();
    let app = spawn_app_with(&[
        ("REDIS_URL", url.as_str()),
        ("LEADQ_REDIS_CLUSTER", "true"),
        ("LEADQ_QUEUE_SHARDS", "16"),
    ])
    .await;
    let worker = app.spawn_worker().await;
    // Eight tenants, each with its own key.
    let mut tenants = vec![(app.tenant.tenant_id, app.key().to_owned())];
    for _ in 0..7 {
        let t = app.other_tenant().await;
        tenants.push((t.tenant_id, t.api_key.expose().to_owned()));
    }
    let shards: std::collections::BTreeSet<u16> =
        tenants.iter().map(|(t, _)| app.queue.shard_of(t)).collect();
    assert!(shards.len() >= 4, "tenants fell into shards {shards:?}");
    let per_tenant = 15;
    for (i, (_, key)) in tenants.iter().enumerate() {
        for j in 0..per_tenant {
            let mut lead = sample_lead(&format!("tg-c{i}-{j}"));
            lead["message_id"] = json!(format!("m-{i}-{j}"));
            let res = app.post_lead(key, &lead).await;
            assert_eq!(res.status(), 202, "{:?}", res.text().await);
        }
    }
    let n = (tenants.len() * per_tenant) as u64;
    let c = wait_for("every lead scored", Duration::from_secs(60), || async {
        let c = app.queue.counts("lead_score").await.ok()?;
        (c.done == n).then_some(c)
    })
    .await;
    assert_eq!((c.dead, c.pending, c.running), (0, 0, 0), "{c:?}");
    let mut stored = 0;
    for (t, _) in &tenants {
        let count: i64 = sqlx::query_scalar("select count(*) from leads")
            .fetch_one(&mut *app.scoped(*t).await)
            .await
            .unwrap();
        assert_eq!(count, per_tenant as i64, "tenant {t}");
        stored += count;
    }
    // The queue's keys live on every primary: the shards spread over the cluster.
    let per_node: Vec<u64> = cluster
        .ports
        .iter()
        .map(|p| cli(*p, &["DBSIZE"]).trim().parse().unwrap_or(0))
        .collect();
    assert!(
        per_node.iter().all(|k| *k > 0),
        "keys per primary: {per_node:?}"
    );
    // Operator views work across shards too.
    let st = app
        .queue
        .tenant_state("lead_score", tenants[3].0)
        .await
        .unwrap();
    assert!(!st.paused);
    println!(
        "cluster: {n} accepted, {stored} stored, {} completed, 0 dead; {} tenants in {} shards; \
         keys per primary {per_node:?}",
        c.done,
        tenants.len(),
        shards.len()
    );
    worker.stop().await;
    app.stop().await;
}
