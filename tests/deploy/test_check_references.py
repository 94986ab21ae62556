"""Tests of deploy/tools/check_references.py on small Dockerfiles, .dockerignore rules and
manifests written here, with stand-in binaries (the ctest deploy_references runs the real check
against the build)."""

import os
import shutil
import stat
import sys
import tempfile
import textwrap
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "deploy", "tools"))

import check_references as refs  # noqa: E402


def write(path, text, executable=False):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(textwrap.dedent(text).lstrip())
    if executable:
        os.chmod(path, os.stat(path).st_mode | stat.S_IXUSR)


class DockerignoreTest(unittest.TestCase):
    def rules(self, text):
        with tempfile.NamedTemporaryFile("w", delete=False) as f:
            f.write(text)
        self.addCleanup(os.remove, f.name)
        return refs.load_dockerignore(f.name)

    def test_patterns_match_paths_and_their_folders(self):
        rules = self.rules("build\nbuild-*\n**/*.gguf\ndocs\n!docs/keep.md\n# comment\n")
        self.assertTrue(refs.ignored(rules, "build/bin/kvwire"))
        self.assertTrue(refs.ignored(rules, "build-asan/x"))
        self.assertTrue(refs.ignored(rules, "a/b/model.gguf"))
        self.assertTrue(refs.ignored(rules, "docs/results/plot.png"))
        self.assertFalse(refs.ignored(rules, "docs/keep.md"))
        self.assertFalse(refs.ignored(rules, "builder/file"))
        self.assertFalse(refs.ignored(rules, "deploy/docker/entrypoint"))

    def test_repository_context_keeps_what_the_images_need(self):
        rules = refs.load_dockerignore(os.path.join(REPO, ".dockerignore"))
        for path in ("CMakeLists.txt", "scripts/install-deps", "deploy/docker/entrypoint",
                     "control_plane/main.cc"):
            self.assertFalse(refs.ignored(rules, path), path)
        for path in ("build/bin/kvwire", ".venv/bin/python", ".git/HEAD"):
            self.assertTrue(refs.ignored(rules, path), path)


class DockerfileTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="check-references-")
        self.addCleanup(shutil.rmtree, self.tmp)
        self.bin_dir = os.path.join(self.tmp, "bin")
        write(os.path.join(self.bin_dir, "kvwire-decode"), "#!/bin/sh\n", executable=True)
        self.rules = refs.load_dockerignore(os.path.join(REPO, ".dockerignore"))

    def problems(self, text):
        path = os.path.join(self.tmp, "Dockerfile")
        write(path, text)
        return refs.dockerfile_problems(path, self.bin_dir, self.rules)[0]

    def test_a_consistent_dockerfile_passes(self):
        self.assertEqual(self.problems("""
            FROM debian:12-slim AS build
            WORKDIR /src
            COPY scripts/install-deps scripts/install-deps
            RUN scripts/install-deps
            COPY . .
            RUN cmake --build build --target kvwire-decode && echo x > /out/list
            FROM debian:12-slim
            COPY --from=build /src/build/bin/kvwire-decode /out/list /usr/local/bin/
            COPY deploy/docker/entrypoint /usr/local/bin/kvwire-entrypoint
            ENTRYPOINT ["/usr/local/bin/kvwire-entrypoint"]
            """), [])

    def test_each_broken_reference_is_reported(self):
        problems = self.problems("""
            FROM debian:12-slim AS build
            WORKDIR /src
            COPY scripts/no-such-script scripts/
            COPY docs/results docs/
            COPY . .
            RUN deploy/README.md \\
             && cmake --build build --target kvwire-decode
            FROM debian:12-slim
            COPY --from=build /src/build/bin/kvwire-prefill /src/never-written /usr/local/bin/
            COPY --from=nowhere /x /x
            RUN kvwire-bench --help
            """)
        expected = ["scripts/no-such-script does not exist",
                    "docs/results is excluded from the build context by .dockerignore",
                    "deploy/README.md is not an executable file",
                    "/src/build/bin/kvwire-prefill is not a target the build stage builds",
                    "kvwire-prefill is not an executable in",
                    "no RUN of stage build writes /src/never-written",
                    "--from=nowhere names no stage",
                    "runs kvwire-bench, which this stage does not install in /usr/local/bin"]
        for text in expected:
            self.assertTrue(any(text in p for p in problems), f"{text!r} not in {problems}")

    def test_repository_dockerfiles_copy_only_built_targets(self):
        for name in ("kvwire-control", "kvwire-prefill", "kvwire", "kvwire-decode"):
            write(os.path.join(self.bin_dir, name), "#!/bin/sh\n", executable=True)
        for dockerfile in refs.DOCKERFILES:
            with self.subTest(dockerfile):
                self.assertEqual(refs.dockerfile_problems(dockerfile, self.bin_dir,
                                                          self.rules)[0], [])


