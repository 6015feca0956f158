//! HTTPS on the API listener: served with the configured certificate, reloaded on SIGHUP, and
//! HSTS sent only over HTTPS or behind a TLS proxy.

use std::time::Duration;

use leadq_testkit::{spawn_app_with, wait_for};

use super::servers::Pki;

fn client(pki: &Pki) -> reqwest::Client {
    let ca = reqwest::Certificate::from_pem(&std::fs::read(&pki.ca).unwrap()).unwrap();
    reqwest::Client::builder()
        .tls_certs_only([ca])
        .tls_info(true)
        .build()
        .unwrap()
}

/// The DER of a certificate [`Pki::issue`] wrote (beside its PEM file).
fn der(pem: &std::path::Path) -> Vec<u8> {
    std::fs::read(pem.with_extension("der")).unwrap()
}

async fn served_cert(client: &reqwest::Client, url: &str) -> (reqwest::Response, Vec<u8>) {
    let res = client.get(url).send().await.expect("an HTTPS request");
    let cert = res
        .extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|i| i.peer_certificate())
        .expect("the peer certificate")
        .to_vec();
    (res, cert)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_serves_https_with_the_given_certificate_sends_hsts_and_reloads_on_sighup() {
    let pki = Pki::new();
    // Files of the app's own, so the reload below replaces what it serves.
    let cert = pki.dir.join("api.pem");
    let key = pki.dir.join("api.key");
    std::fs::copy(&pki.server.cert, &cert).unwrap();
    std::fs::copy(&pki.server.key, &key).unwrap();
    let app = spawn_app_with(&[
        ("LEADQ_API_TLS_CERT_FILE", cert.to_str().unwrap()),
        ("LEADQ_API_TLS_KEY_FILE", key.to_str().unwrap()),
    ])
    .await;
    assert!(app.address.starts_with("https://127.0.0.1:"));
    let https = client(&pki);
    let url = format!("{}/healthz", app.address);
    let (res, served) = served_cert(&https, &url).await;
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.headers()["strict-transport-security"],
        "max-age=63072000; includeSubDomains"
    );
    assert_eq!(served, der(&pki.server.cert));

    // Plain HTTP to the TLS port gets no answer it could read.
    let plain = app.address.replacen("https://", "http://", 1);
    assert!(reqwest::get(format!("{plain}/healthz")).await.is_err());

    // A renewed certificate, then SIGHUP: new connections get it, without a restart.
    let renewed = pki.issue("renewed", &["127.0.0.1"], false);
    std::fs::copy(&renewed.cert, &cert).unwrap();
    std::fs::copy(&renewed.key, &key).unwrap();
    let hup = std::process::Command::new("kill")
        .args(["-HUP", &std::process::id().to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    let want = der(&renewed.cert);
    wait_for(
        "the renewed certificate",
        Duration::from_secs(10),
        || async {
            // A fresh client: a pooled connection keeps the certificate it was opened with.
            let (_, served) = served_cert(&client(&pki), &url).await;
            (served == want).then_some(())
        },
    )
    .await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hsts_is_sent_over_plain_http_only_behind_a_tls_proxy() {
    let proxied = spawn_app_with(&[("LEADQ_BEHIND_TLS_PROXY", "true")]).await;
    let res = reqwest::get(format!("{}/healthz", proxied.address))
        .await
        .unwrap();
    assert_eq!(
        res.headers()["strict-transport-security"],
        "max-age=63072000; includeSubDomains"
    );
    proxied.stop().await;

    let direct = spawn_app_with(&[]).await;
    let res = reqwest::get(format!("{}/healthz", direct.address))
        .await
        .unwrap();
    assert!(res.headers().get("strict-transport-security").is_none());
    direct.stop().await;
}
