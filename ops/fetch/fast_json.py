"""The vectorised fast path for JSON Lines: a clean block parsed at once with pyarrow or
msgspec and tallied with numpy. Any block it cannot prove clean goes to the careful
per-line parser in `ops.fetch.records`, which names and counts every bad line."""

from __future__ import annotations

import operator
import re
from collections import Counter

import orjson

from ops.fetch.framing import MAX_LINE_BYTES
from ops.fetch.records import RecordFormat, batch_name
from ops.fetch.tally import Tally
from ops.naming import InvalidName, validate_batch_name
from ops.windows import TimeRange, Windows


def _one_object_per_line(data: bytes):
    """The offsets of the lines' newlines (a numpy array: one per line) when every line starts
    with { and ends with } (so there is no blank line) and none is longer than MAX_LINE_BYTES; else None. With numpy, as
    counting bytes three times in Python cost more than decoding the JSON."""
    import numpy as np

    if data[:1] != b"{" or data[-2:] != b"}\n":
        return None
    arr = np.frombuffer(data, np.uint8)
    ends = np.flatnonzero(arr == 10)  # the newlines
    if not (arr[ends - 1] == 125).all() or not (arr[ends[:-1] + 1] == 123).all():
        return None
    if len(data) > MAX_LINE_BYTES and (ends[0] > MAX_LINE_BYTES or np.diff(ends).max(initial=0) > MAX_LINE_BYTES + 1):
        return None
    return ends


_NON_FINITE = re.compile(rb"[:,\[]\s*-?(?:NaN|Inf)")  # tokens Arrow accepts and orjson rejects


_KEY_LIMIT = 1 << 62  # FastJsonBlocks._batch_index keeps its int64 keys below this

_GET_T, _GET_M, _GET_B0 = operator.attrgetter("t"), operator.attrgetter("m"), operator.attrgetter("b0")


def _see(seen: TimeRange, lo: int, hi: int, times) -> None:
    """A taken block's times into `seen`: its range, and any of its times among the earliest kept."""
    seen.add(lo, hi)
    if lo < seen.first_bound():
        seen.add_first(times)


