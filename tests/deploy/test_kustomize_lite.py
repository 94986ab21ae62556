"""Tests of deploy/tools/kustomize_lite.py: each supported kustomize feature, the errors for
everything outside the subset, and agreement with `kubectl kustomize` where kubectl exists."""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "deploy", "tools"))

import kustomize_lite  # noqa: E402
import yaml  # noqa: E402

DEPLOYMENT = """
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      initContainers:
        - name: init
          image: kvwire
      containers:
        - name: web
          image: kvwire:old
          args: ["decode", "--a=1"]
          env:
            - {name: A, value: "1"}
            - {name: B, value: "2"}
          ports:
            - {name: grpc, containerPort: 7200}
          resources:
            limits: {cpu: "1", memory: 1Gi}
        - name: sidecar
          image: other/image:1.0
"""
SERVICE = """
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  selector: {app: web}
  ports:
    - {name: grpc, port: 7200}
    - {name: metrics, port: 9100}
"""
PDBS = """
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: with-selector
spec:
  maxUnavailable: 1
  selector:
    matchLabels: {app: web}
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: without-selector
spec:
  maxUnavailable: 1
"""
NAMESPACE = """
apiVersion: v1
kind: Namespace
metadata:
  name: demo
"""


class Tree:
    """A temporary folder of files given as {relative path: text}."""

    def __init__(self, files):
        self.root = tempfile.mkdtemp(prefix="kustomize-lite-")
        for path, text in files.items():
            full = os.path.join(self.root, path)
            os.makedirs(os.path.dirname(full), exist_ok=True)
            with open(full, "w", encoding="utf-8") as f:
                f.write(textwrap.dedent(text).lstrip())

    def path(self, *parts):
        return os.path.join(self.root, *parts)

    def cleanup(self):
        shutil.rmtree(self.root)


def kustomization(**fields):
    body = {"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization"}
    body.update(fields)
    return yaml.safe_dump(body)


def by_id(objects):
    return {kustomize_lite.object_id(o): o for o in objects}


# A base and an overlay exercising every supported feature (also compared with kubectl).
FEATURE_TREE = {
    "base/kustomization.yaml": kustomization(
        resources=["namespace.yaml", "app.yaml", "pdb.yaml"], namespace="demo",
        commonLabels={"tier": "web"}),
    "base/namespace.yaml": NAMESPACE,
    "base/app.yaml": DEPLOYMENT + "---\n" + SERVICE,
    "base/pdb.yaml": PDBS,
    "overlay/kustomization.yaml": kustomization(
        resources=["../base"], commonLabels={"stage": "prod"},
        images=[{"name": "kvwire", "newName": "registry.example/kvwire", "newTag": "1.2"},
                {"name": "other/image", "digest": "sha256:" + "a" * 64}],
        patches=[{"path": "patch.yaml"}]),
    "overlay/patch.yaml": """
        apiVersion: apps/v1
        kind: Deployment
        metadata:
          name: web
        spec:
          replicas: 3
          template:
            spec:
              containers:
                - name: web
                  args: ["decode", "--b=2"]
                  env:
                    - {name: B, value: "20"}
                    - {name: C, value: "3"}
                  resources:
                    limits:
                      memory: null
                - name: sidecar
                  $patch: delete
        ---
        apiVersion: v1
        kind: Service
        metadata:
          name: web
        spec:
          ports:
            - {name: grpc, port: 7200, targetPort: grpc}
        """,
}


