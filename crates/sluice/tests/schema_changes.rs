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
        .batch_execute(
            "INSERT INTO feelings VALUES (3, 'ok', '{elated,happy}'); UPDATE feelings SET m = 'elated' WHERE id = 1",
        )
        .await
        .unwrap();
    env.converge("feelings", "id").await;
    assert!(!pipeline.is_finished(), "pipeline must keep running across the schema change");
    pipeline.stop().await;
}

/// The replica's type of `column` of `table`, as the target prints it.
async fn target_type(env: &Env, table: &str, column: &str) -> Option<String> {
    env.dst
        .query_opt(
            "SELECT format_type(atttypid, atttypmod) FROM pg_attribute \
             WHERE attrelid = to_regclass($1) AND attname = $2 AND attnum > 0 AND NOT attisdropped",
            &[&table, &column],
        )
        .await
        .unwrap()
        .map(|r| r.get(0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn widened_dropped_and_renamed_columns_are_followed() {
    let env = Env::new(
        "CREATE TABLE t (id int PRIMARY KEY, n int, s varchar(10), d numeric(10,2), gone text, old_name text NOT NULL);
         INSERT INTO t VALUES (1, 1, 'short', 12345678.12, 'x', 'a');
         CREATE TABLE u (id int PRIMARY KEY, a text, b text); INSERT INTO u VALUES (1, 'a', 'b');",
    )
    .await;
    let pipeline = start(env.config("follow", "", ""));
    env.converge("t", "id").await;
    env.converge("u", "id").await;
    // A column of the replica's own is never dropped, only columns the source had.
    env.dst.batch_execute("ALTER TABLE u ADD COLUMN audit text").await.unwrap();
    env.src.batch_execute("ALTER TABLE u DROP COLUMN b; INSERT INTO u VALUES (2, 'two')").await.unwrap();
    env.src
        .batch_execute(
            "ALTER TABLE t ALTER COLUMN n TYPE bigint, ALTER COLUMN s TYPE text, ALTER COLUMN d TYPE numeric(20,4);
             INSERT INTO t VALUES (2, 5000000000, 'much longer than ten', 1234567890123456.1234, 'y', 'b');
             ALTER TABLE t DROP COLUMN gone;
             INSERT INTO t VALUES (3, 3, 's', 3.5, 'c');
             ALTER TABLE t RENAME COLUMN old_name TO new_name;
             INSERT INTO t VALUES (4, 4, 's', 4.5, 'd');
             UPDATE t SET new_name = 'changed' WHERE id = 1;",
        )
        .await
        .unwrap();
    // Compares whole rows: the replica must have the same columns, in the same order.
    env.converge("t", "id").await;
    assert_eq!(target_type(&env, "t", "n").await.as_deref(), Some("bigint"));
    assert_eq!(target_type(&env, "t", "s").await.as_deref(), Some("text"));
    assert_eq!(target_type(&env, "t", "d").await.as_deref(), Some("numeric(20,4)"));
    assert_eq!(target_type(&env, "t", "gone").await, None, "a dropped column is dropped under follow");
    assert_eq!(target_type(&env, "t", "old_name").await, None, "a renamed column is renamed");
    sluice_testkit::wait_for("row 2 of u", common::CONVERGE, || {
        let dst = &env.dst;
        async move { dst.query_opt("SELECT 1 FROM u WHERE id = 2", &[]).await.ok().flatten().map(|_| ()) }
    })
    .await;
    assert_eq!(target_type(&env, "u", "b").await, None, "b was dropped on the source");
    assert_eq!(target_type(&env, "u", "audit").await.as_deref(), Some("text"), "the replica's own column stays");
    assert!(!pipeline.is_finished(), "pipeline must keep running across the schema changes");
    pipeline.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_only_keeps_dropped_columns_and_freeze_quarantines_any_change() {
    let env = Env::new(
        "CREATE TABLE t (id int PRIMARY KEY, keep text NOT NULL, v int);
         CREATE TABLE f (id int PRIMARY KEY, v int);
         INSERT INTO t VALUES (1, 'k', 1); INSERT INTO f VALUES (1, 1);",
    )
    .await;
    let frozen_url = env.target.create_database("frozen").await.unwrap();
    let toml = env.toml("addonly", "", "schema_changes = \"add_only\"")
        + &format!("\n[[sink]]\ntype = \"postgres\"\nurl = \"{frozen_url}\"\nschema_changes = \"freeze\"\n");
    let pipeline = start(sluice::parse(&toml, &|_| None).unwrap());
    env.converge("t", "id").await;
    env.src
        .batch_execute(
            "ALTER TABLE t DROP COLUMN keep; ALTER TABLE t RENAME COLUMN v TO w; INSERT INTO t VALUES (2, 2);
             ALTER TABLE f ADD COLUMN extra text; INSERT INTO f VALUES (2, 2, 'e');",
        )
        .await
        .unwrap();
    sluice_testkit::wait_for("add_only to write row 2", common::CONVERGE, || {
        let dst = &env.dst;
        async move {
            let r = dst.query_opt("SELECT keep, v, w FROM t WHERE id = 2", &[]).await.ok().flatten()?;
            Some((r.get::<_, Option<String>>(0), r.get::<_, Option<i32>>(1), r.get::<_, Option<i32>>(2)))
        }
    })
    .await
    .eq(&(None, None, Some(2)))
    .then_some(())
    .expect("a dropped column is kept and left NULL, a renamed one added under its new name");
    assert_eq!(target_type(&env, "t", "keep").await.as_deref(), Some("text"));

    // The frozen sink changed nothing: both tables are in quarantine, with the reason.
    let frozen = common::connect(&frozen_url).await;
    let reasons = sluice_testkit::wait_for("the frozen sink to quarantine both tables", common::CONVERGE, || {
        let frozen = &frozen;
        async move {
            let rows = frozen.query("SELECT source_table, reason FROM sluice.quarantine ORDER BY 1", &[]).await.ok()?;
            (rows.len() == 2)
                .then(|| rows.iter().map(|r| (r.get::<_, String>(0), r.get::<_, String>(1))).collect::<Vec<_>>())
        }
    })
    .await;
    assert_eq!(reasons[0].0, "f");
    assert!(reasons[0].1.contains("extra") && reasons[0].1.contains("freeze"), "{reasons:?}");
    assert_eq!(reasons[1].0, "t");
    let cols = frozen
        .query("SELECT column_name::text FROM information_schema.columns WHERE table_name = 'f'", &[])
        .await
        .unwrap();
    assert_eq!(cols.len(), 2, "a frozen replica keeps its shape");
    assert!(!pipeline.is_finished(), "quarantine stops only the table");
    pipeline.stop().await;
}

fn sluice_cli(args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sluice")).args(args).output().expect("run sluice");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_narrowing_change_quarantines_only_its_table_until_released() {
    let env = Env::new(
        "CREATE TABLE a (id int PRIMARY KEY, v bigint); CREATE TABLE b (id int PRIMARY KEY, v text);
         INSERT INTO a VALUES (1, 1); INSERT INTO b VALUES (1, 'one');",
    )
    .await;
    let toml = env.toml("narrow", "", "");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pipeline.toml");
    std::fs::write(&path, &toml).unwrap();
    let path = path.display().to_string();
    let pipeline = start(env.config("narrow", "", ""));
    env.converge("a", "id").await;
    env.src
        .batch_execute(
            "ALTER TABLE a ALTER COLUMN v TYPE int; INSERT INTO a VALUES (2, 2);
             INSERT INTO b VALUES (2, 'two'); UPDATE a SET v = 10 WHERE id = 1;",
        )
        .await
        .unwrap();
    // The other table keeps streaming; the narrowed one stops, with its reason recorded.
    env.converge("b", "id").await;
    let reason = sluice_testkit::wait_for("a to be quarantined", common::CONVERGE, || {
        let dst = &env.dst;
        async move {
            dst.query_opt("SELECT reason FROM sluice.quarantine WHERE source_table = 'a'", &[])
                .await
                .ok()
                .flatten()
                .map(|r| r.get::<_, String>(0))
        }
    })
    .await;
    assert!(reason.contains("column v changed type from bigint to integer"), "{reason}");
    assert!(reason.contains("sluice tables PIPELINE.toml --release public.a"), "{reason}");
    env.src.batch_execute("INSERT INTO b VALUES (3, 'three')").await.unwrap();
    env.converge("b", "id").await;
    assert!(!pipeline.is_finished(), "quarantine must not stop the pipeline");

    // Releasing needs the pipeline stopped.
    let (ok, out) = sluice_cli(&["tables", &path, "--release", "public.a"]);
    assert!(!ok && out.contains("is running"), "{out}");
    pipeline.stop().await;
    let (ok, out) = sluice_cli(&["tables", &path]);
    assert!(ok, "{out}");
    assert!(
        out.contains("public.a") && out.contains("quarantined since") && out.contains("bigint to integer"),
        "{out}"
    );
    assert!(out.lines().any(|l| l.contains("public.b") && l.trim_end().ends_with("copied")), "{out}");

    // The user fixes the target, releases the table, and the next start copies it again.
    env.dst.batch_execute("ALTER TABLE a ALTER COLUMN v TYPE int").await.unwrap();
    let (ok, out) = sluice_cli(&["tables", &path, "--release", "public.a"]);
    assert!(ok && out.contains("public.a released"), "{out}");
    let (_, out) = sluice_cli(&["tables", &path]);
    assert!(!out.contains("quarantined"), "{out}");
    let pipeline = start(env.config("narrow", "", ""));
    env.converge("a", "id").await;
    env.src.batch_execute("INSERT INTO a VALUES (3, 3)").await.unwrap();
    env.converge("a", "id").await;
    env.converge("b", "id").await;
    pipeline.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_after_ddl_decodes_rows_in_the_shape_they_were_written() {
    let env =
        Env::new("CREATE TABLE t (id int PRIMARY KEY, a int, b text); INSERT INTO t VALUES (1, 1, 'snap');").await;
    let first = start(env.config("replay", "", ""));
    env.converge("t", "id").await;
    first.stop().await;
    // While the pipeline is down: rows in the old shape, then DDL, then rows in the new one.
    // On restart the WAL is decoded after the DDL committed; the old rows still hold text in
    // the position where the live catalog now has an int column.
    env.src
        .batch_execute(
            "INSERT INTO t VALUES (2, 2, 'hello'), (3, 3, 'world');
             UPDATE t SET b = 'old shape' WHERE id = 1;
             ALTER TABLE t DROP COLUMN b;
             ALTER TABLE t ADD COLUMN c int;
             ALTER TABLE t ALTER COLUMN a TYPE bigint;
             INSERT INTO t VALUES (4, 4000000000, 4);
             UPDATE t SET c = 2 WHERE id = 2;",
        )
        .await
        .unwrap();
    let second = start(env.config("replay", "", ""));
    env.converge("t", "id").await;
    assert!(!second.is_finished(), "the pipeline must keep running");
    second.stop().await;
}
