"""Batch names that look alike: one NFC name per spelling, invisible characters refused or escaped."""

import io
import json
import unicodedata

import pytest

from ops.fetch import local_files
from ops.fetch.records import RecordFormat
from ops.mask.data_stage import summarize_windows
from ops.naming import InvalidName, batch_key, shown_name, validate_batch_name
from ops.windows import Windows

NFC = unicodedata.normalize("NFC", "café")
NFD = unicodedata.normalize("NFD", "café")
HOUR = 3_600_000


def test_nfc_and_nfd_spellings_are_one_name():
    assert NFC != NFD
    assert validate_batch_name(NFD) == validate_batch_name(NFC) == NFC
    assert batch_key(NFD) == batch_key(NFC)


@pytest.mark.parametrize("char", ["\u202e", "\u202d", "\u2066", "\u200b", "\u200d", "\u2060", "\ufeff", "\u00ad"])
def test_invisible_and_direction_changing_characters_are_refused(char):
    with pytest.raises(InvalidName, match=f"U\\+{ord(char):04X}") as err:
        validate_batch_name(f"pay{char}ments")
    assert char not in str(err.value)  # the message shows it escaped


def test_shown_name_escapes_what_does_not_show_itself():
    assert shown_name("a\u202eb\u200bc\x1bd") == "a\\u202eb\\u200bc\\u001bd"
    assert shown_name("café/ns 1") == "café/ns 1"


@pytest.mark.parametrize("field", ["cluster_id", "kubernetes.namespace_name"])  # fast paths (msgspec, pyarrow)
def test_log_records_of_both_spellings_land_in_one_nfc_batch(tmp_path, field):
    fmt = RecordFormat(batch_fields=(field,))
    logs = tmp_path / "logs"
    logs.mkdir()

    def doc(t, batch):
        return {"time": t, "log": "hello", **({field: batch} if "." not in field else {"kubernetes": {"namespace_name": batch}})}

    lines = [doc(i, NFD if i % 2 else NFC) for i in range(100)] + [doc(1, "x\u202ey")]
    (logs / "a.jsonl").write_text("".join(json.dumps(d) + "\n" for d in lines))
    windows = Windows([(0, HOUR)])
    result = summarize_windows(local_files.plan_shards(logs, fmt, windows), windows)
    assert {b: s.total for b, s in result.windows[0].summaries.items()} == {NFC: 100}
    assert result.bad.counts["bad_batch"] == 1 and "U+202E" in result.bad.examples[0]


def test_tables_print_names_escaped():
    from orchestration.cli.common import print_table

    out = io.StringIO()
    print_table([("BATCH", "N"), ("abc\u202edef", 1)], out=out)
    assert "abc\\u202edef" in out.getvalue() and "\u202e" not in out.getvalue()


def test_cli_batch_arguments_are_nfc_or_a_one_line_error():
    from orchestration.cli.common import batch_arg

    assert batch_arg(NFD) == NFC
    with pytest.raises(Exception, match="U\\+202E"):
        batch_arg("a\u202eb")
