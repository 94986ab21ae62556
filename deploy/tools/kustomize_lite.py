#!/usr/bin/env python3
"""Renders the subset of kustomize that deploy/k8s uses, so CI can check the manifests offline.

kubectl and kustomize are not available from Debian's or PyPI's registries in a usable version,
so this module implements exactly the kustomization features the kvwire manifests use, with the
transformation order of kustomize v5 (patches, then namespace, then labels, then images):

  resources     files (one or more YAML documents) and directories holding a kustomization.yaml
  namespace     sets metadata.namespace of every namespaced object; a Namespace object must
                already carry that name
  commonLabels  adds labels to metadata.labels of every object and, as kustomize does, to the
                selectors and pod templates of Deployment, StatefulSet, DaemonSet, ReplicaSet
                and Job (spec.selector.matchLabels, spec.template.metadata.labels), Service
                (spec.selector) and PodDisruptionBudget (spec.selector.matchLabels, only when
                it exists)
  images        name -> newName / newTag / digest for every container and init container
  patches       `- path: FILE` strategic-merge patches, each document matched to exactly one
                object by apiVersion group, kind and name (and namespace when the patch has
                one). Lists merge by their Kubernetes merge key (containers, initContainers,
                env, volumes, imagePullSecrets by name; volumeMounts by mountPath; container
                ports by containerPort, Service ports by port); other lists are replaced; a
                null value deletes a field; `$patch: delete` on a list item deletes the item.

Anything outside the subset (another kustomization field, a patch with `target:` or inline
`patch:`, another `$patch` directive) is a RenderError rather than being ignored, so a manifest
can never silently mean something else here than in kustomize. tests/deploy/test_kustomize_lite.py
tests it, and compares it with `kubectl kustomize` where that command exists.
"""

import copy
import os
import re
import sys

import yaml

KUSTOMIZATION_FILES = ("kustomization.yaml", "kustomization.yml", "Kustomization")
SUPPORTED_FIELDS = {"apiVersion", "kind", "resources", "namespace", "commonLabels", "images",
                    "patches"}
CLUSTER_SCOPED_KINDS = {"Namespace", "ClusterRole", "ClusterRoleBinding",
                        "CustomResourceDefinition", "PersistentVolume", "StorageClass",
                        "PriorityClass", "IngressClass", "ValidatingWebhookConfiguration",
                        "MutatingWebhookConfiguration"}
WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"}
# List fields merged element by element in a strategic-merge patch, and their merge key.
MERGE_KEYS = {"containers": "name", "initContainers": "name", "ephemeralContainers": "name",
              "env": "name", "volumes": "name", "imagePullSecrets": "name",
              "volumeMounts": "mountPath"}


class RenderError(Exception):
    """A kustomization or manifest this renderer cannot render faithfully."""


def load_documents(path):
    """Returns the non-empty YAML documents of `path` as dicts."""
    try:
        with open(path, encoding="utf-8") as f:
            documents = [d for d in yaml.safe_load_all(f) if d is not None]
    except yaml.YAMLError as e:
        raise RenderError(f"{path}: not valid YAML: {e}") from e
    for index, doc in enumerate(documents):
        if not isinstance(doc, dict):
            raise RenderError(f"{path}: document {index} is a {type(doc).__name__}, "
                              "not a mapping")
    return documents


def object_id(obj):
    """A readable identity: Kind/namespace/name (namespace omitted when unset)."""
    meta = obj.get("metadata") or {}
    parts = [str(obj.get("kind")), meta.get("namespace"), str(meta.get("name"))]
    return "/".join(p for p in parts if p)


def api_group(api_version):
    return api_version.rsplit("/", 1)[0] if "/" in api_version else ""


def find_kustomization(directory):
    for name in KUSTOMIZATION_FILES:
        candidate = os.path.join(directory, name)
        if os.path.isfile(candidate):
            return candidate
    raise RenderError(f"{directory}: no kustomization file ({', '.join(KUSTOMIZATION_FILES)})")


def render(directory):
    """Renders the kustomization in `directory`; returns the objects in resource order."""
    directory = os.path.normpath(directory)
    path = find_kustomization(directory)
    documents = load_documents(path)
    if len(documents) != 1:
        raise RenderError(f"{path}: expected one YAML document, found {len(documents)}")
    k = documents[0]
    unknown = sorted(set(k) - SUPPORTED_FIELDS)
    if unknown:
        raise RenderError(f"{path}: unsupported kustomization field(s) {', '.join(unknown)} "
                          "(deploy/tools/kustomize_lite.py renders only "
                          f"{', '.join(sorted(SUPPORTED_FIELDS))})")
    if k.get("kind", "Kustomization") != "Kustomization":
        raise RenderError(f"{path}: kind is {k.get('kind')!r}, not Kustomization")

    objects = []
    for resource in k.get("resources") or []:
        objects.extend(_load_resource(directory, resource, path))
    _check_unique(objects, path)
    for patch in k.get("patches") or []:
        _apply_patch_entry(objects, directory, patch, path)
    if "namespace" in k:
        _set_namespace(objects, k["namespace"], path)
    if k.get("commonLabels"):
        _add_common_labels(objects, k["commonLabels"], path)
    for image in k.get("images") or []:
        _set_image(objects, image, path)
    return objects


