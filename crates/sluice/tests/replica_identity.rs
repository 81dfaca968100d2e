//! Replica identity: rows are matched by the columns the source's UPDATE and DELETE messages
//! carry, which is the replica identity index when it is not the primary key.

mod common;

use common::{start, Env};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_identity_index_other_than_the_primary_key_matches_updates_and_deletes() {
    let env = Env::new(
        "CREATE TABLE acct (id int PRIMARY KEY, code text NOT NULL, v int, body text);
         CREATE UNIQUE INDEX acct_code ON acct (code);
         ALTER TABLE acct REPLICA IDENTITY USING INDEX acct_code;
         ALTER TABLE acct ALTER COLUMN body SET STORAGE EXTERNAL;
         CREATE TABLE other (id int PRIMARY KEY);
         INSERT INTO acct SELECT g, 'c' || g, g, repeat('b', 20000) FROM generate_series(1, 20) g;",
    )
    .await;
    let running = start(env.config("ident", "", ""));
    env.converge("acct", "id").await;
    env.src
        .batch_execute(
            "UPDATE acct SET v = -1 WHERE id = 1;
             DELETE FROM acct WHERE id = 2;
             UPDATE acct SET id = 1000 WHERE id = 3;
             -- identity change of a row whose TOASTed body is not resent, inside a transaction
             -- with other writes: the move happens in the batch's own transaction
             BEGIN;
             INSERT INTO other VALUES (1);
             UPDATE acct SET code = 'moved' WHERE id = 4;
             UPDATE acct SET code = 'moved twice', v = 44 WHERE id = 4;
             INSERT INTO other VALUES (2);
             DELETE FROM acct WHERE code = 'c5';
             COMMIT;",
        )
        .await
        .unwrap();
    env.converge("acct", "id").await;
    env.converge("other", "id").await;
    running.stop().await;
    let body: i32 =
        env.dst.query_one("SELECT length(body) FROM acct WHERE code = 'moved twice'", &[]).await.unwrap().get(0);
    assert_eq!(body, 20000, "the TOASTed body must move with its row");
    // The replica's key is the identity the stream matches by.
    let key: String = env
        .dst
        .query_one(
            "SELECT string_agg(a.attname, ',') FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid \
             AND a.attnum = ANY(i.indkey) WHERE i.indrelid = 'acct'::regclass AND i.indisprimary",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(key, "code");
}
