"""Masking: every rule masks what it should (positive) and leaves what it should not (negative)."""

from __future__ import annotations

import collections
import csv
import pytest

from ops.mask.masking import Masker, load_rules, tokens, validate_rules



@pytest.fixture(scope="module")
def masker():
    return Masker()


# (rule, raw text, expected masked text). One positive and at least one negative per rule.
CASES = [
    ("url", "GET https://example.com/a/b?x=1&y=2 done", "get <url> done"),
    ("url", "fetch hdfs://nn:8020/user/x.", "fetch <url> ."),
    ("url", "proto: http only", "proto : http only"),
    ("email", "mail to Alice.Smith+x@mail.example.org now", "mail to <email> now"),
    ("email", "user@localhost logged", "user @ localhost logged"),
    ("uuid", "id 123e4567-e89b-12d3-a456-426614174000 ok", "id <uuid> ok"),
    ("uuid", "not-a-uuid-at-all", "not - a - uuid - at - all"),
    ("datetime_iso", "at 2023-01-02T03:04:05.678Z start", "at <date> start"),
    ("datetime_iso", "2015-10-18 18:01:47,978 INFO x", "<date> info x"),
    ("datetime_iso", "2005-06-03-15.42.50.675872 R02", "<date> <token>"),
    ("datetime_klog", "I1123 07:20:28.123456 controller started", "<date> controller started"),
    ("datetime_klog", "x1123 07:20:28 boom", "<token> <time> boom"),
    ("datetime_syslog", "Jun 14 15:16:01 combo sshd", "<date> combo sshd"),
    ("datetime_syslog", "Sun Dec 04 04:47:44 2005 notice", "<date> notice"),
    ("datetime_syslog", "jun is a month", "jun is a month"),
    ("datetime_rfc2822", "Tue, 14 Jun 2022 15:16:01 +0000 sent", "<date> sent"),
    ("datetime_clf", "[10/Oct/2000:13:55:36 -0700] GET", "[ <date> ] get"),
    ("date", "on 2015-10-18 and 2015/10/18 and 17/06/09", "on <date> and <date> and <date>"),
    ("date", "ratio 3/4 of 10", "ratio <num> / <num> of <num>"),
    ("mac", "link 00:1A:2B:3C:4D:5E and 00-1a-2b-3c-4d-5e and 001a.2b3c.4d5e", "link <mac> and <mac> and <mac>"),
    ("mac", "words aa:bb only", "words aa : bb only"),
    ("hexbytes", "fp ff:f2:9c:00:4b:1a:0c:3d end", "fp <hex> end"),
    ("ipv6", "from fe80::1 and 2001:0db8:85a3:0000:0000:8a2e:0370:7334 and ::ffff:10.0.0.1", "from <ipv6> and <ipv6> and <ipv6>"),
    ("ipv6", "namespace::name a::b", "namespace : : name a : : b"),
    ("time", "took place at 18:01:47,978", "took place at <time>"),
    ("time", "ratio 1:2", "ratio <num> : <num>"),
    ("cidr", "allow 10.0.0.0/24 only", "allow <cidr> only"),
    ("cidr", "10.0.0.0/33", "<ip> <path>"),  # /33 is no prefix length
    ("ipv4", "from 10.251.73.220:50010 to 192.168.0.1", "from <ip> to <ip>"),
    ("ipv4", "version 1.2.3 and 999.1.1.1", "version <num> and <num>"),
    ("gofile", "E1123 07:20:28.1 main.go:123] pkg/foo/bar.go:45 failed", "<date> <gofile> ] <gofile> failed"),
    ("gofile", "the go: command", "the go : command"),
    ("path", "open /var/log/syslog.1 and ./a/b and C:\\Windows\\x.dll", "open <path> and <path> and <path>"),
    ("path", "either/or and a / b", "either / or and a / b"),
    # a URL's path keeps its query string, however many parameters: one value either way
    ("path", '"GET /v2/servers/detail?changes-since=2017-05-14T12%3A00&limit=5 HTTP/1.1"', '" get <path> http / <num> "'),
    ("path", "what? /a/b? yes", "what ? <path> ? yes"),
    ("pod", "pod nginx-7d9c8b5f4-x2k9p and fluentd-x2k9p ready", "pod nginx - <pod> and fluentd - <pod> ready"),
    ("pod", "pod kube-proxy and cert-manager ready", "pod kube - proxy and cert - manager ready"),
    ("hex", "addr 0x1F and 0xdeadbeef hash 3f2a9c01ab", "addr <hex> and <hex> hash <hex>"),
    ("hex", "words deadbeef facade cafebabe", "words deadbeef facade cafebabe"),
    ("size", "stored 384.0 B in memory (estimated size 5.2 KB, free 1.5GiB)", "stored <size> in memory ( estimated size <size> , free <size> )"),
    ("size", "read 1024 bytes, block b 5", "read <size> , block b <num>"),
    ("size", "5 bits and v2.kb and 3 bees", "<num> bits and <token> . kb and <num> bees"),
    ("duration", "took 150ms then 2.5s then 1h30m and 10us", "took <duration> then <duration> then <duration> and <duration>"),
    ("duration", "the ms and s units", "the ms and s units"),
    # a number with a unit word, and a bound written against it: "<1 sec" is one value, as "00:01" is
    ("duration", "lifetime <1 sec, took 5 seconds, up 3 days, >2 min", "lifetime <duration> , took <duration> , up <duration> , <duration>"),
    ("duration", "5 secretaries and a<1 sec and 2 s", "<num> secretaries and a < <num> sec and <num> s"),
    ("severity", "2026-01-02 ERROR [main] boom", "<date> <severe> [ main ] boom"),
    ("severity", "RAS KERNEL FATAL data TLB error interrupt", "ras kernel <severe> data tlb error interrupt"),
    ("severity", "instruction cache parity error corrected", "instruction cache parity error corrected"),
    ("severity", "ERROR_CODE=5 ERR.x FATAL-1 Error", "error_code = <num> err . x <token> error"),
    ("num", "retry 3 of -7 at 3.14", "retry <num> of <num> at <num>"),
    ("num", "no numbers here", "no numbers here"),
    ("token", "block blk_-1234 attempt appattempt_1445_0020_01 node r02-m1-n0-c", "block <token> attempt <token> node <token>"),
    ("token", "plain words_only here", "plain words_only here"),
]


