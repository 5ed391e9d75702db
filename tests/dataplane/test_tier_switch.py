"""A tier switch under concurrent load: zero failed requests, on both runtimes."""

from __future__ import annotations

import threading
import time
from collections import Counter

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from kinfer.runtime.switch import active_version, select_version
from kinfer_dev.runtime.testmodels import INPUT_NAME, OUTPUT_NAME, run_reference, sample_input

from .conftest import SWITCH_MODEL

pytestmark = pytest.mark.slow

# Bounds of the load loop: it always stops by itself.
MAX_REQUESTS_PER_CLIENT = 20_000
MAX_LOAD_S = 180.0


def _load_loop(
    server, protocol: str, batch, references, stop, seen: Counter, failures: list
) -> None:
    deadline = time.monotonic() + MAX_LOAD_S
    if protocol == "http":
        client = httpclient.InferenceServerClient(server.http_url, network_timeout=60)
        tensor = httpclient.InferInput(INPUT_NAME, list(batch.shape), "FP32")
    else:
        client = grpcclient.InferenceServerClient(server.grpc_url)
        tensor = grpcclient.InferInput(INPUT_NAME, list(batch.shape), "FP32")
    tensor.set_data_from_numpy(batch)
    try:
        for _ in range(MAX_REQUESTS_PER_CLIENT):
            if stop.is_set() or time.monotonic() > deadline:
                break
            try:
                if protocol == "http":
                    result = client.infer(SWITCH_MODEL, [tensor])
                    version = int(result.get_response()["model_version"])
                else:
                    result = client.infer(SWITCH_MODEL, [tensor], client_timeout=60)
                    version = int(result.get_response().model_version)
                output = result.as_numpy(OUTPUT_NAME)
                if not np.allclose(output, references[version], rtol=1e-5, atol=1e-5):
                    failures.append(
                        f"{protocol}: version {version} answered with another tier's output"
                    )
                seen[version] += 1
            except Exception as error:  # every failure is the finding, whatever its type
                failures.append(f"{protocol}: {error!r}")
    finally:
        client.close()


def _wait_for_answers(seen: Counter, version: int, minimum: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    start = seen[version]
    while seen[version] < start + minimum and time.monotonic() < deadline:
        time.sleep(0.05)
    assert seen[version] >= start + minimum, (
        f"no answers from version {version} within {timeout_s} s"
    )


def test_switch_tiers_under_load_with_zero_failed_requests(server, tier_models):
    select_version(server.grpc_url, SWITCH_MODEL, 1, timeout_s=120)
    batch = sample_input(2, seed=42)
    references = {
        k: run_reference(path, batch) for k, path in enumerate(tier_models.values(), start=1)
    }
    stop = threading.Event()
    seen: Counter = Counter()
    failures: list[str] = []
    threads = [
        threading.Thread(
            target=_load_loop, args=(server, protocol, batch, references, stop, seen, failures)
        )
        for protocol in ("http", "http", "grpc", "grpc")
    ]
    for thread in threads:
        thread.start()
    try:
        _wait_for_answers(seen, 1, 20, timeout_s=60)
        for version in (2, 3, 1):
            select_version(server.grpc_url, SWITCH_MODEL, version, timeout_s=120)
            assert active_version(server.grpc_url, SWITCH_MODEL) == version
            _wait_for_answers(seen, version, 20, timeout_s=60)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=90)
    assert not any(thread.is_alive() for thread in threads)
    assert failures == [], (
        f"{len(failures)} failed of {sum(seen.values()) + len(failures)}: {failures[:5]}"
    )
    assert set(seen) == {1, 2, 3}


@pytest.fixture(scope="module")
def thread_pool_server(ort_repository, tmp_path_factory):
    # The same server with every run on the thread pool (no inline execution): requests
    # then wait in the batcher's queue and in worker threads while a switch swaps the model.
    from kinfer_dev.runtime.ort_server import start_ort_server

    handle = start_ort_server(
        ort_repository,
        load_models=[SWITCH_MODEL],
        work_dir=tmp_path_factory.mktemp("ort-thread-pool"),
        extra_args=["--inline-execution-us=0"],
        ready_timeout_s=120,
    )
    yield handle
    handle.stop()


def test_switch_with_requests_queued_on_the_thread_pool(thread_pool_server, tier_models):
    test_switch_tiers_under_load_with_zero_failed_requests(thread_pool_server, tier_models)