class FastJsonBlocks:
    """Vectorised parsing of a block of JSON Lines with pyarrow, for the common case.

    `count(data, ...)` returns {(window index, batch): {raw message: count}} for a
    block (`tally(data, ..., tally)` adds the same to a `Tally` and returns the block's
    line count), or None when anything about the block is unusual, so that the caller
    parses that block with the careful per-line `parse_json_lines` instead (which names and
    counts every bad line). The fast path only answers when it provably gives what the
    careful path would: every line is one JSON object starting with `{` and ending with
    `}`, the block is valid UTF-8 with no line over MAX_LINE_BYTES, there are no
    NaN/Infinity tokens (which orjson rejects and Arrow accepts), the time field is an
    integer (epoch ms) in [windows.start_ms, windows.until_ms) on every line (checked on the
    block's min and max; that range lies within ops.windows' valid range), the message is a string on every line inside a window, batch fields are
    strings or absent, and every batch name is valid.
    """

    def __init__(self, fmt: RecordFormat):
        self.fmt = fmt
        self.paths = [fmt.time_field, fmt.message_field, *fmt.batch_fields]
        self.schema = self._schema()
        self.enabled = self.schema is not None
        # how a literal dotted key is spelled in the bytes, to detect `"a.b": null`
        self._literal_keys = {p: orjson.dumps(p) for p in self.paths if "." in p}
        self._valid_batches: set[str] = set()
        self._decoder = self._flat_decoder() if self.enabled and not self._literal_keys else None
        n_batch = len(fmt.batch_fields)  # a record's batch values, as a tuple (two or more fields)
        self._get_batch_values = operator.attrgetter(*[f"b{i}" for i in range(n_batch)]) if n_batch > 1 else None

    def _valid(self, batch_names) -> bool:
        """Whether every batch name is valid (each name validated once per reader)."""
        for name in batch_names:
            if name not in self._valid_batches:
                try:
                    if validate_batch_name(name) != name:
                        return False  # not NFC: the careful path names it in NFC
                except InvalidName:
                    return False
                self._valid_batches.add(name)
        return True

    def _flat_decoder(self):
        """A msgspec decoder of just the needed top-level fields (unknown ones are skipped).

        Strict types: the time must be a JSON integer, the message a string, batch
        fields strings or null/absent; anything else fails the block over to pyarrow
        or the careful path. msgspec is stricter than orjson everywhere but one place
        (numbers that overflow a double, which orjson rejects and `parse_json_lines`
        retries with the standard library), so a block it decodes is one the careful
        path reads the same way.
        """
        import msgspec

        nodefault = msgspec.NODEFAULT
        fields = [("t", int, msgspec.field(name=self.fmt.time_field, default=nodefault)),
                  ("m", str, msgspec.field(name=self.fmt.message_field, default=nodefault))]
        fields += [(f"b{i}", str | None, msgspec.field(name=f, default=None))
                   for i, f in enumerate(self.fmt.batch_fields)]
        record = msgspec.defstruct("LogRecord", fields, gc=False)
        return msgspec.json.Decoder(record)

    def _schema(self):
        import pyarrow as pa

        types = {self.fmt.time_field: pa.int64()}
        for p in self.paths[1:]:
            types.setdefault(p, pa.string())
        if len(set(self.paths[:2])) < 2 or self.fmt.time_field in self.fmt.batch_fields:
            return None
        top: dict = {}   # name -> type, or nested dict for struct paths
        def put(tree, parts, typ):
            name = parts[0]
            if len(parts) == 1:
                if name in tree:
                    return False
                tree[name] = typ
                return True
            sub = tree.setdefault(name, {})
            return isinstance(sub, dict) and put(sub, parts[1:], typ)
        for p, typ in types.items():
            if not put(top, [p], typ):
                return None
            if "." in p and not put(top, p.split("."), typ):
                return None
        def build(tree):
            return [pa.field(k, pa.struct(build(v)) if isinstance(v, dict) else v) for k, v in tree.items()]
        return pa.schema(build(top))

    def _column(self, table, path, data):
        """A field's values (literal dotted key first, then the nested path), or None
        when a row could hold the literal key with a JSON null (Arrow cannot tell)."""
        import pyarrow.compute as pc

        literal = table.column(path)
        if "." not in path:
            return literal
        nested = table.column(path.split(".")[0])
        for part in path.split(".")[1:]:
            nested = pc.struct_field(nested, part)
        risky = self._literal_keys[path] in data  # a literal key is there, maybe as null
        if literal.null_count == len(literal):
            if risky and nested.null_count != len(nested):
                return None
            return nested
        if risky and pc.any(pc.and_(pc.is_null(literal), pc.is_valid(nested))).as_py():
            return None
        return pc.coalesce(literal, nested)

    def _checked(self, data: bytes) -> tuple | None:
        """(the block with \\r\\n as \\n, its number of lines, its newlines' offsets) when the fast
        path may try it."""
        if not self.enabled or not data:
            return None
        if b"\r" in data:
            data = data.replace(b"\r\n", b"\n")  # what stripping each line's \r does
        ends = _one_object_per_line(data)
        if ends is None:
            return None
        if not data.isascii():
            try:
                data.decode("utf-8")
            except UnicodeDecodeError:
                return None
        return data, len(ends), ends

    def _parse_checked(self, data: bytes, n_lines: int, windows: Windows, seen: TimeRange | None):
        """The block's rows inside a window, or None when it needs the careful path.

        With flat field names (msgspec): {(window index, batch): messages (an iterator,
        to be consumed at once) or their Counter}.
        With dotted ones (pyarrow): (keys, key index per row, distinct messages,
        message index per row), or [] when no row is inside a window.
        """
        import numpy as np

        if self._decoder is not None:
            return self._parse_flat(data, n_lines, windows, seen)
        if (b"NaN" in data or b"Inf" in data) and _NON_FINITE.search(data):
            return None
        import pyarrow as pa
        import pyarrow.json as pj

        try:
            table = pj.read_json(
                pa.py_buffer(data),
                read_options=pj.ReadOptions(use_threads=False, block_size=len(data) + 64),
                parse_options=pj.ParseOptions(explicit_schema=self.schema, unexpected_field_behavior="ignore"),
            )
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError, UnicodeDecodeError):
            return None
        if table.num_rows != n_lines:
            return None
        fmt = self.fmt
        times = self._column(table, fmt.time_field, data)
        if times is None or times.null_count:
            return None
        t = np.asarray(times.combine_chunks() if isinstance(times, pa.ChunkedArray) else times)
        if len(t):
            lo, hi = int(t.min()), int(t.max())
            if lo < windows.start_ms or hi >= windows.until_ms:
                return None  # bad_time, time_before_start, time_in_future: the careful path names them
        else:
            lo = hi = None

        def seen_now():  # only once the block is taken: a refused one is read again by the careful path
            if seen is not None and lo is not None:
                _see(seen, lo, hi, t)

        if not len(windows):
            seen_now()
            return []
        starts = np.asarray(windows.starts, dtype=np.int64)
        ends = np.asarray([b for _, b in windows.bounds], dtype=np.int64)
        w = np.searchsorted(starts, t, side="right") - 1
        inside = (w >= 0) & (t < ends[np.maximum(w, 0)])
        if not inside.any():
            seen_now()
            return []
        rows = None if inside.all() else pa.array(np.flatnonzero(inside))
        w = w[inside] if rows is not None else w

        def pick(col):
            col = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
            return col if rows is None else col.take(rows)

        messages = self._column(table, fmt.message_field, data)
        if messages is None:
            return None
        messages = pick(messages)
        if messages.null_count:
            return None
        if fmt.batch_fields:
            values = []
            for f in fmt.batch_fields:
                v = self._column(table, f, data)
                if v is None:
                    return None
                values.append(pick(v))
            batch_names, b_idx = self._batch_index(values)
        else:
            batch_names = [fmt.default_batch]
            b_idx = None
        if not self._valid(batch_names):
            return None  # the careful path names each bad line
        menc = messages.dictionary_encode()
        m_idx = np.asarray(menc.indices, dtype=np.int64)
        nb = len(batch_names)
        key = w.astype(np.int64) * nb
        if b_idx is not None:
            key += b_idx
        if key[0] == key.min() == key.max():  # the usual block: one window, one batch
            key_ids, k_idx = key[:1], None
        else:
            key_ids, k_idx = np.unique(key, return_inverse=True)
            k_idx = k_idx.reshape(-1)
        keys = [(int(k) // nb, batch_names[int(k) % nb]) for k in key_ids.tolist()]
        seen_now()
        return keys, k_idx, menc.dictionary, m_idx

    def _batch_index(self, values):
        """(distinct batch names, each row's index into them) from the batch fields'
        Arrow string columns: rows are grouped by their combination of values with numpy,
        and each distinct combination is named once by `batch_name`, the rule of the
        careful path."""
        import numpy as np
        import pyarrow.compute as pc

        choices, codes = [], []
        for v in values:
            enc = v.dictionary_encode()  # nulls stay null: code 0 below
            choices.append([None, *enc.dictionary.to_pylist()])
            codes.append(np.asarray(pc.fill_null(enc.indices, -1), dtype=np.int64) + 1)
        if all(c.min() == c.max() for c in codes):  # the usual block: one combination
            combos, inverse = [[int(c[0]) for c in codes]], np.zeros(len(codes[0]), dtype=np.int64)
        else:  # one int64 key per row (mixed radix, made dense again before it could overflow)
            key, bound = codes[0], len(choices[0])
            for c, ch in zip(codes[1:], choices[1:]):
                if bound * len(ch) >= _KEY_LIMIT:
                    _, key = np.unique(key, return_inverse=True)
                    key, bound = key.reshape(-1), int(key.max()) + 1
                key, bound = key * len(ch) + c, bound * len(ch)
            _, first, inverse = np.unique(key, return_index=True, return_inverse=True)
            combos, inverse = np.stack([c[first] for c in codes], axis=1).tolist(), inverse.reshape(-1)
        fmt = self.fmt
        names = [batch_name([choices[i][c] for i, c in enumerate(combo)], fmt.default_batch, fmt.batch_separator)
                 for combo in combos]
        distinct = list(dict.fromkeys(names))  # two combinations may share a name ("" and absent)
        if len(distinct) < len(names):
            position = {name: i for i, name in enumerate(distinct)}
            inverse = np.asarray([position[name] for name in names], dtype=np.int64)[inverse]
        return distinct, inverse

    def _parse_flat(self, data: bytes, n_lines: int, windows: Windows, seen: TimeRange | None, joining=None):
        """msgspec's reading of a block: {(window index, batch): messages, or a Counter of them}.

        One window and one batch (the usual block) give the messages as a lazy map, which
        the Tally counts in C without building a list. `joining`: (joiner, first line number,
        source) when multiline events are joined (see `_joined`).
        """
        import msgspec

        try:
            records = self._decoder.decode_lines(data)
        except (msgspec.DecodeError, UnicodeDecodeError):
            return None
        if len(records) != n_lines:  # it skips blank lines and accepts `}{`; the careful path does not
            return None
        times = list(map(_GET_T, records))
        lo, hi = min(times), max(times)
        if lo < windows.start_ms or hi >= windows.until_ms:
            return None  # bad_time, time_before_start, time_in_future: the careful path names them
        w = windows.index(lo)
        if w >= 0 and windows.index(hi) == w:
            window_of = None  # the usual block: all in one window
        else:
            import numpy as np

            starts = np.asarray(windows.starts, dtype=np.int64)
            ends = np.asarray([b for _, b in windows.bounds], dtype=np.int64)
            t = np.asarray(times, dtype=np.int64)
            idx = np.searchsorted(starts, t, side="right") - 1
            inside = (idx >= 0) & (t < ends[np.maximum(idx, 0)]) if len(starts) else np.zeros(len(t), bool)
            window_of = np.where(inside, idx, -1).tolist()
        fmt, default = self.fmt, self.fmt.default_batch
        batches = None  # per record, built only when a block holds several
        if not fmt.batch_fields:
            names = {default}
        elif len(fmt.batch_fields) == 1:  # batch_name of one value: the value, or the default
            names = set(map(_GET_B0, records))
            if None in names or "" in names:
                names.discard(None)
                names.discard("")
                names.add(default)
                if len(names) > 1:
                    batches = [b or default for b in map(_GET_B0, records)]
            elif len(names) > 1:
                batches = list(map(_GET_B0, records))
        else:  # each distinct combination of values named once, by batch_name
            combos = list(map(self._get_batch_values, records))
            named = {vs: batch_name(vs, default, fmt.batch_separator) for vs in set(combos)}
            names = set(named.values())
            if len(names) > 1:
                batches = list(map(named.__getitem__, combos))
        if not self._valid(names):
            return None  # the careful path names each bad line
        if joining is not None:
            joiner, ends = joining[0], joining[1]
            candidates = joiner.ml.candidate_lines(data, ends)  # the lines that may begin an event
            if joiner.has_open or len(candidates):
                if not self._valid(p[1] for p in joiner.open_payloads()):
                    return None  # an open event's batch name is invalid: the careful path names it
                if seen is not None:
                    _see(seen, lo, hi, times)
                return self._joined(candidates, records, w, window_of, names, batches, joiner, *joining[2:])
        if seen is not None:  # the block is taken: a refused one is read again by the careful path
            _see(seen, lo, hi, times)
        if window_of is None and len(names) == 1:
            return {(w, next(iter(names))): map(_GET_M, records)}  # counted by the Tally, in C
        messages = list(map(_GET_M, records))
        if window_of is None:
            window_of = [w] * len(records)
        if batches is None:
            batches = [next(iter(names))] * len(records)
        out: dict = {}
        for (wi, batch, message), c in Counter(zip(window_of, batches, messages)).items():
            if wi >= 0:
                bucket = out.get((wi, batch))
                if bucket is None:
                    bucket = out[(wi, batch)] = Counter()
                bucket[message] = c
        return out

    def _joined(self, candidates, records, w: int, window_of, names: set, batches, joiner,
                first_line_no: int, source: str) -> dict | None:
        """A block that may begin or continue a multiline event: {(window index, batch): Counter}.

        Only the `candidates` (the lines holding a parser's hint, `Multiline.candidate_lines`) are
        tried as the start of an event, and only the lines after one run the state machine (`Joiner.join_block`); the rest
        are counted as they are. Events that end here are counted under their first line's window
        and batch (it may lie in an earlier block); events still open at the end of the block wait
        in the joiner. The caller has checked that every open event's batch name is valid.
        """
        messages = list(map(_GET_M, records))
        single = next(iter(names)) if len(names) == 1 else None
        stream_of = (lambda i: single) if single is not None else batches.__getitem__
        window_at = (lambda i: w) if window_of is None else window_of.__getitem__
        events, taken = joiner.join_block(
            messages, None if single is not None else batches, single, candidates,
            lambda i: (window_at(i), stream_of(i), first_line_no + i), lambda i: f"{source}:{first_line_no + i}")
        out: dict = {}
        if window_of is None and single is not None:  # the usual block: counted by the Tally, in C
            for i in sorted(taken, reverse=True):
                del messages[i]
            out[(w, single)] = messages
        else:
            for i in taken:
                messages[i] = None
            if window_of is None:
                window_of = [w] * len(records)
            if batches is None:
                batches = [single] * len(records)
            for (wi, batch, message), c in Counter(zip(window_of, batches, messages)).items():
                if wi >= 0 and message is not None:
                    bucket = out.get((wi, batch))
                    if bucket is None:
                        bucket = out[(wi, batch)] = Counter()
                    bucket[message] = c
        for (wi, batch, _), text in events:
            if wi >= 0:
                bucket = out.get((wi, batch))
                if bucket is None:
                    bucket = out[(wi, batch)] = Counter()
                if isinstance(bucket, list):
                    bucket.append(text)
                else:
                    bucket[text] += 1
        return out

    def tally(self, data: bytes, windows: Windows, seen: TimeRange | None, tally: "Tally", joiner=None,
              first_line_no: int = 1, source: str = "") -> int | None:
        """Count a block into `tally`: its number of lines, or None when it needs the careful path.
        With a multiline `joiner` (ops.fetch.multiline), the block's lines are joined into events;
        `first_line_no` and `source` name its lines in `event_cut` examples."""
        checked = self._checked(data)
        if checked is not None and joiner is not None and self._decoder is None and (
                joiner.has_open or len(joiner.ml.candidate_lines(checked[0], checked[2]))):
            return None  # dotted field names: the careful path joins the lines
        if checked is not None and joiner is not None and self._decoder is not None:
            parsed = self._parse_flat(checked[0], checked[1], windows, seen, (joiner, checked[2], first_line_no, source))
        else:
            parsed = None if checked is None else self._parse_checked(checked[0], checked[1], windows, seen)
        if parsed is None:
            return None
        if isinstance(parsed, dict):
            for key, counts in parsed.items():
                tally.add_counts(key, counts)
        elif parsed:
            tally.add(*parsed)
        return checked[1]

    def count(self, data: bytes, windows: Windows, seen: TimeRange | None = None):
        """{(window index, batch): {raw message: count}} for a block, or None (see the class)."""
        tally = Tally()
        if self.tally(data, windows, seen, tally) is None:
            return None
        return tally.flush() if len(tally) else []
