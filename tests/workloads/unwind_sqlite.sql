-- Driven through Debian's sqlite3 by tests/tests/it/stacks.rs (real software: no frame pointers,
-- no .symtab): 20 000 rows, an index, a sort; deterministic, so valgrind sees the same calls.
CREATE TABLE t(id INTEGER PRIMARY KEY, name TEXT, payload BLOB);
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 20000)
INSERT INTO t SELECT i, 'name-' || i, zeroblob(100 + i % 50) FROM n;
CREATE INDEX t_name ON t(name);
SELECT count(*), sum(length(payload)) FROM t;
SELECT name FROM t WHERE name LIKE 'name-1999%' ORDER BY name;
