//! The playground's sample data: a TPC-C-like schema, its rows, and a workload of random
//! new-order, payment, delivery and order-removal transactions.

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
pub async fn create_sample(client: &Client) -> Result<(), tokio_postgres::Error> {
    client.batch_execute(SCHEMA).await?;
    client.batch_execute(DATA).await
}

/// Runs one random TPC-C-like transaction: new order, payment, delivery or order removal.
pub async fn workload_txn(client: &mut Client, rng: &mut Rng) -> Result<(), tokio_postgres::Error> {
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
    tx.commit().await
}

/// Row count and content digest of a table, ordered by its key.
pub async fn digest(client: &Client, table: &str, key: &str) -> Result<(i64, String), tokio_postgres::Error> {
    let row = client
        .query_one(
            &format!("SELECT count(*), coalesce(md5(string_agg(t::text, '|' ORDER BY {key})), '') FROM {table} t"),
            &[],
        )
        .await?;
    Ok((row.get(0), row.get(1)))
}
