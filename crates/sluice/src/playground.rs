//! `sluice playground`: a local source and replica, a TPC-C-like schema with sample data, a
//! live workload, and a view of the replica following it. Everything lives in temporary
//! directories and stops on Ctrl-C (or after `--duration`).

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use sluice_config::PipelineConfig;
use sluice_testkit::PgServer;
use tokio::sync::watch;
use tokio_postgres::Client;

/// Tables of the sample schema with their key columns, in display order.
pub const TABLES: &[(&str, &str)] = &[
    ("warehouse", "w_id"),
    ("district", "d_w_id, d_id"),
    ("customer", "c_w_id, c_d_id, c_id"),
    ("item", "i_id"),
    ("orders", "o_w_id, o_d_id, o_id"),
    ("order_line", "ol_w_id, ol_d_id, ol_o_id, ol_number"),
];

const SCHEMA: &str = "
CREATE TABLE warehouse (w_id int PRIMARY KEY, w_name varchar(10) NOT NULL, w_tax numeric(4,4) NOT NULL,
  w_ytd numeric(12,2) NOT NULL);
CREATE TABLE district (d_w_id int NOT NULL, d_id int NOT NULL, d_name varchar(10) NOT NULL, d_tax numeric(4,4) NOT NULL,
  d_ytd numeric(12,2) NOT NULL, d_next_o_id int NOT NULL, PRIMARY KEY (d_w_id, d_id));
CREATE TABLE customer (c_w_id int NOT NULL, c_d_id int NOT NULL, c_id int NOT NULL, c_first varchar(16), c_last varchar(16),
  c_balance numeric(12,2) NOT NULL, c_since timestamptz NOT NULL, c_data text, PRIMARY KEY (c_w_id, c_d_id, c_id));
CREATE TABLE item (i_id int PRIMARY KEY, i_name varchar(24) NOT NULL, i_price numeric(5,2) NOT NULL, i_data varchar(50));
CREATE TABLE orders (o_w_id int NOT NULL, o_d_id int NOT NULL, o_id int NOT NULL, o_c_id int NOT NULL,
  o_entry_d timestamptz NOT NULL, o_carrier_id int, o_ol_cnt int NOT NULL, PRIMARY KEY (o_w_id, o_d_id, o_id));
CREATE TABLE order_line (ol_w_id int NOT NULL, ol_d_id int NOT NULL, ol_o_id int NOT NULL, ol_number int NOT NULL,
  ol_i_id int NOT NULL, ol_quantity int NOT NULL, ol_amount numeric(6,2) NOT NULL, ol_delivery_d timestamptz,
  PRIMARY KEY (ol_w_id, ol_d_id, ol_o_id, ol_number));
";

const DATA: &str = "
INSERT INTO warehouse SELECT w, 'wh-' || w, 0.0825, 300000 FROM generate_series(1, 2) w;
INSERT INTO district SELECT w, d, 'dist-' || d, 0.0500, 30000, 101 FROM generate_series(1, 2) w, generate_series(1, 10) d;
INSERT INTO customer SELECT w, d, c, 'first' || c, 'last' || (c % 100), -10.00, now(), repeat('customer data ', 20)
  FROM generate_series(1, 2) w, generate_series(1, 10) d, generate_series(1, 300) c;
INSERT INTO item SELECT i, 'item-' || i, (1 + (i * 7919) % 9900) / 100.0, 'original item data' FROM generate_series(1, 10000) i;
INSERT INTO orders SELECT w, d, o, 1 + (o * 13) % 300, now(), CASE WHEN o < 80 THEN 1 + o % 10 END, 5 + o % 11
  FROM generate_series(1, 2) w, generate_series(1, 10) d, generate_series(1, 100) o;
INSERT INTO order_line SELECT o.o_w_id, o.o_d_id, o.o_id, n, 1 + (o.o_id * 31 + n * 17) % 10000, 5,
  ((o.o_id * n) % 9999) / 100.0, CASE WHEN o.o_carrier_id IS NOT NULL THEN now() END
  FROM orders o, generate_series(1, 15) n WHERE n <= o.o_ol_cnt;
";

/// Command-line options of `sluice playground`.
#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Stop by itself after this many seconds (default: run until Ctrl-C)
    #[arg(long)]
    pub duration: Option<u64>,
    /// Workload transactions per second
    #[arg(long, default_value_t = 50)]
    pub rate: u32,
}

/// A small deterministic xorshift generator; the workload needs variety, not quality.
pub struct Rng(u64);

impl Rng {
    /// A generator seeded with `seed` (0 is replaced).
    pub fn new(seed: u64) -> Self {
        Rng(seed.max(1))
    }
    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: i32, hi: i32) -> i32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        lo + (self.0 % ((hi - lo + 1) as u64)) as i32
    }
}

