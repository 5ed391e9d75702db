"""The local Triton: the tritonserver 2.51 binary inside the nvidia-pytriton wheel.

It has only the Python backend, so it serves repositories written with
`write_model_repository(..., flavour="python")`, or production repositories after
`to_python_backend`. Production uses the official image. `python -m
kinfer_dev.runtime.local_triton ARGS` is the entrypoint of the kinfer-triton-cpu-test
image: it takes tritonserver's flags, converts a copy of the model repository and
runs the wheel's tritonserver on it.
"""

from __future__ import annotations

import os
import shutil
import sys
import sysconfig
from collections.abc import Sequence
from pathlib import Path

from kinfer_dev.runtime.process import ServerHandle, start_server


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


def to_python_backend(repository: Path) -> None:
    """Rewrite each model's production config for the local Triton's Python backend.

    The wheel's tritonserver has only the Python backend: the config keeps its
    version policy, batching and parameters (the kinfer.tiers list), switches
    the backend, and gains inputs/outputs read from the ONNX model (the Python
    backend cannot auto-complete them); each version dir gets the model.py
    that runs its model.onnx with onnxruntime.
    """
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2 as mc

    from kinfer_dev.runtime import repository as runtime_repository

    for config_path in sorted(repository.glob("*/config.pbtxt")):
        model_dir = config_path.parent
        config = mc.ModelConfig()
        text_format.Parse(config_path.read_text(), config)
        versions = sorted(p for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit())
        onnx_files = [v / "model.onnx" for v in versions if (v / "model.onnx").exists()]
        if not onnx_files:
            continue
        if not config.input or not config.output:
            inputs, outputs = runtime_repository.onnx_signature(
                onnx_files[0], batched=config.max_batch_size > 0
            )
            for field, message, tensors in (
                (config.input, mc.ModelInput, inputs),
                (config.output, mc.ModelOutput, outputs),
            ):
                del field[:]
                field.extend(
                    message(
                        name=tensor.name,
                        data_type=runtime_repository.triton_type(tensor.dtype),
                        dims=tensor.dims,
                    )
                    for tensor in tensors
                )
        config.platform = ""
        config.backend = "python"
        # No GPU here: the Python backend runs CPU instances.
        for group in config.instance_group:
            group.kind = mc.ModelInstanceGroup.KIND_CPU
        # The pod mounts config.pbtxt read-only; locally it is a plain copy we replace.
        config_path.unlink()
        config_path.write_text(text_format.MessageToString(config))
        for version in versions:
            (version / "model.py").write_text(runtime_repository.PYTHON_BACKEND_MODEL)


REPOSITORY_FLAG = "--model-repository="


def image_command(args: Sequence[str], work_dir: Path) -> list[str]:
    """tritonserver's argv for a production pod: its repository copied and converted.

    The pod's repository holds what the fetchers wrote and a read-only config.pbtxt;
    the copy under `work_dir` is the one the Python backend can serve.
    """
    repositories = [arg for arg in args if arg.startswith(REPOSITORY_FLAG)]
    if len(repositories) != 1:
        raise SystemExit(f"expected one {REPOSITORY_FLAG}PATH flag, got {len(repositories)}")
    source = Path(repositories[0].removeprefix(REPOSITORY_FLAG))
    copy = work_dir / "models"
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(source, copy)
    to_python_backend(copy)
    rest = [arg for arg in args if not arg.startswith(REPOSITORY_FLAG)]
    return [
        str(tritonserver_binary()),
        f"{REPOSITORY_FLAG}{copy}",
        f"--backend-directory={prepare_backend_dir(work_dir)}",
        f"--cache-directory={work_dir / 'caches'}",
        *rest,
    ]


def main(argv: Sequence[str] | None = None) -> None:
    """Entrypoint of the CPU Triton test image: exec tritonserver on a converted copy."""
    work_dir = Path(os.environ.get("KINFER_TRITON_WORK_DIR", "/tmp/kinfer-triton"))
    work_dir.mkdir(parents=True, exist_ok=True)
    command = image_command(sys.argv[1:] if argv is None else argv, work_dir)
    print("kinfer-triton-cpu-test (a test image, not for production):", *command, flush=True)
    os.execve(command[0], command, triton_env())


if __name__ == "__main__":
    main()
