"""The load generator: loopback only, bounded, every outcome counted."""

from __future__ import annotations

import asyncio
import socket
import threading
import time

import pytest
from aiohttp import web

from kinfer_dev.runtime.loadgen import LoadGenerator, require_loopback


# Refused before any connection is tried: nothing is ever sent to these addresses.
@pytest.mark.parametrize(
    "url", ["http://10.0.0.1:8000", "http://192.168.1.2", "http://example.com"]
)
def test_non_loopback_targets_are_refused(url):
    with pytest.raises(ValueError, match="loopback"):
        require_loopback(url)


def test_loopback_targets_are_allowed():
    require_loopback("http://127.3.0.9:8000")
    require_loopback("http://localhost:8000")


@pytest.fixture
def fake_model_server():
    """A tiny real HTTP server: odd requests succeed, every 5th fails with 500."""
    counter = {"n": 0}

    async def infer(request: web.Request) -> web.Response:
        await request.json()
        counter["n"] += 1
        if counter["n"] % 5 == 0:
            return web.json_response({"error": "boom"}, status=500)
        return web.json_response({"outputs": []})

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    loop = asyncio.new_event_loop()
    app = web.Application()
    app.router.add_post("/v2/models/{model}/infer", infer)
    runner = web.AppRunner(app)
    loop.run_until_complete(runner.setup())
    loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", port).start())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{port}", counter
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)
    loop.run_until_complete(runner.cleanup())
    loop.close()


def test_counts_successes_and_failures_and_stops_at_the_request_budget(fake_model_server):
    url, counter = fake_model_server
    load = LoadGenerator(
        lambda: [url], "m", {"inputs": []}, rate_qps=200, max_duration_s=60, max_requests=100
    )
    load.start()
    deadline = time.monotonic() + 60
    while load.result.ok + load.result.failed < 100 and time.monotonic() < deadline:
        time.sleep(0.05)
    result = load.stop()
    assert result.sent == 100
    assert (result.ok, result.failed) == (80, 20)
    assert counter["n"] == 100
    assert result.errors[0].startswith("500")


def test_unreachable_endpoint_is_a_failure_not_a_crash():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again: nothing listens here
    load = LoadGenerator(
        lambda: [f"http://127.0.0.1:{port}"],
        "m",
        {},
        rate_qps=50,
        max_duration_s=30,
        max_requests=10,
    )
    load.start()
    deadline = time.monotonic() + 30
    while load.result.failed < 10 and time.monotonic() < deadline:
        time.sleep(0.05)
    result = load.stop()
    assert result.failed == 10 and result.ok == 0
