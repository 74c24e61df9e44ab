"""A protocol-level fake of taosAdapter's REST API, for testing TDengineStore without TDengine.

What it speaks (TDengine 3.x REST, as documented for taosAdapter):
- POST /rest/sql and /rest/sql/<db> with the SQL as the body, HTTP Basic auth checked
  (401 without or with wrong credentials); other paths 404, other methods 405.
- Success: {"code": 0, "column_meta": [[name, TYPE_NAME, length], ...], "data": [[...]], "rows": N};
  writes and DDL answer [["affected_rows", "INT", 4]]. TIMESTAMP values are rendered as RFC 3339
  strings in UTC with as many fraction digits as the database precision (9 for 'ns').
- Errors: HTTP 200 with {"code": <nonzero TDengine code>, "desc": "..."} (taosAdapter's default,
  httpCodeServerError=false), e.g. 0x2600 for syntax it does not understand.

The SQL subset it executes (exactly what resources/tdengine_store.py emits, on an in-memory SQLite):
- CREATE DATABASE [IF NOT EXISTS] db [PRECISION 'ms'|'us'|'ns']
- CREATE STABLE [IF NOT EXISTS] db.st (ts TIMESTAMP, col TYPE[(n)], ...) TAGS (tag TYPE[(n)], ...)
  with types TIMESTAMP, BIGINT, INT, DOUBLE, VARCHAR/BINARY(n), NCHAR(n); lengths are enforced on insert
  (VARCHAR in UTF-8 bytes, NCHAR in characters), as TDengine does.
- INSERT INTO db.child USING db.st TAGS (...) VALUES (...)[(...)] [db.child2 USING ...]...
  (child tables created on first use; their tags then stay as first given). Values are integer
  literals, NULL or quoted strings with TDengine's escapes (\\' \\" \\\\ \\n \\r \\t; \\x -> x).
  The first value is the timestamp, an integer in the database precision.
  TDengine's semantics that matter: a row whose timestamp already exists IN THE SAME CHILD TABLE
  OVERWRITES the old row (the same timestamp in another child table is a separate row).
- SELECT list FROM db.st [WHERE cond] [PARTITION BY keys | GROUP BY keys] [ORDER BY ...] [LIMIT n]
  where list items are columns, tags, tbname, or LAST_ROW/MAX/MIN/SUM/COUNT(column) with
  optional AS aliases; conditions use = != <> < <= > >= AND OR NOT IN IS [NOT] NULL and literals.
  LAST_ROW(x) is the value of x in the row with the greatest ts of its group (the whole
  result when there is no PARTITION BY) - emulated with SQLite's bare-column rule, so the
  fake does not mix LAST_ROW with other aggregates. PARTITION BY with aggregates behaves as
  GROUP BY. Default result column names are TDengine's (lower-cased expression text).
- SELECT SERVER_VERSION()
- DESCRIBE db.st: one row per column and tag, [field, type, length, note] ("TAG" for tags)
- ALTER STABLE db.st ADD COLUMN col TYPE[(n)]: the column goes after the last column (before the
  tags, as TDengine lists it); existing rows hold NULL there; an existing name is an error
Everything else is refused with an error: UPDATE and DELETE (TDengine has no UPDATE; its
DELETE is deliberately not emulated so the store cannot come to rely on it), DROP, other ALTERs, USE,
several statements in one request, and any syntax outside the subset.
It is not TDengine: no query planner, no type coercions beyond the above, no tz parameter.
"""

from __future__ import annotations

import base64
import json
import re
import sqlite3
import threading
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Optional

SYNTAX_ERROR = 0x2600
TABLE_NOT_EXIST = 0x2662
DB_NOT_EXIST = 0x0388
VALUE_TOO_LONG = 0x2653
INVALID_VALUE = 0x2609
NOT_SUPPORTED = 0x2616
AUTH_FAILURE = 0x0357

