//! The published contract is served, browsable, and true of the running API: every operation
//! it lists answers, without credentials, a status it documents, in the standard error body.

use leadq_testkit::spawn_app;
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_contract_is_served_with_its_ui_and_every_operation_answers_a_documented_status() {
    let app = spawn_app().await;
    let client = reqwest::Client::new();
    let served: Value = client
        .get(format!("{}/openapi.json", app.address))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let doc = leadq_api::openapi_document();
    assert_eq!(served, leadq_api::openapi::to_value(&doc));
    let link = &served["paths"]["/v1/leads"]["post"]["responses"]["202"]["links"]["GetLead"];
    assert_eq!(
        link["operationId"], "get_lead",
        "camel case, as OpenAPI spells it"
    );
    assert_eq!(served["openapi"], "3.1.0");

    let ui = client
        .get(format!("{}/docs/", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(ui.status(), 200);
    assert!(ui.text().await.unwrap().contains("swagger-ui"));

    let mut checked = 0;
    for (path, item) in &doc.paths.paths {
        let url = format!(
            "{}{}",
            app.address,
            path.replace("{job_id}", &uuid::Uuid::nil().to_string())
                .replace(['{', '}'], "")
        );
        let ops = [
            (reqwest::Method::GET, &item.get),
            (reqwest::Method::POST, &item.post),
            (reqwest::Method::DELETE, &item.delete),
        ];
        for (method, op) in ops {
            let Some(op) = op else { continue };
            let res = client
                .request(method.clone(), &url)
                .json(&serde_json::json!({}))
                .send()
                .await
                .unwrap();
            let status = res.status().as_u16().to_string();
            assert!(
                op.responses.responses.contains_key(&status),
                "{method} {path} answered an undocumented {status}"
            );
            if res.status().is_client_error() {
                let body: Value = res.json().await.unwrap();
                let code = body["error"]["code"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                assert!(
                    leadq_api::error::ApiError::CODES.contains(&code.as_str())
                        || code == "invalid_metrics_token",
                    "{method} {path}: {body}"
                );
            }
            checked += 1;
        }
    }
    assert_eq!(checked, 22);
    app.stop().await;
}