/// Creates the sample schema and data in `client`'s database.
pub async fn create_sample(client: &Client) -> anyhow::Result<()> {
    client.batch_execute(SCHEMA).await.context("create sample schema")?;
    client.batch_execute(DATA).await.context("load sample data")?;
    Ok(())
}

/// Runs one random TPC-C-like transaction: new order, payment, delivery or order removal.
pub async fn workload_txn(client: &mut Client, rng: &mut Rng) -> anyhow::Result<()> {
    let w = rng.range(1, 2);
    let d = rng.range(1, 10);
    let kind = rng.range(1, 100);
    let tx = client.transaction().await?;
    if kind <= 45 {
        let row = tx
            .query_one(
                "UPDATE district SET d_next_o_id = d_next_o_id + 1 WHERE d_w_id = $1 AND d_id = $2 RETURNING d_next_o_id - 1",
                &[&w, &d],
            )
            .await?;
        let o_id: i32 = row.get(0);
        let lines = rng.range(5, 15);
        tx.execute(
            "INSERT INTO orders VALUES ($1, $2, $3, $4, now(), NULL, $5)",
            &[&w, &d, &o_id, &rng.range(1, 300), &lines],
        )
        .await?;
        for n in 1..=lines {
            tx.execute(
                "INSERT INTO order_line SELECT $1, $2, $3, $4, i_id, $5::int, i_price * $5::int, NULL FROM item WHERE i_id = $6",
                &[&w, &d, &o_id, &n, &rng.range(1, 10), &rng.range(1, 10000)],
            )
            .await?;
        }
    } else if kind <= 88 {
        let amount = rng.range(100, 500000) as f64 / 100.0;
        let amount = format!("{amount:.2}");
        tx.execute("UPDATE warehouse SET w_ytd = w_ytd + $2::text::numeric WHERE w_id = $1", &[&w, &amount]).await?;
        tx.execute(
            "UPDATE district SET d_ytd = d_ytd + $3::text::numeric WHERE d_w_id = $1 AND d_id = $2",
            &[&w, &d, &amount],
        )
        .await?;
        tx.execute(
            "UPDATE customer SET c_balance = c_balance - $4::text::numeric WHERE c_w_id = $1 AND c_d_id = $2 AND c_id = $3",
            &[&w, &d, &rng.range(1, 300), &amount],
        )
        .await?;
    } else if kind <= 96 {
        tx.execute(
            "WITH o AS (SELECT o_id FROM orders WHERE o_w_id = $1 AND o_d_id = $2 AND o_carrier_id IS NULL \
             ORDER BY o_id LIMIT 1) \
             UPDATE orders SET o_carrier_id = $3 FROM o WHERE orders.o_w_id = $1 AND orders.o_d_id = $2 AND orders.o_id = o.o_id",
            &[&w, &d, &rng.range(1, 10)],
        )
        .await?;
        tx.execute(
            "UPDATE order_line SET ol_delivery_d = now() WHERE ol_w_id = $1 AND ol_d_id = $2 AND ol_delivery_d IS NULL \
             AND ol_o_id = (SELECT min(o_id) FROM orders WHERE o_w_id = $1 AND o_d_id = $2 AND o_carrier_id IS NOT NULL)",
            &[&w, &d],
        )
        .await?;
    } else {
        tx.execute(
            "DELETE FROM order_line WHERE ol_w_id = $1 AND ol_d_id = $2 \
             AND ol_o_id = (SELECT min(o_id) FROM orders WHERE o_w_id = $1 AND o_d_id = $2)",
            &[&w, &d],
        )
        .await?;
        tx.execute(
            "DELETE FROM orders WHERE o_w_id = $1 AND o_d_id = $2 \
             AND o_id = (SELECT min(o_id) FROM orders WHERE o_w_id = $1 AND o_d_id = $2)",
            &[&w, &d],
        )
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Row count and content digest of a table, ordered by its key.
pub async fn digest(client: &Client, table: &str, key: &str) -> anyhow::Result<(i64, String)> {
    let row = client
        .query_one(
            &format!("SELECT count(*), coalesce(md5(string_agg(t::text, '|' ORDER BY {key})), '') FROM {table} t"),
            &[],
        )
        .await
        .with_context(|| format!("digest of {table}"))?;
    Ok((row.get(0), row.get(1)))
}

async fn connect(url: &str) -> anyhow::Result<Client> {
    let (c, conn) =
        tokio_postgres::connect(url, tokio_postgres::NoTls).await.with_context(|| format!("connect {url}"))?;
    tokio::spawn(conn);
    Ok(c)
}

/// Runs the playground until `stop` (Ctrl-C) or `args.duration`.
pub async fn run(args: Args, mut stop: watch::Receiver<bool>) -> anyhow::Result<()> {
    println!("Starting a source and a target PostgreSQL server in temporary directories...");
    let source = PgServer::start().map_err(anyhow::Error::msg)?;
    let target = PgServer::start().map_err(anyhow::Error::msg)?;
    let src_url = source.create_database("app").await;
    let dst_url = target.create_database("replica").await;
    let src = connect(&src_url).await?;
    let dst = connect(&dst_url).await?;
    create_sample(&src).await?;
    println!("source: {src_url}\ntarget: {dst_url}");

    let toml = format!(
        "name = \"playground\"\n\n[source]\ntype = \"postgres\"\nurl = \"{src_url}\"\ntables = [\"public.*\"]\n\
         snapshot = \"initial\"\n\n[[sink]]\ntype = \"postgres\"\nurl = \"{dst_url}\"\nmode = \"replica\"\n"
    );
    let cfg = PipelineConfig::parse(&toml, &|_| None).context("playground pipeline config")?;
    println!("pipeline:\n{toml}");

    let (pipe_stop_tx, pipe_stop_rx) = watch::channel(false);
    let pipeline = tokio::spawn(async move { crate::run_with_retry(&cfg, pipe_stop_rx).await });

    let (work_stop_tx, work_stop_rx) = watch::channel(false);
    let rate = args.rate.max(1);
    let mut work_client = connect(&src_url).await?;
    let workload = tokio::spawn(async move {
        let mut rng = Rng::new(
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(7, |d| d.as_nanos() as u64),
        );
        let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate as f64));
        let mut done: u64 = 0;
        while !*work_stop_rx.borrow() {
            tick.tick().await;
            workload_txn(&mut work_client, &mut rng).await?;
            done += 1;
        }
        anyhow::Ok(done)
    });

    let started = Instant::now();
    let deadline = args.duration.map(|s| started + Duration::from_secs(s));
    let tty = std::io::stdout().is_terminal();
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.wait_for(|s| *s) => break,
        }
        if pipeline.is_finished() || workload.is_finished() {
            break;
        }
        show(&src, &dst, started, tty).await?;
        if deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
    }
    let _ = work_stop_tx.send(true);
    let txns = match workload.await.context("workload task")? {
        Ok(n) => n,
        Err(e) => {
            let _ = pipe_stop_tx.send(true);
            let _ = pipeline.await;
            return Err(e.context("workload failed"));
        }
    };
    println!("\nWorkload stopped after {txns} transactions; waiting for the replica to converge...");
    let converge_deadline = Instant::now() + Duration::from_secs(60);
    let converged = loop {
        let mut same = true;
        for (t, key) in TABLES {
            if digest(&src, t, key).await? != digest(&dst, t, key).await.unwrap_or_default() {
                same = false;
            }
        }
        if same {
            break true;
        }
        if Instant::now() > converge_deadline || pipeline.is_finished() {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    show(&src, &dst, started, false).await?;
    let _ = pipe_stop_tx.send(true);
    match pipeline.await.context("pipeline task")? {
        Ok(()) => {}
        Err(e) => bail!("pipeline failed: {}", crate::chain(&e)),
    }
    drop((src, dst));
    drop((source, target));
    if converged {
        println!("Replica is identical to the source (row counts and content digests match). Servers stopped.");
        Ok(())
    } else {
        bail!("replica did not converge within 60s")
    }
}

async fn show(src: &Client, dst: &Client, started: Instant, redraw: bool) -> anyhow::Result<()> {
    let mut out = String::new();
    if redraw {
        out.push_str("\x1b[2J\x1b[H");
    }
    let lag: Option<i64> = src
        .query_one(
            "SELECT (pg_current_wal_lsn() - confirmed_flush_lsn)::bigint FROM pg_replication_slots WHERE slot_name = 'sluice_playground'",
            &[],
        )
        .await
        .ok()
        .and_then(|r| r.get(0));
    out.push_str(&format!(
        "sluice playground  t={:>4}s  slot lag: {}   (Ctrl-C to stop)\n",
        started.elapsed().as_secs(),
        lag.map_or("slot not created yet".to_string(), |b| format!("{b} bytes of WAL"))
    ));
    out.push_str(&format!("{:<12} {:>10} {:>10} {:>10}\n", "table", "source", "replica", "behind"));
    for (t, _) in TABLES {
        let q = format!("SELECT count(*) FROM {t}");
        let s: i64 = src.query_one(&q, &[]).await?.get(0);
        let r: Option<i64> = dst.query_one(&q, &[]).await.ok().map(|r| r.get(0));
        let (rs, behind) = match r {
            Some(r) => (r.to_string(), (s - r).to_string()),
            None => ("-".into(), "-".into()),
        };
        out.push_str(&format!("{t:<12} {s:>10} {rs:>10} {behind:>10}\n"));
    }
    print!("{out}");
    Ok(())
}
