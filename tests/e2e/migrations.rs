//! The two migration folders describe one schema: both are applied to fresh databases and the
//! resulting tables, columns (types mapped to SQLite's affinities), nullability, defaults,
//! primary keys, unique constraints, foreign keys and indexes are compared.

use std::collections::BTreeSet;

use smoothd_tests::{Backend, TestDb};
use sqlx::Row;

/// One fact about the schema, as a comparable line.
type Facts = BTreeSet<String>;

/// PostgreSQL's type of a column as the SQLite affinity smoothd uses for it.
fn pg_affinity(data_type: &str) -> &'static str {
    match data_type {
        "bigint" | "integer" | "smallint" | "boolean" => "INTEGER",
        "double precision" | "real" | "numeric" => "REAL",
        "bytea" => "BLOB",
        _ => "TEXT",
    }
}

fn sqlite_affinity(declared: &str) -> &'static str {
    // SQLite's own affinity rules (datatype3.html, 3.1), with BOOLEAN stored as INTEGER.
    let t = declared.to_ascii_uppercase();
    if t.contains("INT") || t == "BOOLEAN" {
        "INTEGER"
    } else if t.contains("CHAR") || t.contains("CLOB") || t.contains("TEXT") {
        "TEXT"
    } else if t.contains("BLOB") || t.is_empty() {
        "BLOB"
    } else if t.contains("REAL") || t.contains("FLOA") || t.contains("DOUB") {
        "REAL"
    } else {
        "NUMERIC"
    }
}

/// A default as both databases can agree on it: `FALSE`/`0`, quotes and casts dropped.
fn normal_default(d: Option<String>) -> String {
    let Some(d) = d else { return "-".into() };
    let d = d
        .split("::")
        .next()
        .unwrap_or(&d)
        .trim()
        .trim_matches('\'')
        .to_ascii_lowercase();
    match d.as_str() {
        "false" => "0".into(),
        "true" => "1".into(),
        _ => d,
    }
}

async fn sqlite_facts(url: &str) -> Facts {
    let pool = sqlx::SqlitePool::connect(url).await.unwrap();
    let mut facts = Facts::new();
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' AND name NOT LIKE '_sqlx%'",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    for table in tables {
        facts.insert(format!("table {table}"));
        for c in sqlx::query(&format!("PRAGMA table_info(\"{table}\")"))
            .fetch_all(&pool)
            .await
            .unwrap()
        {
            let name: String = c.get("name");
            let ty: String = c.get("type");
            let notnull: i64 = c.get("notnull");
            let pk: i64 = c.get("pk");
            let default: Option<String> = c.get("dflt_value");
            // A PRIMARY KEY column is NOT NULL in PostgreSQL whatever it says.
            let null = if notnull == 1 || pk > 0 {
                "not null"
            } else {
                "null"
            };
            facts.insert(format!(
                "column {table}.{name} {} {null} default {}",
                sqlite_affinity(&ty),
                normal_default(default)
            ));
            if pk > 0 {
                facts.insert(format!("pk {table}.{name} #{pk}"));
            }
        }
        for i in sqlx::query(&format!("PRAGMA index_list(\"{table}\")"))
            .fetch_all(&pool)
            .await
            .unwrap()
        {
            let name: String = i.get("name");
            let unique: i64 = i.get("unique");
            let origin: String = i.get("origin");
            let partial: i64 = i.get("partial");
            if origin == "pk" {
                continue;
            }
            let cols: Vec<String> = sqlx::query(&format!("PRAGMA index_xinfo(\"{name}\")"))
                .fetch_all(&pool)
                .await
                .unwrap()
                .iter()
                .filter(|r| r.get::<i64, _>("key") == 1)
                .map(|r| {
                    let col: Option<String> = r.get("name");
                    let desc: i64 = r.get("desc");
                    format!(
                        "{}{}",
                        col.unwrap_or_else(|| "<expr>".into()),
                        if desc == 1 { " desc" } else { "" }
                    )
                })
                .collect();
            let kind = if unique == 1 { "unique" } else { "index" };
            // Indexes a UNIQUE constraint made are named by the database: compare their columns only.
            let label = if origin == "u" {
                String::new()
            } else {
                format!("{name} ")
            };
            let partial = if partial == 1 { " partial" } else { "" };
            facts.insert(format!("{kind} {label}on {table} ({}){partial}", cols.join(", ")));
        }
        for f in sqlx::query(&format!("PRAGMA foreign_key_list(\"{table}\")"))
            .fetch_all(&pool)
            .await
            .unwrap()
        {
            let to: String = f.get("table");
            let from: String = f.get("from");
            let col: Option<String> = f.get("to");
            let on_delete: String = f.get("on_delete");
            facts.insert(format!(
                "fk {table}.{from} -> {to}.{} on delete {}",
                col.unwrap_or_default(),
                on_delete.to_ascii_lowercase()
            ));
        }
    }
    pool.close().await;
    facts
}

