"""The FetchFailed Event and the init container's status message end with whole lines."""

from __future__ import annotations

from kinfer_dev.localcluster.runner import output_tail


def test_whole_last_lines_that_fit():
    text = "\n".join(f"line {i} " + "x" * 50 for i in range(100)) + "\n"
    tail = output_tail(text, limit=200)
    assert tail.splitlines()[-1].startswith("line 99 ")
    assert all(line.startswith("line ") for line in tail.splitlines())
    assert len(tail) <= 200


def test_a_single_long_line_keeps_its_end():
    assert output_tail("a" * 50 + "THE END", limit=10) == "aaaTHE END"


def test_short_output_is_kept_whole():
    assert output_tail("2026/11/24 ERROR : directory not found\n") == (
        "2026/11/24 ERROR : directory not found"
    )
