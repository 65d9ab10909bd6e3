//! The OpenAPI document as generated clients and validators read it, and the plain-text
//! metrics for callers that ask for them (split from `hardening_contract`).

use crate::helpers::{emulator_options, spawn_app};

#[test]
fn the_document_serves_generated_clients_and_validators() {
    let document: serde_json::Value =
        serde_json::from_str(&scoregate::api::openapi_json()).unwrap();
    assert_eq!(document["info"]["license"]["identifier"], "MIT");
    for open in ["/healthz", "/readyz", "/openapi.json"] {
        assert_eq!(
            document["paths"][open]["get"]["security"],
            serde_json::json!([]),
            "{open}"
        );
    }
    let scores = &document["paths"]["/scores"]["get"];
    let parameter = |operation: &serde_json::Value, name: &str| {
        operation["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .cloned()
    };
    assert_eq!(
        parameter(scores, "sort").unwrap()["schema"]["$ref"],
        "#/components/schemas/SortView"
    );
    let sort = &document["components"]["schemas"]["SortView"];
    assert_eq!(
        sort["enum"],
        serde_json::json!([
            "tenant",
            "name",
            "score",
            "-score",
            "change_1d",
            "-change_1d",
            "change_7d",
            "-change_7d",
            "change_30d",
            "-change_30d",
            "change_90d",
            "-change_90d"
        ])
    );
    // `/scores` is JSON only; CSV is its own operation with the same query minus `format`.
    let json_only: Vec<&String> = scores["responses"]["200"]["content"]
        .as_object()
        .unwrap()
        .keys()
        .collect();
    assert_eq!(json_only, ["application/json"]);
    let csv = &document["paths"]["/scores.csv"]["get"];
    let csv_types: Vec<&String> = csv["responses"]["200"]["content"]
        .as_object()
        .unwrap()
        .keys()
        .collect();
    assert_eq!(csv_types, ["text/csv"]);
    assert!(parameter(csv, "format").is_none());
    assert_eq!(
        csv["parameters"].as_array().unwrap().len() + 1,
        scores["parameters"].as_array().unwrap().len()
    );
    let metrics = &document["paths"]["/metrics"]["get"];
    assert!(metrics["responses"]["200"]["content"]["text/plain"].is_object());
    assert!(metrics["responses"]["404"].is_object());
    assert!(document["paths"]["/tenants/{id}"]["get"]["responses"]["400"].is_object());
}

#[tokio::test]
async fn metrics_are_plain_text_for_a_caller_that_asks_for_it() {
    let app = spawn_app(emulator_options(1, vec![])).await;
    let response = app
        .client
        .get(format!("{}/metrics", app.address))
        .header("accept", "text/plain")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let prometheus =
        "application/openmetrics-text;version=1.0.0;q=0.9,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
    let response = app
        .client
        .get(format!("{}/metrics", app.address))
        .header("accept", prometheus)
        .send()
        .await
        .unwrap();
    let content_type = response.headers()["content-type"].to_str().unwrap();
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
}

#[tokio::test]
async fn a_gateway_without_authentication_serves_a_document_that_asks_for_none() {
    let app = spawn_app(emulator_options(1, vec![])).await;
    let (status, headers, served) = app.get_json("/openapi.json").await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(served["security"], serde_json::json!([]));
    for (path, item) in served["paths"].as_object().unwrap() {
        let responses = &item["get"]["responses"];
        assert!(
            responses["401"].is_null() && responses["429"].is_null(),
            "{path}"
        );
    }
    // Statuses schemathesis found: a max_age beyond int64, and a negative one, are refused.
    for max_age in ["9223372036854775808", "-1"] {
        let (status, _, problem) = app
            .get_json(&format!("/tenants/contoso/score?max_age={max_age}"))
            .await;
        assert_eq!(status, 400, "{max_age}: {problem}");
        assert_eq!(problem["code"], "invalid_request");
    }
}
