//! The alert routes' paging: `/alerts/events` and `/webhooks/deliveries` cursors are those of
//! `/scores` (opaque, bound to the filters and the API key), and `limit` is an integer.

use crate::helpers::{emulator_options, spawn_app_with_config, TestApp};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use scoregate::history::Metric;
use std::time::Duration;
use time::OffsetDateTime;

/// A gateway with every tenant firing rule `low` (two events each: a firing and, after a
/// reading above the line, a resolve), two deliveries per tenant to a webhook that refuses them
/// (400: failed at once), a key scoped to `contoso` and an operator key.
struct Setup {
    app: TestApp,
    contoso: String,
    operator: String,
    tenants: Vec<String>,
    _receiver: actix_web::dev::ServerHandle,
}

async fn setup() -> Setup {
    let (url, receiver) = crate::helpers::serve_loopback(|| {
        actix_web::web::to(|| async { actix_web::HttpResponse::BadRequest().finish() })
    });
    let (contoso, contoso_digest) = scoregate::auth::generate_key().unwrap();
    let (operator, operator_digest) = scoregate::auth::generate_key().unwrap();
    let extra = format!(
        "[[api_keys]]\nname = \"contoso\"\nsha256 = \"{contoso_digest}\"\ntenants = [\"contoso\"]\n\n\
         [[api_keys]]\nname = \"operator\"\nsha256 = \"{operator_digest}\"\ntenants = [\"*\"]\noperator = true\n\n\
         [[alerts]]\nname = \"low\"\nmetric = \"device\"\nbelow = 300\n\n\
         [[webhooks]]\nname = \"psa\"\nurl = \"{url}/hook\"\nsecret = {{ env = \"PSA_SECRET\" }}\n"
    );
    let app = spawn_app_with_config(
        emulator_options(3, vec![]),
        &[
            ("SCOREGATE__AUTH__ENABLED", "true"),
            ("PSA_SECRET", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
        ],
        &extra,
    )
    .await;
    let tenants: Vec<String> = app
        .emulator
        .tenants()
        .iter()
        .map(|t| t.slug.clone())
        .collect();
    let alerts = app.services.alerts().expect("alerts are on").clone();
    let now = OffsetDateTime::now_utc();
    for tenant in &tenants {
        alerts.on_reading(tenant, Metric::Device, 250.0, now);
    }
    for tenant in &tenants {
        alerts.on_reading(tenant, Metric::Device, 350.0, now);
    }
    alerts.flush().await;
    Setup {
        app,
        contoso,
        operator,
        tenants,
        _receiver: receiver,
    }
}

impl Setup {
    async fn get(&self, path: &str, key: &str) -> (u16, serde_json::Value) {
        let response = self
            .app
            .client
            .get(format!("{}{path}", self.app.address))
            .bearer_auth(key)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap())
    }

    /// Asserts the `/scores` answer to a cursor that does not open.
    async fn refused(&self, path: &str, key: &str) {
        let (status, problem) = self.get(path, key).await;
        assert_eq!(status, 400, "{path}: {problem}");
        assert_eq!(problem["code"], "invalid_request", "{path}: {problem}");
        assert!(
            problem["detail"]
                .as_str()
                .unwrap()
                .starts_with("cursor: the cursor is invalid, or belongs to another query"),
            "{path}: {problem}"
        );
    }
}

/// The next page's cursor of `path`.
fn cursor_of(body: &serde_json::Value) -> String {
    body["next_cursor"]
        .as_str()
        .unwrap_or_else(|| panic!("a next page: {body}"))
        .to_owned()
}

