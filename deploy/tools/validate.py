#!/usr/bin/env python3
"""Offline validation of kvwire's Kubernetes manifests; CI runs it through deploy/validate.

  deploy/validate [KUSTOMIZATION_DIR...]

With no arguments it checks deploy/k8s/base and every deploy/k8s/overlays/*:
  1. yamllint, with the repository's .yamllint, over every YAML file under deploy/ and
     tests/deploy/ (warnings count as failures);
  2. renders each kustomization with kustomize_lite (the kustomize subset the manifests use);
  3. validates every rendered object against the Kubernetes JSON schemas bundled with the pinned
     kubernetes-validate (strict: unknown fields are errors) for KUBERNETES_VERSION, and the
     ServiceMonitor against schemas/servicemonitor-monitoring-v1.json; a kind with no schema is
     an error;
  4. checks what schemas cannot: selectors match pod templates, Service target ports, probe
     ports and ServiceMonitor ports exist, volumes, ConfigMaps and $(VAR) references resolve,
     HPA targets exist, and every container runs non-root with a read-only root filesystem, no
     privilege escalation, all capabilities dropped, and CPU and memory requests and limits.
Prints every problem and exits 1 when there is one; exits 0 otherwise.
"""

import glob
import json
import os
import re
import sys

try:
    import jsonschema
    import kubernetes_validate
    import yamllint.config
    import yamllint.linter
    import yaml
except ImportError as missing:
    sys.exit(f"deploy/validate: the Python environment lacks {missing.name}: run "
             "scripts/install-deps (it pins kubernetes-validate and yamllint)")

import kustomize_lite

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
# The Kubernetes version the manifests target; kubernetes-validate's version is pinned in
# scripts/install-deps.
KUBERNETES_VERSION = "1.29.0"
LOCAL_SCHEMAS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"):
        os.path.join(HERE, "schemas", "servicemonitor-monitoring-v1.json"),
}
WORKLOAD_KINDS = kustomize_lite.WORKLOAD_KINDS


# --- 1. yamllint --------------------------------------------------------------------------------

def yaml_files(roots):
    files = []
    for root in roots:
        for pattern in ("**/*.yaml", "**/*.yml"):
            files.extend(glob.glob(os.path.join(root, pattern), recursive=True))
    return sorted(set(files))


def lint(files, config_file):
    config = yamllint.config.YamlLintConfig(file=config_file)
    problems = []
    for path in files:
        with open(path, encoding="utf-8") as f:
            for p in yamllint.linter.run(f, config, path):
                problems.append(f"{os.path.relpath(path, REPO)}:{p.line}:{p.column}: "
                                f"[{p.level}] {p.desc} ({p.rule})")
    return problems


# --- 3. schemas ---------------------------------------------------------------------------------

def _local_validator(path):
    with open(path, encoding="utf-8") as f:
        schema = json.load(f)
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def schema_problems(obj):
    key = (obj.get("apiVersion"), obj.get("kind"))
    where = kustomize_lite.object_id(obj)
    if key in LOCAL_SCHEMAS:
        validator = _local_validator(LOCAL_SCHEMAS[key])
        return [f"{where}: {'.'.join(str(p) for p in e.absolute_path) or '(root)'}: {e.message}"
                for e in sorted(validator.iter_errors(obj), key=lambda e: list(e.path))]
    try:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.SchemaNotFoundError as e:
        return [f"{where}: no schema: {e.message}"]
    except kubernetes_validate.ValidationError as e:
        path = ".".join(str(p) for p in e.absolute_path) or "(root)"
        return [f"{where}: {path}: {e.message} (Kubernetes {e.version} schema)"]
    return []


# --- 4. cross-references and policy ------------------------------------------------------------

def namespace_of(obj):
    return (obj.get("metadata") or {}).get("namespace")


