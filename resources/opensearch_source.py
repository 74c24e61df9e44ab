"""The production log source: an OpenSearch index (Opni's `logs` by default).

Each data-stage run splits the windows' documents into `slices` PIT slices; each slice
is one `ops.fetch.opensearch.OpenSearchShard`, read in a worker process with
`search_after` pages (see that module for retries, PIT expiry and failure handling).

Credentials come from Dagster `EnvVar`s, e.g.

    OpenSearchLogSource(hosts=["https://os:9200"], username=EnvVar("LOGLOOP_OPENSEARCH_USER"),
                        password=EnvVar("LOGLOOP_OPENSEARCH_PASSWORD"))

Dagster records only the variable's name in run config; the resource's fields hold the
values at run time. They are kept out of `describe()`, reprs and error messages.

Batches: either `batch_fields` (as for the local source: the fields' values joined by
'/', 'default' when none is set) or `batch_queries`, named filters {batch name: query
DSL}; a document matching several named filters counts in each of those batches, one
matching none is not read.

Exclusions (off by default; Opni excludes these when it trains): `drop_flagged_anomalies`
drops documents whose `anomaly_field` holds one of `anomaly_values` (what a deployed
model flagged), and `drop_error_keywords` drops documents whose message matches any of
the keywords (a `match` query: analysed words, case-insensitive).
"""

from __future__ import annotations

import os
from typing import Optional
from urllib.parse import urlsplit

from pydantic import Field

from ops.fetch.opensearch import OpenSearchShard, QuerySpec, range_query, time_spans
from ops.fetch.opensearch_client import Connection, OpenSearchReadError, call_with_retries
from ops.secret import Secret
from ops.windows import Windows
from resources.log_source import LogSource, LogSourceError
from ops.urls import url_without_password, url_without_userinfo


