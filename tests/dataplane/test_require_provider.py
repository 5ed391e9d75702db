"""kinfer-ort-server --require-execution-provider: a GPU server on an image without CUDA exits
at start with the reason, instead of serving on the CPU."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import onnxruntime as ort
import pytest

from kinfer_ort_server.cli import missing_providers


def test_missing_providers_are_the_required_ones_this_build_lacks() -> None:
    assert missing_providers(["cpu"]) == []
    has_cuda = "CUDAExecutionProvider" in ort.get_available_providers()
    assert missing_providers(["cuda"]) == ([] if has_cuda else ["cuda"])


@pytest.mark.skipif(
    "CUDAExecutionProvider" in ort.get_available_providers(), reason="this build has CUDA"
)
def test_the_server_refuses_to_start_without_cuda(tmp_path: Path) -> None:
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "kinfer_ort_server",
            f"--model-repository={tmp_path}",
            "--execution-provider=cuda",
            "--require-execution-provider=cuda",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 2
    assert "no CUDAExecutionProvider" in run.stderr
    assert "kinfer-ort-server:<version>-cuda" in run.stderr
