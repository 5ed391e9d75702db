"""kubectl as a subprocess, for the demo and the e2e harness: the CLI users script against."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path


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
