"""Synthetic Kubernetes-style application logs for demos and tests.

Writes JSON Lines in Opni's shape, one object per line::

    {"time": 1732346428123, "log": "...", "cluster_id": "demo",
     "kubernetes": {"namespace_name": "shop", "pod_name": "checkout-7d9c8b5f4-x2k9p"},
     "deployment": "checkout", "anomaly": false}

A *batch* (one workload, one model's data) is the combination
``cluster_id / kubernetes.namespace_name / deployment`` and is named by the string
``"cluster/namespace/deployment"``.  Every batch draws from its own set of realistic
templates (HTTP access lines, DB queries, klog lines, Spring Boot lines, nginx
ingress lines, ...) with a skewed, Zipf-like frequency, so a few templates are very
common and many are rare.  A share ``anomaly_share`` of the lines come from separate
anomaly templates (panics, OOMKilled, collapsed stack traces, "connection refused",
garbled text) and carry ``"anomaly": true``; that field is ground truth for
evaluation only and must not be fed to a model.

Everything is drawn from one ``random.Random(seed)`` (plus per-batch generators
seeded from the seed and the batch name), so the output is byte-for-byte
deterministic for a seed.  Records are streamed to disk; only one hour's timestamps
are held in memory at a time.

CLI::

    python -m scripts.demo_logs --out DIR --hours 3 --lines-per-hour 2000 --seed 0

This module has no Dagster import.
"""

from __future__ import annotations

import argparse
import bisect
import itertools
import json
import random
import string
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

try:  # orjson is a project dependency; fall back to json so the module stands alone.
    import orjson as _orjson

    def _dumps_line(obj: dict) -> bytes:
        return _orjson.dumps(obj, option=_orjson.OPT_APPEND_NEWLINE)

except ImportError:  # pragma: no cover - exercised only without orjson
    _orjson = None

    def _dumps_line(obj: dict) -> bytes:
        return (json.dumps(obj, ensure_ascii=False, separators=(",", ":")) + "\n").encode()


HOUR_MS = 3_600_000

DEFAULT_BATCHES: tuple[str, ...] = (
    "demo/shop/checkout",
    "demo/shop/payments",
    "demo/infra/ingress-nginx",
)

__all__ = [
    "DEFAULT_BATCHES",
    "HOUR_MS",
    "default_start_ms",
    "generate",
    "iter_records",
    "main",
    "parse_batch",
]


# --------------------------------------------------------------------------------------
# Per-line context: the record's time and the batch that emits it.
# --------------------------------------------------------------------------------------

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


class _Ctx:
    """Mutable per-line context handed to field generators (reused between lines)."""

    __slots__ = ("t", "b", "pod", "_sec", "_tm", "_fmt")

    def __init__(self) -> None:
        self.t = 0
        self.b: _Batch | None = None
        self.pod = ""
        self._sec = -1
        self._tm: time.struct_time | None = None
        self._fmt: dict[Callable[[time.struct_time], str], str] = {}

    def tm(self) -> time.struct_time:
        sec = self.t // 1000
        if sec != self._sec:
            self._sec = sec
            self._tm = time.gmtime(sec)
            self._fmt.clear()
        return self._tm  # type: ignore[return-value]

    def sec_fmt(self, fn: Callable[[time.struct_time], str]) -> str:
        """``fn(struct_time)`` for the current second, cached (lines are time-sorted)."""
        tm = self.tm()
        s = self._fmt.get(fn)
        if s is None:
            s = self._fmt[fn] = fn(tm)
        return s


Gen = Callable[[random.Random, _Ctx], str]


# --------------------------------------------------------------------------------------
# Field generators.  A template field ``{name}`` or ``{name2}`` (trailing digits make
# an independent draw of the same kind) is filled by ``_FIELDS[name]``, unless the
# template overrides it.
# --------------------------------------------------------------------------------------

_K8S_ALNUM = "bcdfghjklmnpqrstvwxz2456789"  # the alphabet of pod/replicaset name suffixes


def _k8s_suffix(r: random.Random, n: int) -> str:
    return "".join(r.choice(_K8S_ALNUM) for _ in range(n))


def _choice(seq: Sequence[str]) -> Gen:
    seq = tuple(seq)
    n = len(seq)
    return lambda r, c: seq[int(r.random() * n)]


def _wchoice(pairs: Sequence[tuple[str, float]]) -> Gen:
    items = [p[0] for p in pairs]
    cum = list(itertools.accumulate(p[1] for p in pairs))
    total = cum[-1]
    return lambda r, c: items[bisect.bisect_right(cum, r.random() * total)]


def _int(a: int, b: int) -> Gen:
    span = b - a + 1
    return lambda r, c: str(a + int(r.random() * span))


def _hex(n: int) -> Gen:
    bits = 4 * n
    return lambda r, c: f"{r.getrandbits(bits):0{n}x}"


def _uuid(r: random.Random, c: _Ctx) -> str:
    h = f"{r.getrandbits(128):032x}"
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{'89ab'[int(h[16], 16) & 3]}{h[17:20]}-{h[20:]}"


def _ipv4_public(r: random.Random, c: _Ctx) -> str:
    return f"{r.choice((23, 31, 46, 52, 66, 78, 81, 89, 95, 104, 141, 151, 176, 185, 203, 212))}.{int(r.random() * 256)}.{int(r.random() * 256)}.{1 + int(r.random() * 254)}"


def _ipv6(r: random.Random, c: _Ctx) -> str:
    prefix = r.choice(("2a02:8108", "2001:16b8", "2600:1700", "2a01:4f8", "2001:db8"))
    g = [f"{r.getrandbits(16):x}" for _ in range(4)]
    if r.random() < 0.5:
        return f"{prefix}:{r.getrandbits(16):x}::{g[0]}:{g[1]}"
    return f"{prefix}:{r.getrandbits(16):x}:{r.getrandbits(16):x}:{':'.join(g)}"


def _client_ip(r: random.Random, c: _Ctx) -> str:
    x = r.random()
    if x < 0.08:
        return _ipv6(r, c)
    if x < 0.35:
        return f"10.{int(r.random() * 256)}.{int(r.random() * 256)}.{1 + int(r.random() * 254)}"
    return _ipv4_public(r, c)


def _pod_ip(r: random.Random, c: _Ctx) -> str:
    return f"10.42.{r.randrange(8)}.{2 + r.randrange(250)}"


def _ms(r: random.Random, c: _Ctx) -> str:
    return str(max(1, int(r.lognormvariate(3.0, 0.9))))


def _go_dur(r: random.Random, c: _Ctx) -> str:
    ms = r.lognormvariate(2.8, 1.1)
    if ms < 1.0:
        return f"{ms * 1000:.1f}µs"
    if ms < 1000.0:
        return f"{ms:.3f}ms" if r.random() < 0.5 else f"{ms:.0f}ms"
    return f"{ms / 1000:.3f}s"


def _slow_dur(r: random.Random, c: _Ctx) -> str:
    return f"{r.uniform(0.5, 4.0):.3f}s"


def _money(r: random.Random, c: _Ctx) -> str:
    return f"{r.lognormvariate(3.5, 0.9):.2f}"