async fn postgres_facts(url: &str) -> Facts {
    let pool = sqlx::PgPool::connect(url).await.unwrap();
    let mut facts = Facts::new();
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables \
         WHERE table_schema = 'public' AND table_type = 'BASE TABLE' AND table_name NOT LIKE '_sqlx%'",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    for table in tables {
        facts.insert(format!("table {table}"));
        let cols = sqlx::query(
            "SELECT column_name::text AS name, data_type::text AS ty, is_nullable::text AS nullable, \
             column_default::text AS dflt FROM information_schema.columns \
             WHERE table_schema = 'public' AND table_name = $1",
        )
        .bind(&table)
        .fetch_all(&pool)
        .await
        .unwrap();
        for c in cols {
            let name: String = c.get("name");
            let ty: String = c.get("ty");
            let nullable: String = c.get("nullable");
            let default: Option<String> = c.get("dflt");
            let null = if nullable == "NO" { "not null" } else { "null" };
            facts.insert(format!(
                "column {table}.{name} {} {null} default {}",
                pg_affinity(&ty),
                normal_default(default)
            ));
        }
        // Primary key columns with their position, unique constraints, foreign keys.
        let keys = sqlx::query(
            "SELECT c.contype::text AS kind, c.conname::text AS name, a.attname::text AS col, k.n AS n, \
             ft.relname::text AS ftable, fa.attname::text AS fcol, c.confdeltype::text AS del \
             FROM pg_constraint c \
             JOIN pg_class t ON t.oid = c.conrelid \
             CROSS JOIN LATERAL unnest(c.conkey) WITH ORDINALITY AS k(attnum, n) \
             JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.attnum \
             LEFT JOIN pg_class ft ON ft.oid = c.confrelid \
             LEFT JOIN pg_attribute fa ON fa.attrelid = c.confrelid AND fa.attnum = c.confkey[k.n] \
             WHERE t.relname = $1 ORDER BY c.conname, k.n",
        )
        .bind(&table)
        .fetch_all(&pool)
        .await
        .unwrap();
        let mut uniques: std::collections::BTreeMap<String, Vec<String>> = Default::default();
        for k in keys {
            let kind: String = k.get("kind");
            let col: String = k.get("col");
            let n: i64 = k.get("n");
            match kind.as_str() {
                "p" => {
                    facts.insert(format!("pk {table}.{col} #{n}"));
                }
                "u" => uniques.entry(k.get("name")).or_default().push(col),
                "f" => {
                    let ftable: String = k.get("ftable");
                    let fcol: String = k.get("fcol");
                    let del = match k.get::<String, _>("del").as_str() {
                        "c" => "cascade",
                        "n" => "set null",
                        "d" => "set default",
                        "r" => "restrict",
                        _ => "no action",
                    };
                    facts.insert(format!("fk {table}.{col} -> {ftable}.{fcol} on delete {del}"));
                }
                _ => {}
            }
        }
        for cols in uniques.values() {
            facts.insert(format!("unique on {table} ({})", cols.join(", ")));
        }
        // Indexes that no constraint made.
        let indexes = sqlx::query(
            "SELECT ic.relname::text AS name, i.indisunique AS uniq, i.indpred IS NOT NULL AS partial, \
             ARRAY(SELECT COALESCE(a.attname::text, '<expr>') || CASE WHEN (i.indoption[k.n - 1] & 1) = 1 THEN ' desc' ELSE '' END \
                   FROM unnest(i.indkey) WITH ORDINALITY AS k(attnum, n) \
                   LEFT JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum \
                   WHERE k.n <= i.indnkeyatts ORDER BY k.n) AS cols \
             FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid JOIN pg_class t ON t.oid = i.indrelid \
             WHERE t.relname = $1 AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid)",
        )
        .bind(&table)
        .fetch_all(&pool)
        .await
        .unwrap();
        for i in indexes {
            let name: String = i.get("name");
            let unique: bool = i.get("uniq");
            let partial: bool = i.get("partial");
            let cols: Vec<String> = i.get("cols");
            let kind = if unique { "unique" } else { "index" };
            let partial = if partial { " partial" } else { "" };
            facts.insert(format!("{kind} {name} on {table} ({}){partial}", cols.join(", ")));
        }
    }
    pool.close().await;
    facts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_migration_folders_make_the_same_schema() {
    let lite = TestDb::new(Backend::Sqlite).await;
    let pg = TestDb::new(Backend::Postgres).await;
    // Connecting applies each backend's migrations.
    drop(lite.store().await);
    drop(pg.store().await);
    let a = sqlite_facts(&lite.url).await;
    let b = postgres_facts(&pg.url).await;
    assert!(
        a.iter().any(|f| f.starts_with("column tasks.status TEXT")),
        "{a:#?}"
    );
    assert!(
        a.iter().any(|f| f.starts_with("fk ")),
        "foreign keys are read: {a:#?}"
    );
    assert!(
        a.iter().any(|f| f.starts_with("index ")),
        "indexes are read: {a:#?}"
    );
    let only_sqlite: Vec<_> = a.difference(&b).collect();
    let only_postgres: Vec<_> = b.difference(&a).collect();
    assert!(
        only_sqlite.is_empty() && only_postgres.is_empty(),
        "the migration folders disagree\nonly in migrations/sqlite: {only_sqlite:#?}\nonly in migrations/postgres: {only_postgres:#?}"
    );
}