class ManifestFlagsTest(unittest.TestCase):
    def setUp(self):
        self.bin_dir = tempfile.mkdtemp(prefix="check-references-bin-")
        self.addCleanup(shutil.rmtree, self.bin_dir)
        # A stand-in kvwire-decode whose --help lists two flags.
        write(os.path.join(self.bin_dir, "kvwire-decode"),
              "#!/bin/sh\necho 'Options:'\necho '  --listen TEXT  address'\n"
              "echo '  --capacity UINT  slots'\n", executable=True)

    def deployment(self, args):
        return [{"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
                 "spec": {"template": {"spec": {"containers": [
                     {"name": "decode", "image": "registry.example/kvwire:1", "args": args},
                     {"name": "other", "image": "busybox", "args": ["--anything"]}]}}}}]

    def test_known_flags_pass(self):
        self.assertEqual(refs.manifest_flag_problems(
            self.deployment(["decode", "--listen=0.0.0.0:1", "--capacity", "4"]),
            self.bin_dir, "t"), [])

    def test_unknown_flag_command_and_argument_are_reported(self):
        problems = refs.manifest_flag_problems(
            self.deployment(["decode", "--listen=x", "--capacty=4", "stray"]), self.bin_dir, "t")
        self.assertTrue(any("kvwire-decode has no flag --capacty" in p for p in problems))
        self.assertTrue(any("unexpected argument 'stray'" in p for p in problems))
        problems = refs.manifest_flag_problems(self.deployment(["decoder"]), self.bin_dir, "t")
        self.assertTrue(any("is not an entrypoint command" in p for p in problems))

    def test_local_args_expand_variables_and_replace_addresses(self):
        args = ["decode", "--control=$(CONTROL)", "--listen=0.0.0.0:7200", "--advertise=x:1",
                "--keep=$$(LITERAL)"]
        self.assertEqual(refs.local_args(args, {"CONTROL": "c:7000"},
                                         {"--listen": "127.0.0.1:0", "--advertise": None}),
                         ["--control=c:7000", "--listen=127.0.0.1:0", "--keep=$$(LITERAL)"])


class ModelPathTest(unittest.TestCase):
    def deployment(self, model, mount="/models"):
        init = {"name": "fetch-model", "image": "kvwire", "args": ["fetch-model"],
                "env": [{"name": "KVWIRE_MODEL_DIR", "value": "/models"}],
                "volumeMounts": [{"name": "model", "mountPath": "/models"}]}
        main = {"name": "decode", "image": "kvwire", "args": ["decode", f"--model={model}"],
                "volumeMounts": [{"name": "model", "mountPath": mount}]}
        return [{"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
                 "spec": {"template": {"spec": {"initContainers": [init],
                                                "containers": [main]}}}}]

    def test_the_fetched_file_on_the_shared_volume_passes(self):
        model = "/models/" + refs.fetch_model_file_name()
        self.assertEqual(refs.model_path_problems(self.deployment(model), "t"), [])

    def test_another_file_or_volume_is_reported(self):
        problems = refs.model_path_problems(self.deployment("/models/other.gguf"), "t")
        self.assertTrue(any("but fetch-model writes /models/" in p for p in problems), problems)
        model = "/models/" + refs.fetch_model_file_name()
        problems = refs.model_path_problems(self.deployment(model, mount="/data"), "t")
        self.assertTrue(any("is not the same volume" in p for p in problems), problems)


class EntrypointTest(unittest.TestCase):
    def test_commands_map_to_the_programs(self):
        commands = refs.entrypoint_commands()
        self.assertEqual(commands["control"], "kvwire-control")
        self.assertEqual(commands["prefill"], "kvwire-prefill")
        self.assertEqual(commands["decode"], "kvwire-decode")
        self.assertEqual(commands["cli"], "kvwire")
        self.assertEqual(commands["fetch-model"], "/opt/kvwire/scripts/fetch-model")


if __name__ == "__main__":
    unittest.main()
