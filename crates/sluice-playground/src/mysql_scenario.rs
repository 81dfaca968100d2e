//! The playground's sample data in MySQL/MariaDB form (`sluice playground --source mysql`): the
//! same TPC-C-like tables as [`crate::scenario`], and the same kinds of transactions written as
//! SQL text for the `mariadb` client.

use crate::scenario::Rng;

/// Schema and rows (run with the `mariadb` client; needs the Sequence engine).
pub const SAMPLE: &str = "
CREATE TABLE warehouse (w_id INT PRIMARY KEY, w_name VARCHAR(10) NOT NULL, w_tax DECIMAL(4,4) NOT NULL,
  w_ytd DECIMAL(12,2) NOT NULL);
CREATE TABLE district (d_w_id INT NOT NULL, d_id INT NOT NULL, d_name VARCHAR(10) NOT NULL, d_tax DECIMAL(4,4) NOT NULL,
  d_ytd DECIMAL(12,2) NOT NULL, d_next_o_id INT NOT NULL, PRIMARY KEY (d_w_id, d_id));
CREATE TABLE customer (c_w_id INT NOT NULL, c_d_id INT NOT NULL, c_id INT NOT NULL, c_first VARCHAR(16), c_last VARCHAR(16),
  c_balance DECIMAL(12,2) NOT NULL, c_since TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6), c_data TEXT,
  PRIMARY KEY (c_w_id, c_d_id, c_id));
CREATE TABLE item (i_id INT PRIMARY KEY, i_name VARCHAR(24) NOT NULL, i_price DECIMAL(5,2) NOT NULL, i_data VARCHAR(50));
CREATE TABLE orders (o_w_id INT NOT NULL, o_d_id INT NOT NULL, o_id INT NOT NULL, o_c_id INT NOT NULL,
  o_entry_d DATETIME(6) NOT NULL, o_carrier_id INT, o_ol_cnt INT NOT NULL, PRIMARY KEY (o_w_id, o_d_id, o_id));
CREATE TABLE order_line (ol_w_id INT NOT NULL, ol_d_id INT NOT NULL, ol_o_id INT NOT NULL, ol_number INT NOT NULL,
  ol_i_id INT NOT NULL, ol_quantity INT NOT NULL, ol_amount DECIMAL(6,2) NOT NULL, ol_delivery_d DATETIME(6),
  PRIMARY KEY (ol_w_id, ol_d_id, ol_o_id, ol_number));
INSERT INTO warehouse SELECT seq, CONCAT('wh-', seq), 0.0825, 300000 FROM seq_1_to_2;
INSERT INTO district SELECT w.seq, d.seq, CONCAT('dist-', d.seq), 0.0500, 30000, 101 FROM seq_1_to_2 w, seq_1_to_10 d;
INSERT INTO customer (c_w_id, c_d_id, c_id, c_first, c_last, c_balance, c_data)
  SELECT w.seq, d.seq, c.seq, CONCAT('first', c.seq), CONCAT('last', c.seq % 100), -10.00, REPEAT('customer data ', 20)
  FROM seq_1_to_2 w, seq_1_to_10 d, seq_1_to_300 c;
INSERT INTO item SELECT seq, CONCAT('item-', seq), (1 + (seq * 7919) % 9900) / 100, 'original item data' FROM seq_1_to_10000;
INSERT INTO orders SELECT w.seq, d.seq, o.seq, 1 + (o.seq * 13) % 300, NOW(6), IF(o.seq < 80, 1 + o.seq % 10, NULL), 5 + o.seq % 11
  FROM seq_1_to_2 w, seq_1_to_10 d, seq_1_to_100 o;
INSERT INTO order_line SELECT o.o_w_id, o.o_d_id, o.o_id, n.seq, 1 + (o.o_id * 31 + n.seq * 17) % 10000, 5,
  ((o.o_id * n.seq) % 9999) / 100, IF(o.o_carrier_id IS NOT NULL, NOW(6), NULL)
  FROM orders o, seq_1_to_15 n WHERE n.seq <= o.o_ol_cnt;
";

/// Per table, a column whose sum (with the row count) tells a replica's content apart.
pub const CHECKSUMS: &[(&str, &str)] = &[
    ("warehouse", "w_ytd"),
    ("district", "d_ytd"),
    ("customer", "c_balance"),
    ("item", "i_price"),
    ("orders", "o_ol_cnt"),
    ("order_line", "ol_amount"),
];

/// One random transaction as SQL text: new order, payment, delivery or order removal.
pub fn workload_txn(rng: &mut Rng) -> String {
    let w = rng.range(1, 2);
    let d = rng.range(1, 10);
    let kind = rng.range(1, 100);
    let mut sql = String::from("BEGIN;\n");
    if kind <= 45 {
        let lines = rng.range(5, 15);
        sql.push_str(&format!(
            "SELECT d_next_o_id INTO @o FROM district WHERE d_w_id = {w} AND d_id = {d} FOR UPDATE;\n\
             UPDATE district SET d_next_o_id = d_next_o_id + 1 WHERE d_w_id = {w} AND d_id = {d};\n\
             INSERT INTO orders VALUES ({w}, {d}, @o, {}, NOW(6), NULL, {lines});\n",
            rng.range(1, 300)
        ));
        for n in 1..=lines {
            let q = rng.range(1, 10);
            sql.push_str(&format!(
                "INSERT INTO order_line SELECT {w}, {d}, @o, {n}, i_id, {q}, i_price * {q}, NULL FROM item WHERE i_id = {};\n",
                rng.range(1, 10000)
            ));
        }
    } else if kind <= 88 {
        let amount = format!("{:.2}", rng.range(100, 500000) as f64 / 100.0);
        sql.push_str(&format!(
            "UPDATE warehouse SET w_ytd = w_ytd + {amount} WHERE w_id = {w};\n\
             UPDATE district SET d_ytd = d_ytd + {amount} WHERE d_w_id = {w} AND d_id = {d};\n\
             UPDATE customer SET c_balance = c_balance - {amount} WHERE c_w_id = {w} AND c_d_id = {d} AND c_id = {};\n",
            rng.range(1, 300)
        ));
    } else if kind <= 96 {
        sql.push_str(&format!(
            "UPDATE orders SET o_carrier_id = {} WHERE o_w_id = {w} AND o_d_id = {d} AND o_carrier_id IS NULL \
             ORDER BY o_id LIMIT 1;\n\
             UPDATE order_line SET ol_delivery_d = NOW(6) WHERE ol_w_id = {w} AND ol_d_id = {d} AND ol_delivery_d IS NULL \
             AND ol_o_id = (SELECT MIN(o_id) FROM orders WHERE o_w_id = {w} AND o_d_id = {d} AND o_carrier_id IS NOT NULL);\n",
            rng.range(1, 10)
        ));
    } else {
        sql.push_str(&format!(
            "DELETE FROM order_line WHERE ol_w_id = {w} AND ol_d_id = {d} \
             AND ol_o_id = (SELECT MIN(o_id) FROM orders WHERE o_w_id = {w} AND o_d_id = {d});\n\
             DELETE FROM orders WHERE o_w_id = {w} AND o_d_id = {d} ORDER BY o_id LIMIT 1;\n"
        ));
    }
    sql.push_str("COMMIT;\n");
    sql
}