def _klog_sec(tm: time.struct_time) -> str:
    return f"{tm.tm_mon:02d}{tm.tm_mday:02d} {tm.tm_hour:02d}:{tm.tm_min:02d}:{tm.tm_sec:02d}"


def _date_sec(tm: time.struct_time) -> str:
    return f"{tm.tm_year:04d}-{tm.tm_mon:02d}-{tm.tm_mday:02d} {tm.tm_hour:02d}:{tm.tm_min:02d}:{tm.tm_sec:02d}"


def _iso_sec(tm: time.struct_time) -> str:
    return f"{tm.tm_year:04d}-{tm.tm_mon:02d}-{tm.tm_mday:02d}T{tm.tm_hour:02d}:{tm.tm_min:02d}:{tm.tm_sec:02d}"


def _nginx_sec(tm: time.struct_time) -> str:
    return f"{tm.tm_mday:02d}/{_MONTHS[tm.tm_mon - 1]}/{tm.tm_year:04d}:{tm.tm_hour:02d}:{tm.tm_min:02d}:{tm.tm_sec:02d} +0000"


def _nginx_err_sec(tm: time.struct_time) -> str:
    return f"{tm.tm_year:04d}/{tm.tm_mon:02d}/{tm.tm_mday:02d} {tm.tm_hour:02d}:{tm.tm_min:02d}:{tm.tm_sec:02d}"


def _klog_ts(r: random.Random, c: _Ctx) -> str:  # I1123 07:20:28.123456
    return f"{c.sec_fmt(_klog_sec)}.{(c.t % 1000) * 1000 + int(r.random() * 1000):06d}"


def _iso_ts(r: random.Random, c: _Ctx) -> str:  # 2024-11-23T07:20:28.123Z
    return f"{c.sec_fmt(_iso_sec)}.{c.t % 1000:03d}Z"


def _java_ts(r: random.Random, c: _Ctx) -> str:  # 2024-11-23 07:20:28.123
    return f"{c.sec_fmt(_date_sec)}.{c.t % 1000:03d}"


def _nginx_ts(r: random.Random, c: _Ctx) -> str:  # 23/Nov/2024:07:20:28 +0000
    return c.sec_fmt(_nginx_sec)


def _nginx_err_ts(r: random.Random, c: _Ctx) -> str:  # 2024/11/23 07:20:28
    return c.sec_fmt(_nginx_err_sec)


def _api_path(r: random.Random, c: _Ctx) -> str:
    x = r.random()
    if x < 0.30:
        return f"/api/v1/products/{r.randrange(10000, 99999)}"
    if x < 0.50:
        return f"/api/v1/cart/{r.randrange(1, 500000)}"
    if x < 0.62:
        return f"/api/v1/products?page={1 + r.randrange(20)}&limit={r.choice((20, 50, 100))}"
    if x < 0.74:
        return f"/api/v1/orders/{r.randrange(100000, 999999)}"
    if x < 0.84:
        return "/api/v1/checkout"
    if x < 0.92:
        return f"/api/v1/users/{r.randrange(1, 500000)}/addresses"
    return f"/api/v1/search?q={r.choice(('shoes', 'jacket', 'lamp', 'usb+cable', 'coffee', 'desk'))}"


def _web_path(r: random.Random, c: _Ctx) -> str:
    x = r.random()
    if x < 0.55:
        return _api_path(r, c)
    if x < 0.80:
        return f"/static/{r.choice(('js', 'css', 'img'))}/{r.choice(('main', 'vendor', 'app', 'logo', 'hero'))}.{_hex(8)(r, c)}.{r.choice(('js', 'css', 'png', 'webp'))}"
    if x < 0.92:
        return r.choice(("/", "/cart", "/checkout", "/login", "/account", "/favicon.ico"))
    return f"/auth/realms/shop/protocol/openid-connect/{r.choice(('token', 'auth', 'userinfo', 'certs'))}"


def _user_agent(r: random.Random, c: _Ctx) -> str:
    return r.choice(
        (
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
            "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_6) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.6 Safari/605.1.15",
            "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1",
            "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
            "okhttp/4.12.0",
            "curl/8.5.0",
            "Go-http-client/2.0",
            "python-requests/2.32.3",
        )
    )


def _status(r: random.Random, c: _Ctx) -> str:
    return _STATUS_GEN(r, c)


_STATUS_GEN = _wchoice(
    [("200", 80), ("201", 5), ("204", 3), ("301", 1), ("304", 3), ("400", 2), ("401", 1),
     ("403", 0.5), ("404", 3), ("409", 0.3), ("422", 0.5), ("429", 0.3), ("500", 0.2),
     ("502", 0.1), ("503", 0.1)]
)


def _this_pod(r: random.Random, c: _Ctx) -> str:
    return c.pod


def _other_pod(r: random.Random, c: _Ctx) -> str:
    return r.choice(c.b.pods)  # type: ignore[union-attr]


def _deploy(r: random.Random, c: _Ctx) -> str:
    return c.b.deployment  # type: ignore[union-attr]


def _ns(r: random.Random, c: _Ctx) -> str:
    return c.b.namespace  # type: ignore[union-attr]


def _peer(r: random.Random, c: _Ctx) -> str:
    return r.choice(c.b.peers)  # type: ignore[union-attr]


def _backend(r: random.Random, c: _Ctx) -> str:
    return r.choice(c.b.backends)  # type: ignore[union-attr]


def _rs_hash(r: random.Random, c: _Ctx) -> str:
    return _k8s_suffix(r, r.choice((9, 10)))


def _k8s_name(r: random.Random, c: _Ctx) -> str:
    return r.choice(c.b.peers) + "-" + _k8s_suffix(r, 10) + "-" + _k8s_suffix(r, 5)  # type: ignore[union-attr]


_FIELDS: dict[str, Gen] = {
    "iso": _iso_ts,
    "jts": _java_ts,
    "klog": _klog_ts,
    "nts": _nginx_ts,
    "nerr": _nginx_err_ts,
    "uuid": _uuid,
    "ip": _client_ip,
    "pubip": _ipv4_public,
    "ipv6": _ipv6,
    "podip": _pod_ip,
    "ms": _ms,
    "dur": _go_dur,
    "slowdur": _slow_dur,
    "money": _money,
    "status": _status,
    "method": _wchoice([("GET", 70), ("POST", 18), ("PUT", 5), ("DELETE", 3), ("PATCH", 2), ("OPTIONS", 2)]),
    "path": _api_path,
    "wpath": _web_path,
    "ua": _user_agent,
    "uid": _int(1, 500000),
    "order": _int(100000, 999999),
    "sku": lambda r, c: f"SKU-{r.randrange(10000, 99999)}",
    "qty": _int(1, 5),
    "n": _int(0, 64),
    "big": _int(1000, 9_999_999),
    "bytes": lambda r, c: str(int(r.lognormvariate(7.5, 1.4))),
    "port": _int(32768, 60999),
    "part": _int(0, 11),
    "offset": _int(1_000_000, 99_999_999),
    "line": _int(60, 1400),
    "pid": _int(100, 65000),
    "hex8": _hex(8),
    "hex16": _hex(16),
    "hex32": _hex(32),
    "pct": _int(1, 99),
    "sec": lambda r, c: f"{r.uniform(0.001, 3.0):.3f}",
    "cur": _wchoice([("EUR", 5), ("USD", 4), ("GBP", 1), ("CHF", 0.5)]),
    "table": _choice(("orders", "order_items", "carts", "cart_items", "products", "users", "addresses", "inventory", "payments", "refunds")),
    "provider": _choice(("stripe", "adyen", "paypal", "klarna")),
    "topic": _choice(("orders.created", "orders.paid", "cart.updated", "inventory.reserved", "payments.ledger")),
    "pod": _this_pod,
    "opod": _other_pod,
    "deploy": _deploy,
    "ns": _ns,
    "peer": _peer,
    "backend": _backend,
    "rshash": _rs_hash,
    "kname": _k8s_name,
    "host": _choice(("shop.example.com", "api.example.com", "auth.example.com", "www.example.com")),
    "thread": lambda r, c: f"nio-8080-exec-{1 + r.randrange(10)}",
    "ver": lambda r, c: f"1.{r.randrange(4, 9)}.{r.randrange(0, 20)}",
    "mb": _int(20, 900),
    "conn": _int(1000, 999999),
    "ms3": _int(0, 999),
}