class KustomizeLiteTest(unittest.TestCase):
    def tree(self, files):
        tree = Tree(files)
        self.addCleanup(tree.cleanup)
        return tree

    def test_loads_files_and_directories_in_order(self):
        tree = self.tree({
            "kustomization.yaml": kustomization(resources=["sub", "svc.yaml"]),
            "sub/kustomization.yaml": kustomization(resources=["app.yaml"]),
            "sub/app.yaml": DEPLOYMENT,
            "svc.yaml": SERVICE,
        })
        objects = kustomize_lite.render(tree.root)
        self.assertEqual([kustomize_lite.object_id(o) for o in objects],
                         ["Deployment/web", "Service/web"])

    def test_namespace_applies_to_namespaced_objects(self):
        tree = self.tree({"kustomization.yaml": kustomization(
            resources=["ns.yaml", "app.yaml"], namespace="demo"),
            "ns.yaml": NAMESPACE, "app.yaml": SERVICE})
        objects = by_id(kustomize_lite.render(tree.root))
        self.assertNotIn("namespace", objects["Namespace/demo"]["metadata"])
        self.assertIn("Service/demo/web", objects)

    def test_namespace_object_with_another_name_is_rejected(self):
        tree = self.tree({"kustomization.yaml": kustomization(
            resources=["ns.yaml"], namespace="elsewhere"), "ns.yaml": NAMESPACE})
        with self.assertRaisesRegex(kustomize_lite.RenderError, "would rename it"):
            kustomize_lite.render(tree.root)

    def test_common_labels_reach_selectors_and_pod_templates(self):
        tree = self.tree(FEATURE_TREE)
        objects = by_id(kustomize_lite.render(tree.path("base")))
        deployment = objects["Deployment/demo/web"]
        for labels in (deployment["metadata"]["labels"],
                       deployment["spec"]["selector"]["matchLabels"],
                       deployment["spec"]["template"]["metadata"]["labels"],
                       objects["Service/demo/web"]["spec"]["selector"],
                       objects["PodDisruptionBudget/demo/with-selector"]["spec"]["selector"][
                           "matchLabels"]):
            self.assertEqual(labels["tier"], "web")
        # As in kustomize, a PDB selector is not created where there was none.
        self.assertNotIn("selector", objects["PodDisruptionBudget/demo/without-selector"]["spec"])

    def test_images_rewrite_containers_and_init_containers(self):
        tree = self.tree(FEATURE_TREE)
        pod = by_id(kustomize_lite.render(tree.path("overlay")))["Deployment/demo/web"][
            "spec"]["template"]["spec"]
        self.assertEqual(pod["initContainers"][0]["image"], "registry.example/kvwire:1.2")
        self.assertEqual(pod["containers"][0]["image"], "registry.example/kvwire:1.2")

    def test_image_digest_replaces_the_tag(self):
        tree = self.tree({
            "kustomization.yaml": kustomization(
                resources=["app.yaml"],
                images=[{"name": "other/image", "digest": "sha256:" + "b" * 64}]),
            "app.yaml": DEPLOYMENT})
        pod = kustomize_lite.render(tree.root)[0]["spec"]["template"]["spec"]
        self.assertEqual(pod["containers"][1]["image"], "other/image@sha256:" + "b" * 64)
        self.assertEqual(pod["containers"][0]["image"], "kvwire:old")

    def test_strategic_merge_patch(self):
        tree = self.tree(FEATURE_TREE)
        objects = by_id(kustomize_lite.render(tree.path("overlay")))
        deployment = objects["Deployment/demo/web"]
        self.assertEqual(deployment["spec"]["replicas"], 3)
        containers = deployment["spec"]["template"]["spec"]["containers"]
        self.assertEqual([c["name"] for c in containers], ["web"])  # sidecar deleted
        web = containers[0]
        self.assertEqual(web["args"], ["decode", "--b=2"])  # plain lists are replaced
        self.assertEqual(web["env"], [{"name": "B", "value": "20"}, {"name": "C", "value": "3"},
                                      {"name": "A", "value": "1"}])  # merged by name
        self.assertEqual(web["resources"]["limits"], {"cpu": "1"})  # null deletes
        ports = objects["Service/demo/web"]["spec"]["ports"]
        self.assertEqual(ports, [{"name": "grpc", "port": 7200, "targetPort": "grpc"},
                                 {"name": "metrics", "port": 9100}])  # merged by port

    def test_patch_must_match_exactly_one_object(self):
        tree = self.tree({
            "kustomization.yaml": kustomization(resources=["app.yaml"],
                                                patches=[{"path": "patch.yaml"}]),
            "app.yaml": DEPLOYMENT,
            "patch.yaml": "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: webb\n"})
        with self.assertRaisesRegex(kustomize_lite.RenderError, "matches 0 objects"):
            kustomize_lite.render(tree.root)

    def test_features_outside_the_subset_are_errors(self):
        cases = {
            "configMapGenerator": kustomization(resources=["app.yaml"],
                                                configMapGenerator=[{"name": "x"}]),
            "only `- path: FILE`": kustomization(
                resources=["app.yaml"],
                patches=[{"path": "patch.yaml", "target": {"kind": "Deployment"}}]),
        }
        for message, text in cases.items():
            tree = self.tree({"kustomization.yaml": text, "app.yaml": DEPLOYMENT,
                              "patch.yaml": "apiVersion: apps/v1\nkind: Deployment\n"
                                            "metadata:\n  name: web\n"})
            with self.subTest(message):
                with self.assertRaisesRegex(kustomize_lite.RenderError, message):
                    kustomize_lite.render(tree.root)

    def test_unsupported_patch_directive_is_an_error(self):
        with self.assertRaisesRegex(kustomize_lite.RenderError, r"\$retainKeys"):
            kustomize_lite.strategic_merge({"spec": {}}, {"spec": {"$retainKeys": ["a"]}})

    def test_duplicate_and_missing_resources_are_errors(self):
        tree = self.tree({"kustomization.yaml": kustomization(resources=["a.yaml", "b.yaml"]),
                          "a.yaml": SERVICE, "b.yaml": SERVICE})
        with self.assertRaisesRegex(kustomize_lite.RenderError, "defined twice"):
            kustomize_lite.render(tree.root)
        tree = self.tree({"kustomization.yaml": kustomization(resources=["nope.yaml"])})
        with self.assertRaisesRegex(kustomize_lite.RenderError, "does not exist"):
            kustomize_lite.render(tree.root)