def _labels_match(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def _pod_templates(objects):
    for obj in objects:
        if obj.get("kind") in WORKLOAD_KINDS:
            template = (obj.get("spec") or {}).get("template") or {}
            yield obj, (template.get("metadata") or {}).get("labels") or {}, \
                template.get("spec") or {}


def _containers(pod_spec):
    return list(pod_spec.get("initContainers") or []) + list(pod_spec.get("containers") or [])


def _port_names(pod_spec):
    names, numbers = set(), set()
    for c in pod_spec.get("containers") or []:
        for p in c.get("ports") or []:
            numbers.add(p.get("containerPort"))
            if "name" in p:
                names.add(p["name"])
    return names, numbers


def configmaps_by_name(objects):
    return {(namespace_of(o), (o.get("metadata") or {}).get("name")): o.get("data") or {}
            for o in objects if o.get("kind") == "ConfigMap"}


def workload_problems(objects):
    problems = []
    configmaps = configmaps_by_name(objects)
    for obj, labels, pod in _pod_templates(objects):
        where = kustomize_lite.object_id(obj)
        selector = ((obj.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
        if not _labels_match(selector, labels):
            problems.append(f"{where}: spec.selector.matchLabels {selector} does not match the "
                            f"pod template labels {labels}")
        volumes = {v.get("name"): v for v in pod.get("volumes") or []}
        for volume in volumes.values():
            ref = (volume.get("configMap") or {}).get("name")
            if ref and (namespace_of(obj), ref) not in configmaps:
                problems.append(f"{where}: volume {volume['name']} names ConfigMap {ref}, "
                                "which is not in the manifests")
        for c in _containers(pod):
            problems += _container_problems(obj, pod, c, volumes, configmaps)
    return problems


def _container_problems(obj, pod, c, volumes, configmaps):
    where = f"{kustomize_lite.object_id(obj)} container {c.get('name')}"
    problems = []
    for mount in c.get("volumeMounts") or []:
        if mount.get("name") not in volumes:
            problems.append(f"{where}: volumeMount {mount.get('name')} has no volume")
    defined = {e.get("name") for e in c.get("env") or []}
    for source in c.get("envFrom") or []:
        ref = (source.get("configMapRef") or {}).get("name")
        if ref is None:
            continue
        if (namespace_of(obj), ref) not in configmaps:
            problems.append(f"{where}: envFrom names ConfigMap {ref}, which is not in the "
                            "manifests")
        else:
            defined |= {source.get("prefix", "") + k for k in configmaps[(namespace_of(obj), ref)]}
    texts = list(c.get("command") or []) + list(c.get("args") or [])
    texts += [e.get("value", "") for e in c.get("env") or []]
    for text in texts:
        for var in re.findall(r"(?<!\$)\$\(([A-Za-z_][A-Za-z0-9_]*)\)", str(text)):
            if var not in defined:
                problems.append(f"{where}: $({var}) in {text!r} is not defined by env or "
                                "envFrom (Kubernetes would pass it on literally)")
    ports = {p.get("containerPort") for p in c.get("ports") or []}
    port_names = {p.get("name") for p in c.get("ports") or []}
    for probe_name in ("startupProbe", "readinessProbe", "livenessProbe"):
        probe = c.get(probe_name) or {}
        for action in ("grpc", "httpGet", "tcpSocket"):
            if action in probe:
                port = probe[action].get("port")
                if port not in ports and port not in port_names:
                    problems.append(f"{where}: {probe_name} {action} port {port} is not a "
                                    "port of the container")
    problems += _security_problems(where, pod, c)
    return problems


def _security_problems(where, pod, c):
    problems = []
    pod_sc = pod.get("securityContext") or {}
    sc = c.get("securityContext") or {}
    if not sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot", False)):
        problems.append(f"{where}: runAsNonRoot is not set")
    if sc.get("allowPrivilegeEscalation") is not False:
        problems.append(f"{where}: allowPrivilegeEscalation is not false")
    if sc.get("readOnlyRootFilesystem") is not True:
        problems.append(f"{where}: readOnlyRootFilesystem is not true")
    if "ALL" not in ((sc.get("capabilities") or {}).get("drop") or []):
        problems.append(f"{where}: capabilities.drop does not contain ALL")
    resources = c.get("resources") or {}
    for kind in ("requests", "limits"):
        for name in ("cpu", "memory"):
            if name not in (resources.get(kind) or {}):
                problems.append(f"{where}: resources.{kind}.{name} is not set")
    return problems + _quantity_problems(where, resources)


QUANTITY_RE = re.compile(r"^([+-]?(?:\d+(?:\.\d*)?|\.\d+))([KMGTPE]i|[numkMGTPE]|[eE][+-]?\d+)?$")
QUANTITY_SCALE = {None: 1, "n": 1e-9, "u": 1e-6, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9,
                  "T": 1e12, "P": 1e15, "E": 1e18, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30,
                  "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}


def parse_quantity(text):
    """A Kubernetes resource quantity ("500m", "1Gi", "2") as a number, or None if malformed
    (the JSON schemas accept any string there)."""
    match = QUANTITY_RE.match(str(text))
    if not match:
        return None
    suffix = match.group(2)
    if suffix and suffix[0] in "eE":
        return float(match.group(1)) * 10 ** int(suffix[1:])
    return float(match.group(1)) * QUANTITY_SCALE[suffix]


def _quantity_problems(where, resources):
    problems = []
    values = {}
    for kind in ("requests", "limits"):
        for name, text in (resources.get(kind) or {}).items():
            values[(kind, name)] = parse_quantity(text)
            if values[(kind, name)] is None:
                problems.append(f"{where}: resources.{kind}.{name} {text!r} is not a quantity")
    for (kind, name), request in values.items():
        limit = values.get(("limits", name))
        if kind == "requests" and request is not None and limit is not None and request > limit:
            problems.append(f"{where}: resources.requests.{name} exceeds the limit")
    return problems


def service_problems(objects):
    problems = []
    templates = list(_pod_templates(objects))
    for svc in (o for o in objects if o.get("kind") == "Service"):
        where = kustomize_lite.object_id(svc)
        selector = (svc.get("spec") or {}).get("selector") or {}
        pods = [pod for obj, labels, pod in templates
                if namespace_of(obj) == namespace_of(svc) and _labels_match(selector, labels)]
        if not pods:
            problems.append(f"{where}: selector {selector} matches no pod template")
            continue
        for port in (svc.get("spec") or {}).get("ports") or []:
            target = port.get("targetPort", port.get("port"))
            for pod in pods:
                names, numbers = _port_names(pod)
                if target not in names and target not in numbers:
                    problems.append(f"{where}: port {port.get('name')} targets {target!r}, "
                                    "which no container of the selected pods declares")
    return problems


def other_problems(objects):
    problems = []
    templates = list(_pod_templates(objects))
    services = [o for o in objects if o.get("kind") == "Service"]
    for obj in objects:
        where = kustomize_lite.object_id(obj)
        spec = obj.get("spec") or {}
        kind = obj.get("kind")
        if kind == "PodDisruptionBudget":
            selector = (spec.get("selector") or {}).get("matchLabels") or {}
            if not any(namespace_of(o) == namespace_of(obj) and _labels_match(selector, labels)
                       for o, labels, _ in templates):
                problems.append(f"{where}: selector {selector} matches no pod template")
        elif kind == "HorizontalPodAutoscaler":
            ref = spec.get("scaleTargetRef") or {}
            if not any(o.get("kind") == ref.get("kind") and namespace_of(o) == namespace_of(obj)
                       and o["metadata"].get("name") == ref.get("name") for o in objects):
                problems.append(f"{where}: scaleTargetRef {ref.get('kind')}/{ref.get('name')} "
                                "is not in the manifests")
            if spec.get("minReplicas", 1) > spec.get("maxReplicas", 0):
                problems.append(f"{where}: minReplicas exceeds maxReplicas")
        elif kind == "ServiceMonitor":
            problems += _service_monitor_problems(obj, services)
        elif kind == "ConfigMap":
            for key, text in (obj.get("data") or {}).items():
                if key.endswith((".yaml", ".yml")):
                    try:
                        yaml.safe_load(text)
                    except yaml.YAMLError as e:
                        problems.append(f"{where}: data.{key} is not valid YAML: {e}")
    return problems


def _service_monitor_problems(monitor, services):
    where = kustomize_lite.object_id(monitor)
    spec = monitor.get("spec") or {}
    selector = (spec.get("selector") or {}).get("matchLabels") or {}
    any_namespace = (spec.get("namespaceSelector") or {}).get("any", False)
    matched = [s for s in services
               if (any_namespace or namespace_of(s) == namespace_of(monitor))
               and _labels_match(selector, (s.get("metadata") or {}).get("labels") or {})]
    if not matched:
        return [f"{where}: selector {selector} matches no Service"]
    problems = []
    for endpoint in spec.get("endpoints") or []:
        for svc in matched:
            names = {p.get("name") for p in (svc.get("spec") or {}).get("ports") or []}
            if "port" in endpoint and endpoint["port"] not in names:
                problems.append(f"{where}: endpoint port {endpoint['port']!r} is not a port "
                                f"name of {kustomize_lite.object_id(svc)}")
    return problems


# --- driver -------------------------------------------------------------------------------------

def validate_kustomization(directory):
    """Renders `directory` and returns (objects, problems)."""
    try:
        objects = kustomize_lite.render(directory)
    except kustomize_lite.RenderError as e:
        return [], [f"render: {e}"]
    problems = []
    for obj in objects:
        problems += schema_problems(obj)
    problems += workload_problems(objects)
    problems += service_problems(objects)
    problems += other_problems(objects)
    return objects, problems


def default_kustomizations():
    k8s = os.path.join(REPO, "deploy", "k8s")
    return [os.path.join(k8s, "base")] + sorted(
        d for d in glob.glob(os.path.join(k8s, "overlays", "*")) if os.path.isdir(d))


def finish(tool, problems, success):
    """Prints the problems (or `success`) and returns the exit status."""
    for p in problems:
        print(f"FAIL {p}")
    if problems:
        print(f"{tool}: FAILED", file=sys.stderr)
        return 1
    print(f"{tool}: {success}")
    return 0


def main(argv):
    directories = argv or default_kustomizations()
    config = os.path.join(REPO, ".yamllint")
    files = yaml_files([os.path.join(REPO, "deploy"), os.path.join(REPO, "tests", "deploy")])
    files.append(config)
    problems = [f"yamllint: {p}" for p in lint(files, config)]
    if not problems:
        print(f"ok   yamllint: {len(files)} files")
    for directory in directories:
        name = os.path.relpath(directory, REPO)
        objects, found = validate_kustomization(directory)
        problems += [f"{name}: {p}" for p in found]
        if not found:
            print(f"ok   {name}: {len(objects)} objects, Kubernetes "
                  f"{KUBERNETES_VERSION.rsplit('.', 1)[0]} schemas and cross-references")
    return finish("deploy/validate", problems, "all checks passed")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
