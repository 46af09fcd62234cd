"""Reading input files: JSONL that is not UTF-8, nested too deeply, BOM-prefixed, torn, huge or unreadable;
line-by-line reading that stops at ``limit``; countdown rows with fields of the wrong type."""
from __future__ import annotations

import json
from itertools import islice
from pathlib import Path

import pytest

from ahalab.runs import DataError, iter_jsonl, read_jsonl
from ahalab.tasks import get_task
from ahalab.tasks.base import TaskError

ROWS = [{"question": "1 + 2?", "answer": "3", "numbers": [1, 2], "target": 3},
        {"question": "2 * 3?", "answer": "6", "numbers": [2, 3], "target": 6}]


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def good_lines() -> bytes:
    return b"".join(json.dumps(row).encode() + b"\n" for row in ROWS)


def test_non_utf8_and_deep_nesting_are_data_errors_naming_file_and_line(tmp_path):
    latin1 = write(tmp_path / "latin1.jsonl", good_lines() + '{"question": "café"}\n'.encode("latin-1"))
    with pytest.raises(DataError, match=r"latin1.jsonl:3: not UTF-8 text \(byte 18 of the line is 0xe9\)"):
        read_jsonl(latin1)
    deep = write(tmp_path / "deep.jsonl", good_lines() + b'{"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}\n")
    with pytest.raises(DataError, match=r"deep.jsonl:3: malformed JSON \(nested too deeply\)"):
        read_jsonl(deep)
    huge = write(tmp_path / "int.jsonl", b'{"a": ' + b"9" * 5000 + b"}\n")
    with pytest.raises(DataError, match=r"int.jsonl:1: malformed JSON \(.*digits"):
        read_jsonl(huge)
    with pytest.raises(DataError, match=r"cannot read"):
        read_jsonl(tmp_path)  # a directory


def test_utf8_bom_is_accepted_on_the_first_line(tmp_path):
    bom = write(tmp_path / "bom.jsonl", b"\xef\xbb\xbf" + good_lines())
    assert read_jsonl(bom) == ROWS
    assert read_jsonl(write(tmp_path / "only.jsonl", b"\xef\xbb\xbf\n" + good_lines())) == ROWS
    assert [p.answer for p in get_task("jsonl").load(str(bom))] == ["3", "6"]


def test_torn_tail_is_skipped_even_mid_character(tmp_path):
    torn = write(tmp_path / "torn.jsonl", good_lines() + '{"question": "é'.encode()[:-1])
    assert read_jsonl(torn, tolerate_torn_tail=True) == ROWS
    with pytest.raises(DataError, match=r"torn.jsonl:3: not UTF-8 text"):
        read_jsonl(torn)
    mid = write(tmp_path / "mid.jsonl", b'{"a": 1\n' + good_lines())  # malformed but terminated: not a torn tail
    with pytest.raises(DataError, match=r"mid.jsonl:1: malformed JSON"):
        read_jsonl(mid, tolerate_torn_tail=True)


def test_lines_are_read_one_at_a_time_and_bounded(tmp_path):
    path = write(tmp_path / "big.jsonl", good_lines() + b"\xff")
    with open(path, "r+b") as f:
        f.truncate(2 << 30)  # a 2 GiB third line (sparse: no disk used), undecodable from its first byte
    assert [obj for _, obj in islice(iter_jsonl(path), 2)] == ROWS
    assert [p.answer for p in get_task("jsonl").load(str(path), limit=2)] == ["3", "6"]
    assert [p.meta["target"] for p in get_task("countdown").load(str(path), limit=2)] == [3, 6]
    with pytest.raises(DataError, match=rf"big.jsonl:3: line longer than {64 << 20} bytes"):
        read_jsonl(path)  # reads 64 MiB of the line, not 2 GiB
    line = json.dumps({"a": "x" * 80}).encode() + b"\n"
    assert len(list(iter_jsonl(write(tmp_path / "fits.jsonl", line * 2), max_line_bytes=len(line)))) == 2
    longer = write(tmp_path / "longer.jsonl", line + b" " + line)
    with pytest.raises(DataError, match=rf"longer.jsonl:2: line longer than {len(line)} bytes"):
        list(iter_jsonl(longer, max_line_bytes=len(line)))


@pytest.mark.parametrize("row, error", [
    ({"numbers": [1.5, 2], "target": 3}, "field 'numbers' must be a list of integers"),
    ({"numbers": [True, 2], "target": 3}, "field 'numbers' must be a list of integers"),
    ({"numbers": 5, "target": 5}, "field 'numbers' must be a list of integers"),
    ({"nums": {"a": 1}, "target": 1}, "field 'nums' must be a list of integers"),
    ({"numbers": [1, "x"], "target": 1}, "field 'numbers' must be a list of integers"),
    ({"numbers": [1, 2], "target": 3.5}, "field 'target' must be an integer"),
    ({"numbers": [1, 2], "target": True}, "field 'target' must be an integer"),
    ({"numbers": [1, 2], "target": [3]}, "field 'target' must be an integer"),
    ({"input": "1,2", "output": "9" * 5000}, "field 'output' must be an integer"),
    ({"numbers": [1, 2]}, "missing field 'target'"),
])
def test_countdown_rows_are_validated_naming_file_line_and_field(tmp_path, row, error):
    path = write(tmp_path / "cd.jsonl", good_lines() + json.dumps(row).encode() + b"\n")
    with pytest.raises(TaskError, match=rf"cd.jsonl:3: {error}"):
        get_task("countdown").load(str(path))


def test_countdown_rows_accept_integer_strings(tmp_path):
    path = write(tmp_path / "cd.jsonl", b'{"input": " 30, 100 ,93", "output": "23"}\n'
                                        b'{"nums": [-4, 5], "target": "-20"}\n')
    assert [p.meta for p in get_task("countdown").load(str(path))] == [{"numbers": [30, 100, 93], "target": 23},
                                                                       {"numbers": [-4, 5], "target": -20}]