class _Tpl:
    __slots__ = ("key", "fmt", "gens", "const")

    def __init__(self, key: str, fmt: str, overrides: dict[str, Any]) -> None:
        self.key = key
        self.fmt = fmt
        names = [f for _, f, _, _ in string.Formatter().parse(fmt) if f]
        gens: list[tuple[str, Gen]] = []
        for name in dict.fromkeys(names):
            spec = overrides.get(name, _FIELDS.get(name))
            if spec is None:  # "uuid2" is an independent draw of "uuid"
                base = name.rstrip("0123456789")
                spec = overrides.get(base, _FIELDS.get(base))
            if spec is None:
                raise KeyError(f"template {key!r}: no generator for field {name!r}")
            if isinstance(spec, str):
                spec = (lambda s: (lambda r, c: s))(spec)
            elif isinstance(spec, (list, tuple)):
                spec = _choice(spec)
            gens.append((name, spec))
        self.gens = tuple(gens)
        self.const = not gens

    def render(self, r: random.Random, c: _Ctx) -> str:
        if self.const:
            return self.fmt
        return self.fmt.format_map({n: g(r, c) for n, g in self.gens})


def _T(fmt: str, **overrides: Any) -> tuple[str, dict[str, Any]]:
    return (fmt, overrides)


# --------------------------------------------------------------------------------------
# Normal templates per workload profile, listed roughly from most to least common.
# --------------------------------------------------------------------------------------

_WEB = [
    _T('{iso} INFO http request method={method} path={path} status={status} duration={dur} request_id={uuid} remote={ip}'),
    _T('{iso} DEBUG probe ok path={probe} status=200 user_agent="kube-probe/1.29" duration={us}µs', probe=("/healthz", "/readyz"), us=_int(40, 900)),
    _T('{iso} INFO db query table={table} op={op} rows={rows} duration={dur}', op=("select", "select", "insert", "update", "delete"), rows=_int(0, 200)),
    _T('{iso} INFO cache {hm} key=cart:{uid} ttl={ttl}s', hm=("hit", "hit", "hit", "miss"), ttl=_int(30, 900)),
    _T('{iso} INFO published event topic={topic} partition={part} offset={offset} key={uuid}'),
    _T('{iso} INFO cart updated cart_id={uuid} user_id={uid} sku={sku} qty={qty}'),
    _T('{iso} INFO grpc call service={svc} method={gm} code=OK duration={dur} peer={podip}:{gport}', svc=("inventory.v1.InventoryService", "pricing.v1.PricingService", "payments.v1.PaymentService"), gm=("Reserve", "GetPrice", "Authorize", "Release"), gport=("9090", "50051")),
    _T('{iso} INFO order created order_id={order} user_id={uid} items={qty} total={money} currency={cur}'),
    _T('{iso} INFO trace span name={span} trace_id={hex32} span_id={hex16} duration={dur}', span=("checkout.place_order", "cart.load", "pricing.quote", "db.query", "kafka.produce")),
    _T('{iso} INFO inventory reserved sku={sku} qty={qty} warehouse={wh} reservation={uuid}', wh=("fra-1", "ams-2", "dub-1")),
    _T('{iso} INFO payment authorized order_id={order} provider={provider} amount={money} currency={cur} latency={dur}'),
    _T('{iso} INFO feature flag evaluated flag={flag} variant={variant} user_id={uid}', flag=("new-checkout-flow", "express-shipping", "one-click-pay"), variant=("control", "treatment-a", "treatment-b")),
    _T('{iso} WARN slow query took {slowdur} sql="SELECT * FROM {table} WHERE user_id = $1 ORDER BY created_at DESC" threshold=500ms'),
    _T('{iso} WARN http request method=POST path=/api/v1/checkout status={s4} duration={dur} request_id={uuid} error="{err}"', s4=("400", "409", "422"), err=("invalid address", "cart is empty", "item out of stock", "coupon expired")),
    _T('{iso} INFO connection pool stats open={n} in_use={n2} idle={n3} wait_count={n4} wait_duration={dur}'),
    _T('{iso} INFO shipping quote carrier={carrier} zip={zip} cost={money} eta_days={eta}', carrier=("dhl", "ups", "dpd", "gls"), zip=_int(10115, 99998), eta=_int(1, 6)),
    _T('{iso} INFO session refreshed session_id={hex16} user_id={uid} expires_in=3600s'),
    _T('{iso} INFO coupon applied code={coupon} discount={pct}% order_id={order}', coupon=("WELCOME10", "BLACKFRIDAY", "FREESHIP", "SPRING25")),
    _T('{iso} INFO rate limit bucket=user:{uid} remaining={n} reset_in={r}s', r=_int(1, 60)),
    _T('{iso} WARN retrying request to {peer} attempt={a}/3 backoff={b}ms error="context deadline exceeded"', a=("1", "2"), b=("100", "200", "400")),
    _T('{iso} INFO runtime stats heap_alloc={mb}MB goroutines={g} num_gc={big} pause_total={dur}', g=_int(40, 400)),
    _T('{iso} INFO config reloaded version={ver} checksum={hex8}'),
    _T('{iso} WARN upstream {peer} responded 503, circuit breaker half-open'),
    _T('{iso} INFO leader election: still leader lease={deploy}-lock holder={pod}'),
    _T('{iso} INFO starting http server addr=:8080 version={ver} commit={hex8}'),
    _T('{iso} INFO received SIGTERM, draining connections timeout=30s'),
]