def _load_resource(directory, resource, kustomization):
    if not isinstance(resource, str):
        raise RenderError(f"{kustomization}: resource {resource!r} is not a path")
    target = os.path.normpath(os.path.join(directory, resource))
    if os.path.isdir(target):
        return render(target)
    if os.path.isfile(target):
        return load_documents(target)
    raise RenderError(f"{kustomization}: resource {resource!r} does not exist ({target})")


def _check_unique(objects, kustomization):
    seen = set()
    for obj in objects:
        key = (api_group(str(obj.get("apiVersion", ""))), object_id(obj))
        if key in seen:
            raise RenderError(f"{kustomization}: {object_id(obj)} is defined twice")
        seen.add(key)


# --- patches ------------------------------------------------------------------------------------

def _apply_patch_entry(objects, directory, entry, kustomization):
    if not isinstance(entry, dict) or set(entry) != {"path"}:
        raise RenderError(f"{kustomization}: patch {entry!r}: only `- path: FILE` "
                          "(a strategic-merge patch naming its target) is supported")
    patch_path = os.path.normpath(os.path.join(directory, entry["path"]))
    if not os.path.isfile(patch_path):
        raise RenderError(f"{kustomization}: patch file {entry['path']!r} does not exist")
    for patch in load_documents(patch_path):
        target = _patch_target(objects, patch, patch_path)
        merged = strategic_merge(target, patch, where=f"{patch_path}: {object_id(patch)}")
        target.clear()
        target.update(merged)


def _patch_target(objects, patch, patch_path):
    meta = patch.get("metadata") or {}
    if not patch.get("kind") or not meta.get("name") or not patch.get("apiVersion"):
        raise RenderError(f"{patch_path}: a patch needs apiVersion, kind and metadata.name")
    group = api_group(patch["apiVersion"])
    matches = [o for o in objects
               if o.get("kind") == patch["kind"]
               and (o.get("metadata") or {}).get("name") == meta["name"]
               and api_group(str(o.get("apiVersion", ""))) == group
               and ("namespace" not in meta
                    or (o.get("metadata") or {}).get("namespace") == meta["namespace"])]
    if len(matches) != 1:
        raise RenderError(f"{patch_path}: patch {object_id(patch)} matches {len(matches)} "
                          "objects, expected exactly one")
    return matches[0]


