//! Kafka produce benchmark: a backlog of inserts drained by Sluice from PostgreSQL into Kafka in
//! Avro (exactly once, through Sluice's registry), against the broker's raw produce rate for the
//! same number of messages of the same size from an `rdkafka` producer loop (idempotent,
//! `acks=all`), in the same run on the same broker. "Done" for Sluice is its replication slot
//! confirmed past the backlog's end: the Kafka transactions holding every record committed.
//! Also measured in the same run: how fast the walsender alone decodes the backlog into
//! `pg_recvlogical` (the source's ceiling: Sluice cannot drain faster than it is fed), and CPU
//! seconds per process while Sluice drains (`BENCH_PERF=FILE` adds a `perf` profile of sluice).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};
use rdkafka::{ClientConfig, Message, TopicPartitionList};

use crate::common::{
    backend_cpu_secs, bench_server, connect, exec, median, perf_start, perf_stop, proc_cpu_secs, sluice_bin, SluiceProc,
};

const TABLE: &str =
    "CREATE TABLE t (id bigint PRIMARY KEY, a int NOT NULL, b text NOT NULL, c timestamptz NOT NULL, d numeric(12,2) NOT NULL);";

#[derive(clap::Args)]
pub struct ProduceArgs {
    /// Rows inserted in the backlog (each one message)
    #[arg(long, default_value_t = 1_000_000)]
    changes: i64,
    /// Repetitions (fresh servers each); medians are reported
    #[arg(long, default_value_t = 1)]
    runs: usize,
    /// Rows per source transaction in the backlog (the whole backlog in one transaction when
    /// it is at least `--changes`)
    #[arg(long, default_value_t = 1_000)]
    txn_rows: i64,
    /// Partitions of the topic
    #[arg(long, default_value_t = 1)]
    partitions: i32,
    /// Extra lines for the Kafka sink section (e.g. batch settings)
    #[arg(long, default_value = "")]
    sink_extra: String,
}

/// One run's timings, in seconds.
struct Run {
    sluice: f64,
    raw: f64,
    /// pg_recvlogical decoding the backlog (the walsender's rate)
    decode: f64,
    value_bytes: usize,
}

pub async fn produce(a: ProduceArgs) -> anyhow::Result<()> {
    let (mut ours, mut raw, mut decode) = (Vec::new(), Vec::new(), Vec::new());
    let n = a.changes as f64;
    for i in 0..a.runs {
        let r = produce_once(&a).await?;
        println!(
            "run {}: sluice_msgs_per_s={:.0} raw_rdkafka_msgs_per_s={:.0} decode_limit_rows_per_s={:.0} ratio={:.2} \
             ratio_vs_decode_limit={:.2} value_bytes={}",
            i + 1,
            n / r.sluice,
            n / r.raw,
            n / r.decode,
            r.raw / r.sluice,
            r.decode / r.sluice,
            r.value_bytes
        );
        ours.push(r.sluice);
        raw.push(r.raw);
        decode.push(r.decode);
    }
    let (s, r, d) = (median(ours), median(raw), median(decode));
    println!(
        "bench=kafka-produce broker={} changes={} runs={} sluice_msgs_per_s={:.0} raw_rdkafka_msgs_per_s={:.0} \
         decode_limit_rows_per_s={:.0} ratio_vs_raw={:.2} ratio_vs_decode_limit={:.2}",
        std::env::var("SLUICE_KAFKA_BROKER").unwrap_or_else(|_| "tansu".into()),
        a.changes,
        a.runs,
        n / s,
        n / r,
        n / d,
        r / s,
        d / s
    );
    Ok(())
}