#[tokio::test]
async fn event_cursors_are_opaque_and_bound_to_the_filters_and_the_key() {
    let setup = setup().await;
    let (operator, contoso) = (setup.operator.as_str(), setup.contoso.as_str());
    assert!(setup.tenants.len() >= 3, "{:?}", setup.tenants);

    // The scoped key pages its own two events; its cursor tells nothing of the other tenants'.
    let (status, first) = setup.get("/alerts/events?limit=1", contoso).await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["events"][0]["tenant"], "contoso");
    let cursor = cursor_of(&first);
    let bytes = URL_SAFE_NO_PAD.decode(&cursor).unwrap();
    let text = String::from_utf8_lossy(&bytes);
    assert!(!text.starts_with("e:"), "a readable position: {text}");
    let (status, second) = setup
        .get(&format!("/alerts/events?limit=1&cursor={cursor}"), contoso)
        .await;
    assert_eq!(status, 200, "{second}");
    assert_eq!(second["events"][0]["tenant"], "contoso");
    assert_eq!(second["events"][0]["type"], "alert.resolved");
    assert_ne!(second["events"][0]["id"], first["events"][0]["id"]);

    // Forged positions, the old format included, and an edited cursor.
    let mut edited = bytes.clone();
    let last = edited.len() - 1;
    edited[last] ^= 1;
    for forged in [
        URL_SAFE_NO_PAD.encode("e:0"),
        URL_SAFE_NO_PAD.encode("e:-9223372036854775808"),
        URL_SAFE_NO_PAD.encode(edited),
        "xyz".to_owned(),
    ] {
        setup
            .refused(&format!("/alerts/events?cursor={forged}"), contoso)
            .await;
    }
    // The same cursor under other filters, or by another key.
    for other in [
        "&alert=low",
        "&tenant=contoso",
        "&since=2020-01-01T00:00:00Z",
    ] {
        setup
            .refused(
                &format!("/alerts/events?limit=1&cursor={cursor}{other}"),
                contoso,
            )
            .await;
    }
    setup
        .refused(&format!("/alerts/events?limit=1&cursor={cursor}"), operator)
        .await;

    // A filtered query pages with its own cursor, and two spellings of one `since` are one query.
    let (_, filtered) = setup
        .get(
            "/alerts/events?limit=1&alert=low&since=2020-01-01T00:00:00Z",
            operator,
        )
        .await;
    let cursor = cursor_of(&filtered);
    let (status, next) = setup
        .get(
            &format!("/alerts/events?limit=1&alert=low&since=2020-01-01T00:00:00%2B00:00&cursor={cursor}"),
            operator,
        )
        .await;
    assert_eq!(status, 200, "{next}");
    assert_eq!(next["events"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn delivery_cursors_are_opaque_and_bound_to_the_status_and_the_key() {
    let setup = setup().await;
    let operator = setup.operator.as_str();
    let alerts = setup.app.services.alerts().unwrap().clone();
    // Every delivery failed (the endpoint answers 400): 2 per tenant.
    let expected = setup.tenants.len() * 2;
    tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let failed = alerts
                .deliveries(Some(scoregate::alerts::DeliveryStatus::Failed), None, 100)
                .await
                .unwrap();
            if failed.len() == expected {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("every delivery fails");

    let (status, first) = setup
        .get("/webhooks/deliveries?limit=2&status=failed", operator)
        .await;
    assert_eq!(status, 200, "{first}");
    let cursor = cursor_of(&first);
    let text = String::from_utf8_lossy(&URL_SAFE_NO_PAD.decode(&cursor).unwrap()).into_owned();
    assert!(!text.contains("msg_"), "a readable position: {text}");
    let (status, second) = setup
        .get(
            &format!("/webhooks/deliveries?limit=2&status=failed&cursor={cursor}"),
            operator,
        )
        .await;
    assert_eq!(status, 200, "{second}");
    assert_ne!(
        second["deliveries"][0]["webhook_id"],
        first["deliveries"][1]["webhook_id"]
    );
    for path in [
        format!("/webhooks/deliveries?limit=2&cursor={cursor}"),
        format!("/webhooks/deliveries?limit=2&status=pending&cursor={cursor}"),
        format!(
            "/webhooks/deliveries?cursor={}",
            URL_SAFE_NO_PAD.encode("d:")
        ),
    ] {
        setup.refused(&path, operator).await;
    }
}

#[tokio::test]
async fn limit_is_an_integer_in_the_document_and_a_non_number_is_a_400() {
    let setup = setup().await;
    for path in [
        "/alerts/events?limit=ten",
        "/alerts/events?limit=1.5",
        "/webhooks/deliveries?limit=ten",
    ] {
        let (status, problem) = setup.get(path, &setup.operator).await;
        assert_eq!(status, 400, "{path}: {problem}");
        assert_eq!(problem["code"], "invalid_request", "{path}: {problem}");
    }
    for path in ["/alerts/events?limit=0", "/webhooks/deliveries?limit=1001"] {
        let (status, problem) = setup.get(path, &setup.operator).await;
        assert_eq!(status, 400, "{path}: {problem}");
        assert!(
            problem["detail"].as_str().unwrap().starts_with("limit"),
            "{problem}"
        );
    }
    let document: serde_json::Value =
        serde_json::from_str(&scoregate::api::openapi_json()).unwrap();
    for route in ["/alerts/events", "/webhooks/deliveries"] {
        let parameters = document["paths"][route]["get"]["parameters"]
            .as_array()
            .unwrap();
        let schema = |name: &str| {
            parameters
                .iter()
                .find(|p| p["name"] == name)
                .map(|p| p["schema"].clone())
                .unwrap_or_else(|| panic!("{route} has no {name}"))
        };
        let limit = schema("limit");
        assert!(limit["type"].to_string().contains("integer"), "{limit}");
        assert_eq!(limit["minimum"], 1, "{limit}");
        assert_eq!(limit["maximum"], 1000, "{limit}");
        if route == "/alerts/events" {
            let since = schema("since");
            assert_eq!(since["format"], "date-time", "{since}");
        }
    }
    let schemas = &document["components"]["schemas"];
    for (schema, field) in [
        ("AlertEvent", "since"),
        ("AlertEvent", "at"),
        ("FiringAlert", "since"),
        ("Delivery", "created_at"),
        ("Delivery", "next_attempt"),
    ] {
        let property = &schemas[schema]["properties"][field];
        assert_eq!(
            property["format"], "date-time",
            "{schema}.{field}: {property}"
        );
    }
}