class OpenSearchLogSource(LogSource):
    """Logs in an OpenSearch index, read as PIT slices with search_after."""

    hosts: list[str] = Field(description="URLs of the cluster's nodes, e.g. https://opensearch:9200.")
    index: str = Field(default="logs", description="Index, alias or pattern to read.")
    username: Optional[str] = Field(default=None, description="Basic-auth user (use EnvVar).")
    password: Optional[str] = Field(default=None, repr=False, description="Basic-auth password (use EnvVar).")
    api_key: Optional[str] = Field(default=None, repr=False, description="API key or token (use EnvVar).")
    api_key_scheme: str = Field(default="ApiKey", description="Authorization scheme for api_key (ApiKey, Bearer).")
    ca_path: Optional[str] = Field(default=None, description="CA bundle to verify the cluster's certificate.")
    verify_certs: bool = True
    timeout_s: float = Field(default=60.0, gt=0, description="Per-request timeout.")
    deadline_s: float = Field(default=120.0, gt=0, description="Total time of one request, retries included.")
    retries: int = Field(default=5, ge=0, description="Retries of a transient failure (5xx, 429, timeouts).")
    backoff_s: float = Field(default=0.5, ge=0, description="First retry delay; doubles each retry.")
    max_backoff_s: float = Field(default=30.0, ge=0)
    page_size: int = Field(default=5000, gt=0, le=10_000, description="Hits per search_after page.")
    slices: int = Field(default=0, ge=0, description="PIT slices (parallel shards); 0 = CPU count.")
    keep_alive: str = Field(default="5m", description="PIT keep-alive, extended by every page.")
    tiebreaker: str = Field(
        default="auto",
        description="Sort tiebreaker after time: _shard_doc (OpenSearch >= 3.3), a unique field "
        "(e.g. _id), or auto (_shard_doc when the cluster supports it, else _id).",
    )
    batch_queries: dict[str, dict] = Field(
        default_factory=dict, description="Named batch filters {batch: query DSL}; overrides batch_fields."
    )
    drop_flagged_anomalies: bool = False
    anomaly_field: str = "anomaly_level"
    anomaly_values: list[str] = Field(default_factory=lambda: ["Anomaly"])
    drop_error_keywords: list[str] = Field(default_factory=list)

    # ---- connection and queries ----

    def connection(self) -> Connection:
        for h in self.hosts:
            if "@" in urlsplit(h if "://" in h else f"http://{h}").netloc:
                raise LogSourceError("put OpenSearch credentials in username/password (EnvVar), not in hosts")
        return Connection(
            hosts=tuple(self.hosts),
            username=self.username,
            password=Secret(self.password),
            api_key=Secret(self.api_key),
            api_key_scheme=self.api_key_scheme,
            ca_path=self.ca_path,
            verify_certs=self.verify_certs,
            timeout_s=self.timeout_s,
            retries=self.retries,
            backoff_s=self.backoff_s,
            max_backoff_s=self.max_backoff_s,
            deadline_s=self.deadline_s,
        )

    def query_spec(self, keep_flagged: bool = False) -> QuerySpec:
        """What the data stage reads; `keep_flagged`: flagged documents too (the verdict write-back
        must reach the documents it flagged before, to overwrite them)."""
        must_not = []
        if self.drop_flagged_anomalies and not keep_flagged:
            must_not.append({"terms": {self.anomaly_field: list(self.anomaly_values)}})
        for word in self.drop_error_keywords:
            must_not.append({"match": {self.message_field: word}})
        return QuerySpec(tuple(self.batch_queries.items()), tuple(must_not))

    def batch_query(self, batch: str) -> dict:
        """The filter selecting one batch's documents."""
        if self.batch_queries:
            if batch not in self.batch_queries:
                raise LogSourceError(f"batch {batch!r} is not one of the named batch filters")
            return self.batch_queries[batch]
        fields = list(self.batch_fields)
        if not fields:
            return {"match_all": {}}
        values = self.record_format.batch_values(batch)  # the inverse of ops.fetch.records.batch_name
        if values is None:
            raise LogSourceError(f"batch {batch!r} is not a name the batch fields {fields} give")
        clauses = []
        for f, v in zip(fields, values):
            if v is not None:
                clauses.append({"term": {f: v}})
            else:  # absent, or empty: batch_name treats both alike
                absent = {"bool": {"must_not": [{"exists": {"field": f}}]}}
                clauses.append({"bool": {"should": [absent, {"term": {f: ""}}], "minimum_should_match": 1}})
        return {"bool": {"filter": clauses}}

    def _client(self):
        return self.connection().client()

    def _call(self, fn, what: str):
        try:
            return call_with_retries(self.connection(), fn, f"{what} (index {self.index!r})")
        except OpenSearchReadError as exc:
            raise LogSourceError(str(exc)) from None
        except Exception as exc:  # noqa: BLE001 - PitExpired and the like
            raise LogSourceError(self.connection().scrub(f"{what} (index {self.index!r}): {exc}")) from None

    def resolved_tiebreaker(self, client=None) -> str:
        if self.tiebreaker != "auto":
            return self.tiebreaker
        client = client or self._client()
        info = self._call(client.info, "asking the cluster's version")
        version = (info.get("version") or {}).get("number", "0")
        distribution = (info.get("version") or {}).get("distribution", "opensearch")
        try:
            major_minor = tuple(int(x) for x in version.split(".")[:2])
        except ValueError:
            major_minor = (0, 0)
        supports = distribution != "opensearch" or major_minor >= (3, 3)
        return "_shard_doc" if supports else "_id"

    # ---- LogSource ----

    def __repr_args__(self):
        """What repr() and str() show: hosts without a password in their user info (connection() refuses those)."""
        for name, value in super().__repr_args__():
            yield name, ([url_without_password(h) for h in value] if name == "hosts" and isinstance(value, list) else value)

    def describe(self) -> str:
        hosts = ", ".join(url_without_userinfo(h) for h in self.hosts)
        return f"OpenSearch index {self.index!r} at {hosts}"

    def shards(self, windows: Windows) -> list[OpenSearchShard]:
        if not len(windows):
            return []
        conn = self.connection()
        tiebreaker = self.resolved_tiebreaker(conn.client())
        n = self.slices or os.cpu_count() or 1
        spec = self.query_spec()
        return [
            OpenSearchShard(conn, self.index, self.record_format, spec, i, n, self.page_size, self.keep_alive, tiebreaker)
            for i in range(n)
        ]

    def write_back_verdicts(self, window: tuple[int, int], verdicts: dict, versions: dict, mask, score_new,
                            bulk_docs: int, deadline_s: float):
        """Write a scored window's verdicts onto its documents (ops.fetch.opensearch_verdicts), reading
        the window again as one PIT slice, flagged documents included."""
        from ops.fetch.opensearch_verdicts import write_back_verdicts

        windows = Windows([window])
        conn = self.connection()
        shard = OpenSearchShard(conn, self.index, self.record_format, self.query_spec(keep_flagged=True), 0, 1,
                                self.page_size, self.keep_alive, self.resolved_tiebreaker(conn.client()))
        return write_back_verdicts([shard], windows.bounds[0], verdicts, versions, mask, score_new,
                                   bulk_docs=bulk_docs, deadline_s=deadline_s)

    def ordered_shards(self, windows: Windows) -> list[OpenSearchShard]:
        """Shards that each read a contiguous time span (`time_spans`), so that a stream's documents
        come in order for multiline joining; PIT slices split documents by a hash of their id."""
        if not len(windows):
            return []
        conn = self.connection()
        tiebreaker = self.resolved_tiebreaker(conn.client())
        spec = self.query_spec()
        return [
            OpenSearchShard(conn, self.index, self.record_format, spec, 0, 1, self.page_size, self.keep_alive,
                            tiebreaker, span)
            for span in time_spans(windows, self.slices or os.cpu_count() or 1)
        ]

    @property
    def counts_cheaply(self) -> bool:
        return True  # one aggregation request, whatever the windows hold

    def count(self, windows: Windows, batches: list[str]) -> dict[tuple[int, str], int]:
        """Documents per (window index, batch), in one request (nested filters aggregations)."""
        if not len(windows) or not batches:
            return {}
        tf = self.record_format.time_field
        spec = self.query_spec()
        body = {
            "size": 0,
            "track_total_hits": False,
            "query": spec.query(tf, windows),
            "aggs": {
                "windows": {
                    "filters": {"filters": {str(w): range_query(tf, a, b) for w, (a, b) in enumerate(windows.bounds)}},
                    "aggs": {"batches": {"filters": {"filters": {b: self.batch_query(b) for b in batches}}}},
                }
            },
        }
        client = self._client()
        resp = self._call(lambda: client.search(index=self.index, body=body), "counting documents")
        out = {}
        buckets = resp["aggregations"]["windows"]["buckets"]
        for w in range(len(windows)):
            inner = buckets[str(w)]["batches"]["buckets"]
            for b in batches:
                out[(w, b)] = inner[b]["doc_count"]
        return out