_JAVA_LOGGERS = {
    "ctl": "c.e.payments.web.PaymentController",
    "flt": "c.e.p.web.RequestLoggingFilter",
    "svc": "c.e.p.service.PaymentService",
    "sql": "org.hibernate.SQL",
    "fraud": "c.e.p.client.FraudCheckClient",
    "pub": "c.e.p.kafka.LedgerPublisher",
    "hik": "com.zaxxer.hikari.pool.HikariPool",
    "ref": "c.e.p.service.RefundService",
    "kc": "o.a.k.c.c.internals.ConsumerCoordinator",
    "job": "c.e.p.scheduler.SettlementJob",
    "bank": "c.e.p.client.BankGatewayClient",
    "hlth": "c.e.p.health.DbHealthIndicator",
    "fx": "c.e.p.cache.ExchangeRateCache",
    "hook": "c.e.p.web.WebhookController",
    "idem": "c.e.p.service.IdempotencyService",
    "sched": "o.s.s.c.ThreadPoolTaskScheduler",
    "audit": "c.e.p.audit.AuditLogger",
    "batch": "o.h.e.jdbc.batch.internal.BatchingBatch",
    "app": "c.e.payments.PaymentsApplication",
    "tom": "o.s.b.w.embedded.tomcat.TomcatWebServer",
    "valid": "c.e.p.web.RestExceptionHandler",
}


def _J(level: str, logger: str, msg: str, thread: str = "{thread}", **ov: Any) -> tuple[str, dict[str, Any]]:
    name = _JAVA_LOGGERS[logger]
    if "{" not in thread:  # Spring pads/truncates the thread name to 15 characters
        thread = f"{thread[-15:]:>15}"
    return _T(f"{{jts}} {level:>5} 1 --- [{thread}] {name:<40} : {msg}", **ov)


_JAVA = [
    _J("INFO", "flt", "{method} {path} -> {status} ({ms} ms) traceId={hex16}"),
    _J("INFO", "ctl", "Processing payment request id={uuid} merchant={merchant} amount={money} {cur}", merchant=_int(1000, 1400)),
    _J("DEBUG", "sql", "select p1_0.id,p1_0.amount,p1_0.currency,p1_0.status from payments p1_0 where p1_0.id=?"),
    _J("INFO", "svc", "Payment {uuid} authorized by {provider} in {ms} ms, authCode={code}", code=lambda r, c: "".join(r.choice(string.ascii_uppercase + string.digits) for _ in range(6))),
    _J("INFO", "fraud", "Fraud score for txn {uuid}: {score} (threshold 0.85)", score=lambda r, c: f"{r.betavariate(1.2, 8):.3f}"),
    _J("INFO", "pub", "Sent ledger event {uuid} to topic payments.ledger partition {part} offset {offset}", thread="kafka-producer-network-thread | payments-1"),
    _J("DEBUG", "hik", "HikariPool-1 - Pool stats (total={t}, active={a}, idle={i}, waiting=0)", thread="HikariPool-1 housekeeper", t=("10", "20"), a=_int(0, 10), i=_int(0, 10)),
    _J("INFO", "kc", "[Consumer clientId=consumer-payments-1, groupId=payments] Committing offsets: payments.requests-{part}@{offset}", thread="ntainer#0-0-C-1"),
    _J("INFO", "bank", "POST https://api.{provider}.com/v2/charges -> {status} in {ms} ms"),
    _J("INFO", "ref", "Refund {uuid} issued for payment {uuid2} amount={money} {cur}"),
    _J("WARN", "svc", "Payment {uuid} declined by {provider}: {reason}", reason=("insufficient_funds", "card_declined", "expired_card", "do_not_honor")),
    _J("INFO", "hook", "Received webhook event {evt} from {provider} id=evt_{hex16} signature=valid", evt=("charge.succeeded", "charge.refunded", "payout.paid", "dispute.created")),
    _J("DEBUG", "hlth", "Database health check passed in {ms} ms", thread="actuator-health-1"),
    _J("INFO", "idem", "Duplicate request detected for idempotency key {uuid}, returning cached response"),
    _J("INFO", "audit", "user={user}@example.com action={action} resource=payment/{uuid} ip={ip}", user=("alice", "bob", "ops-bot", "carol", "dave"), action=("VIEW", "REFUND", "CAPTURE", "VOID")),
    _J("INFO", "fx", "Refreshed {n} exchange rates, EUR/USD={rate}", thread="scheduling-1", rate=lambda r, c: f"{r.uniform(1.03, 1.12):.4f}"),
    _J("WARN", "bank", "Retrying call to {provider} (attempt {a} of 3) after {ms} ms: Read timed out", a=("1", "2")),
    _J("DEBUG", "batch", "HHH000315: Executing batch size: {n}"),
    _J("WARN", "valid", "Validation failed for payment request {uuid}: field 'amount' must be greater than 0"),
    _J("INFO", "job", "Settlement batch {big} completed: {n} transactions, total {money} {cur}", thread="scheduling-1"),
    _J("INFO", "sched", "Scheduled task settlementJob took {ms} ms", thread="scheduling-1"),
    _J("INFO", "tom", "Tomcat started on port 8080 (http) with context path ''", thread="main"),
    _J("INFO", "app", "Started PaymentsApplication in {sec} seconds (process running for {sec2})", thread="main"),
]


def _K(level: str, src: str, msg: str, tid: str = "1", **ov: Any) -> tuple[str, dict[str, Any]]:
    return _T(f"{level}{{klog}} {tid:>7} {src}] {msg}", **ov)


