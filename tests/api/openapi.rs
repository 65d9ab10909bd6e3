//! The committed OpenAPI document must be the one the code generates.

#[test]
fn the_committed_openapi_document_matches_the_generated_one() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("openapi/openapi.json");
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    let generated = scoregate::api::openapi_json();
    assert!(
        committed == generated,
        "openapi/openapi.json is out of date; regenerate it with:\n    cargo run -- openapi > openapi/openapi.json"
    );
}

#[test]
fn the_document_is_openapi_3_1_and_describes_every_route() {
    let document: serde_json::Value =
        serde_json::from_str(&scoregate::api::openapi_json()).unwrap();
    assert!(document["openapi"].as_str().unwrap().starts_with("3.1"));
    for route in [
        "/tenants",
        "/tenants/{id}",
        "/tenants/{id}/score",
        "/healthz",
        "/readyz",
    ] {
        assert!(
            document["paths"][route]["get"].is_object(),
            "{route} is not documented"
        );
    }
    let score = &document["paths"]["/tenants/{id}/score"]["get"]["responses"];
    for status in ["200", "400", "404", "502", "503", "504"] {
        assert!(
            score[status].is_object(),
            "score response {status} is not documented"
        );
    }
}

#[test]
fn every_reference_in_the_document_resolves() {
    fn refs<'a>(value: &'a serde_json::Value, out: &mut Vec<&'a str>) {
        match value {
            serde_json::Value::Object(map) => {
                if let Some(serde_json::Value::String(target)) = map.get("$ref") {
                    out.push(target);
                }
                map.values().for_each(|v| refs(v, out));
            }
            serde_json::Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }
    let document: serde_json::Value =
        serde_json::from_str(&scoregate::api::openapi_json()).unwrap();
    let mut targets = Vec::new();
    refs(&document, &mut targets);
    assert!(!targets.is_empty());
    for target in targets {
        let pointer = target
            .strip_prefix('#')
            .unwrap_or_else(|| panic!("{target} is not local"));
        assert!(
            document.pointer(pointer).is_some(),
            "{target} does not resolve: register its schema in api::ApiDoc"
        );
    }
}
