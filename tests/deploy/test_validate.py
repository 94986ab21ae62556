"""Tests of deploy/tools/validate.py: the repository's manifests pass, and every deliberately
broken manifest under tests/deploy/broken/ is rejected for the reason it was broken."""

import os
import subprocess
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "deploy", "tools"))

import validate  # noqa: E402

BROKEN = os.path.join(HERE, "broken")
# What each broken case must be rejected with (a substring of one reported problem).
EXPECTED = {
    "unknown-field": "Additional properties are not allowed ('readinesProbe' was unexpected)",
    "wrong-type": "spec.replicas: 'two' is not of type 'integer'",
    "servicemonitor-interval": "spec.endpoints.0.interval: '15 seconds' does not match",
    "dangling-port": "port grpc targets 'grcp', which no container of the selected pods",
    "undefined-variable": "$(CONTROL_ADDRESS) in '--control=$(CONTROL_ADDRESS)' is not defined",
    "writable-root": "readOnlyRootFilesystem is not true",
    "unsupported-kustomize": "unsupported kustomization field(s) configMapGenerator",
}


class ValidateTest(unittest.TestCase):
    def test_repository_manifests_pass(self):
        for directory in validate.default_kustomizations():
            with self.subTest(directory):
                objects, problems = validate.validate_kustomization(directory)
                self.assertEqual(problems, [])
                self.assertGreater(len(objects), 0)

    def test_valid_fixture_passes(self):
        _, problems = validate.validate_kustomization(os.path.join(HERE, "fixtures", "valid"))
        self.assertEqual(problems, [])

    def test_every_broken_case_has_an_expectation(self):
        self.assertEqual(sorted(os.listdir(BROKEN)), sorted(EXPECTED))

    def test_broken_manifests_are_rejected_for_their_fault(self):
        for case, expected in EXPECTED.items():
            with self.subTest(case):
                _, problems = validate.validate_kustomization(os.path.join(BROKEN, case))
                self.assertTrue(any(expected in p for p in problems),
                                f"{case}: expected {expected!r} among {problems}")

    def test_command_fails_on_a_broken_manifest(self):
        run = subprocess.run(
            [sys.executable, os.path.join(REPO, "deploy", "tools", "validate.py"),
             os.path.join(BROKEN, "unknown-field")],
            capture_output=True, text=True, timeout=120, check=False)
        self.assertEqual(run.returncode, 1, run.stdout + run.stderr)
        self.assertIn("FAIL", run.stdout)
        self.assertIn("deploy/validate: FAILED", run.stderr)

    def test_lint_reports_badly_formatted_yaml(self):
        with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
            f.write("key: value   \nlist:\n- a\n-   b\nkey: again\n")
        self.addCleanup(os.remove, f.name)
        problems = validate.lint([f.name], os.path.join(REPO, ".yamllint"))
        text = "\n".join(problems)
        for rule in ("trailing-spaces", "indentation", "key-duplicates"):
            self.assertIn(rule, text)

    def test_quantities(self):
        self.assertEqual(validate.parse_quantity("500m"), 0.5)
        self.assertEqual(validate.parse_quantity("2Gi"), 2 * 2**30)
        self.assertEqual(validate.parse_quantity("1e3"), 1000)
        self.assertIsNone(validate.parse_quantity("2 GB"))
        self.assertEqual(validate._quantity_problems(
            "c", {"requests": {"memory": "2Gi"}, "limits": {"memory": "1Gi"}}),
            ["c: resources.requests.memory exceeds the limit"])


if __name__ == "__main__":
    unittest.main()
