-- Server time of forms of the sink's batched UPDATE, alternated batch by batch inside one
-- statement so all see the same machine: `FROM unnest($1, ..) AS u(..)` (a function scan,
-- which copies every row into a tuplestore first) against `FROM (SELECT unnest($1) AS c1, ..)`
-- (unnest in the select list, streamed), both with the batch in key order; then the second form
-- with the batch in key order against the same rows in random order. 1,000,000 rows of
-- bench/drain's shape, batches of 10,000 rows, hash and merge joins off as in the sink's session.
-- Run against a scratch database: psql -X -d <url> -f bench/sql/update-forms.sql
\set QUIET on
DROP TABLE IF EXISTS forms_t;
CREATE TABLE forms_t (id bigint PRIMARY KEY, a int, b text, c timestamptz, d numeric(12,2));
INSERT INTO forms_t SELECT g, (g % 100000)::int, md5(g::text) || md5((g + 1)::text), now(), (g % 100000) / 100.0
  FROM generate_series(1, 1000000) g;
VACUUM ANALYZE forms_t;
SET enable_hashjoin = off;
SET enable_mergejoin = off;
CREATE OR REPLACE FUNCTION pg_temp.forms_run(variant int, lo bigint, n int, shuffled bool DEFAULT false)
RETURNS float LANGUAGE plpgsql AS $$
DECLARE ids bigint[]; aa int[]; bb text[]; cc timestamptz[]; dd numeric[]; t0 timestamptz;
BEGIN
  SELECT array_agg(id ORDER BY o), array_agg(a + 1 ORDER BY o), array_agg(b ORDER BY o),
         array_agg(now() ORDER BY o), array_agg(d + 1 ORDER BY o)
    INTO ids, aa, bb, cc, dd
    FROM (SELECT *, CASE WHEN shuffled THEN hashint8(id)::bigint ELSE id END AS o FROM forms_t
          WHERE id > lo AND id <= lo + n) r;
  t0 := clock_timestamp();
  IF variant = 1 THEN
    EXECUTE 'UPDATE forms_t AS t SET a = u.a, b = u.b, c = u.c, d = u.d
             FROM unnest($1, $2, $3, $4, $5) AS u(id, a, b, c, d) WHERE t.id = u.id'
      USING ids, aa, bb, cc, dd;
  ELSE
    EXECUTE 'UPDATE forms_t AS t SET a = u.c2, b = u.c3, c = u.c4, d = u.c5
             FROM (SELECT unnest($1) AS c1, unnest($2) AS c2, unnest($3) AS c3, unnest($4) AS c4, unnest($5) AS c5) AS u
             WHERE t.id = u.c1'
      USING ids, aa, bb, cc, dd;
  END IF;
  RETURN extract(epoch FROM clock_timestamp() - t0) * 1000;
END $$;
\set QUIET off
-- Two passes over the table, each form on every other batch (swapped in the second pass).
SELECT CASE v WHEN 1 THEN 'FROM unnest(..)' ELSE 'SELECT unnest(..)' END AS form,
       round(sum(pg_temp.forms_run(v, g * 10000, 10000))::numeric) AS ms
  FROM generate_series(0, 99) g, LATERAL (SELECT 1 + g % 2 AS v) x GROUP BY v ORDER BY v;
SELECT CASE v WHEN 1 THEN 'FROM unnest(..)' ELSE 'SELECT unnest(..)' END AS form,
       round(sum(pg_temp.forms_run(v, g * 10000, 10000))::numeric) AS ms
  FROM generate_series(0, 99) g, LATERAL (SELECT 2 - g % 2 AS v) x GROUP BY v ORDER BY v;
-- Key order against random order (the select-list form), the same way.
SELECT CASE WHEN s THEN 'random order' ELSE 'key order' END AS batch,
       round(sum(pg_temp.forms_run(2, g * 10000, 10000, s))::numeric) AS ms
  FROM generate_series(0, 99) g, LATERAL (SELECT g % 2 = 0 AS s) x GROUP BY s ORDER BY s;
SELECT CASE WHEN s THEN 'random order' ELSE 'key order' END AS batch,
       round(sum(pg_temp.forms_run(2, g * 10000, 10000, s))::numeric) AS ms
  FROM generate_series(0, 99) g, LATERAL (SELECT g % 2 = 1 AS s) x GROUP BY s ORDER BY s;
DROP TABLE forms_t;
