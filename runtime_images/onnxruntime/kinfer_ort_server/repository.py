"""The model repository in Triton's explicit mode: load (with a config override), unload, index.

A load builds every version's session off the event loop and then swaps the model in
with one assignment: a failed load leaves the old model serving, and requests that
already hold the old version finish on its session (it is freed when they are done).
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import onnxruntime as ort

from kinfer_ort_server.batcher import Batcher
from kinfer_ort_server.config import (
    available_versions,
    complete_config,
    instance_count,
    read_config,
    select_versions,
    tensor_infos,
    tiers_of,
)
from kinfer_ort_server.decode import valid_model_name
from kinfer_ort_server.errors import LoadFailed, ModelNotFound, ModelNotReady
from kinfer_ort_server.metrics import Metrics
from kinfer_ort_server.model import LoadedModel, ModelVersion

log = logging.getLogger("kinfer_ort_server.repository")

PROVIDERS = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}


@dataclass(frozen=True)
class RuntimeOptions:
    """Session and batching settings from the command line."""

    intra_op_threads: int = 1
    inter_op_threads: int = 1
    providers: tuple[str, ...] = ("cpu",)
    default_max_batch_size: int = 4
    default_max_queue_delay_us: int = 0
    graph_optimization: str = "all"
    execution_threads: int = 0  # 0: 2 threads
    inline_max_us: int = 100  # models whose run-time estimate is under this run on the event loop


def ort_providers(names: tuple[str, ...]) -> list[str]:
    """ONNX Runtime providers for `names` in order, those this build has (CPU always last)."""
    available = set(ort.get_available_providers())
    chosen = []
    for name in names:
        provider = PROVIDERS[name]
        if provider in available:
            chosen.append(provider)
        else:
            log.warning(
                "execution provider %s (%s) is not available here; available: %s",
                name,
                provider,
                sorted(available),
            )
    if "CPUExecutionProvider" not in chosen:
        chosen.append("CPUExecutionProvider")
    return chosen


@dataclass
class _ModelSlot:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    model: LoadedModel | None = None
    unloaded_versions: tuple[int, ...] = ()


class Repository:
    """Models served from one repository directory."""

    def __init__(
        self,
        root: Path,
        options: RuntimeOptions,
        metrics: Metrics,
        executor: Executor | None = None,
    ) -> None:
        self.root = root
        self.options = options
        self.metrics = metrics
        self._providers = ort_providers(options.providers)
        self._executor = executor or ThreadPoolExecutor(
            max_workers=max(2, options.execution_threads), thread_name_prefix="ort-run"
        )
        # Loads run in their own thread so a slow session build never delays inference.
        self._load_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ort-load")
        self._slots: dict[str, _ModelSlot] = {}
        # Plain dict read by the hot path: name -> LoadedModel, replaced entry by entry.
        self.models: dict[str, LoadedModel] = {}

    def names_on_disk(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(
            entry.name
            for entry in self.root.iterdir()
            if entry.is_dir() and not entry.name.startswith(".")
        )

    def is_known(self, name: str) -> bool:
        """Loaded, or a directory of the repository ('.', '..' and odd names never are)."""
        return name in self.models or (valid_model_name(name) and (self.root / name).is_dir())

    def get(self, name: str, version: str = "") -> ModelVersion:
        """The version serving `name` (the highest loaded one when `version` is "")."""
        model = self.models.get(name)
        if model is None:
            if self.is_known(name):
                raise ModelNotReady(
                    f"model '{name}' is not loaded; load it with POST "
                    f"/v2/repository/models/{name}/load"
                )
            raise ModelNotFound(
                f"model '{name}' is not in the repository; models: {self.names_on_disk()}"
            )
        if not version:
            return model.latest
        try:
            return model.versions[int(version)]
        except (ValueError, KeyError):
            raise ModelNotReady(
                f"model '{name}' version '{version}' is not loaded; loaded versions: "
                f"{sorted(model.versions)}"
            ) from None

    async def load(self, name: str, override_json: str | None = None) -> LoadedModel:
        """Load (or reload) `name` atomically: on LoadFailed the old model keeps serving."""
        if not valid_model_name(name):
            raise LoadFailed(f"model name '{name}' is not valid")
        model_dir = self.root / name
        if override_json is None and not model_dir.is_dir():
            raise LoadFailed(
                f"failed to load '{name}': no directory {model_dir} in the model repository"
            )
        slot = self._slots.setdefault(name, _ModelSlot())
        async with slot.lock:
            loop = asyncio.get_running_loop()
            model, sessions = await loop.run_in_executor(
                self._load_executor, self._build, name, model_dir, override_json
            )
            for version, (path, session) in sessions.items():
                model.versions[version] = self._serve_version(model, version, path, session)
            previous = slot.model
            slot.model = model
            self.models[name] = model
            slot.unloaded_versions = (
                tuple(sorted(set(previous.versions) - set(model.versions))) if previous else ()
            )
            if previous is not None:
                previous.retire()
            log.info(
                "loaded model %s versions %s tiers %s",
                name,
                sorted(model.versions),
                list(model.tiers),
            )
            return model

    def _build(self, name: str, model_dir: Path, override_json: str | None):
        config = read_config(model_dir, name, override_json)
        versions = select_versions(
            config, available_versions(model_dir, config.default_model_filename)
        )
        sessions = {}
        providers = self._providers_for(config)
        for version in versions:
            path = model_dir / str(version) / config.default_model_filename
            try:
                sessions[version] = (path, self._session(path, providers))
            except Exception as error:  # onnxruntime raises its own exception types for a bad file
                raise LoadFailed(
                    f"failed to load '{name}' version {version} from {path}: {error}"
                ) from None
        first_session = sessions[versions[0]][1]
        complete_config(
            config,
            first_session,
            self.options.default_max_batch_size,
            self.options.default_max_queue_delay_us,
        )
        probe = LoadedModel(
            name, config, tensor_infos(config.input), tensor_infos(config.output), tiers_of(config)
        )
        # All versions share the one config, so they must share the signature too.
        for version, (_, session) in sessions.items():
            names = (
                sorted(i.name for i in session.get_inputs()),
                sorted(o.name for o in session.get_outputs()),
            )
            if names != (
                sorted(t.name for t in probe.inputs),
                sorted(t.name for t in probe.outputs),
            ):
                raise LoadFailed(
                    f"failed to load '{name}': version {version} has inputs/outputs {names}, "
                    "unlike the config"
                )
        for tensor in probe.inputs:
            if tensor.np_dtype is None:
                raise LoadFailed(
                    f"failed to load '{name}': input '{tensor.name}' is {tensor.datatype}, not "
                    "served here"
                )
        return probe, sessions

    def _providers_for(self, config) -> list[str]:
        """The flags' providers; a KIND_GPU instance group puts CUDA first when this build has it.

        Like Triton's onnxruntime backend, a GPU instance runs on the GPU; unlike Triton, a
        machine without one serves on the CPU with a warning instead of failing the load
        (the local cluster runs GPU pods' servers on CPU-only hosts)."""
        from tritonclient.grpc import model_config_pb2 as mc

        wants_gpu = any(
            group.kind == mc.ModelInstanceGroup.KIND_GPU for group in config.instance_group
        )
        if not wants_gpu or "CUDAExecutionProvider" in self._providers:
            return self._providers
        if "CUDAExecutionProvider" in ort.get_available_providers():
            return ["CUDAExecutionProvider", *self._providers]
        log.warning(
            "model %s asks for KIND_GPU instances; no CUDA provider here: serving on CPU",
            config.name,
        )
        return self._providers

    def _session(self, path: Path, providers: list[str]) -> ort.InferenceSession:
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.options.intra_op_threads
        options.inter_op_num_threads = self.options.inter_op_threads
        options.graph_optimization_level = {
            "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        }[self.options.graph_optimization]
        return ort.InferenceSession(str(path), options, providers=providers)

    def _serve_version(self, model: LoadedModel, version: int, path: Path, session) -> ModelVersion:
        tier = model.tier_of(version)
        version_metrics = self.metrics.for_version(model.name, str(version), tier)
        output_names = model.output_names
        run_options = ort.RunOptions()

        def run(feeds):
            return session.run(output_names, feeds, run_options)

        batching = (
            model.config.dynamic_batching if model.config.HasField("dynamic_batching") else None
        )
        batcher = Batcher(
            run,
            self._executor,
            # Without dynamic_batching, Triton runs each request on its own: so do we.
            max_batch_size=model.max_batch_size if batching is not None else 0,
            max_queue_delay_s=(batching.max_queue_delay_microseconds / 1e6)
            if batching is not None
            else 0.0,
            instances=instance_count(model.config),
            on_batch=version_metrics.batch_size.observe,
            inline_max_s=self.options.inline_max_us / 1e6,
        )
        return ModelVersion(
            model, version, str(version), tier, path, session, batcher, version_metrics
        )

    async def unload(self, name: str) -> None:
        slot = self._slots.get(name)
        if slot is None or slot.model is None:
            if not self.is_known(name):
                raise ModelNotFound(
                    f"model '{name}' is not in the repository; models: {self.names_on_disk()}"
                )
            return  # unloading a model that is not loaded is a no-op, as in Triton
        async with slot.lock:
            previous = slot.model
            slot.model = None
            self.models.pop(name, None)
            if previous is not None:
                slot.unloaded_versions = tuple(sorted(previous.versions))
                previous.retire()
            log.info("unloaded model %s", name)

    def index(self, ready_only: bool = False) -> list[dict]:
        """Triton's repository index: loaded and unloaded versions, and never-loaded models."""
        entries = []
        for name in sorted(set(self.names_on_disk()) | set(self.models)):
            slot = self._slots.get(name)
            model = slot.model if slot else None
            versions: list[tuple[int, dict]] = []
            if model is not None:
                for version in model.versions:
                    versions.append(
                        (
                            version,
                            {"name": name, "version": str(version), "state": "READY", "reason": ""},
                        )
                    )
            if slot is not None and not ready_only:
                for version in slot.unloaded_versions:
                    entry = {
                        "name": name,
                        "version": str(version),
                        "state": "UNAVAILABLE",
                        "reason": "unloaded",
                    }
                    versions.append((version, entry))
            entries.extend(entry for _, entry in sorted(versions, key=lambda pair: pair[0]))
            if slot is None and not ready_only:
                entries.append({"name": name})
        return entries