/// One run.
async fn produce_once(a: &ProduceArgs) -> anyhow::Result<Run> {
    let source = bench_server()?;
    let broker = sluice_playground::KafkaBroker::start().map_err(anyhow::Error::msg)?;
    let bootstrap = broker.bootstrap();
    let dir = tempfile::tempdir()?;
    let port = sluice_playground::free_port();
    let registry_url = format!("http://127.0.0.1:{port}");
    let mut registry = KillOnDrop(
        Command::new(sluice_bin()?)
            .args(["registry", "--listen", &format!("127.0.0.1:{port}"), "--data"])
            .arg(dir.path().join("registry"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("start sluice registry")?,
    );
    let src_url = source.create_database("bench").await.map_err(anyhow::Error::msg)?;
    let src = connect(&src_url).await?;
    exec(&src, TABLE).await?;
    // The ceiling's slot, made before the backlog so it decodes all of it.
    exec(&src, "CREATE PUBLICATION ceiling_pub FOR TABLE t").await?;
    exec(&src, "SELECT pg_create_logical_replication_slot('ceiling', 'pgoutput')").await?;
    let toml = format!(
        "name = \"kbench\"\n[source]\ntype = \"postgres\"\nurl = \"{src_url}\"\ntables = [\"public.t\"]\n\n\
         [[sink]]\ntype = \"kafka\"\nbrokers = \"{bootstrap}\"\nformat = \"avro\"\nschema_registry = \"{registry_url}\"\n\
         topic_partitions = {}\n{}\n",
        a.partitions, a.sink_extra
    );
    // Sluice copies the (empty) table and commits its first checkpoint to the offsets topic,
    // then stops before the backlog.
    let mut first = SluiceProc::start(&dir, &toml)?;
    let checkpointed = tokio::task::spawn_blocking({
        let bootstrap = bootstrap.clone();
        move || sample(&bootstrap, "_sluice_offsets", Duration::from_secs(120))
    });
    let checkpointed = checkpointed.await?;
    first.check_alive()?;
    checkpointed.context("the first checkpoint")?;
    first.stop()?;
    let t = Instant::now();
    exec(
        &src,
        "CREATE PROCEDURE backlog(n bigint, per bigint) LANGUAGE plpgsql AS $$ DECLARE i bigint := 1; BEGIN \
         WHILE i <= n LOOP \
           INSERT INTO t SELECT g, (g % 100000)::int, md5(g::text) || md5((g + 1)::text), now(), (g % 100000) / 100.0 \
           FROM generate_series(i, least(i + per - 1, n)) g; \
           COMMIT; i := i + per; \
         END LOOP; END $$",
    )
    .await?;
    exec(&src, &format!("CALL backlog({}, {})", a.changes, a.txn_rows.max(1))).await?;
    let end: i64 = src.query_one("SELECT (pg_current_wal_lsn() - '0/0'::pg_lsn)::bigint", &[]).await?.get(0);
    let end_lsn: String = src.query_one("SELECT pg_current_wal_lsn()::text", &[]).await?.get(0);
    eprintln!("backlog written in {:.1}s", t.elapsed().as_secs_f64());

    // The source's ceiling: the walsender decoding the backlog into pg_recvlogical, output
    // discarded (protocol 1, binary off: what Sluice asks for too).
    let bindir = sluice_playground::pg_bindir().map_err(anyhow::Error::msg)?;
    let t = Instant::now();
    let status = Command::new(bindir.join("pg_recvlogical"))
        .args(["-d", &src_url, "--slot", "ceiling", "--start", "--no-loop", "-f", "/dev/null"])
        .arg(format!("--endpos={end_lsn}"))
        .args(["-o", "proto_version=1", "-o", "publication_names=ceiling_pub"])
        .status()
        .context("run pg_recvlogical")?;
    let decode = t.elapsed().as_secs_f64();
    if !status.success() {
        bail!("pg_recvlogical failed: {status}");
    }
    exec(&src, "SELECT pg_drop_replication_slot('ceiling')").await?;
    eprintln!("decode limit: {decode:.2}s");

    let broker_cpu_before = broker.pid().map_or(0.0, |p| proc_cpu_secs(p as i32));
    let t = Instant::now();
    let mut proc = SluiceProc::start(&dir, &toml)?;
    let proc_log = proc.log.clone();
    let perf = perf_start(&proc)?;
    loop {
        let confirmed: Option<i64> = src
            .query_opt(
                "SELECT (confirmed_flush_lsn - '0/0'::pg_lsn)::bigint FROM pg_replication_slots WHERE slot_name = 'sluice_kbench'",
                &[],
            )
            .await?
            .and_then(|r| r.get(0));
        if confirmed.is_some_and(|c| c >= end) {
            break;
        }
        proc.check_alive()?;
        if t.elapsed() > Duration::from_secs(1800) {
            bail!("sluice did not drain the backlog in 30 minutes");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let sluice_secs = t.elapsed().as_secs_f64();
    perf_stop(perf)?;
    let sender_cpu =
        backend_cpu_secs(&src, "SELECT active_pid FROM pg_replication_slots WHERE slot_name = 'sluice_kbench'").await;
    let broker_cpu = broker.pid().map_or(0.0, |p| proc_cpu_secs(p as i32)) - broker_cpu_before;
    eprintln!(
        "sluice: {sluice_secs:.2}s, peak RSS {:.1} MB; cpu: sluice {:.1}s, walsender {sender_cpu:.1}s, broker {broker_cpu:.1}s",
        proc.peak_rss_mb(),
        proc.cpu_secs()
    );
    proc.stop()?;
    if let Ok(keep) = std::env::var("BENCH_KEEP_LOG") {
        std::fs::copy(&proc_log, &keep).with_context(|| format!("copy sluice's log to {keep}"))?;
    }

    // A record of Sluice's, for the size of the raw loop's messages.
    let (key_size, value_size) = sample(&bootstrap, "kbench.public.t", Duration::from_secs(30))?;

    // The raw loop: the same number of messages of the same sizes, keyed like Sluice's.
    let raw = tokio::task::spawn_blocking({
        let bootstrap = bootstrap.clone();
        let n = a.changes;
        let partitions = a.partitions;
        move || raw_loop(&bootstrap, n, key_size, value_size, partitions)
    })
    .await??;
    eprintln!("raw rdkafka loop: {raw:.2}s");
    let _ = registry.0.kill();
    drop(broker);
    Ok(Run { sluice: sluice_secs, raw, decode, value_bytes: value_size })
}

struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Key and value sizes of the topic's first committed record, waiting up to `wait` for one.
fn sample(bootstrap: &str, topic: &str, wait: Duration) -> anyhow::Result<(usize, usize)> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "kbench-sample")
        .set("isolation.level", "read_committed")
        .create()?;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, rdkafka::Offset::Beginning)?;
    c.assign(&tpl)?;
    let deadline = Instant::now() + wait;
    let mut last_error = None;
    while Instant::now() < deadline {
        match c.poll(Duration::from_millis(500)) {
            Some(Ok(m)) => return Ok((m.key().map_or(0, |k| k.len()), m.payload().map_or(0, |v| v.len()))),
            Some(Err(e)) => last_error = Some(e),
            None => {}
        }
    }
    bail!("no record in {topic} within {wait:?} (last error: {last_error:?})")
}

fn raw_loop(bootstrap: &str, n: i64, key_size: usize, value_size: usize, partitions: i32) -> anyhow::Result<f64> {
    let admin: rdkafka::admin::AdminClient<rdkafka::client::DefaultClientContext> =
        ClientConfig::new().set("bootstrap.servers", bootstrap).create()?;
    let topic = "kbench.raw";
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(admin.create_topics(
        &[rdkafka::admin::NewTopic::new(topic, partitions, rdkafka::admin::TopicReplication::Fixed(1))],
        &rdkafka::admin::AdminOptions::new(),
    ))?;
    let p: ThreadedProducer<rdkafka::producer::DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .create()?;
    let value = vec![7u8; value_size];
    let t = Instant::now();
    for i in 0..n {
        let mut key = i.to_be_bytes().to_vec();
        key.resize(key_size.max(8), 0);
        let mut rec = BaseRecord::<Vec<u8>, Vec<u8>>::to(topic).key(&key).payload(&value);
        loop {
            match p.send(rec) {
                Ok(()) => break,
                Err((
                    rdkafka::error::KafkaError::MessageProduction(rdkafka::types::RDKafkaErrorCode::QueueFull),
                    r,
                )) => {
                    rec = r;
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err((e, _)) => bail!("produce: {e}"),
            }
        }
    }
    p.flush(Duration::from_secs(300))?;
    Ok(t.elapsed().as_secs_f64())
}

#[derive(clap::Args)]
pub struct ConsumeArgs {
    /// Rows inserted in the backlog
    #[arg(long, default_value_t = 1_000_000)]
    inserts: i64,
    /// Rows updated in the backlog
    #[arg(long, default_value_t = 1_000_000)]
    updates: i64,
    /// Rows deleted in the backlog
    #[arg(long, default_value_t = 200_000)]
    deletes: i64,
    /// Repetitions (fresh servers and broker each); medians are reported
    #[arg(long, default_value_t = 1)]
    runs: usize,
}

/// One consume run, in seconds.
struct ConsumeRun {
    /// Kafka -> PostgreSQL, from the moment the consumer was assigned its partition
    consume: f64,
    /// The consumer group's join (from process start to the assignment)
    join: f64,
    /// PostgreSQL -> PostgreSQL over the same backlog
    pg: f64,
    rss_mb: f64,
}

/// Kafka -> PostgreSQL replica drain. The drain's backlog (inserts, updates, deletes in
/// transactions of 1 to 1,000 rows, then a marker row) is written while nothing consumes it.
/// Sluice puts it into one single-partition Avro topic (so the marker comes last), then a
/// Kafka-source pipeline drains the topic into an empty replica: done when the marker is there.
/// In the same run Sluice drains the same backlog PostgreSQL -> PostgreSQL into another replica,
/// for the comparison. Both replicas are compared with the source.
pub async fn consume(a: ConsumeArgs) -> anyhow::Result<()> {
    let changes = (a.inserts + a.updates.min(a.inserts) + a.deletes.min(a.inserts)) as f64;
    let mut runs = Vec::new();
    for i in 0..a.runs {
        let r = consume_once(&a).await?;
        println!(
            "run {}: kafka_to_pg_rows_per_s={:.0} pg_to_pg_rows_per_s={:.0} ratio={:.2} group_join_s={:.1} \
             consumer_peak_rss_mb={:.1}",
            i + 1,
            changes / r.consume,
            changes / r.pg,
            r.pg / r.consume,
            r.join,
            r.rss_mb
        );
        runs.push(r);
    }
    let consume = changes / median(runs.iter().map(|r| r.consume).collect());
    let pg = changes / median(runs.iter().map(|r| r.pg).collect());
    println!(
        "bench=kafka-consume broker={} changes={changes} runs={} kafka_to_pg_rows_per_s={consume:.0} \
         pg_to_pg_rows_per_s={pg:.0} ratio_vs_pg_to_pg={:.2} consumer_peak_rss_mb={:.1}",
        std::env::var("SLUICE_KAFKA_BROKER").unwrap_or_else(|_| "tansu".into()),
        a.runs,
        consume / pg,
        median(runs.iter().map(|r| r.rss_mb).collect())
    );
    Ok(())
}

async fn consume_once(a: &ConsumeArgs) -> anyhow::Result<ConsumeRun> {
    use crate::common::{copied, digest, until_true};
    let source = bench_server()?;
    let target = bench_server()?;
    let broker = sluice_playground::KafkaBroker::start().map_err(anyhow::Error::msg)?;
    let bootstrap = broker.bootstrap();
    let src_url = source.create_database("bench").await.map_err(anyhow::Error::msg)?;
    let replica_url = target.create_database("replica").await.map_err(anyhow::Error::msg)?;
    let kreplica_url = target.create_database("kreplica").await.map_err(anyhow::Error::msg)?;
    let (src, replica, kreplica) =
        (connect(&src_url).await?, connect(&replica_url).await?, connect(&kreplica_url).await?);
    exec(&src, crate::drain::TABLES).await?;
    exec(&src, crate::drain::BACKLOG).await?;
    let dir = tempfile::tempdir()?;
    let port = sluice_playground::free_port();
    let registry_url = format!("http://127.0.0.1:{port}");
    let mut registry = KillOnDrop(
        Command::new(sluice_bin()?)
            .args(["registry", "--listen", &format!("127.0.0.1:{port}"), "--data"])
            .arg(dir.path().join("registry"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("start sluice registry")?,
    );
    let level = std::env::var("BENCH_SLUICE_LOG").unwrap_or_else(|_| "warn".into());
    let tables = "tables = [\"public.t\", \"public.marker\"]";
    let pg_toml = format!(
        "name = \"bench\"\n[source]\ntype = \"postgres\"\nurl = \"{src_url}\"\n{tables}\n\n\
         [[sink]]\ntype = \"postgres\"\nurl = \"{replica_url}\"\n"
    );
    let prod_toml = format!(
        "name = \"kprod\"\n[source]\ntype = \"postgres\"\nurl = \"{src_url}\"\n{tables}\n\n\
         [[sink]]\ntype = \"kafka\"\nbrokers = \"{bootstrap}\"\nformat = \"avro\"\nschema_registry = \"{registry_url}\"\n\
         topic_partitions = 1\nsubject_name_strategy = \"topic_record\"\ndispatchers = [{{ matcher = [\"*.*\"], topic = \"bench_all\", partition = \"table\" }}]\n"
    );
    let cons_toml = format!(
        "name = \"kcons\"\n[source]\ntype = \"kafka\"\nbrokers = \"{bootstrap}\"\ntopics = [\"bench_all\"]\n\
         format = \"avro\"\nschema_registry = \"{registry_url}\"\n\n[[sink]]\ntype = \"postgres\"\nurl = \"{kreplica_url}\"\n"
    );
    // Both source pipelines take their slots and copy the (empty) tables, then stop before the
    // backlog.
    let mut first = SluiceProc::start_named(&dir, "pg", &pg_toml, &level)?;
    until_true(&replica, &copied(&["t", "marker"]), Duration::from_secs(120), || first.check_alive()).await?;
    first.stop()?;
    let mut first = SluiceProc::start_named(&dir, "kprod", &prod_toml, &level)?;
    let checkpointed = tokio::task::spawn_blocking({
        let bootstrap = bootstrap.clone();
        move || sample(&bootstrap, "_sluice_offsets", Duration::from_secs(120))
    });
    checkpointed.await?.context("the producer's first checkpoint")?;
    first.check_alive()?;
    first.stop()?;

    let t = Instant::now();
    exec(&src, &format!("CALL backlog({}, {}, {})", a.inserts, a.updates, a.deletes)).await?;
    exec(&src, "INSERT INTO marker VALUES (1, now())").await?;
    let end: i64 = src.query_one("SELECT (pg_current_wal_lsn() - '0/0'::pg_lsn)::bigint", &[]).await?.get(0);
    eprintln!("backlog written in {:.1}s", t.elapsed().as_secs_f64());

    // Into Kafka (not the measure here: bench/kafka-produce is).
    let t = Instant::now();
    let mut prod = SluiceProc::start_named(&dir, "kprod", &prod_toml, &level)?;
    until_true(
        &src,
        &format!(
            "SELECT coalesce((SELECT (confirmed_flush_lsn - '0/0'::pg_lsn)::bigint >= {end} FROM pg_replication_slots \
             WHERE slot_name = 'sluice_kprod'), false)"
        ),
        Duration::from_secs(1800),
        || prod.check_alive(),
    )
    .await?;
    prod.stop()?;
    eprintln!("into kafka: {:.2}s", t.elapsed().as_secs_f64());

    // Kafka -> PostgreSQL. The group's join is timed apart: it is the broker's, and tansu's
    // first join takes seconds.
    let t = Instant::now();
    let mut cons = SluiceProc::start_named(&dir, "kcons", &cons_toml, "warn,sluice_kafka::source=info")?;
    let perf = perf_start(&cons)?;
    let assigned = {
        let log = cons.log.clone();
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            if std::fs::read_to_string(&log).unwrap_or_default().contains("partition assigned") {
                break t.elapsed().as_secs_f64();
            }
            cons.check_alive()?;
            if Instant::now() > deadline {
                bail!("the consumer was not assigned its partition within 300 s");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    until_true(
        &kreplica,
        "SELECT to_regclass('public.marker') IS NOT NULL AND EXISTS (SELECT 1 FROM marker WHERE id = 1)",
        Duration::from_secs(1800),
        || cons.check_alive(),
    )
    .await?;
    let consume = t.elapsed().as_secs_f64() - assigned;
    perf_stop(perf)?;
    let (rss_mb, cpu) = (cons.peak_rss_mb(), cons.cpu_secs());
    let apply_cpu =
        backend_cpu_secs(&kreplica, "SELECT pid FROM pg_stat_activity WHERE application_name = 'sluice'").await;
    let broker_cpu = broker.pid().map_or(0.0, |p| proc_cpu_secs(p as i32));
    cons.stop()?;
    eprintln!(
        "kafka -> postgres: {consume:.2}s after a group join of {assigned:.2}s, peak RSS {rss_mb:.1} MB; cpu: sluice \
         {cpu:.1}s, target backends {apply_cpu:.1}s, broker (whole run) {broker_cpu:.1}s"
    );

    // PostgreSQL -> PostgreSQL, the same backlog.
    let t = Instant::now();
    let mut pg = SluiceProc::start_named(&dir, "pg", &pg_toml, &level)?;
    until_true(&replica, "SELECT EXISTS (SELECT 1 FROM marker WHERE id = 1)", Duration::from_secs(1800), || {
        pg.check_alive()
    })
    .await?;
    let pg_secs = t.elapsed().as_secs_f64();
    eprintln!("postgres -> postgres: {pg_secs:.2}s, cpu: sluice {:.1}s", pg.cpu_secs());
    pg.stop()?;

    let want = digest(&src, "t").await?;
    if digest(&replica, "t").await? != want {
        bail!("the PostgreSQL -> PostgreSQL replica differs from the source");
    }
    if digest(&kreplica, "t").await? != want {
        bail!(
            "the Kafka -> PostgreSQL replica differs from the source: {} rows vs {}; first rows {:?} vs {:?}",
            row_count(&kreplica).await,
            row_count(&src).await,
            first_rows(&kreplica).await,
            first_rows(&src).await
        );
    }
    let _ = registry.0.kill();
    drop(broker);
    Ok(ConsumeRun { consume, join: assigned, pg: pg_secs, rss_mb })
}

async fn row_count(c: &tokio_postgres::Client) -> i64 {
    c.query_one("SELECT count(*) FROM t", &[]).await.map(|r| r.get::<_, i64>(0)).unwrap_or(-1)
}

async fn first_rows(c: &tokio_postgres::Client) -> Vec<String> {
    c.query("SELECT r::text FROM t r ORDER BY id LIMIT 3", &[])
        .await
        .map(|rows| rows.iter().map(|r| r.get::<_, String>(0)).collect())
        .unwrap_or_default()
}
