"""Tools (helm) are cached apart from the clusters' binaries: bumping one never rebuilds the other."""

from __future__ import annotations

import shutil
from pathlib import Path

from kinfer_dev.localcluster import build


def _copy_modules(tmp_path: Path) -> Path:
    modules = tmp_path / "go"
    shutil.copytree(build.modules_dir(), modules)
    return modules


def test_a_tool_bump_keeps_the_clusters_cache_folder_and_moves_its_own(tmp_path: Path) -> None:
    modules = _copy_modules(tmp_path)
    helm = build.key_modules((build.HELM,))
    cluster_before, helm_before = build.cache_key(modules), build.cache_key(modules, helm)
    with (modules / "helm" / "go.mod").open("a") as go_mod:
        go_mod.write("\n// bumped\n")
    assert build.cache_key(modules) == cluster_before
    assert build.cache_key(modules, helm) != helm_before


def test_a_cluster_module_bump_moves_the_clusters_folder_only(tmp_path: Path) -> None:
    modules = _copy_modules(tmp_path)
    helm = build.key_modules((build.HELM,))
    cluster_before, helm_before = build.cache_key(modules), build.cache_key(modules, helm)
    with (modules / "kind" / "go.mod").open("a") as go_mod:
        go_mod.write("\n// bumped\n")
    assert build.cache_key(modules) != cluster_before
    assert build.cache_key(modules, helm) == helm_before


def test_helm_has_its_own_folder_and_the_cluster_sets_share_one(tmp_path: Path) -> None:
    assert build.key_modules(build.BINARIES) == build.key_modules(build.KIND_BINARIES)
    assert build.key_modules((build.HELM,)) == {"helm"}
    assert build.bin_dir(tmp_path, (build.HELM,)) != build.bin_dir(tmp_path)
    assert build.BINARY_SETS["helm"] == (build.HELM,)


def test_helm_is_stamped_with_its_pinned_version() -> None:
    assert build.version_ldflags(build.HELM) == [
        "-ldflags=-X helm.sh/helm/v4/internal/version.version="
        + build.module_version("helm", "helm.sh/helm/v4")
    ]
    assert build.module_version("helm", "helm.sh/helm/v4") == "v4.3.2"