_TOKEN = re.compile(
    r"""\s*(?:
        (?P<str>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")
      | (?P<bq>`[^`]*`)
      | (?P<num>-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)
      | (?P<id>[A-Za-z_][A-Za-z0-9_]*)
      | (?P<op><=|>=|!=|<>|[(),.*=<>;])
      | (?P<bad>\S)
    )""",
    re.VERBOSE | re.DOTALL,
)
_ESCAPE = re.compile(r"\\(.)", re.DOTALL)
_UNESCAPE = {"'": "'", '"': '"', "\\": "\\", "n": "\n", "r": "\r", "t": "\t", "%": "\\%", "_": "\\_"}
_AGGREGATES = {"LAST_ROW", "MAX", "MIN", "SUM", "COUNT"}
_TYPE_LEN = {"TIMESTAMP": 8, "BIGINT": 8, "INT": 4, "DOUBLE": 8}


class TaosError(Exception):
    def __init__(self, code: int, desc: str):
        super().__init__(desc)
        self.code, self.desc = code, desc


def _syntax(near: str) -> TaosError:
    return TaosError(SYNTAX_ERROR, f'syntax error near "{near}"')


def _unescape(body: str) -> str:
    return _ESCAPE.sub(lambda m: _UNESCAPE.get(m.group(1), m.group(1)), body) if "\\" in body else body


def tokenize(sql: str) -> list[tuple[str, object]]:
    # One regex pass in C (findall) rather than a match per token: the store's INSERTs carry hundreds
    # of rows, and the tests that push many of them spend much of their time here.
    sql = sql.rstrip()
    tokens = []
    append = tokens.append
    for text, quoted_id, num, ident, op, bad in _TOKEN.findall(sql):
        if ident:
            append(("id", ident))
        elif op:
            append(("op", op))
        elif text:
            append(("str", _unescape(text[1:-1])))
        elif num:
            append(("num", float(num) if ("." in num or "e" in num or "E" in num) else int(num)))
        elif quoted_id:
            append(("id", quoted_id[1:-1]))
        else:
            at = next(m.start() for m in _TOKEN.finditer(sql) if m.lastgroup == "bad")
            raise _syntax(sql[at:at + 20].strip())
    if tokens and tokens[-1] == ("op", ";"):
        tokens.pop()
    if ("op", ";") in tokens:
        raise TaosError(SYNTAX_ERROR, "only one statement per request is supported")
    return tokens


class _Cursor:
    def __init__(self, tokens):
        self.t, self.i = tokens, 0

    def peek(self, k: int = 0):
        return self.t[self.i + k] if self.i + k < len(self.t) else (None, None)

    def kw(self, *words) -> bool:
        """Consume the keywords `words` if they come next."""
        for k, w in enumerate(words):
            kind, val = self.peek(k)
            if kind != "id" or str(val).upper() != w:
                return False
        self.i += len(words)
        return True

    def expect_kw(self, word):
        if not self.kw(word):
            raise _syntax(self.near())

    def op(self, o) -> bool:
        if self.peek() == ("op", o):
            self.i += 1
            return True
        return False

    def expect_op(self, o):
        if not self.op(o):
            raise _syntax(self.near())

    def ident(self) -> str:
        kind, val = self.peek()
        if kind != "id":
            raise _syntax(self.near())
        self.i += 1
        return val

    def qualified(self, default_db: Optional[str]) -> tuple[str, str]:
        first = self.ident()
        if self.op("."):
            return first, self.ident()
        if default_db is None:
            raise TaosError(0x2616, "db not specified")
        return default_db, first

    def value(self):
        kind, val = self.peek()
        if kind in ("num", "str"):
            self.i += 1
            return val
        if kind == "id" and str(val).upper() == "NULL":
            self.i += 1
            return None
        raise _syntax(self.near())

    def near(self) -> str:
        return " ".join(str(v) for _, v in self.t[self.i:self.i + 4]) or "end of statement"

    def done(self) -> bool:
        return self.i >= len(self.t)