_NGINX = [
    _T('{ip} - - [{nts}] "{method} {wpath} HTTP/{hv}" {status} {bytes} "{ref}" "{ua}" {rl} {rt} [{backend}] [] {podip}:{bport} {bytes2} {rt} {status} {hex32}', hv=("1.1", "1.1", "2.0"), ref=("-", "-", "https://shop.example.com/", "https://www.google.com/"), rl=_int(200, 1800), rt=lambda r, c: f"{r.lognormvariate(-4.0, 1.0):.3f}", bport=("8080", "80", "3000")),
    _T('{ip} - - [{nts}] "GET /static/{asset} HTTP/2.0" {s} {bytes} "https://shop.example.com/" "{ua}" {rl} 0.00{d} [shop-frontend-80] [] {podip}:80 {bytes2} 0.00{d} {s} {hex32}', asset=("js/main.js", "css/app.css", "img/logo.svg", "img/hero.webp", "js/vendor.js"), s=("200", "200", "304"), rl=_int(60, 600), d=_int(1, 9)),
    _T('{ip} - - [{nts}] "POST /api/v1/{ep} HTTP/1.1" {status} {bytes} "-" "{ua}" {rl} {rt} [{backend}] [] {podip}:8080 {bytes2} {rt} {status} {hex32}', ep=("checkout", "cart/items", "orders", "payments/authorize", "login"), rl=_int(400, 4000), rt=lambda r, c: f"{r.lognormvariate(-3.0, 0.8):.3f}"),
    _T('{ip} - - [{nts}] "GET {probe} HTTP/1.1" 404 {b} "-" "{bot}" {rl} 0.000 [] [] - - - - {hex32}', probe=("/wp-login.php", "/.env", "/phpmyadmin/", "/.git/config", "/admin.php", "/cgi-bin/luci"), b=("146", "548"), bot=("Mozilla/5.0 zgrab/0.x", "python-requests/2.31.0", "Mozilla/5.0 (compatible; Nmap Scripting Engine)"), rl=_int(100, 300)),
    _T('{ip} - - [{nts}] "GET {p} HTTP/1.1" 308 164 "-" "{ua}" {rl} 0.000 [{backend}] [] - - - - {hex32}', p=("/", "/login", "/cart"), rl=_int(80, 400)),
    _K("I", "store.go:440", '"Found valid IngressClass" ingress="{ns2}/{ing}" ingressclass="nginx"', tid="7", ns2=("shop", "auth", "monitoring"), ing=("shop", "api", "keycloak", "grafana")),
    _K("I", "event.go:377", 'Event(v1.ObjectReference{{Kind:"Ingress", Namespace:"{ns2}", Name:"{ing}", UID:"{uuid}", APIVersion:"networking.k8s.io/v1", ResourceVersion:"{big}", FieldPath:""}}): type: \'Normal\' reason: \'Sync\' Scheduled for sync', tid="7", ns2=("shop", "auth", "monitoring"), ing=("shop", "api", "keycloak", "grafana")),
    _K("I", "controller.go:193", '"Configuration changes detected, backend reload required"', tid="7"),
    _K("I", "controller.go:213", '"Backend successfully reloaded"', tid="7"),
    _K("I", "status.go:304", '"updating Ingress status" namespace="{ns2}" ingress="{ing}" currentValue=null newValue=[{{"ip":"{pubip}"}}]', tid="7", ns2=("shop", "auth"), ing=("shop", "api", "keycloak")),
    _K("W", "controller.go:1214", 'Service "{ns2}/{svc}" does not have any active Endpoint.', tid="7", ns2=("shop", "auth"), svc=("frontend", "catalog", "keycloak", "checkout")),
    _T('{nerr} [warn] {w}#{w}: *{conn} a client request body is buffered to a temporary file /tmp/nginx/client-body/00000{d}, client: {ip}, server: {host}, request: "POST /api/v1/uploads HTTP/1.1", host: "{host}"', w=_int(24, 40), d=_int(10000, 99999)),
    _T('{nerr} [warn] {w}#{w}: *{conn} upstream server temporarily disabled while reading response header from upstream, client: {ip}, server: {host}, request: "GET {path} HTTP/1.1", upstream: "http://{podip}:8080{path}", host: "{host}"', w=_int(24, 40)),
    _K("I", "leaderelection.go:268", 'successfully acquired lease {deploy}/ingress-nginx-leader', tid="7"),
    _K("I", "nginx.go:{line}", '"Reloading NGINX configuration" checksum="{hex16}"', tid="7"),
    _K("I", "main.go:205", '"Creating API client" host="https://10.96.0.1:443"', tid="7"),
]

_KINDS = ("Deployment", "StatefulSet", "ConfigMap", "Certificate", "Backup", "Database")

_CONTROLLER = [
    _K("I", "controller.go:{line}", '"Reconciling" controller="{kl}" namespace="{ns2}" name="{peer}" reconcileID="{uuid}"', kl=("deployment", "backup", "certificate", "database"), ns2=("shop", "infra", "auth")),
    _K("I", "controller.go:{line}", '"Reconcile successful" controller="{kl}" namespace="{ns2}" name="{peer}" duration="{dur}"', kl=("deployment", "backup", "certificate", "database"), ns2=("shop", "infra", "auth")),
    _K("I", "reflector.go:{line}", '"Watch close" reflector="k8s.io/client-go/informers/factory.go:160" type="*v1.{kind}" totalItems={n}', kind=_KINDS),
    _K("I", "leaderelection.go:281", "successfully renewed lease {ns}/{deploy}-leader"),
    _K("I", "request.go:697", 'Waited for {dur} due to client-side throttling, not priority and fairness, request: GET:https://10.96.0.1:443/api/v1/namespaces/{ns2}/pods?limit=500', ns2=("shop", "infra", "auth")),
    _K("I", "event.go:{line}", '"Event occurred" object="{ns2}/{peer}" fieldPath="" kind="Deployment" apiVersion="apps/v1" type="Normal" reason="ScalingReplicaSet" message="Scaled up replica set {peer}-{rshash} to {r}"', ns2=("shop", "infra"), r=_int(1, 6)),
    _K("I", "status.go:{line}", '"Updated status" kind="{kind}" name="{peer}" replicas={r} readyReplicas={r}', kind=_KINDS, r=_int(1, 6)),
    _K("I", "webhook.go:{line}", '"Admission request" operation="UPDATE" kind="{kind}" namespace="{ns2}" name="{peer}" allowed=true latency="{dur}"', kind=_KINDS, ns2=("shop", "infra")),
    _K("E", "controller.go:{line}", '"Reconciler error" err="Operation cannot be fulfilled on deployments.apps \\"{peer}\\": the object has been modified; please apply your changes to the latest version and try again" controller="deployment" reconcileID="{uuid}"'),
    _K("I", "gc.go:{line}", '"Garbage collecting orphaned object" kind="ConfigMap" name="{peer}-{hex8}"'),
    _K("W", "reflector.go:{line}", 'watch of *v1.{kind} ended with: an error on the server ("unable to decode an event from the watch stream: http2: client connection lost") has prevented the request from succeeding', kind=_KINDS),
    _K("I", "certificates.go:{line}", '"Certificate renewed" name="{peer}-tls" notAfter="2026-{mm}-{dd}T00:00:00Z"', mm=_int(10, 12), dd=_int(10, 28)),
    _K("I", "metrics.go:{line}", '"Starting metrics server" bindAddress=":8080" secure=false'),
    _K("I", "controller.go:{line}", '"Starting workers" controller="{kl}" worker count={w}', kl=("deployment", "backup", "certificate", "database"), w=("1", "2", "4")),
    _K("I", "main.go:{line}", '"starting manager" version="{ver}" gitCommit="{hex8}"'),
]


def _PG(level: str, msg: str, **ov: Any) -> tuple[str, dict[str, Any]]:
    return _T(f"{{jts}} UTC [{{pid}}] {level}:  {msg}", **ov)


