//! Landed migrations are immutable: a change to the schema goes into a new
//! migration. This list holds the SHA-384 (as sqlx computes it) of every
//! migration in `migrations/`; a new migration is added to it in the commit
//! that adds the file, and no line ever changes. A migration edited after
//! it landed would make sqlx refuse every database migrated before ("was
//! previously applied but has been modified").
#![allow(clippy::unwrap_used)]

use eventstore::db::{migrate, AMENDED, MIGRATOR};
use eventstore::testing::TestDb;

const LANDED: &[(i64, &str)] = &[
    (20261121000001, "6ac718d3cf5719586c507f6d3c95a19770961b05c006c50eb62d66ac543b850145b67659df38df79a3e0596028f0c876"),
    (20261121000002, "d3f735117c49e8554181f6edac14c6eea4e52399cd6cad56d2f5051ae81f9f52638448e8512ba3bc530be05d273ad34e"),
    (20261121000003, "632ae76639f04bebcb61737196560b238e36877b20d5f7090ecb7ebfb7ab1a107f28432b6f772b19011448e118a4be9a"),
    (20261202000001, "4ef1a1fdd0a889cb2bcd8f53963e64f4cd499e5d4544f948e632573e1114b97ce30e28175ef74ef7d9f34995561baf74"),
    (20261202000002, "6df13e078f1b83d453f8b90d1875513073d8d369bdef5628b4a4fb5b42602a867014a055681ce57ce66a42ccdcf000df"),
    (20261202000011, "3cd36490b10578e06a070e1be2a293da8915b50e41699799da9d70bcae4c361a1fecab23cec147f2ca8a53e605cbd0aa"),
    (20261203000001, "a1b7ad42c266a6856ea5faaff1f5592142de287fba3a3104aebbfa5d8a3bd341f178a639ff71b4fcf28afb3fb47fde8e"),
    (20261203000002, "7e87cb4e22d22f24f8eda37f9678be18399a371794f909a354d925c31b379e0b9c98d1a045a360b2eaf1a171ca91aeeb"),
    (20261207000001, "906bdb95af6afa65a66db88ea6aa8694718ad085dfdf6896c858885f9d219a6683d2979c1ee60647fecea6d8a02a45df"),
];

#[test]
fn every_migration_is_listed_with_the_checksum_it_landed_with() {
    let embedded: Vec<(i64, String)> = MIGRATOR
        .iter()
        .map(|m| (m.version, hex::encode(&m.checksum)))
        .collect();
    for (version, checksum) in &embedded {
        let listed = LANDED.iter().find(|(v, _)| v == version);
        match listed {
            None => panic!(
                "migration {version} is not in LANDED: add ({version}, \"{checksum}\") to eventstore/tests/migrations.rs"
            ),
            Some((_, landed)) => assert_eq!(
                landed, checksum,
                "migration {version} changed after it landed: restore it and put the change in a new migration"
            ),
        }
    }
    for (version, _) in LANDED {
        assert!(
            embedded.iter().any(|(v, _)| v == version),
            "migration {version} landed and is gone: landed migrations are never removed"
        );
    }
}

#[tokio::test]
async fn a_database_migrated_with_an_amended_migrations_earlier_text_migrates() {
    let db = TestDb::new().await;
    for (version, landed) in AMENDED {
        sqlx::query("UPDATE _sqlx_migrations SET checksum = $1 WHERE version = $2")
            .bind(hex::decode(landed).unwrap())
            .bind(version)
            .execute(&db.pool)
            .await
            .unwrap();
    }
    migrate(&db.pool).await.unwrap();
    for (version, _) in AMENDED {
        let recorded: Vec<u8> =
            sqlx::query_scalar("SELECT checksum FROM _sqlx_migrations WHERE version = $1")
                .bind(version)
                .fetch_one(&db.pool)
                .await
                .unwrap();
        let current = MIGRATOR.iter().find(|m| m.version == *version).unwrap();
        assert_eq!(recorded, current.checksum.as_ref());
    }
}
