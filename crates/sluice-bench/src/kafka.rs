//! Kafka produce benchmark: a backlog of inserts drained by Sluice from PostgreSQL into Kafka in
//! Avro (exactly once, through Sluice's registry), against the broker's raw produce rate for the
//! same number of messages of the same size from an `rdkafka` producer loop (idempotent,
//! `acks=all`), in the same run on the same broker. "Done" for Sluice is its replication slot
//! confirmed past the backlog's end: the Kafka transactions holding every record committed.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};
use rdkafka::{ClientConfig, Message, TopicPartitionList};

use crate::common::{bench_server, connect, exec, median, sluice_bin, SluiceProc};

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
    /// Partitions of the topic
    #[arg(long, default_value_t = 1)]
    partitions: i32,
    /// Extra lines for the Kafka sink section (e.g. batch settings)
    #[arg(long, default_value = "")]
    sink_extra: String,
}

pub async fn produce(a: ProduceArgs) -> anyhow::Result<()> {
    let (mut ours, mut raw) = (Vec::new(), Vec::new());
    for i in 0..a.runs {
        let (s, r, size) = produce_once(&a).await?;
        println!(
            "run {}: sluice_msgs_per_s={:.0} raw_rdkafka_msgs_per_s={:.0} ratio={:.2} value_bytes={size}",
            i + 1,
            a.changes as f64 / s,
            a.changes as f64 / r,
            r / s
        );
        ours.push(s);
        raw.push(r);
    }
    let (s, r) = (median(ours), median(raw));
    println!(
        "bench=kafka-produce broker={} changes={} runs={} sluice_msgs_per_s={:.0} raw_rdkafka_msgs_per_s={:.0} \
         ratio_vs_raw={:.2}",
        std::env::var("SLUICE_KAFKA_BROKER").unwrap_or_else(|_| "tansu".into()),
        a.changes,
        a.runs,
        a.changes as f64 / s,
        a.changes as f64 / r,
        r / s
    );
    Ok(())
}

/// One run: (Sluice seconds, raw loop seconds, bytes per value).
async fn produce_once(a: &ProduceArgs) -> anyhow::Result<(f64, f64, usize)> {
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
        &format!(
            "INSERT INTO t SELECT g, (g % 100000)::int, md5(g::text) || md5((g + 1)::text), now(), (g % 100000) / 100.0 \
             FROM generate_series(1, {}) g",
            a.changes
        ),
    )
    .await?;
    let end: i64 = src.query_one("SELECT (pg_current_wal_lsn() - '0/0'::pg_lsn)::bigint", &[]).await?.get(0);
    eprintln!("backlog written in {:.1}s", t.elapsed().as_secs_f64());

    let t = Instant::now();
    let mut proc = SluiceProc::start(&dir, &toml)?;
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
    eprintln!("sluice: {sluice_secs:.2}s, peak RSS {:.1} MB, {:.1} CPU s", proc.peak_rss_mb(), proc.cpu_secs());
    proc.stop()?;

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
    Ok((sluice_secs, raw, value_size))
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
