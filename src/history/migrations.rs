//! The schema of each engine, embedded in the binary (nothing to ship beside it): one list per
//! engine of the files under `migrations/<engine>/`, in order.
//!
//! Listed by hand rather than with sqlx's `migrate!` macro: that macro alone needs sqlx's
//! `macros` feature, which compiles aws-lc and SQLite a second time for the build host. The
//! checksums are the same as the macro's (SHA-384 of the text), so databases migrated by earlier
//! releases carry on. A test checks that every file in the folders is listed.

use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::{AssertSqlSafe, SqlSafeStr};
use std::sync::LazyLock;

/// A migration file: its version, its description (the file name's words) and its text.
type File = (i64, &'static str, &'static str);

const SQLITE: &[File] = &[
    (
        1,
        "history points",
        include_str!("../../migrations/sqlite/0001_history_points.sql"),
    ),
    (
        2,
        "alerts",
        include_str!("../../migrations/sqlite/0002_alerts.sql"),
    ),
    (
        3,
        "alert endpoints",
        include_str!("../../migrations/sqlite/0003_alert_endpoints.sql"),
    ),
    (
        4,
        "tenant bindings",
        include_str!("../../migrations/sqlite/0004_tenant_bindings.sql"),
    ),
    (
        5,
        "control history",
        include_str!("../../migrations/sqlite/0005_control_history.sql"),
    ),
];

const POSTGRES: &[File] = &[
    (
        1,
        "history points",
        include_str!("../../migrations/postgres/0001_history_points.sql"),
    ),
    (
        2,
        "alerts",
        include_str!("../../migrations/postgres/0002_alerts.sql"),
    ),
    (
        3,
        "alert endpoints",
        include_str!("../../migrations/postgres/0003_alert_endpoints.sql"),
    ),
    (
        4,
        "tenant bindings",
        include_str!("../../migrations/postgres/0004_tenant_bindings.sql"),
    ),
    (
        5,
        "control history",
        include_str!("../../migrations/postgres/0005_control_history.sql"),
    ),
];

/// The SQLite schema.
pub(super) static SQLITE_MIGRATIONS: LazyLock<Migrator> = LazyLock::new(|| migrator(SQLITE));
/// The PostgreSQL schema.
pub(super) static POSTGRES_MIGRATIONS: LazyLock<Migrator> = LazyLock::new(|| migrator(POSTGRES));

fn migrator(files: &'static [File]) -> Migrator {
    Migrator::with_migrations(
        files
            .iter()
            .map(|&(version, description, sql)| {
                Migration::new(
                    version,
                    description.into(),
                    MigrationType::Simple,
                    AssertSqlSafe(sql).into_sql_str(),
                    false,
                )
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `migrate!` would have embedded: sqlx resolves the folder with the same code.
    #[tokio::test]
    async fn every_migration_file_is_listed_in_order_with_the_macros_checksum() {
        for (folder, listed) in [
            ("migrations/sqlite", &*SQLITE_MIGRATIONS),
            ("migrations/postgres", &*POSTGRES_MIGRATIONS),
        ] {
            let resolved = Migrator::new(std::path::Path::new(folder)).await.unwrap();
            let facts = |migrator: &Migrator| -> Vec<_> {
                migrator
                    .iter()
                    .map(|m| {
                        (
                            m.version,
                            m.description.to_string(),
                            m.migration_type,
                            m.checksum.to_vec(),
                            m.no_tx,
                        )
                    })
                    .collect()
            };
            assert_eq!(
                facts(listed),
                facts(&resolved),
                "{folder}: list every file in src/history/migrations.rs"
            );
        }
    }
}
