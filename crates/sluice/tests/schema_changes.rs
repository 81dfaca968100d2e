//! Schema changes on the source while a pipeline runs: enum labels, column types, dropped and
//! renamed columns.

mod common;

use common::{start, Env};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_with_an_enum_label_added_later_reach_the_replica() {
    let env = Env::new(
        "CREATE TYPE mood AS ENUM ('sad', 'ok');
         CREATE TABLE feelings (id int PRIMARY KEY, m mood, ms mood[]);
         INSERT INTO feelings VALUES (1, 'sad', '{sad,ok}');",
    )
    .await;
    let pipeline = start(env.config("labels", "", ""));
    env.converge("feelings", "id").await;
    // ADD VALUE sends no Relation message: the stream must notice the label on its own.
    env.src.batch_execute("ALTER TYPE mood ADD VALUE 'happy'").await.unwrap();
    env.src.batch_execute("INSERT INTO feelings VALUES (2, 'happy', '{ok}')").await.unwrap();
    env.src.batch_execute("ALTER TYPE mood ADD VALUE 'elated' BEFORE 'sad'").await.unwrap();
    env.src
        .batch_execute("INSERT INTO feelings VALUES (3, 'ok', '{elated,happy}'); UPDATE feelings SET m = 'elated' WHERE id = 1")
        .await
        .unwrap();
    env.converge("feelings", "id").await;
    assert!(!pipeline.is_finished(), "pipeline must keep running across the schema change");
    pipeline.stop().await;
}