class AgreesWithKubectlTest(unittest.TestCase):
    """Where `kubectl kustomize` runs, it must render exactly what kustomize_lite renders."""

    def setUp(self):
        kubectl = shutil.which("kubectl")
        if kubectl is None:
            self.skipTest("kubectl is not installed: kustomize_lite not compared with kustomize")
        probe = subprocess.run([kubectl, "kustomize", "--help"], capture_output=True,
                               timeout=60, check=False)
        if probe.returncode != 0:
            self.skipTest("`kubectl kustomize` does not run here")
        self.kubectl = kubectl

    def assert_same(self, directory):
        run = subprocess.run([self.kubectl, "kustomize", directory], capture_output=True,
                             text=True, timeout=120, check=False)
        self.assertEqual(run.returncode, 0, run.stderr)
        theirs = by_id(d for d in yaml.safe_load_all(run.stdout) if d)
        mine = by_id(kustomize_lite.render(directory))
        self.assertEqual(sorted(mine), sorted(theirs))
        for key, obj in mine.items():
            self.assertEqual(json.dumps(obj, sort_keys=True, indent=1),
                             json.dumps(theirs[key], sort_keys=True, indent=1), key)

    def test_repository_manifests(self):
        k8s = os.path.join(REPO, "deploy", "k8s")
        for directory in ["base"] + [os.path.join("overlays", d)
                                     for d in sorted(os.listdir(os.path.join(k8s, "overlays")))]:
            with self.subTest(directory):
                self.assert_same(os.path.join(k8s, directory))

    def test_feature_tree(self):
        tree = Tree(FEATURE_TREE)
        self.addCleanup(tree.cleanup)
        self.assert_same(tree.path("base"))
        self.assert_same(tree.path("overlay"))


if __name__ == "__main__":
    unittest.main()
