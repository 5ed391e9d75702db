"""The pod runner's terminated.message is a kubelet's under FallbackToLogsOnError: the log's
last 80 lines, at most their last 2048 bytes."""

from __future__ import annotations

from kinfer_dev.localcluster.runner import termination_message_from_log


def test_the_last_80_lines_of_a_short_log():
    log = b"".join(f"line {i}\n".encode() for i in range(200))
    message = termination_message_from_log(log)
    assert message.splitlines() == [f"line {i}" for i in range(120, 200)]


def test_at_most_the_last_2048_bytes_ending_with_the_last_line():
    log = b"".join(f"line {i} ".encode() + b"x" * 100 + b"\n" for i in range(60))
    message = termination_message_from_log(log)
    assert len(message.encode()) == 2048
    assert message.endswith("line 59 " + "x" * 100 + "\n")
    assert message.encode() == log[-2048:]


def test_a_short_log_is_kept_whole_and_bad_bytes_do_not_break_it():
    assert termination_message_from_log(b"ERROR : not found\n") == "ERROR : not found\n"
    assert termination_message_from_log(b"\xff failed\n") == "\ufffd failed\n"
    assert termination_message_from_log(b"") == ""
