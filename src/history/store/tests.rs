use super::*;

/// SQLite's plan of the portfolio statement for `tenants` named tenants, one line a step.
async fn portfolio_plan(store: &Store, tenants: usize) -> Vec<String> {
    let sql = format!("EXPLAIN QUERY PLAN {}", portfolio_sql(tenants));
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(Metric::Device.as_str())
        .bind(0_i64)
        .bind(DAY)
        .bind(DAY);
    if tenants == 0 {
        query = query.bind(DAY);
    }
    for index in 0..tenants {
        query = query.bind(format!("t{index}"));
    }
    let rows = query.fetch_all(&store.pool).await.expect("a plan");
    rows.iter()
        .map(|row| row.try_get::<String, _>("detail").expect("detail"))
        .collect()
}

#[tokio::test]
async fn the_portfolio_seeks_each_named_tenant_instead_of_scanning_the_table() {
    let dir = tempfile::tempdir().expect("a directory");
    let url = format!("sqlite://{}/history.db?mode=rwc", dir.path().display());
    let store = Store::connect(&url).await.expect("a store");
    let plan = portfolio_plan(&store, 3).await;
    assert!(
        plan.iter()
            .any(|step| step.contains("SEARCH p USING PRIMARY KEY (tenant=? AND metric=?")),
        "{plan:#?}"
    );
    assert!(
        !plan.iter().any(|step| step.starts_with("SCAN p")),
        "{plan:#?}"
    );
    // The statement without names (more tenants than parameters; before, every caller's)
    // is the one that reads the whole table.
    let everyone = portfolio_plan(&store, 0).await;
    assert!(
        everyone
            .iter()
            .any(|step| step.starts_with("SCAN history_points")),
        "{everyone:#?}"
    );
}
