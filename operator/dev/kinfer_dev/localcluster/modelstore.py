"""A model store for the local cluster: test models built at run time, served on 127.0.0.1."""

from __future__ import annotations

import functools
import http.server
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@dataclass
class ModelStore:
    """A directory served read-only over HTTP on a loopback address, in a daemon thread."""

    root: Path
    host: str = "127.0.0.1"
    port: int = 0
    _server: http.server.ThreadingHTTPServer | None = None

    def start(self) -> ModelStore:
        handler = functools.partial(_QuietHandler, directory=str(self.root))
        self._server = http.server.ThreadingHTTPServer((self.host, self.port), handler)
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def url(self, relative: str) -> str:
        """The storageUri of a file under the root (e.g. `mlp/fp32/model.onnx`)."""
        return f"http://{self.host}:{self.port}/{relative.lstrip('/')}"

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


def build_test_models(root: Path, model: str = "mlp", shape: Any = None) -> dict[str, str]:
    """Build the fp32/fp16/int8 test MLP under `<root>/<model>/<tier>/model.onnx`
    (`shape`: a `testmodels.MLPShape`, default the small test MLP).

    Returns tier -> path relative to root, the layout the samples' storageUris use.
    """
    from kinfer_dev.runtime import testmodels

    built = testmodels.build_tier_models(
        root / f".{model}-build", shape=shape or testmodels.MLPShape()
    )
    relative = {}
    for tier, path in built.items():
        target = root / model / tier / "model.onnx"
        target.parent.mkdir(parents=True, exist_ok=True)
        path.replace(target)
        relative[tier] = f"{model}/{tier}/model.onnx"
    return relative
