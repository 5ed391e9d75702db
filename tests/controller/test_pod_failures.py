"""A model that cannot be fetched or a server that cannot run shows on the InferenceService."""

from __future__ import annotations

from kinfer.api.model import parse
from kinfer.controller.pod_failures import (
    FETCH_FAILED,
    MAX_MESSAGE_CHARS,
    SERVER_FAILING,
    pod_failure,
)
from kinfer.controller.status import service_status
from tests.controller.test_status import NO_GPU, deployment


def pod(name="mlp-1", init=(), containers=(), deleting=False):
    meta = {"name": name}
    if deleting:
        meta["deletionTimestamp"] = "2026-11-24T00:00:00Z"
    return {
        "metadata": meta,
        "status": {"initContainerStatuses": list(init), "containerStatuses": list(containers)},
    }


def terminated(name, code, message=None, reason="Error"):
    term = {"exitCode": code, "reason": reason}
    if message:
        term["message"] = message
    return {"name": name, "state": {"terminated": term}}


def waiting(name, reason, message=None, last_exit=None):
    status = {"name": name, "state": {"waiting": {"reason": reason}}}
    if message:
        status["state"]["waiting"]["message"] = message
    if last_exit is not None:
        status["lastState"] = {"terminated": {"exitCode": last_exit, "reason": "Error"}}
    return status


def test_a_failed_fetch_names_the_pod_the_init_container_and_its_exit():
    found = pod_failure(
        [pod(init=[terminated("fetch-fp16", 3, "directory not found")], containers=[])]
    )
    assert found is not None and found.reason == FETCH_FAILED
    assert found.message == "pod mlp-1: init container fetch-fp16 exited 3: directory not found"


def test_a_failed_fetch_reads_the_same_while_the_kubelet_retries_it():
    """Exited, waiting in back-off, or running again: one message, the exit's."""
    exited = terminated("fetch-model", 1, "directory not found")
    last = {"lastState": {"terminated": exited["state"]["terminated"]}}
    back_off = {
        "name": "fetch-model",
        "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 10s"}},
        **last,
    }
    running = {"name": "fetch-model", "state": {"running": {}}, "restartCount": 1, **last}
    messages = {pod_failure([pod(init=[status])]).message for status in (exited, back_off, running)}
    assert messages == {"pod mlp-1: init container fetch-model exited 1: directory not found"}


def test_a_fetch_that_succeeded_after_a_failure_is_no_failure():
    done = terminated("fetch-model", 0)
    done["lastState"] = {"terminated": {"exitCode": 1, "reason": "Error"}}
    assert pod_failure([pod(init=[done])]) is None
    assert pod_failure([pod(init=[{"name": "fetch-model", "state": {"running": {}}}])]) is None


def test_an_image_that_cannot_be_pulled_is_said_even_after_a_failed_run():
    found = pod_failure([pod(init=[waiting("fetch-model", "ImagePullBackOff", "no image", 1)])])
    assert found.message == "pod mlp-1: init container fetch-model ImagePullBackOff: no image"


def test_a_missing_storage_secret_names_it():
    said = 'secret "model-creds" not found'
    found = pod_failure([pod(init=[waiting("fetch-model", "CreateContainerConfigError", said)])])
    assert found.reason == FETCH_FAILED
    assert found.message == (
        f"pod mlp-1: init container fetch-model CreateContainerConfigError: {said}"
    )


def test_a_server_crash_loop_or_a_bad_image_is_a_server_failure():
    crash = pod_failure(
        [
            pod(
                init=[terminated("fetch-model", 0)],
                containers=[waiting("server", "CrashLoopBackOff", "back-off 40s", 137)],
            )
        ]
    )
    assert crash.reason == SERVER_FAILING
    assert crash.message == (
        "pod mlp-1: container server CrashLoopBackOff: back-off 40s; last exited 137: Error"
    )
    image = pod_failure([pod(containers=[waiting("server", "ImagePullBackOff")])])
    assert image.message == "pod mlp-1: container server ImagePullBackOff"


def test_a_crash_looping_server_between_back_offs_is_still_a_server_failure():
    """A kubelet runs the container again between back-offs (state running, lastState the
    crash): until it is Ready, that is the same failure, so a reconcile then still says it."""
    restarted = {
        "name": "server",
        "ready": False,
        "restartCount": 3,
        "state": {"running": {}},
        "lastState": {"terminated": {"exitCode": 2, "reason": "Error", "message": "no CUDA"}},
    }
    crash = pod_failure([pod(containers=[restarted])])
    assert crash.reason == SERVER_FAILING
    assert crash.message == "pod mlp-1: container server restarted: last exited 2: no CUDA"
    recovered = {**restarted, "ready": True}
    assert pod_failure([pod(containers=[recovered])]) is None


def test_healthy_starting_and_deleted_pods_are_not_failures():
    assert pod_failure([]) is None
    assert (
        pod_failure(
            [
                pod(
                    init=[terminated("fetch-model", 0)],
                    containers=[waiting("server", "PodInitializing")],
                ),
                pod("mlp-2", containers=[{"name": "server", "state": {"running": {}}}]),
                pod("mlp-3", init=[terminated("fetch-model", 1)], deleting=True),
            ]
        )
        is None
    )


def test_pods_are_looked_at_in_name_order_and_long_messages_are_clipped():
    long = "word " * 500
    found = pod_failure(
        [
            pod("mlp-b", init=[terminated("fetch-model", 2)]),
            pod("mlp-a", init=[terminated("fetch-model", 1, long)]),
        ]
    )
    assert found.message.startswith("pod mlp-a:")
    assert len(found.message) <= MAX_MESSAGE_CHARS and found.message.endswith("word")


def test_a_long_fetch_log_keeps_its_last_words():
    # What FallbackToLogsOnError gives: rclone's whole tail; its last line says why.
    log = "NOTICE: Config file not found - using defaults " + "ERROR : Attempt failed " * 40
    log += "Failed to copyto: error listing: directory not found"
    found = pod_failure([pod("mlp-a", init=[terminated("fetch-model", 3, log)])])
    assert found.message.endswith("Failed to copyto: error listing: directory not found")
    assert "exited 3: …" in found.message and "NOTICE" not in found.message
    assert len(found.message) <= MAX_MESSAGE_CHARS


def test_ready_says_why_the_pods_do_not_come_up(minimal):
    failing = [pod(init=[terminated("fetch-model", 3, "directory not found")])]
    _, conditions = service_status(
        parse(minimal),
        deployment(ready=0),
        NO_GPU,
        cluster_domain="cluster.local",
        node_selector={},
        pods=failing,
    )
    ready = {cond.type: cond for cond in conditions}["Ready"]
    assert (ready.status, ready.reason) == ("False", FETCH_FAILED)
    assert ready.message == (
        "0/1 replicas ready; pod mlp-1: init container fetch-model exited 3: directory not found"
    )
    # Every replica Ready: a failing pod beside them does not make the service unready.
    _, conditions = service_status(
        parse(minimal), deployment(), NO_GPU, cluster_domain="c", node_selector={}, pods=failing
    )
    assert {cond.type: cond for cond in conditions}["Ready"].status == "True"