@pytest.mark.parametrize("rule,raw,expected", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_rule(masker, rule, raw, expected):
    assert masker.mask(raw) == expected


def test_every_rule_has_a_case():
    names = {r["name"] for r in load_rules()}
    assert names == {c[0] for c in CASES}


def test_ansi_is_stripped_and_text_lower_cased(masker):
    assert masker.mask("\x1b[31mWarning\x1b[0m Disk \x1b]0;title\x07FULL") == "warning disk full"
    assert masker.mask("\x1b[31mERROR\x1b[0m Disk FULL") == "<severe> disk full"  # a level word, seen as written


def test_placeholders_survive_later_rules(masker):
    # <ipv6> contains a digit; the token rule must not eat the placeholder's name
    assert masker.mask("peer fe80::1 up") == "peer <ipv6> up"
    assert tokens(masker.mask("peer fe80::1 up")) == ["peer", "<ipv6>", "up"]


def test_tokenization(masker):
    assert masker.mask("user=bob,  status:ok") == "user = bob , status : ok"
    assert tokens("") == []


def test_case_sensitive_rules_see_the_line_as_written_and_run_first():
    rules = [{"name": "lvl", "pattern": r"\bWARN\b", "replacement": "<warnlevel>", "case_sensitive": True},
             {"name": "word", "pattern": r"\bwarn\b", "replacement": "<word>"}]
    assert Masker(rules).mask("WARN warn Warn") == "<warnlevel> <word> <word>"
    with pytest.raises(ValueError, match="'case_sensitive' must be true or false"):
        Masker([{**rules[0], "case_sensitive": "yes"}])


def test_custom_rules_are_data():
    m = Masker([{"name": "secret", "pattern": r"secret\w+", "replacement": "<secret>"}])
    assert m.mask("got SecretABC 12") == "got <secret> 12"
    assert m.rules[0]["name"] == "secret"


@pytest.mark.parametrize(
    "rules,message",
    [
        ({"name": "x"}, "must be a list"),
        ([{"name": "x", "pattern": "a"}], "masking rule #1 'x': missing key 'replacement'"),
        ([{"name": "x", "pattern": "(", "replacement": "y"}], "bad regex"),
        ([{"name": "x", "pattern": "a*", "replacement": "y"}], "matches the empty string"),
        ([{"name": "x", "pattern": "a", "replacement": r"\9"}], "bad replacement"),
        ([{"name": "x", "pattern": "a", "replacement": "y"}, {"name": "x", "pattern": "b", "replacement": "z"}],
         "masking rule #2 'x': duplicate name"),
        ([{"name": "x", "pattern": "a", "replacement": "y", "colour": "red"}], "unknown key"),
        ([{"name": "x", "pattern": "a", "replacement": "y", "requires": "a"}], "'requires' must be"),
    ],
)
def test_bad_rules_are_rejected_with_the_rule_named(rules, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace("*", r"\*")):
        validate_rules(rules)


def grouping_accuracy(masker, loghub, system):
    path = loghub / system / f"{system}_2k.log_structured_corrected.csv"
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    predicted = [masker.mask(r["Content"]) for r in rows]
    truth = [r["EventTemplate"] for r in rows]
    by_pred, by_true = collections.defaultdict(set), collections.defaultdict(set)
    for i, (p, t) in enumerate(zip(predicted, truth)):
        by_pred[p].add(i)
        by_true[t].add(i)
    return sum(by_pred[p] == by_true[t] for p, t in zip(predicted, truth)) / len(rows)


# Masking alone (no template mining) groups these systems nearly as well as NuLog's published
# parser figures (HDFS 0.997, BGL 0.979, Spark 0.998, Apache 1.0). Measured: 0.9975, 0.9605,
# 1.0, 1.0, 0.9945; floors leave a little room for rule changes.
@pytest.mark.parametrize("system,floor", [("HDFS", 0.99), ("BGL", 0.95), ("Spark", 0.99), ("Apache", 0.99), ("Zookeeper", 0.98)])
def test_masking_groups_loghub_lines_by_template(masker, loghub, system, floor):
    assert grouping_accuracy(masker, loghub, system) >= floor


# ---- piecewise masking (each whitespace-separated piece masked once, then remembered)
# must give exactly what masking the whole line gives.

def test_default_rules_mask_piecewise_and_equal_the_whole_line_on_every_loghub_line(loghub):
    m = Masker()
    assert m._piecewise
    lines = {line for f in sorted(loghub.glob("*/*_2k.log")) for line in f.read_text(errors="replace").splitlines()}
    assert len(lines) > 10_000
    differ = [line for line in lines if m._mask_piecewise(line.lower()) != m._mask_lowered(line.lower())]
    assert differ == []
    assert 0 < len(m._pieces) < sum(len(line.split()) for line in lines)  # pieces are shared
    assert [m.mask(line) for line in sorted(lines)[:500]] == [m._mask_lowered(m._case_sensitive(line).lower())
                                                              for line in sorted(lines)[:500]]


FRAGMENTS = [
    "jun", "Jun", "14", "4", "15:16:01", "15:16:01.123", "2005", "2015-10-18", "18:01:47,978", "i1123",
    "07:20:28.123456", "sun", "Sun,", "dec", "04", "+0000", "-0700", "gmt", "utc", "z", "10/oct/2000:13:55:36",
    "17/06/09", "20:10:40", "14,", "mon,", "tue", "C:\\Program", "Files\\x", "/var/log/x.log", "10.0.0.1:80",
    "10.0.0.0/24", "::1", "fe80::1%eth0", "00:1a:2b:3c:4d:5e", "0xdeadbeef", "3f2a9c01", "150ms", "blk_-123",
    "user=bob,", "http://a.b/c?d=1", "a@b.io", "123e4567-e89b-12d3-a456-426614174000", "nginx-7d9c8b5f4-x2k9p",
    "main.go:12", "<num>", "x<y", "-", ",", "", "ok", "2022", "Tue,", "12", "t", "2015-10-18t18:01:47z",
    "5.2", "kb", "b", "bytes", "384", "gib", "1.5gb", "B,", "mb)", "<1", "sec", "seconds", "days", "hours,", "min",
    ">5", "/v2/x?a=1&b=2", "/a?", "3",
]
SEPARATORS = [" ", " ", " ", "  ", "\t", " \t ", "\u00a0", "\n", "   "]


def test_piecewise_equals_whole_line_on_generated_lines():
    import random

    m, rng = Masker(), random.Random(7)
    for _ in range(20_000):
        parts = [rng.choice(FRAGMENTS) for _ in range(rng.randint(1, 9))]
        line = "".join(p + rng.choice(SEPARATORS) for p in parts)
        if rng.random() < 0.3:
            line = rng.choice(SEPARATORS) + line
        assert m._mask_piecewise(line.lower()) == m._mask_lowered(line.lower()), repr(line)


@pytest.mark.parametrize(
    "rule,line",
    [
        ({"name": "two", "pattern": r"user \w+", "replacement": "<user>"}, "user bob"),      # a space
        ({"name": "ws", "pattern": r"a\sb", "replacement": "<ab>"}, "a b"),                   # \s
        ({"name": "any", "pattern": r"a.b", "replacement": "<ab>"}, "a b"),                   # . matches a space
        ({"name": "neg", "pattern": r"a[^x]b", "replacement": "<ab>"}, "a b"),                # so does [^x]
        ({"name": "start", "pattern": r"^warn", "replacement": "<w>"}, "ok warn"),            # the line's start
        ({"name": "end", "pattern": r"\d+$", "replacement": "<n>"}, "7 ok"),                 # the line's end
        ({"name": "behind", "pattern": r"(?<= )x\d", "replacement": "<x>"}, "a x1"),         # looks at a space
        ({"name": "hint", "pattern": r"secret\w+", "replacement": "<s>", "requires": ["zzz"]}, "zzz secretx"),
        # an output that is not a <placeholder> can make a date that was not there
        ({"name": "plain", "pattern": r"secret\w+", "replacement": "jun"}, "secretx 14 15:16:01"),
    ],
)
def test_piecewise_is_off_where_it_would_differ(rule, line):
    rules = [rule] + load_rules()
    m = Masker(rules)
    assert m._piecewise is False
    m._piecewise = True  # what piecewise masking would give: a different result
    assert m._mask_piecewise(line) != m._mask_lowered(line)
    assert Masker(rules).mask(line) == m._mask_lowered(line)


@pytest.mark.parametrize("rule", [
    {"name": "secret", "pattern": r"secret\w+", "replacement": "<secret>"},
    {"name": "kv", "pattern": r"(?<![\w-])key=\w+(?!\w)", "replacement": "<kv>"},
    {"name": "bound", "pattern": r"\bid\d+\b", "replacement": "<id>"},
])
def test_piecewise_stays_on_for_rules_that_cannot_see_whitespace(rule):
    m = Masker([rule] + load_rules())
    assert m._piecewise is True
    line = "user bob secretx key=1 id42 jun 14 15:16:01 end"
    assert m.mask(line) == m._mask_lowered(line)


def test_high_cardinality_text_switches_to_whole_lines_for_a_while():
    import random

    from ops.mask import masking

    m, rng = Masker(), random.Random(3)
    words = ["".join(rng.choices("abcdefghijklmnopqrstuvwxyz", k=8)) for _ in range(8 * masking.PROBE_LINES)]
    lines = [" ".join(words[i : i + 7]) + f" took {i}ms" for i in range(0, len(words) - 8, 4)]
    for line in lines[: masking.PROBE_LINES]:
        assert m.mask(line) == m._mask_lowered(line)
    assert m._whole_for == masking.WHOLE_LINES  # most pieces were new: piecewise did not pay
    assert [m.mask(line) for line in lines] == [m._mask_lowered(line) for line in lines]
    repeated = Masker()
    for _ in range(masking.PROBE_LINES):
        repeated.mask(lines[0])
    assert repeated._whole_for == 0


def test_a_changed_default_date_rule_turns_piecewise_off():
    rules = load_rules()
    for r in rules:
        if r["name"] == "datetime_syslog":
            r["pattern"] = r["pattern"].replace(" +", " {1,3}")
    assert Masker(rules)._piecewise is False
    assert Masker(load_rules())._piecewise is True
