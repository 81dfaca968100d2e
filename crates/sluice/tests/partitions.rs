//! Partitioned tables replicate as one table under the parent's name: the snapshot reads every
//! partition, streamed changes arrive under the parent, and partitions attached or detached
//! later are followed.

mod common;

use common::{start, Env};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_table_replicates_as_one_table_and_follows_attach_and_detach() {
    let env = Env::new(
        "CREATE TABLE events (id int, region text, v text, PRIMARY KEY (id, region)) PARTITION BY LIST (region);
         CREATE TABLE events_eu PARTITION OF events FOR VALUES IN ('eu');
         CREATE TABLE events_us PARTITION OF events FOR VALUES IN ('us') PARTITION BY RANGE (id);
         CREATE TABLE events_us_low PARTITION OF events_us FOR VALUES FROM (MINVALUE) TO (500);
         CREATE TABLE events_us_high PARTITION OF events_us FOR VALUES FROM (500) TO (MAXVALUE);
         INSERT INTO events SELECT g, CASE WHEN g % 2 = 0 THEN 'eu' ELSE 'us' END, 'v' || g FROM generate_series(1, 1000) g;
         CREATE SCHEMA staging;
         CREATE TABLE staging.events_asia (id int, region text, v text, PRIMARY KEY (id, region));
         INSERT INTO staging.events_asia SELECT g, 'asia', 'a' || g FROM generate_series(2001, 2100) g;",
    )
    .await;
    let pipeline = start(env.config("parts", "discover_interval_secs = 1\nbackfill_chunk_rows = 300", ""));
    env.converge("events", "id, region").await;
    let on_target = |sql: &'static str| {
        let dst = &env.dst;
        async move { dst.query_one(sql, &[]).await.unwrap().get::<_, i64>(0) }
    };
    assert_eq!(on_target("SELECT count(*) FROM events").await, 1000);
    assert_eq!(
        on_target("SELECT count(*) FROM pg_tables WHERE tablename LIKE 'events\\_%'").await,
        0,
        "partitions must not appear on the target"
    );

    // Streamed changes in every partition, one moving a row across partitions.
    env.src
        .batch_execute(
            "INSERT INTO events VALUES (5000, 'eu', 'new'), (5001, 'us', 'new'), (1, 'eu', 'moved');
             UPDATE events SET v = 'changed' WHERE id IN (2, 3, 998, 999);
             UPDATE events SET region = 'eu' WHERE id = 7;
             DELETE FROM events WHERE id IN (10, 11, 600);",
        )
        .await
        .unwrap();
    env.converge("events", "id, region").await;

    // A partition attached with rows in it: they appear on the replica; later changes stream.
    env.src
        .batch_execute("ALTER TABLE events ATTACH PARTITION staging.events_asia FOR VALUES IN ('asia')")
        .await
        .unwrap();
    env.converge("events", "id, region").await;
    env.src.batch_execute("UPDATE events SET v = 'after attach' WHERE id = 2001").await.unwrap();
    env.converge("events", "id, region").await;

    // A partition detached: its rows leave the parent on the replica too.
    env.src.batch_execute("ALTER TABLE events DETACH PARTITION events_us").await.unwrap();
    env.converge("events", "id, region").await;
    env.src.batch_execute("INSERT INTO events VALUES (6000, 'eu', 'after detach')").await.unwrap();
    env.converge("events", "id, region").await;
    assert!(!pipeline.is_finished(), "pipeline must keep running");
    pipeline.stop().await;
}