def strategic_merge(original, patch, where="patch"):
    """Returns `original` with the strategic-merge patch `patch` applied (inputs untouched)."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if "$patch" in patch:
        raise RenderError(f"{where}: `$patch: {patch['$patch']}` on a mapping is not supported")
    result = copy.deepcopy(original) if isinstance(original, dict) else {}
    for key, value in patch.items():
        if key.startswith("$"):
            raise RenderError(f"{where}: directive {key} is not supported")
        if value is None:
            result.pop(key, None)
        elif isinstance(value, dict):
            result[key] = strategic_merge(result.get(key), value, where)
        elif isinstance(value, list) and isinstance(result.get(key), list):
            result[key] = _merge_list(key, result[key], value, where)
        else:
            result[key] = _strip_directives(copy.deepcopy(value), where)
    return result


def _merge_key(field, items):
    if field in MERGE_KEYS:
        return MERGE_KEYS[field]
    if field == "ports" and items:
        # Container ports merge by containerPort, Service ports by port.
        return "containerPort" if any("containerPort" in i for i in items) else "port"
    return None


def _merge_list(field, original, patch, where):
    dict_items = all(isinstance(i, dict) for i in original + patch)
    key = _merge_key(field, original + patch) if dict_items else None
    if key is None:
        return _strip_directives(copy.deepcopy(patch), where)
    # kustomize's order: the patch's items first (in the patch's order), then the original
    # items the patch does not name (in their order).
    remaining = copy.deepcopy(original)
    merged = []
    for item in patch:
        if key not in item:
            raise RenderError(f"{where}: an item of {field} lacks its merge key {key}")
        index = next((i for i, o in enumerate(remaining) if o.get(key) == item[key]), None)
        directive = item.get("$patch")
        if directive == "delete":
            if index is None:
                raise RenderError(f"{where}: `$patch: delete` of {field} {key}={item[key]} "
                                  "matches nothing")
            del remaining[index]
        elif directive is not None:
            raise RenderError(f"{where}: `$patch: {directive}` is not supported")
        elif index is None:
            merged.append(_strip_directives(copy.deepcopy(item), where))
        else:
            merged.append(strategic_merge(remaining.pop(index), item, where))
    return merged + remaining


def _strip_directives(value, where):
    """New content must not carry directives this renderer would silently drop."""
    if isinstance(value, dict):
        for key in value:
            if key.startswith("$"):
                raise RenderError(f"{where}: directive {key} is not supported here")
        return {k: _strip_directives(v, where) for k, v in value.items()}
    if isinstance(value, list):
        return [_strip_directives(v, where) for v in value]
    return value


# --- namespace, labels, images ------------------------------------------------------------------

def _set_namespace(objects, namespace, kustomization):
    for obj in objects:
        meta = obj.setdefault("metadata", {})
        if obj.get("kind") == "Namespace":
            if meta.get("name") != namespace:
                raise RenderError(f"{kustomization}: Namespace {meta.get('name')!r} differs "
                                  f"from namespace {namespace!r} (kustomize would rename it)")
        elif obj.get("kind") not in CLUSTER_SCOPED_KINDS:
            meta["namespace"] = namespace


def _add_labels(mapping, labels):
    mapping.update(labels)


def _path(obj, *keys, create):
    """The mapping at obj[keys...]; created when `create`, else None when absent."""
    node = obj
    for key in keys:
        if not isinstance(node.get(key), dict):
            if not create:
                return None
            node[key] = {}
        node = node[key]
    return node


def _add_common_labels(objects, labels, kustomization):
    if not isinstance(labels, dict):
        raise RenderError(f"{kustomization}: commonLabels must be a mapping")
    labels = {str(k): str(v) for k, v in labels.items()}
    for obj in objects:
        kind = obj.get("kind")
        _add_labels(_path(obj, "metadata", "labels", create=True), labels)
        if kind in WORKLOAD_KINDS:
            _add_labels(_path(obj, "spec", "selector", "matchLabels", create=True), labels)
            _add_labels(_path(obj, "spec", "template", "metadata", "labels", create=True),
                        labels)
        elif kind == "Service":
            _add_labels(_path(obj, "spec", "selector", create=True), labels)
        elif kind == "PodDisruptionBudget":
            selector = _path(obj, "spec", "selector", "matchLabels", create=False)
            if selector is not None:
                _add_labels(selector, labels)


IMAGE_RE = re.compile(r"^(?P<name>[^@]+?)(?::(?P<tag>[\w][\w.-]{0,127}))?(?:@(?P<digest>.+))?$")


def _containers(node):
    """Every container mapping under `node` (containers and initContainers at any depth)."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("containers", "initContainers") and isinstance(value, list):
                yield from (c for c in value if isinstance(c, dict))
            else:
                yield from _containers(value)
    elif isinstance(node, list):
        for item in node:
            yield from _containers(item)


def _set_image(objects, image, kustomization):
    if not isinstance(image, dict) or "name" not in image:
        raise RenderError(f"{kustomization}: image entry {image!r} needs a name")
    unknown = set(image) - {"name", "newName", "newTag", "digest"}
    if unknown:
        raise RenderError(f"{kustomization}: image field(s) {sorted(unknown)} not supported")
    for obj in objects:
        for container in _containers(obj.get("spec")):
            match = IMAGE_RE.match(str(container.get("image", "")))
            if not match or match.group("name") != image["name"]:
                continue
            name = image.get("newName", match.group("name"))
            if "digest" in image:
                container["image"] = f"{name}@{image['digest']}"
            elif "newTag" in image:
                container["image"] = f"{name}:{image['newTag']}"
            else:
                tag = f":{match.group('tag')}" if match.group("tag") else ""
                digest = f"@{match.group('digest')}" if match.group("digest") else ""
                container["image"] = f"{name}{tag}{digest}"


def main(argv):
    """`kustomize_lite.py DIR` prints the rendered objects as a YAML stream (for review, or for
    `kubectl apply -f -` where kustomize is not at hand)."""
    if len(argv) != 1:
        print("usage: kustomize_lite.py KUSTOMIZATION_DIR", file=sys.stderr)
        return 2
    try:
        objects = render(argv[0])
    except RenderError as e:
        print(f"kustomize_lite: {e}", file=sys.stderr)
        return 1
    yaml.safe_dump_all(objects, sys.stdout, sort_keys=False)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
