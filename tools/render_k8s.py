"""Render a kustomize overlay without the kustomize binary (none can be installed in CI).

Supports exactly the kustomization features infra/k8s uses — ``resources`` (files and
directories), ``namespace``, ``images`` (newName/newTag) and ``patches`` given as inline
JSON 6902 operations with a ``target`` (kind, optional name) — and refuses any other key,
so a manifest that real kustomize would read differently cannot pass silently.

    python tools/render_k8s.py infra/k8s/overlays/prod            # YAML on stdout
    python tools/render_k8s.py infra/k8s/overlays/prod --out DIR  # one file per document
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path
from typing import Any

import yaml

SUPPORTED = {"apiVersion", "kind", "resources", "namespace", "images", "patches"}
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "PersistentVolume"}


class RenderError(Exception):
    pass


def _load_documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def _pointer(path: str) -> list[str]:
    if not path.startswith("/"):
        raise RenderError(f"bad JSON pointer {path!r}")
    return [part.replace("~1", "/").replace("~0", "~") for part in path[1:].split("/")]


def _apply_operation(document: dict[str, Any], operation: dict[str, Any]) -> None:
    op, parts = operation.get("op"), _pointer(str(operation.get("path", "")))
    parent: Any = document
    for part in parts[:-1]:
        parent = parent[int(part)] if isinstance(parent, list) else parent[part]
    last = parts[-1]
    if op in ("add", "replace"):
        if op == "replace" and isinstance(parent, dict) and last not in parent:
            raise RenderError(f"replace of a missing path {operation['path']}")
        if isinstance(parent, list):
            index = len(parent) if last == "-" else int(last)
            if op == "add":
                parent.insert(index, copy.deepcopy(operation["value"]))
            else:
                parent[index] = copy.deepcopy(operation["value"])
        else:
            parent[last] = copy.deepcopy(operation["value"])
    elif op == "remove":
        del parent[int(last) if isinstance(parent, list) else last]
    else:
        raise RenderError(f"unsupported patch operation {op!r}")


def _matches(document: dict[str, Any], target: dict[str, Any]) -> bool:
    return all(
        (document.get("kind") if key == "kind" else document["metadata"].get("name")) == value
        for key, value in target.items()
        if key in ("kind", "name")
    )


def render(directory: Path) -> list[dict[str, Any]]:
    """The documents a kustomization directory produces."""
    config_path = directory / "kustomization.yaml"
    config = yaml.safe_load(config_path.read_text()) or {}
    unknown = set(config) - SUPPORTED
    if unknown:
        raise RenderError(f"{config_path}: unsupported keys {sorted(unknown)}")
    documents: list[dict[str, Any]] = []
    for entry in config.get("resources", []):
        path = (directory / entry).resolve()
        documents += render(path) if path.is_dir() else _load_documents(path)
    for image in config.get("images", []):
        for document in documents:
            for container in _containers(document):
                if container.get("image", "").split(":")[0] == image["name"]:
                    name = image.get("newName", image["name"])
                    container["image"] = f"{name}:{image['newTag']}" if "newTag" in image else name
    for patch in config.get("patches", []):
        operations = yaml.safe_load(patch["patch"])
        hits = [d for d in documents if _matches(d, patch.get("target", {}))]
        if not hits:
            raise RenderError(f"{config_path}: a patch matches nothing: {patch.get('target')}")
        for document in hits:
            for operation in operations:
                _apply_operation(document, operation)
    if "namespace" in config:
        for document in documents:
            if document.get("kind") not in CLUSTER_SCOPED:
                document["metadata"]["namespace"] = config["namespace"]
    return documents


def _containers(document: dict[str, Any]) -> list[dict[str, Any]]:
    spec = document.get("spec", {})
    pod = spec.get("template", {}).get("spec", spec.get("jobTemplate", {}).get("spec", {}))
    return [*pod.get("initContainers", []), *pod.get("containers", [])]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("overlay", type=Path)
    parser.add_argument("--out", type=Path, help="write one file per document here")
    args = parser.parse_args()
    try:
        documents = render(args.overlay)
    except (RenderError, KeyError, IndexError, ValueError) as error:
        print(f"render_k8s: {error}", file=sys.stderr)
        raise SystemExit(1) from None
    if args.out is None:
        yaml.safe_dump_all(documents, sys.stdout, sort_keys=False)
        return
    args.out.mkdir(parents=True, exist_ok=True)
    for index, document in enumerate(documents):
        name = f"{index:03d}-{document['kind'].lower()}-{document['metadata']['name']}.yaml"
        (args.out / name).write_text(yaml.safe_dump(document, sort_keys=False))


if __name__ == "__main__":
    main()
