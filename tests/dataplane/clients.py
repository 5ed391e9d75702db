"""Small helpers around the real tritonclient for the data-plane tests."""

from __future__ import annotations

import urllib.request

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from kinfer_dev.runtime.testmodels import INPUT_NAME, OUTPUT_NAME


def infer(
    server,
    model: str,
    batch: np.ndarray,
    protocol: str = "http",
    binary: bool = True,
    version: str = "",
):
    """One inference with tritonclient; returns (output array, model_version of the response)."""
    if protocol == "http":
        client = httpclient.InferenceServerClient(server.http_url, network_timeout=60)
        try:
            tensor = httpclient.InferInput(INPUT_NAME, list(batch.shape), "FP32")
            tensor.set_data_from_numpy(batch, binary_data=binary)
            outputs = [httpclient.InferRequestedOutput(OUTPUT_NAME, binary_data=binary)]
            result = client.infer(model, [tensor], model_version=version, outputs=outputs)
            return result.as_numpy(OUTPUT_NAME), result.get_response()["model_version"]
        finally:
            client.close()
    client = grpcclient.InferenceServerClient(server.grpc_url)
    try:
        tensor = grpcclient.InferInput(INPUT_NAME, list(batch.shape), "FP32")
        tensor.set_data_from_numpy(batch)
        result = client.infer(model, [tensor], model_version=version, client_timeout=60)
        return result.as_numpy(OUTPUT_NAME), result.get_response().model_version
    finally:
        client.close()


def scrape(server) -> str:
    with urllib.request.urlopen(server.metrics_url, timeout=10) as response:
        return response.read().decode()


def sample_value(text: str, name: str, **labels: str) -> float:
    """The value of the sample `name{labels...}` (labels given must match; others are ignored), or 0."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        head, _, value = line.rpartition(" ")
        if head.split("{")[0] != name:
            continue
        if all(f'{key}="{val}"' in head for key, val in labels.items()):
            total += float(value)
    return total
