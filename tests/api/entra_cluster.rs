//! Several replicas share an Entra ID caller's request rate through Redis, as they share an API
//! key's: the budget is the mapping's, whichever replica is asked.

use crate::cluster::{options, RedisServer, Replicas};
use crate::entra::token_of;

#[tokio::test]
async fn an_entra_callers_request_rate_is_shared_by_every_replica() {
    let redis = RedisServer::start();
    let callers = r#"[{ name = "readers", role = "Scores.Read.All", tenants = ["*"], requests_per_minute = 4 }]"#;
    let replicas = Replicas::start(
        3,
        options(1),
        &redis,
        &[
            ("SCOREGATE__AUTH__ENABLED", "true"),
            ("SCOREGATE__AUTH__ENTRA__CALLERS", callers),
        ],
    )
    .await;
    let token = token_of(&replicas.emulator, "portal", 2).await;
    let mut statuses = Vec::new();
    for i in 0..6 {
        let response = replicas
            .client
            .get(format!("{}/tenants", replicas.addresses[i % 3]))
            .bearer_auth(&token)
            .send()
            .await
            .expect("the replica answers");
        statuses.push((
            response.status().as_u16(),
            response
                .headers()
                .get("ratelimit-remaining")
                .map(|value| value.to_str().unwrap_or_default().to_owned()),
        ));
    }
    let codes: Vec<u16> = statuses.iter().map(|(status, _)| *status).collect();
    assert_eq!(codes, vec![200, 200, 200, 200, 429, 429], "{statuses:?}");
    assert_eq!(statuses[0].1.as_deref(), Some("3"), "{statuses:?}");
    assert_eq!(statuses[3].1.as_deref(), Some("0"), "{statuses:?}");
}
