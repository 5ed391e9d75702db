"""kubectl as a subprocess, for the demo and the e2e harness: the CLI users script against."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# The model server ports a pod endpoint forwards: HTTP, gRPC (as Triton).
PORTS = (":8000", ":8001")


class KubectlError(RuntimeError):
    """kubectl exited non-zero; the message holds the command, its exit code and stderr."""


class Kubectl:
    """Runs one kubectl binary against one kubeconfig (never the caller's default context)."""

    def __init__(self, binary: str, kubeconfig: Path) -> None:
        self.binary = binary
        self.kubeconfig = kubeconfig

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "KUBECONFIG": str(self.kubeconfig)}

    def __call__(
        self, *args: str, stdin: str | None = None, check: bool = True, timeout_s: float = 120
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [self.binary, *args],
            input=stdin,
            capture_output=True,
            text=True,
            env=self.env,
            timeout=timeout_s,
            check=False,
        )
        if check and result.returncode != 0:
            raise KubectlError(
                f"kubectl {' '.join(args)} exited {result.returncode}: {result.stderr.strip()}"
            )
        return result

    def show(self, *args: str) -> None:
        """Print the command and what it printed, as a user would see it in a terminal."""
        print(f"$ kubectl {' '.join(args)}")
        result = self(*args, check=False)
        print((result.stdout or result.stderr).rstrip())

    @contextlib.contextmanager
    def pod_endpoints(
        self, pod: dict[str, Any], timeout_s: float = 60
    ) -> Iterator[tuple[str, str]]:
        """(HTTP "host:port", gRPC "host:port") of a pod's model server (ports 8000, 8001).

        kinfer's local cluster runs pods as processes on loopback pod IPs, dialled directly;
        elsewhere (kind, a real cluster) the pod network is out of reach, so `kubectl
        port-forward` bridges it for as long as the context is open.
        """
        ip = pod["status"]["podIP"]
        if ip.startswith("127."):
            yield f"{ip}:8000", f"{ip}:8001"
            return
        meta = pod["metadata"]
        process = subprocess.Popen(
            [self.binary, "port-forward", "-n", meta["namespace"], f"pod/{meta['name']}", *PORTS],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=self.env,
        )
        try:
            ports: dict[str, str] = {}
            assert process.stdout is not None
            deadline = time.monotonic() + timeout_s
            while len(ports) < 2 and time.monotonic() < deadline:
                line = process.stdout.readline()
                if not line:  # kubectl exited
                    break
                match = re.search(r"127\.0\.0\.1:(\d+) -> (800[01])", line)
                if match:
                    ports[match.group(2)] = match.group(1)
            if len(ports) < 2:
                raise KubectlError(f"kubectl port-forward to pod {meta['name']} did not start")
            # kubectl says a line per connection: drain them, or a full pipe stalls it.
            threading.Thread(target=_drain, args=(process.stdout,), daemon=True).start()
            yield f"127.0.0.1:{ports['8000']}", f"127.0.0.1:{ports['8001']}"
        finally:
            process.terminate()
            process.wait(timeout=30)


def _drain(stream: Any) -> None:
    for _ in stream:
        pass
