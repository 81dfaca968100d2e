//! What the publication decides reaches the replica, snapshot and stream alike: generated
//! columns (not published by PostgreSQL before 18), row filters and column lists.

mod common;

use common::{start, wait_copied, Env, CONVERGE};
use sluice_testkit::wait_for;
use tokio_postgres::Client;

async fn texts(c: &Client, sql: &str) -> Vec<String> {
    c.query(sql, &[]).await.unwrap_or_else(|e| panic!("{sql}: {e}")).iter().map(|r| r.get(0)).collect()
}

async fn wait_same(a: &Client, b: &Client, sql: &str) {
    let what = format!("`{sql}` to agree");
    let x = wait_for(&what, CONVERGE, || async {
        let (x, y) = (texts(a, sql).await, texts(b, sql).await);
        (x == y).then_some(x)
    })
    .await;
    assert!(!x.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_columns_are_left_to_the_target() {
    let env = Env::new(
        "CREATE TABLE g (id int PRIMARY KEY, a int, doubled int GENERATED ALWAYS AS (a * 2) STORED);
         INSERT INTO g (id, a) VALUES (1, 10), (2, 20);",
    )
    .await;
    let running = start(env.config("generated", "", ""));
    wait_copied(&env.dst, "generated", &["g"]).await;
    env.src.batch_execute("INSERT INTO g (id, a) VALUES (3, 30); UPDATE g SET a = 11 WHERE id = 1").await.unwrap();
    wait_same(&env.src, &env.dst, "SELECT format('%s %s', id, a) FROM g ORDER BY id").await;
    // Not published, so not on the replica (snapshot and stream agree)...
    let cols = texts(
        &env.dst,
        "SELECT column_name::text FROM information_schema.columns WHERE table_name = 'g' ORDER BY ordinal_position",
    )
    .await;
    assert_eq!(cols, ["id", "a"]);
    // ...and a generated column the user adds to the replica is computed there and kept.
    env.dst.batch_execute("ALTER TABLE g ADD COLUMN doubled int GENERATED ALWAYS AS (a * 2) STORED").await.unwrap();
    env.src.batch_execute("INSERT INTO g (id, a) VALUES (4, 40); UPDATE g SET a = 21 WHERE id = 2").await.unwrap();
    wait_same(&env.src, &env.dst, "SELECT format('%s %s %s', id, a, doubled) FROM g ORDER BY id").await;
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row_filters_and_column_lists_apply_to_snapshot_and_stream() {
    let env = Env::new(
        "CREATE TABLE orders (id int PRIMARY KEY, region text NOT NULL, total int, secret text);
         -- a row filter may use only replica identity columns
         CREATE UNIQUE INDEX orders_id_region ON orders (id, region);
         ALTER TABLE orders REPLICA IDENTITY USING INDEX orders_id_region;
         CREATE TABLE plain (id int PRIMARY KEY);
         INSERT INTO orders VALUES (1, 'eu', 10, 's1'), (2, 'us', 20, 's2'), (5, 'eu', 50, 's5');
         INSERT INTO plain VALUES (1);
         CREATE PUBLICATION sluice_filtered FOR TABLE orders (id, region, total) WHERE (region = 'eu'), plain;",
    )
    .await;
    let running = start(env.config("filtered", "", ""));
    wait_copied(&env.dst, "filtered", &["orders", "plain"]).await;
    let expected = "SELECT format('%s %s %s', id, region, total) FROM orders WHERE region = 'eu' ORDER BY id";
    let replica = "SELECT format('%s %s %s', id, region, total) FROM orders ORDER BY id";
    assert_eq!(texts(&env.dst, replica).await, texts(&env.src, expected).await, "the snapshot ignored the filter");
    env.src
        .batch_execute(
            "INSERT INTO orders VALUES (3, 'eu', 30, 's3'), (4, 'us', 40, 's4');
             UPDATE orders SET region = 'eu' WHERE id = 2;  -- enters the filter: an insert
             UPDATE orders SET region = 'us' WHERE id = 1;  -- leaves it: a delete
             UPDATE orders SET total = 55, secret = 'changed' WHERE id = 5;
             INSERT INTO plain VALUES (2);",
        )
        .await
        .unwrap();
    wait_for("the stream to follow the filter", CONVERGE, || async {
        (texts(&env.dst, replica).await == texts(&env.src, expected).await).then_some(())
    })
    .await;
    assert_eq!(texts(&env.dst, replica).await, ["2 eu 20", "3 eu 30", "5 eu 55"]);
    let cols = texts(&env.dst, "SELECT column_name::text FROM information_schema.columns WHERE table_name = 'orders' ORDER BY ordinal_position").await;
    assert_eq!(cols, ["id", "region", "total"], "a column outside the column list reached the replica");
    assert_eq!(texts(&env.dst, "SELECT id::text FROM plain ORDER BY id").await, ["1", "2"]);
    // Sluice manages the publication's tables but kept the user's filter and column list.
    let kept: i64 = env
        .src
        .query_one(
            "SELECT count(*) FROM pg_publication_rel pr JOIN pg_publication p ON p.oid = pr.prpubid \
             WHERE p.pubname = 'sluice_filtered' AND pr.prqual IS NOT NULL AND pr.prattrs IS NOT NULL",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(kept, 1);
    running.stop().await;
}