_DB = [
    _PG("LOG", "duration: {f} ms  execute <unnamed>: SELECT * FROM {table} WHERE id = {big}", f=lambda r, c: f"{r.lognormvariate(0.5, 1.0):.3f}"),
    _PG("LOG", "connection received: host={podip} port={port}"),
    _PG("LOG", "connection authorized: user={user} database={db} application_name={app}", user=("app", "app", "readonly", "replicator"), db=("shop", "payments", "keycloak"), app=("checkout", "payments", "PostgreSQL JDBC Driver", "psql")),
    _PG("LOG", "disconnection: session time: 0:{m}:{s}.{ms3} user={user} database={db} host={podip} port={port}", m=_int(10, 59), s=_int(10, 59), user=("app", "readonly"), db=("shop", "payments")),
    _PG("LOG", "duration: {f} ms  execute <unnamed>: INSERT INTO {table} (id, created_at, payload) VALUES ($1, $2, $3)", f=lambda r, c: f"{r.lognormvariate(0.2, 0.8):.3f}"),
    _PG("LOG", "automatic analyze of table \"{db}.public.{table}\" system usage: CPU: user: {sec} s, system: {sec2} s, elapsed: {sec3} s", db=("shop", "payments")),
    _PG("LOG", "automatic vacuum of table \"{db}.public.{table}\": index scans: {i}, pages: 0 removed, {big} remain, tuples: {n} removed, {big2} remain", db=("shop", "payments"), i=("0", "1")),
    _PG("LOG", "checkpoint starting: time"),
    _PG("LOG", "checkpoint complete: wrote {n} buffers ({pct}.{d}%); 0 WAL file(s) added, 0 removed, {w} recycled; write={sec} s, sync={sec2} s, total={sec3} s; sync files={n2}, longest=0.00{d} s, average=0.00{d} s; distance={big} kB, estimate={big2} kB", d=_int(1, 9), w=_int(0, 3)),
    _PG("LOG", "temporary file: path \"base/pgsql_tmp/pgsql_tmp{pid}.{n}\", size {big}"),
    _PG("ERROR", "duplicate key value violates unique constraint \"{table}_pkey\""),
    _PG("LOG", "process {pid} still waiting for ShareLock on transaction {big} after 1000.{ms3} ms"),
    _PG("WARNING", "there is no transaction in progress"),
    _PG("LOG", "could not receive data from client: Connection reset by peer"),
    _PG("LOG", "database system is ready to accept connections"),
    _PG("LOG", "starting PostgreSQL 16.{v} on x86_64-pc-linux-gnu, compiled by gcc (Debian 12.2.0-14) 12.2.0, 64-bit", v=_int(1, 6)),
]

_PROFILES: dict[str, list[tuple[str, dict[str, Any]]]] = {
    "web": _WEB,
    "java": _JAVA,
    "nginx": _NGINX,
    "controller": _CONTROLLER,
    "db": _DB,
}

_PROFILE_KEYWORDS = (
    ("nginx", ("nginx", "ingress", "gateway", "envoy", "traefik", "haproxy", "proxy")),
    ("db", ("postgres", "pgbouncer", "mysql", "mariadb", "database", "-db", "db-")),
    ("controller", ("controller", "operator", "manager", "scheduler", "autoscaler")),
    ("java", ("payment", "ledger", "billing", "java", "spring", "keycloak", "kafka")),
    ("web", ("checkout", "cart", "shop", "frontend", "web", "api", "catalog")),
)


def _profile_for(deployment: str, fallback_rng: random.Random) -> str:
    d = deployment.lower()
    for name, words in _PROFILE_KEYWORDS:
        if any(w in d for w in words):
            return name
    return fallback_rng.choice(sorted(_PROFILES))


# --------------------------------------------------------------------------------------
# Anomaly templates: shared ones plus a few per profile.  None of them is a normal one.
# --------------------------------------------------------------------------------------

_GARBLE_CHARS = string.ascii_letters + string.digits + string.punctuation + " \t" + "\ufffd\u00ff\u00fe\u20ac\u00e4\x00\x1b\x7f\x08"


