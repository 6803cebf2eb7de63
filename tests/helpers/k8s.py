"""deploy/k8s's pods as a test runs them: the environment a container gets, and the Secret volumes it
mounts written to a directory of the test's own, as the kubelet would write them."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

Secrets = Mapping[str, Mapping[str, str]]  # a Secret's or ConfigMap's name: its data


def container_environment(container: dict[str, Any], configmaps: Secrets, pod_name: str) -> dict[str, str]:
    """The variables Kubernetes gives `container`: its `envFrom` ConfigMaps, then its `env`. Anything
    else fails, so that a new kind of source gets taught here instead of being left out."""
    env: dict[str, str] = {}
    for source in container.get("envFrom") or []:
        assert set(source) == {"configMapRef"}, f"envFrom {source} is not understood here"
        env.update(configmaps[source["configMapRef"]["name"]])
    for entry in container.get("env") or []:
        name, given = entry["name"], entry.get("valueFrom")
        if given is None:
            env[name] = str(entry["value"])
        elif given.get("fieldRef") == {"fieldPath": "metadata.name"}:
            env[name] = pod_name
        elif "configMapKeyRef" in given:
            ref = given["configMapKeyRef"]
            env[name] = configmaps[ref["name"]][ref["key"]]
        else:
            raise AssertionError(f"{name}: valueFrom {given} is not understood here")
    return env


def with_mounted_secrets(
    env: Mapping[str, str], pod: dict[str, Any], container: dict[str, Any], secrets: Secrets, into: Path
) -> dict[str, str]:
    """`env` with every path under a Secret volume that `container` mounts replaced by the file under
    `into` that holds it. As the kubelet does, a volume's `items` are written from `secrets` (a key
    the Secret lacks is left out of an optional volume, and fails any other) and nothing else is."""
    volumes = {v["name"]: v for v in pod.get("volumes") or []}
    mounted: dict[str, Path] = {}
    for mount in container.get("volumeMounts") or []:
        source = volumes[mount["name"]].get("secret")
        if source is None:
            continue
        directory = into / mount["name"]
        directory.mkdir(parents=True, exist_ok=True)
        data = secrets.get(source["secretName"])
        for item in source["items"]:
            if data is None or item["key"] not in data:
                assert source.get("optional"), f"the pod would not start: no key {item['key']} to mount"
                continue
            (directory / item["path"]).write_text(data[item["key"]])
        mounted[mount["mountPath"].rstrip("/") + "/"] = directory
    out = dict(env)
    for name, value in env.items():
        for prefix, directory in mounted.items():
            if value.startswith(prefix):
                out[name] = str(directory / value.removeprefix(prefix))
    return out
