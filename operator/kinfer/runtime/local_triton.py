"""Start the local Triton: the tritonserver 2.51 binary inside the nvidia-pytriton wheel.

It has only the Python backend, so it serves repositories written with
`write_model_repository(..., flavour="python")`. Production uses the official image.
"""

from __future__ import annotations

import os
import sys
import sysconfig
from pathlib import Path

from kinfer.runtime.process import ServerHandle, start_server


def pytriton_dir() -> Path:
    """The installed `pytriton` package directory; raises with the install hint when missing."""
    try:
        import pytriton
    except ImportError as error:
        raise RuntimeError(
            "the local Triton needs nvidia-pytriton: pip install 'nvidia-pytriton>=0.5'"
        ) from error
    return Path(pytriton.__file__).parent


def tritonserver_binary() -> Path:
    return pytriton_dir() / "tritonserver" / "bin" / "tritonserver"


def available() -> bool:
    """Whether the local Triton can run here (nvidia-pytriton installed with this Python's stub)."""
    try:
        root = pytriton_dir()
    except RuntimeError:
        return False
    return (root / "tritonserver" / "bin" / "tritonserver").exists() and _stub_path(root).exists()


def _stub_path(root: Path) -> Path:
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    return root / "tritonserver" / "python_backend_stubs" / version / "triton_python_backend_stub"


def prepare_backend_dir(work_dir: Path) -> Path:
    """A backend directory holding python/libtriton_python.so and this Python's stub (symlinks)."""
    root = pytriton_dir()
    python_dir = work_dir / "backends" / "python"
    python_dir.mkdir(parents=True, exist_ok=True)
    source = root / "tritonserver" / "backends" / "python"
    links = {
        "libtriton_python.so": source / "libtriton_python.so",
        "triton_python_backend_utils.py": source / "triton_python_backend_utils.py",
        "triton_python_backend_stub": _stub_path(root),
    }
    for name, target in links.items():
        link = python_dir / name
        if not link.exists():
            link.symlink_to(target)
    return work_dir / "backends"


def triton_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for tritonserver and its Python-backend stubs."""
    env = dict(os.environ if base is None else base)
    root = pytriton_dir()
    libs = [str(root.parent / "nvidia_pytriton.libs"), str(sysconfig.get_config_var("LIBDIR"))]
    if env.get("LD_LIBRARY_PATH"):
        libs.append(env["LD_LIBRARY_PATH"])
    env["LD_LIBRARY_PATH"] = ":".join(libs)
    # The stub embeds libpython, which finds its prefix from the `python` on PATH: the
    # running interpreter's bin dir first makes the stub see this venv (numpy, onnxruntime).
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '/usr/bin:/bin')}"
    # One intra-op thread per model instance, like kinfer-ort-server's default.
    env.setdefault("KINFER_ORT_INTRA_OP_THREADS", "1")
    return env


def start_local_triton(
    repo: str | Path,
    http_port: int | None = None,
    grpc_port: int | None = None,
    metrics_port: int | None = None,
    host: str = "127.0.0.1",
    load_models: tuple[str, ...] | list[str] = (),
    work_dir: str | Path | None = None,
    extra_args: tuple[str, ...] | list[str] = (),
    ready_timeout_s: float = 120.0,
) -> ServerHandle:
    """Start tritonserver on `host` in explicit mode and wait until /v2/health/ready.

    Ports default to free ones; `work_dir` (default: a temporary directory removed on
    stop) holds the backend directory and the log `tritonserver.log`.
    """
    return start_server(
        "tritonserver",
        lambda work: [
            str(tritonserver_binary()),
            f"--backend-directory={prepare_backend_dir(work)}",
            f"--cache-directory={work / 'caches'}",
            "--metrics-config=summary_latencies=true",
            "--exit-timeout-secs=10",
        ],
        triton_env(),
        repo,
        http_port,
        grpc_port,
        metrics_port,
        host,
        load_models,
        work_dir,
        extra_args,
        ready_timeout_s,
    )