def _garbled(r: random.Random, c: _Ctx) -> str:
    b = c.b
    assert b is not None
    mode = r.random()
    if mode < 0.3:  # pure noise, as from a binary blob written to stdout
        return "".join(r.choice(_GARBLE_CHARS) for _ in range(r.randrange(12, 120)))
    line = b.templates[int(r.random() * len(b.templates))].render(r, c)
    if mode < 0.65:  # a real line with a burst of corrupted characters
        chars = list(line)
        start = r.randrange(len(chars))
        for i in range(start, min(len(chars), start + r.randrange(8, 40))):
            chars[i] = r.choice(_GARBLE_CHARS)
        return "".join(chars)
    # two writes interleaved: a truncated line with another glued onto it
    other = b.templates[int(r.random() * len(b.templates))].render(r, c)
    return line[: r.randrange(5, max(6, len(line)))] + other[r.randrange(0, max(1, len(other) // 2)):]


_GO_FUNCS = ("(*Handler).ServeHTTP", "(*OrderService).Place", "(*CartRepo).Load", "(*Client).Do", "(*Reconciler).Reconcile")
_JAVA_CLASSES = ("PaymentService", "OrderMapper", "LedgerPublisher", "FraudCheckClient", "RefundService", "TokenValidator")

_ANOMALY_COMMON = [
    _T("panic: runtime error: invalid memory address or nil pointer dereference [signal SIGSEGV: segmentation violation code=0x1 addr=0x{a} pc=0x{pc}] goroutine {g} [running]: main.{fn}(0xc000{hx}, {{0x{pc2}, 0xc000{hx2}}}) /app/internal/{pkg}/handler.go:{line} +0x{hy} net/http.HandlerFunc.ServeHTTP(...) /usr/local/go/src/net/http/server.go:2171 net/http.serverHandler.ServeHTTP({{0xc000{hx3}}}) /usr/local/go/src/net/http/server.go:3210 +0x8e", a=_hex(2), pc=_hex(6), pc2=_hex(6), g=_int(20, 9000), fn=_GO_FUNCS, hx=_hex(6), hy=_hex(3), pkg=("api", "orders", "cart", "store")),
    _T("Container {deploy} in pod {pod} was OOMKilled (exit code 137): memory limit {lim}Mi exceeded, restart count {rc}", lim=("256", "512", "1024", "2048"), rc=_int(1, 12)),
    _T("{iso} ERROR failed to connect to {peer}: dial tcp {podip}:{dport}: connect: connection refused", dport=("5432", "6379", "8080", "9092", "3306")),
    _T('Exception in thread "{thread}" java.lang.NullPointerException: Cannot invoke "{cls}.{m}()" because "{v}" is null at com.example.{p}.{cls}.{m}({cls}.java:{line}) at com.example.{p}.{cls2}.handle({cls2}.java:{line2}) at org.springframework.web.servlet.FrameworkServlet.service(FrameworkServlet.java:885) at java.base/java.lang.Thread.run(Thread.java:1583)', cls=_JAVA_CLASSES, cls2=_JAVA_CLASSES, m=("getAmount", "getCustomer", "getId", "toDto"), v=("request", "customer", "this.client", "order"), p=("payments", "orders", "ledger")),
    _T("fatal error: concurrent map writes goroutine {g} [running]: runtime.throw({{0x{pc}, 0x15}}) /usr/local/go/src/runtime/panic.go:1023 +0x5c runtime.mapassign_faststr(0x{pc2}, 0xc000{hx}, {{0xc000{hx2}, 0x24}}) /usr/local/go/src/runtime/map_faststr.go:223 +0x3c5", g=_int(20, 9000), pc=_hex(6), pc2=_hex(6), hx=_hex(6)),
    _T("{iso} FATAL could not write to /var/lib/{deploy}/data/{hex8}.tmp: no space left on device"),
    _T('Liveness probe failed: Get "http://{podip}:8080/healthz": context deadline exceeded (Client.Timeout exceeded while awaiting headers)'),
    _T("Back-off restarting failed container {deploy} in pod {pod}_{ns}({uuid})"),
    _T("{iso} ERROR http: TLS handshake error from {ip}:{port}: remote error: tls: bad certificate"),
    _T("{deploy}[1]: segfault at {a} ip {b} sp {c} error 4 in libc.so.6[{d}+{e}]", a=_hex(12), b=_hex(12), c=_hex(12), d=_hex(12), e=("28000", "165000", "1b5000")),
    _T("{iso} ERROR unexpected EOF reading response from {peer}: read tcp {podip}:{port}->{podip2}:8080: read: connection reset by peer"),
    _T("{garbled}", garbled=_garbled),
    _T("{garbled}", garbled=_garbled),
]

_ANOMALY_PROFILE: dict[str, list[tuple[str, dict[str, Any]]]] = {
    "web": [
        _T('{iso} ERROR db query failed table={table} error="pq: sorry, too many clients already" duration={slowdur}'),
        _T("{iso} ERROR kafka producer: kafka: client has run out of available brokers to talk to (Is your cluster reachable?) topic={topic}"),
    ],
    "java": [
        _J("ERROR", "hik", "HikariPool-1 - Connection is not available, request timed out after 30000ms. java.sql.SQLTransientConnectionException: HikariPool-1 - Connection is not available, request timed out after 30000ms. at com.zaxxer.hikari.pool.HikariPool.createTimeoutException(HikariPool.java:696) at com.zaxxer.hikari.pool.HikariPool.getConnection(HikariPool.java:181)"),
        _J("ERROR", "svc", "Unexpected error processing payment {uuid} java.lang.OutOfMemoryError: Java heap space at java.base/java.util.Arrays.copyOf(Arrays.java:3537) at java.base/java.lang.AbstractStringBuilder.ensureCapacityInternal(AbstractStringBuilder.java:228) at com.fasterxml.jackson.core.util.TextBuffer.contentsAsString(TextBuffer.java:496)"),
    ],
    "nginx": [
        _T('{nerr} [error] {w}#{w}: *{conn} upstream timed out (110: Connection timed out) while reading response header from upstream, client: {ip}, server: {host}, request: "GET {path} HTTP/1.1", upstream: "http://{podip}:8080{path}", host: "{host}"', w=_int(24, 40)),
        _T('{nerr} [error] {w}#{w}: *{conn} connect() failed (111: Connection refused) while connecting to upstream, client: {ip}, server: {host}, request: "POST /api/v1/checkout HTTP/1.1", upstream: "http://{podip}:8080/api/v1/checkout", host: "{host}"', w=_int(24, 40)),
        _T("{nerr} [alert] 1#1: worker process {w} exited on signal 11 (core dumped)", w=_int(24, 40)),
    ],
    "controller": [
        _K("E", "leaderelection.go:332", 'error retrieving resource lock {ns}/{deploy}-leader: Get "https://10.96.0.1:443/apis/coordination.k8s.io/v1/namespaces/{ns}/leases/{deploy}-leader": dial tcp 10.96.0.1:443: connect: connection refused'),
        _K("F", "main.go:{line}", '"failed to start manager" err="failed to wait for caches to sync: timed out waiting for cache to be synced"'),
    ],
    "db": [
        _PG("FATAL", "the database system is in recovery mode"),
        _PG("PANIC", 'could not write to file "pg_wal/xlogtemp.{pid}": No space left on device'),
        _PG("FATAL", "remaining connection slots are reserved for non-replication superuser connections"),
    ],
}


# Built once at import, so a broken template fails loudly and early.  _Tpl is stateless.
_BUILT: dict[str, list[_Tpl]] = {
    p: [_Tpl(f"{p}:{i:02d}", *spec) for i, spec in enumerate(specs)] for p, specs in _PROFILES.items()
}
_BUILT_ANOMALY_COMMON = [_Tpl(f"anomaly:{i:02d}", *spec) for i, spec in enumerate(_ANOMALY_COMMON)]
_BUILT_ANOMALY: dict[str, list[_Tpl]] = {
    p: [_Tpl(f"anomaly:{p}:{i:02d}", *spec) for i, spec in enumerate(specs)] for p, specs in _ANOMALY_PROFILE.items()
}


# --------------------------------------------------------------------------------------
# Batches
# --------------------------------------------------------------------------------------


def parse_batch(batch: str) -> tuple[str, str, str]:
    """Split ``"cluster/namespace/deployment"`` into its three non-empty parts."""
    parts = batch.split("/")
    if len(parts) != 3 or not all(p.strip() for p in parts):
        raise ValueError(f"batch must be 'cluster/namespace/deployment', got {batch!r}")
    return parts[0], parts[1], parts[2]


class _Batch:
    def __init__(self, name: str, seed: int, all_deployments: list[tuple[str, str]]) -> None:
        self.name = name
        self.cluster, self.namespace, self.deployment = parse_batch(name)
        brng = random.Random(f"logloop-demo:{seed}:{name}")
        self.profile = _profile_for(self.deployment, brng)
        rs = _k8s_suffix(brng, 9 if brng.random() < 0.3 else 10)
        self.pods = [f"{self.deployment}-{rs}-{_k8s_suffix(brng, 5)}" for _ in range(brng.randint(2, 4))]
        others = [d for _, d in all_deployments if d != self.deployment]
        self.peers = sorted(set(others) | {"frontend", "catalog", "inventory", "pricing", "redis", "postgres"})
        self.backends = sorted({f"{ns}-{d}-{'80' if d == 'frontend' else '8080'}" for ns, d in all_deployments if d != self.deployment}
                               | {"shop-frontend-80", "shop-catalog-8080", "auth-keycloak-8080"})
        # Templates: the profile's list, lightly reshuffled per batch, Zipf-weighted by rank.
        built = _BUILT[self.profile]
        order = sorted(range(len(built)), key=lambda i: i + brng.uniform(-2.5, 2.5))
        self.templates = [built[i] for i in order]
        s = brng.uniform(1.1, 1.4)
        self.cum = list(itertools.accumulate(1.0 / (k + 1) ** s for k in range(len(self.templates))))
        self.anomalies = _BUILT_ANOMALY_COMMON + _BUILT_ANOMALY[self.profile]
        self.acum = list(itertools.accumulate(brng.uniform(0.5, 2.0) for _ in self.anomalies))
        self.volume = brng.uniform(0.6, 1.4)  # relative share of this batch's lines


BURST_FACTOR = 50   # how many times as often the burst message is written in its hour
BURST_RANK = 3      # which of the first batch's templates bursts (0: its most frequent)


def burst_template(batches: Sequence[str] | None = None, seed: int = 0) -> str:
    """The key of the template that bursts (see `iter_records`)."""
    names = list(DEFAULT_BATCHES if batches is None else batches)
    b = _Batch(names[0], seed, [(parse_batch(n)[1], parse_batch(n)[2]) for n in names])
    return b.templates[min(BURST_RANK, len(b.templates) - 1)].key


def default_start_ms(hours: int, now_ms: int | None = None) -> int:
    """Start of the current UTC hour minus ``hours`` hours (the last full hours)."""
    now = int(time.time() * 1000) if now_ms is None else now_ms
    return (now // HOUR_MS - hours) * HOUR_MS


def _check_args(hours: int, lines_per_hour: int, anomaly_share: float, incident_share: float | None = None) -> None:
    if hours < 0:
        raise ValueError("hours must be >= 0")
    if lines_per_hour < 0:
        raise ValueError("lines_per_hour must be >= 0")
    if not 0.0 <= anomaly_share <= 1.0:
        raise ValueError("anomaly_share must lie in [0, 1]")
    if incident_share is not None and not 0.0 <= incident_share <= 1.0:
        raise ValueError("incident_share must lie in [0, 1]")


def iter_records(
    *,
    start_ms: int,
    hours: int = 3,
    lines_per_hour: int = 2000,
    batches: Sequence[str] | None = None,
    anomaly_share: float = 0.01,
    seed: int = 0,
    incident_share: float | None = None,
    burst_hour: int | None = None,
    burst_factor: int = BURST_FACTOR,
) -> Iterator[tuple[int, dict, str]]:
    """Yield ``(hour_index, record, template_key)`` in time order, lazily.

    ``lines_per_hour`` lines (all batches together) per hour; within each hour the
    times are uniform at random.  ``template_key`` names the template that produced
    the line (for tests and evaluation; it is not written to files).

    ``burst_hour``: in that hour, one normal message of the first batch (its BURST_RANK-th most
    frequent template) is written ``burst_factor`` times as often, each copy a millisecond after
    the last: an incident that line scores miss (every line is a normal one) and template counts see.

    ``incident_share``: the last hour is an incident that line scores see: that share of its lines
    are anomalies (the hours before it are the same as without one).
    """
    _check_args(hours, lines_per_hour, anomaly_share, incident_share)
    names = list(DEFAULT_BATCHES if batches is None else batches)
    if not names:
        raise ValueError("batches must not be empty")
    if len(set(names)) != len(names):
        raise ValueError("batches must be distinct")
    deployments = [(parse_batch(n)[1], parse_batch(n)[2]) for n in names]
    bs = [_Batch(n, seed, deployments) for n in names]
    bcum = list(itertools.accumulate(b.volume for b in bs))
    btotal = bcum[-1]

    r = random.Random(seed)
    rnd = r.random
    bisect_right = bisect.bisect_right
    c = _Ctx()
    burst = bs[0].templates[min(BURST_RANK, len(bs[0].templates) - 1)]
    for h in range(hours):
        share = incident_share if incident_share is not None and h == hours - 1 else anomaly_share
        hs = start_ms + h * HOUR_MS
        times = sorted(hs + int(rnd() * HOUR_MS) for _ in range(lines_per_hour))
        for t in times:
            b = bs[bisect_right(bcum, rnd() * btotal)]
            c.t = t
            c.b = b
            pod = b.pods[int(rnd() * len(b.pods))]
            c.pod = pod
            anomaly = rnd() < share
            if anomaly:
                tpl = b.anomalies[bisect_right(b.acum, rnd() * b.acum[-1])]
            else:
                tpl = b.templates[bisect_right(b.cum, rnd() * b.cum[-1])]
            rec = {
                "time": t,
                "log": tpl.render(r, c),
                "cluster_id": b.cluster,
                "kubernetes": {"namespace_name": b.namespace, "pod_name": pod},
                "deployment": b.deployment,
                "anomaly": anomaly,
            }
            yield h, rec, tpl.key
            if h == burst_hour and tpl is burst:
                for k in range(1, burst_factor):
                    c.t = min(t + k, hs + HOUR_MS - 1)  # in the same hour
                    yield h, {**rec, "time": c.t, "log": tpl.render(r, c)}, tpl.key


def _hour_file_name(hour_start_ms: int) -> str:
    return "logs-" + time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(hour_start_ms // 1000)) + ".jsonl"


def generate(
    out_dir: str | Path,
    *,
    start_ms: int,
    hours: int = 3,
    lines_per_hour: int = 2000,
    batches: list[str] | None = None,
    anomaly_share: float = 0.01,
    seed: int = 0,
    file_name: str | None = None,
    incident_share: float | None = None,
    burst_hour: int | None = None,
) -> dict:
    """Write synthetic logs as JSON Lines into ``out_dir`` and return a summary.

    One file per hour (``logs-YYYYMMDDTHHMMSSZ.jsonl``, named after the hour's start
    in UTC) or, with ``file_name``, everything in that one file.  Lines are in time
    order within each file.  Returns ``{"files": [paths], "lines": N,
    "anomalies": K, "batches": {batch: lines}}``.  ``incident_share``: see ``iter_records``.
    """
    _check_args(hours, lines_per_hour, anomaly_share, incident_share)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    names = list(DEFAULT_BATCHES if batches is None else batches)
    per_batch = {n: 0 for n in names}
    files: list[str] = []
    lines = anomalies = 0

    def open_file(path: Path):
        files.append(str(path))
        return open(path, "wb", buffering=1 << 20)

    fh = None
    cur_hour = -1
    try:
        if file_name is not None:
            fh = open_file(out / file_name)
        records = iter_records(start_ms=start_ms, hours=hours, lines_per_hour=lines_per_hour,
                               batches=names, anomaly_share=anomaly_share, seed=seed, burst_hour=burst_hour,
                               incident_share=incident_share)
        for h, rec, _key in records:
            if file_name is None and h != cur_hour:
                if fh is not None:
                    fh.close()
                cur_hour = h
                fh = open_file(out / _hour_file_name(start_ms + h * HOUR_MS))
            fh.write(_dumps_line(rec))  # type: ignore[union-attr]
            lines += 1
            anomalies += rec["anomaly"]
            per_batch[f"{rec['cluster_id']}/{rec['kubernetes']['namespace_name']}/{rec['deployment']}"] += 1
    finally:
        if fh is not None:
            fh.close()
    return {"files": files, "lines": lines, "anomalies": anomalies, "batches": per_batch}


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m scripts.demo_logs", description="Write synthetic Kubernetes-style logs (JSON Lines, Opni shape).")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--hours", type=int, default=3)
    p.add_argument("--lines-per-hour", type=int, default=2000, help="lines per hour, all batches together")
    p.add_argument("--start-ms", type=int, default=None, help="epoch ms of the first hour (default: start of the current UTC hour minus --hours)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--anomaly-share", type=float, default=0.01)
    p.add_argument("--incident-share", type=float, default=None,
                   help="make the last hour an incident: this share of its lines are anomalies")
    p.add_argument("--batch", dest="batches", action="append", default=None, metavar="CLUSTER/NAMESPACE/DEPLOYMENT", help="repeatable; default: " + ", ".join(DEFAULT_BATCHES))
    p.add_argument("--file-name", default=None, help="write everything into this one file instead of one file per hour")
    p.add_argument("--burst-hour", type=int, default=None, metavar="H",
                   help=f"in hour H (0 = the first), one normal message of the first batch repeats {BURST_FACTOR}x as often")
    a = p.parse_args(argv)
    start = default_start_ms(a.hours) if a.start_ms is None else a.start_ms
    try:
        summary = generate(a.out, start_ms=start, hours=a.hours, lines_per_hour=a.lines_per_hour, batches=a.batches,
                           anomaly_share=a.anomaly_share, seed=a.seed, file_name=a.file_name, burst_hour=a.burst_hour,
                           incident_share=a.incident_share)
    except ValueError as e:
        p.error(str(e))
    summary["start_ms"] = start
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