def _sqlite_literal(value) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, (int, float)):
        return repr(value)
    return "'" + str(value).replace("'", "''") + "'"


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class FakeTDengine:
    """The SQL engine: TDengine semantics over an in-memory SQLite. Thread-safe."""

    def __init__(self):
        self.conn = sqlite3.connect(":memory:", check_same_thread=False)
        self.lock = threading.Lock()
        self.databases: dict[str, str] = {}                   # name -> precision
        self.stables: dict[tuple[str, str], dict] = {}        # (db, st) -> {"cols": [...], "tags": [...]}
        self.children: dict[tuple[str, str], tuple] = {}      # (db, child) -> ((db, st), tag values)
        self.statements: list[str] = []                       # every statement received, in order

    # -- entry ----------------------------------------------------------------------------------

    def execute(self, sql: str, default_db: Optional[str] = None) -> dict:
        with self.lock:
            self.statements.append(sql)
            try:
                if default_db is not None and default_db not in self.databases:
                    raise TaosError(DB_NOT_EXIST, "Database not exist")
                cur = _Cursor(tokenize(sql))
                if cur.kw("CREATE", "DATABASE"):
                    return self._create_database(cur)
                if cur.kw("CREATE", "STABLE"):
                    return self._create_stable(cur, default_db)
                if cur.kw("INSERT", "INTO"):
                    return self._insert(cur, default_db)
                if cur.kw("SELECT"):
                    return self._select(cur, default_db)
                if cur.kw("DESCRIBE"):
                    return self._describe(cur, default_db)
                if cur.kw("ALTER", "STABLE"):
                    return self._alter_stable(cur, default_db)
                for word in ("UPDATE", "DELETE", "DROP", "ALTER", "USE"):
                    if cur.kw(word):
                        raise TaosError(NOT_SUPPORTED, f"{word} is not supported by this fake taosAdapter")
                raise _syntax(cur.near())
            except TaosError as exc:
                return {"code": exc.code, "desc": exc.desc}
            except sqlite3.Error as exc:  # a translation the fake got wrong: say so, loudly
                return {"code": 0x0216, "desc": f"fake taosAdapter internal error: {exc}"}

    # -- DDL ------------------------------------------------------------------------------------

    @staticmethod
    def _affected(n: int) -> dict:
        return {"code": 0, "column_meta": [["affected_rows", "INT", 4]], "data": [[n]], "rows": 1}

    def _create_database(self, cur: _Cursor) -> dict:
        exists_ok = cur.kw("IF", "NOT", "EXISTS")
        name = cur.ident()
        precision = "ms"
        while not cur.done():
            if cur.kw("PRECISION"):
                precision = cur.value()
                if precision not in ("ms", "us", "ns"):
                    raise TaosError(INVALID_VALUE, f"invalid precision {precision!r}")
            else:
                raise _syntax(cur.near())
        if name in self.databases:
            if not exists_ok:
                raise TaosError(0x0386, "Database already exists")
        else:
            self.databases[name] = precision
        return self._affected(0)

    @staticmethod
    def _column(cur: _Cursor) -> tuple[str, str, int]:
        name = cur.ident()
        typ = cur.ident().upper()
        if typ == "BINARY":
            typ = "VARCHAR"
        if typ in ("VARCHAR", "NCHAR"):
            cur.expect_op("(")
            length = cur.value()
            cur.expect_op(")")
        elif typ in _TYPE_LEN:
            length = _TYPE_LEN[typ]
        else:
            raise TaosError(SYNTAX_ERROR, f"type {typ} is not emulated")
        return name, typ, length

    def _columns(self, cur: _Cursor) -> list[tuple[str, str, int]]:
        cols = []
        cur.expect_op("(")
        while True:
            cols.append(self._column(cur))
            if cur.op(")"):
                return cols
            cur.expect_op(",")

    def _stable(self, cur: _Cursor, default_db) -> tuple[str, str]:
        db, st = cur.qualified(default_db)
        if db not in self.databases:
            raise TaosError(DB_NOT_EXIST, "Database not exist")
        if (db, st) not in self.stables:
            raise TaosError(TABLE_NOT_EXIST, f"Table does not exist: {st}")
        return db, st

    def _describe(self, cur: _Cursor, default_db) -> dict:
        db, st = self._stable(cur, default_db)
        if not cur.done():
            raise _syntax(cur.near())
        schema = self.stables[(db, st)]
        data = [[n, t, ln, ""] for n, t, ln in schema["cols"]] + [[n, t, ln, "TAG"] for n, t, ln in schema["tags"]]
        return {"code": 0, "column_meta": [["field", "VARCHAR", 64], ["type", "VARCHAR", 32], ["length", "INT", 4],
                                           ["note", "VARCHAR", 16]], "data": data, "rows": len(data)}

    def _alter_stable(self, cur: _Cursor, default_db) -> dict:
        db, st = self._stable(cur, default_db)
        cur.expect_kw("ADD")
        cur.expect_kw("COLUMN")
        column = self._column(cur)
        if not cur.done():
            raise _syntax(cur.near())
        schema = self.stables[(db, st)]
        if column[0] in {n for n, _, _ in schema["cols"] + schema["tags"]}:
            raise TaosError(0x0367, "Column already exists")
        schema["cols"].append(column)
        self.conn.execute(f"ALTER TABLE {_q(db + '.' + st)} ADD COLUMN {_q(column[0])}")
        return self._affected(0)

    def _create_stable(self, cur: _Cursor, default_db) -> dict:
        exists_ok = cur.kw("IF", "NOT", "EXISTS")
        db, st = cur.qualified(default_db)
        if db not in self.databases:
            raise TaosError(DB_NOT_EXIST, "Database not exist")
        cols = self._columns(cur)
        cur.expect_kw("TAGS")
        tags = self._columns(cur)
        if not cur.done():
            raise _syntax(cur.near())
        if cols[0][1] != "TIMESTAMP":
            raise TaosError(INVALID_VALUE, "the first column must be the TIMESTAMP primary key")
        if (db, st) in self.stables:
            if not exists_ok:
                raise TaosError(0x2603, "Table already exists")
            return self._affected(0)
        self.stables[(db, st)] = {"cols": cols, "tags": tags}
        defs = ", ".join([_q("tbname") + " TEXT NOT NULL"] + [_q(n) for n, _, _ in cols + tags])
        self.conn.execute(f"CREATE TABLE {_q(db + '.' + st)} ({defs}, UNIQUE (tbname, {_q(cols[0][0])}))")
        # TDengine reads by time: an index on the timestamp keeps the fake's range queries from scanning
        self.conn.execute(f"CREATE INDEX {_q(db + '.' + st + '.ts')} ON {_q(db + '.' + st)} ({_q(cols[0][0])})")
        return self._affected(0)

    # -- INSERT ---------------------------------------------------------------------------------

    @staticmethod
    def _check(value, col: tuple[str, str, int]):
        name, typ, length = col
        if value is None:
            return None
        if typ == "DOUBLE":
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TaosError(INVALID_VALUE, f"invalid value for {typ} column {name}: {value!r}")
            return float(value)
        if typ in ("BIGINT", "INT", "TIMESTAMP"):
            if not isinstance(value, int):
                raise TaosError(INVALID_VALUE, f"invalid value for {typ} column {name}: {value!r}")
            return value
        if not isinstance(value, str):
            raise TaosError(INVALID_VALUE, f"invalid value for {typ} column {name}: {value!r}")
        size = len(value.encode("utf-8")) if typ == "VARCHAR" else len(value)
        if size > length:
            raise TaosError(VALUE_TOO_LONG, f"value too long for column/tag {name} ({size} > {length})")
        return value

    def _values(self, cur: _Cursor) -> list:
        """`(value, ...)`: the same rules as cur.expect_op and cur.value, on the tokens directly
        (an INSERT's rows are most of what the fake parses)."""
        cur.expect_op("(")
        t, i, end, out = cur.t, cur.i, len(cur.t), []
        while True:
            kind, val = t[i] if i < end else (None, None)
            if kind == "num" or kind == "str":
                out.append(val)
            elif kind == "id" and val.upper() == "NULL":
                out.append(None)
            else:
                cur.i = i
                raise _syntax(cur.near())
            i += 1
            following = t[i] if i < end else None
            if following == ("op", ")"):
                cur.i = i + 1
                return out
            if following != ("op", ","):
                cur.i = i
                raise _syntax(cur.near())
            i += 1

    def _insert(self, cur: _Cursor, default_db) -> dict:
        pending: list[tuple[tuple[str, str], str, list]] = []
        while not cur.done():
            db, child = cur.qualified(default_db)
            if db not in self.databases:
                raise TaosError(DB_NOT_EXIST, "Database not exist")
            if cur.kw("USING"):
                stable = cur.qualified(default_db)
                if stable not in self.stables:
                    raise TaosError(TABLE_NOT_EXIST, f"Table does not exist: {stable[1]}")
                cur.expect_kw("TAGS")
                tag_values = self._values(cur)
                schema = self.stables[stable]
                if len(tag_values) != len(schema["tags"]):
                    raise TaosError(INVALID_VALUE, "tags number not matched")
                tag_values = [self._check(v, c) for v, c in zip(tag_values, schema["tags"])]
                # An existing child keeps the tags it was created with (TDengine ignores the new ones).
                self.children.setdefault((db, child), (stable, tag_values))
            elif (db, child) not in self.children:
                raise TaosError(TABLE_NOT_EXIST, f"Table does not exist: {child}")
            stable, tag_values = self.children[(db, child)]
            cur.expect_kw("VALUES")
            rows = [self._values(cur)]
            while cur.peek() == ("op", "("):
                rows.append(self._values(cur))
            for row in rows:
                cols = self.stables[stable]["cols"]
                if len(row) != len(cols):
                    raise TaosError(INVALID_VALUE, "Illegal number of columns")
                if row[0] is None:
                    raise TaosError(INVALID_VALUE, "primary timestamp should not be null")
                pending.append((stable, child, [self._check(v, c) for v, c in zip(row, cols)] + tag_values))
        if not pending:
            raise _syntax("end of statement")
        rows_by_stable: dict[tuple[str, str], list[list]] = {}
        for stable, child, values in pending:
            rows_by_stable.setdefault(stable, []).append([child, *values])
        for (db, st), rows in rows_by_stable.items():
            schema = self.stables[(db, st)]
            # by name: a column added later (ALTER) sits after the tags in the SQLite table
            names = ", ".join(_q(n) for n in ["tbname"] + [c[0] for c in schema["cols"] + schema["tags"]])
            marks = ", ".join("?" * len(rows[0]))
            # Same child table, same timestamp: the new row replaces the old one, as in TDengine
            # (executemany keeps the statement's order).
            self.conn.executemany(f"INSERT OR REPLACE INTO {_q(db + '.' + st)} ({names}) VALUES ({marks})", rows)
        return self._affected(len(pending))

    # -- SELECT ---------------------------------------------------------------------------------

    def _select(self, cur: _Cursor, default_db) -> dict:
        if cur.kw("SERVER_VERSION"):
            cur.expect_op("(")
            cur.expect_op(")")
            if not cur.done():
                raise _syntax(cur.near())
            return {"code": 0, "column_meta": [["server_version()", "VARCHAR", 32]],
                    "data": [["3.3.6.0-fake"]], "rows": 1}
        start = cur.i
        depth = 0
        while not cur.done():  # find FROM at depth 0
            kind, val = cur.peek()
            if (kind, val) == ("op", "("):
                depth += 1
            elif (kind, val) == ("op", ")"):
                depth -= 1
            elif kind == "id" and str(val).upper() == "FROM" and depth == 0:
                break
            cur.i += 1
        items_tokens = cur.t[start:cur.i]
        cur.expect_kw("FROM")
        db, st = cur.qualified(default_db)
        if db not in self.databases:
            raise TaosError(DB_NOT_EXIST, "Database not exist")
        if (db, st) not in self.stables:
            raise TaosError(TABLE_NOT_EXIST, f"Table does not exist: {st}")
        schema = self.stables[(db, st)]
        types = {n: (t, ln) for n, t, ln in schema["cols"] + schema["tags"]}
        types["tbname"] = ("VARCHAR", 192)
        ts_col = schema["cols"][0][0]

        # select list
        items, cur_item, depth = [], [], 0
        for tok in items_tokens:
            if tok == ("op", ",") and depth == 0:
                items.append(cur_item)
                cur_item = []
                continue
            depth += tok == ("op", "(")
            depth -= tok == ("op", ")")
            cur_item.append(tok)
        items.append(cur_item)
        select_sql, meta, funcs = [], [], set()
        for item in items:
            alias = None
            if len(item) >= 2 and item[-2][0] == "id" and str(item[-2][1]).upper() == "AS":
                alias = item[-1][1]
                item = item[:-2]
            if len(item) == 1 and item[0][0] == "id":
                col = self._col(item[0][1], types)
                select_sql.append(_q(col))
                meta.append([alias or col, *types[col]])
            elif (len(item) == 4 and item[0][0] == "id" and str(item[0][1]).upper() in _AGGREGATES
                  and item[1] == ("op", "(") and item[3] == ("op", ")")
                  and (item[2][0] == "id" or item[2] == ("op", "*"))):
                func = str(item[0][1]).upper()
                funcs.add(func)
                if item[2] == ("op", "*"):
                    if func != "COUNT":
                        raise TaosError(NOT_SUPPORTED, f"{func}(*) is not emulated")
                    arg, typ = "*", ("BIGINT", 8)
                else:
                    arg = self._col(item[2][1], types)
                    typ = ("BIGINT", 8) if func in ("COUNT", "SUM") else types[arg]
                name = alias or f"{func.lower()}({str(item[2][1]).lower() if arg != '*' else '*'})"
                select_sql.append(_q(arg) if func == "LAST_ROW" else f"{func}({arg if arg == '*' else _q(arg)})")
                meta.append([name, *typ])
            else:
                raise _syntax(" ".join(str(v) for _, v in item))
        if "LAST_ROW" in funcs and funcs != {"LAST_ROW"}:
            raise TaosError(NOT_SUPPORTED, "this fake cannot mix LAST_ROW with other aggregates")
        last_row = "LAST_ROW" in funcs
        if last_row:
            select_sql.append(f"MAX({_q(ts_col)})")

        sql = f"SELECT {', '.join(select_sql)} FROM {_q(db + '.' + st)}"
        grouped = False
        while not cur.done():
            if cur.kw("WHERE"):
                sql += " WHERE " + self._expr(cur, types)
            elif cur.kw("PARTITION", "BY") or cur.kw("GROUP", "BY"):
                keys = [self._col(cur.ident(), types)]
                while cur.op(","):
                    keys.append(self._col(cur.ident(), types))
                if funcs:
                    sql += " GROUP BY " + ", ".join(_q(k) for k in keys)
                    grouped = True
            elif cur.kw("ORDER", "BY"):
                keys = []
                while True:
                    col = self._col(cur.ident(), types)
                    direction = "DESC" if cur.kw("DESC") else ("ASC" if cur.kw("ASC") else "")
                    keys.append(f"{_q(col)} {direction}".strip())
                    if not cur.op(","):
                        break
                sql += " ORDER BY " + ", ".join(keys)
            elif cur.kw("LIMIT"):
                n = cur.value()
                if not isinstance(n, int):
                    raise _syntax(str(n))
                sql += f" LIMIT {n}"
            else:
                raise _syntax(cur.near())
        rows = self.conn.execute(sql).fetchall()
        if last_row:
            rows = [r[:-1] for r in rows if r[-1] is not None]  # no rows in a group: no result row
        elif funcs and not grouped and rows and all(v is None for v in rows[0]):
            rows = rows if "COUNT" in funcs else []
        precision = self.databases[db]
        data = [[self._render(v, m[1], precision) for v, m in zip(r, meta)] for r in rows]
        return {"code": 0, "column_meta": meta, "data": data, "rows": len(data)}

    @staticmethod
    def _col(name, types) -> str:
        if not isinstance(name, str) or name not in types:
            raise TaosError(0x2602, f"Invalid column name: {name}")
        return name

    def _expr(self, cur: _Cursor, types) -> str:
        """A WHERE condition, up to the next clause keyword, re-emitted for SQLite."""
        out = []
        while not cur.done():
            kind, val = cur.peek()
            upper = str(val).upper() if kind == "id" else None
            if upper in ("PARTITION", "GROUP", "ORDER", "LIMIT"):
                break
            cur.i += 1
            if kind == "id":
                if upper in ("AND", "OR", "NOT", "IN", "IS", "NULL", "LIKE"):
                    out.append(upper)
                else:
                    out.append(_q(self._col(val, types)))
            elif kind in ("str", "num"):
                out.append(_sqlite_literal(val))
            elif val in ("=", "!=", "<>", "<", "<=", ">", ">=", "(", ")", ","):
                out.append(val)
            else:
                raise _syntax(str(val))
        if not out:
            raise _syntax("WHERE")
        return " ".join(out)

    @staticmethod
    def _render(value, typ: str, precision: str):
        if typ != "TIMESTAMP" or value is None:
            return value
        per_second = {"ms": 1000, "us": 1_000_000, "ns": 1_000_000_000}[precision]
        seconds, frac = divmod(int(value), per_second)
        stamp = datetime.fromtimestamp(seconds, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
        digits = len(str(per_second)) - 1
        return f"{stamp}.{frac:0{digits}d}Z"

    # -- for tests ------------------------------------------------------------------------------

    def raw_rows(self, db: str, stable: str) -> list[tuple]:
        with self.lock:
            return self.conn.execute(f"SELECT * FROM {_q(db + '.' + stable)}").fetchall()


_PATH = re.compile(r"^/rest/sql(?:/([A-Za-z_][A-Za-z0-9_]*))?/?$")


def _handler(engine: FakeTDengine, user: str, password: str):
    expected = "Basic " + base64.b64encode(f"{user}:{password}".encode("utf-8")).decode("ascii")

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):  # quiet
            pass

        def _send(self, status: int, body: dict) -> None:
            raw = json.dumps(body, ensure_ascii=False).encode("utf-8")
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def do_GET(self):
            self._send(405, {"code": 0xFFFF, "desc": "method not allowed"})

        def do_POST(self):
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length)
            match = _PATH.match(self.path.split("?", 1)[0])
            if not match:
                self._send(404, {"code": 0xFFFF, "desc": "404 page not found"})
                return
            auth = self.headers.get("Authorization")
            if not auth:
                self._send(401, {"code": 0xFFFF, "desc": "no auth info input"})
                return
            if auth != expected:
                self._send(401, {"code": AUTH_FAILURE, "desc": "Authentication failure"})
                return
            try:
                sql = body.decode("utf-8")
            except UnicodeDecodeError:
                self._send(400, {"code": 0xFFFF, "desc": "body is not UTF-8"})
                return
            self._send(200, engine.execute(sql, match.group(1)))

    return Handler


class FakeTaosAdapter:
    """The fake server on 127.0.0.1:<free port>; also a context manager."""

    def __init__(self, user: str = "root", password: str = "taosdata"):
        self.engine = FakeTDengine()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self.engine, user, password))
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, name="fake-taosadapter", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)

    def __enter__(self) -> "FakeTaosAdapter":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def start_server(user: str = "root", password: str = "taosdata") -> tuple[str, callable]:
    """Start a fake taosAdapter; returns (url, stop)."""
    server = FakeTaosAdapter(user, password)
    return server.url, server.stop
