#!/usr/bin/env python3
"""Checks that the Dockerfiles and the Kubernetes manifests refer only to things that exist.

  check_references.py --bin-dir BUILD/bin [--model GGUF]

Dockerfiles (deploy/docker/Dockerfile and Dockerfile.cuda):
  * every COPY/ADD source taken from the build context exists in the repository and is not
    excluded by .dockerignore;
  * every file copied out of another stage's build/bin is a target that stage builds
    (`--target ...`) and exists as an executable in --bin-dir; any other file copied from a stage
    is written by a RUN of that stage;
  * every repository script a RUN, ENTRYPOINT or CMD calls (directly, or through the path a COPY
    put it at) exists, is executable and is inside the build context, and every kvwire program
    a RUN runs by name is installed by that stage and exists in --bin-dir;
  * every program deploy/docker/entrypoint executes is installed by both images, and the
    entrypoint, run with --bin-dir on PATH, starts each binary (`COMMAND --help`) and rejects an
    unknown command;
  * the CPU Dockerfile's CMake configure step succeeds on a copy of the build context (the
    repository minus .dockerignore).
Manifests (deploy/k8s base and overlays, rendered):
  * a kvwire container's first argument is an entrypoint command and every --flag after it is
    one the program's --help lists;
  * every --model is the file scripts/fetch-model writes (its file_name) into the init
    container's KVWIRE_MODEL_DIR, on a volume both containers mount; with a model file, the
    entrypoint's fetch-model reuses it and prints its path;
  * kvwire-control, started with the manifest's arguments (addresses moved to 127.0.0.1 port 0)
    and the budget policy ConfigMap as its policy file, starts serving: the policy is checked by
    the real parser. With --model (default: $KVWIRE_MODEL) the prefill and decode nodes are
    started the same way with the ConfigMap's settings and must register with it.
Prints every problem and exits 1 when there is one.
"""

import argparse
import json
import os
import queue
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

import kustomize_lite
import validate

REPO = validate.REPO
DOCKERFILES = ["deploy/docker/Dockerfile", "deploy/docker/Dockerfile.cuda"]
ENTRYPOINT = "deploy/docker/entrypoint"
IMAGE_NAME = "kvwire"
START_TIMEOUT_S = 60
STOP_TIMEOUT_S = 20


# --- Dockerfile parsing -------------------------------------------------------------------------

class Instruction:
    def __init__(self, stage, keyword, text, line):
        self.stage, self.keyword, self.text, self.line = stage, keyword, text, line

    def copy_parts(self):
        """(flags dict, sources, destination) of a COPY or ADD."""
        rest = self.text.strip()
        flags = {}
        while rest.startswith("--"):
            flag, _, rest = rest.partition(" ")
            name, _, value = flag[2:].partition("=")
            flags[name] = value
            rest = rest.strip()
        parts = json.loads(rest) if rest.startswith("[") else rest.split()
        return flags, parts[:-1], parts[-1]


class Stage:
    def __init__(self, name, index):
        self.name, self.index = name, index
        self.workdir = "/"
        self.instructions = []


def parse_dockerfile(path):
    """The stages of a Dockerfile, each with its instructions (continuations joined)."""
    stages, logical, start = [], [], 0
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    joined = []
    for number, line in enumerate(lines, 1):
        stripped = line.strip()
        if not logical and (not stripped or stripped.startswith("#")):
            continue
        if logical and stripped.startswith("#"):
            continue  # comment lines inside a continued instruction are dropped by Docker
        if not logical:
            start = number
        logical.append(line.rstrip())
        if line.rstrip().endswith("\\"):
            logical[-1] = logical[-1][:-1]
            continue
        joined.append((start, " ".join(part.strip() for part in logical)))
        logical = []
    for number, text in joined:
        keyword, _, rest = text.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            match = re.search(r"\s+AS\s+(\S+)\s*$", rest, re.IGNORECASE)
            stages.append(Stage(match.group(1) if match else str(len(stages)), len(stages)))
            continue
        if not stages:
            continue  # ARG before the first FROM
        stage = stages[-1]
        if keyword == "WORKDIR":
            stage.workdir = os.path.normpath(os.path.join(stage.workdir, rest.strip()))
        stage.instructions.append(Instruction(stage, keyword, rest, number))
    return stages


# --- .dockerignore ------------------------------------------------------------------------------

def _pattern_regex(pattern):
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out)


def load_dockerignore(path):
    rules = []
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            for line in f:
                line = line.strip()
                if not line or line.startswith("#"):
                    continue
                negate = line.startswith("!")
                pattern = os.path.normpath(line.lstrip("!").strip()).lstrip("/")
                rules.append((negate, _pattern_regex(pattern)))
    return rules


def ignored(rules, relpath):
    """Whether Docker leaves `relpath` (or a folder holding it) out of the build context."""
    parts = os.path.normpath(relpath).split("/")
    candidates = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    result = False
    for negate, regex in rules:
        if any(regex.fullmatch(c) for c in candidates):
            result = not negate
    return result


# --- Dockerfile checks --------------------------------------------------------------------------

SCRIPT_RE = re.compile(r"(?:^|[\s;&|(])((?:scripts|deploy)/[\w./-]+)")
ABS_PATH_RE = re.compile(r"(?:^|[\s;&|(\"'\[])(/[\w./-]+)")
# A kvwire program invoked by name: `kvwire-NAME ...`, or the CLI as `kvwire --...`.
PROGRAM_RE = re.compile(r"(?<![\w/.:-])(kvwire-[a-z][a-z-]*|kvwire(?= --))(?![\w:-])")


def _context_path_problems(where, relpath, rules, executable):
    full = os.path.join(REPO, relpath)
    if not os.path.exists(full):
        return [f"{where}: {relpath} does not exist in the repository"]
    problems = []
    if relpath not in (".", "") and ignored(rules, relpath):
        problems.append(f"{where}: {relpath} is excluded from the build context by .dockerignore")
    if executable and not (os.path.isfile(full) and os.access(full, os.X_OK)):
        problems.append(f"{where}: {relpath} is not an executable file")
    return problems


def _built_targets(stage):
    targets = set()
    for ins in stage.instructions:
        if ins.keyword == "RUN":
            for match in re.finditer(r"--target((?:\s+[\w.+-]+)+)", ins.text):
                targets.update(match.group(1).split())
    return targets


def _copy_map(stage):
    """Destination path in the image -> (instruction, source as written, from-stage or None)."""
    mapping = {}
    for ins in stage.instructions:
        if ins.keyword not in ("COPY", "ADD"):
            continue
        flags, sources, dest = ins.copy_parts()
        dest_abs = os.path.normpath(os.path.join(stage.workdir, dest))
        for src in sources:
            target = os.path.join(dest_abs, os.path.basename(src)) if dest.endswith("/") or \
                len(sources) > 1 else dest_abs
            mapping[target] = (ins, src, flags.get("from"))
    return mapping


def dockerfile_problems(dockerfile, bin_dir, rules):
    stages = parse_dockerfile(os.path.join(REPO, dockerfile))
    by_name = {s.name: s for s in stages}
    problems = []
    for stage in stages:
        copies = _copy_map(stage)
        for ins in stage.instructions:
            where = f"{dockerfile}:{ins.line}"
            if ins.keyword in ("COPY", "ADD"):
                problems += _copy_problems(where, ins, by_name, bin_dir, rules)
            if ins.keyword in ("RUN", "ENTRYPOINT", "CMD"):
                problems += _called_script_problems(where, ins, stage, copies, rules, bin_dir)
    return problems, stages


def _copy_problems(where, ins, by_name, bin_dir, rules):
    flags, sources, _ = ins.copy_parts()
    problems = []
    source_stage = flags.get("from")
    for src in sources:
        if source_stage is None:
            problems += _context_path_problems(where, os.path.normpath(src), rules, False)
            continue
        stage = by_name.get(source_stage)
        if stage is None:
            problems.append(f"{where}: --from={source_stage} names no stage of this file")
            continue
        rel = os.path.relpath(src, stage.workdir)
        if rel.startswith("build/bin/"):
            name = rel[len("build/bin/"):]
            if name not in _built_targets(stage):
                problems.append(f"{where}: {src} is not a target the {stage.name} stage builds")
            binary = os.path.join(bin_dir, name)
            if not (os.path.isfile(binary) and os.access(binary, os.X_OK)):
                problems.append(f"{where}: {name} is not an executable in {bin_dir} after the "
                                "build")
        elif not any(src in i.text for i in stage.instructions if i.keyword == "RUN"):
            problems.append(f"{where}: no RUN of stage {stage.name} writes {src}")
    return problems


def _called_script_problems(where, ins, stage, copies, rules, bin_dir):
    problems = []
    text = " ".join(json.loads(ins.text)) if ins.text.strip().startswith("[") else ins.text
    # Relative script paths run in the stage that copied the build context to its WORKDIR.
    for path in SCRIPT_RE.findall(text):
        problems += _context_path_problems(where, os.path.normpath(path), rules, True)
    for path in ABS_PATH_RE.findall(text):
        if path in copies:
            copy_ins, src, from_stage = copies[path]
            if from_stage is None:
                problems += _context_path_problems(where, os.path.normpath(src), rules, True)
    # kvwire programs run by name (`kvwire-control --help`) must be installed by this stage and
    # built; `--target` lists name targets, not commands.
    commands = re.sub(r"--target(?:\s+[\w.+-]+)+", "", text)
    for name in sorted(set(PROGRAM_RE.findall(commands))):
        if f"/usr/local/bin/{name}" not in copies:
            problems.append(f"{where}: runs {name}, which this stage does not install in "
                            "/usr/local/bin")
        elif not os.access(os.path.join(bin_dir, name), os.X_OK):
            problems.append(f"{where}: runs {name}, which is not an executable in {bin_dir}")
    return problems


# --- the build context configures ------------------------------------------------------------

def copy_context(rules, destination):
    """Copies the repository minus what .dockerignore excludes (Docker's build context)."""
    for root, dirs, files in os.walk(REPO):
        rel_root = os.path.relpath(root, REPO)
        dirs[:] = [d for d in dirs
                   if not ignored(rules, os.path.normpath(os.path.join(rel_root, d)))]
        for name in files:
            rel = os.path.normpath(os.path.join(rel_root, name))
            if not ignored(rules, rel):
                target = os.path.join(destination, rel)
                os.makedirs(os.path.dirname(target), exist_ok=True)
                shutil.copy2(os.path.join(REPO, rel), target, follow_symlinks=False)


def context_configure_problems(dockerfile, rules):
    """Runs the Dockerfile's CMake configure step on a copy of the build context, so a file the
    build needs but .dockerignore leaves out fails here rather than in `docker build`."""
    stages = parse_dockerfile(os.path.join(REPO, dockerfile))
    texts = [i.text for s in stages for i in s.instructions if i.keyword == "RUN"]
    configure = next((t for t in texts if "cmake -S" in t), None)
    if configure is None:
        return [f"{dockerfile}: no RUN configures with `cmake -S`"]
    argv = shlex.split(configure[configure.index("cmake -S"):].split("&&")[0])
    with tempfile.TemporaryDirectory(prefix="kvwire-context-") as context:
        copy_context(rules, context)
        run = subprocess.run(argv, cwd=context, capture_output=True, text=True, timeout=300,
                             check=False)
    if run.returncode != 0:
        return [f"{dockerfile}: `{' '.join(argv)}` fails on the build context: "
                f"{(run.stdout + run.stderr)[-1500:]}"]
    return []


# --- entrypoint ---------------------------------------------------------------------------------

def entrypoint_commands():
    """command -> program (a name on PATH or an absolute path) from deploy/docker/entrypoint."""
    commands = {}
    with open(os.path.join(REPO, ENTRYPOINT), encoding="utf-8") as f:
        for line in f:
            match = re.match(r"^\s*([\w|\s-]+)\)\s*exec\s+(\S+)", line)
            if not match:
                continue
            program = match.group(2).strip('"')
            default = re.search(r":-([^}]+)}", program)
            if default:
                program = default.group(1)
            for command in match.group(1).split("|"):
                commands[command.strip()] = program
    return commands


def entrypoint_problems(stages_by_file, bin_dir):
    commands = entrypoint_commands()
    problems = []
    if not commands:
        return [f"{ENTRYPOINT}: no `command) exec PROGRAM` lines found"]
    for dockerfile, stages in stages_by_file.items():
        installed = _copy_map(stages[-1])
        for command, program in commands.items():
            path = program if program.startswith("/") else f"/usr/local/bin/{program}"
            if path not in installed:
                problems.append(f"{dockerfile}: the final stage does not install {path} "
                                f"(entrypoint command {command})")
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    entrypoint = os.path.join(REPO, ENTRYPOINT)
    for command, program in commands.items():
        if program.startswith("/"):
            continue
        run = subprocess.run([entrypoint, command, "--help"], env=env, capture_output=True,
                             text=True, timeout=30, check=False)
        if run.returncode != 0 or "Usage:" not in run.stdout:
            problems.append(f"{ENTRYPOINT} {command} --help: exit {run.returncode}, "
                            f"{(run.stderr or run.stdout).strip()[:200]}")
    run = subprocess.run([entrypoint, "no-such-command"], env=env, capture_output=True,
                         text=True, timeout=30, check=False)
    if run.returncode != 2 or "unknown command" not in run.stderr:
        problems.append(f"{ENTRYPOINT}: an unknown command exits {run.returncode}, not 2")
    return problems


# --- manifests against the binaries -------------------------------------------------------------

def help_flags(binary):
    run = subprocess.run([binary, "--help"], capture_output=True, text=True, timeout=30,
                         check=False)
    if run.returncode != 0:
        raise RuntimeError(f"{binary} --help exited {run.returncode}: {run.stderr.strip()}")
    return set(re.findall(r"(?<![\w-])(--[a-z0-9][a-z0-9-]*)", run.stdout))


def kvwire_containers(objects):
    for obj in objects:
        pod = ((obj.get("spec") or {}).get("template") or {}).get("spec") or {}
        for c in list(pod.get("initContainers") or []) + list(pod.get("containers") or []):
            image = str(c.get("image", ""))
            if re.split(r"[:@]", image.rsplit("/", 1)[-1])[0] == IMAGE_NAME:
                yield obj, pod, c


def manifest_flag_problems(objects, bin_dir, render_name):
    commands = entrypoint_commands()
    flags_of = {}
    problems = []
    for obj, _, c in kvwire_containers(objects):
        where = f"{render_name}: {kustomize_lite.object_id(obj)} container {c.get('name')}"
        args = [str(a) for a in c.get("args") or []]
        if c.get("command"):
            problems.append(f"{where}: sets command, bypassing the image's entrypoint")
        if not args or args[0] not in commands:
            problems.append(f"{where}: first argument {args[:1]} is not an entrypoint command "
                            f"({', '.join(sorted(commands))})")
            continue
        program = commands[args[0]]
        if program.startswith("/"):
            if len(args) > 1:
                problems.append(f"{where}: {args[0]} takes no arguments, got {args[1:]}")
            continue
        if program not in flags_of:
            flags_of[program] = help_flags(os.path.join(bin_dir, program))
        expect_value = False
        for arg in args[1:]:
            if arg.startswith("--"):
                name = arg.split("=", 1)[0]
                if name not in flags_of[program]:
                    problems.append(f"{where}: {program} has no flag {name}")
                expect_value = "=" not in arg
            elif not expect_value:
                problems.append(f"{where}: unexpected argument {arg!r} for {program}")
            else:
                expect_value = False
    return problems


# --- the model path --------------------------------------------------------------------------

def fetch_model_file_name():
    with open(os.path.join(REPO, "scripts", "fetch-model"), encoding="utf-8") as f:
        match = re.search(r'^file_name="([^"]+)"', f.read(), re.MULTILINE)
    if not match:
        raise RuntimeError("scripts/fetch-model: no file_name=\"...\" line")
    return match.group(1)


def model_path_problems(objects, render_name):
    """Each pod's --model is the file its fetch-model init container writes, on the volume both
    containers mount."""
    file_name = fetch_model_file_name()
    problems = []
    for obj in objects:
        pod = ((obj.get("spec") or {}).get("template") or {}).get("spec") or {}
        init = next((c for c in pod.get("initContainers") or []
                     if (c.get("args") or [None])[0] == "fetch-model"), None)
        for c in pod.get("containers") or []:
            model = next((str(a).split("=", 1)[1] for a in c.get("args") or []
                          if str(a).startswith("--model=")), None)
            if model is None:
                continue
            where = f"{render_name}: {kustomize_lite.object_id(obj)} container {c.get('name')}"
            if init is None:
                problems.append(f"{where}: --model but no fetch-model init container")
                continue
            model_dir = next((e.get("value") for e in init.get("env") or []
                              if e.get("name") == "KVWIRE_MODEL_DIR"), "/models")
            if model != f"{model_dir}/{file_name}":
                problems.append(f"{where}: --model={model}, but fetch-model writes "
                                f"{model_dir}/{file_name}")
            volumes = {m.get("mountPath"): m.get("name") for m in init.get("volumeMounts") or []}
            mounts = {m.get("mountPath"): m.get("name") for m in c.get("volumeMounts") or []}
            if model_dir not in volumes or mounts.get(model_dir) != volumes[model_dir]:
                problems.append(f"{where}: {model_dir} is not the same volume in the "
                                "fetch-model init container and here")
    return problems


def fetch_model_run_problems(model):
    """The image's `fetch-model` on a folder already holding the verified model: it must reuse
    the file (no download) and print its path, as the init containers rely on."""
    env = dict(os.environ, KVWIRE_MODEL_DIR=os.path.dirname(model),
               KVWIRE_FETCH_MODEL=os.path.join(REPO, "scripts", "fetch-model"))
    run = subprocess.run([os.path.join(REPO, ENTRYPOINT), "fetch-model"], env=env,
                         capture_output=True, text=True, timeout=120, check=False)
    lines = run.stdout.strip().splitlines()
    if run.returncode != 0 or not lines or lines[-1] != model:
        return [f"{ENTRYPOINT} fetch-model with the model present: exit {run.returncode}, "
                f"printed {lines[-1:]}, expected {model}: {run.stderr.strip()[-300:]}"]
    return []


# --- starting the services with the manifests' arguments ----------------------------------------

def _environment(container, configmaps, namespace, pod_name):
    env = {}
    for source in container.get("envFrom") or []:
        ref = (source.get("configMapRef") or {}).get("name")
        env.update({source.get("prefix", "") + k: str(v)
                    for k, v in configmaps.get((namespace, ref), {}).items()})
    for e in container.get("env") or []:
        if "value" in e:
            env[e["name"]] = str(e["value"])
        else:
            field = ((e.get("valueFrom") or {}).get("fieldRef") or {}).get("fieldPath")
            env[e["name"]] = {"metadata.name": pod_name, "status.podIP": "127.0.0.1"}.get(
                field, "")
    return env


def local_args(args, env, replacements):
    """The container's args for a local run: $(VAR) expanded, flags in `replacements` replaced
    (value None drops the flag)."""
    out = []
    for arg in args[1:]:
        arg = re.sub(r"(?<!\$)\$\(([A-Za-z_][A-Za-z0-9_]*)\)",
                     lambda m: env.get(m.group(1), m.group(0)), arg)
        name = arg.split("=", 1)[0]
        if name in replacements:
            if replacements[name] is not None:
                out.append(f"{name}={replacements[name]}")
        else:
            out.append(arg)
    return out


class Service:
    """A program started in the background; stop() sends SIGTERM and waits, bounded."""

    def __init__(self, argv, env, ready_re):
        self.argv = argv
        self.log = tempfile.TemporaryFile(mode="w+")
        self.proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=self.log,
                                     text=True)
        self.match = self._wait_for(re.compile(ready_re))

    def _wait_for(self, regex):
        """The first match of `regex` in the program's stdout, or None when it exits or
        START_TIMEOUT_S passes first."""
        lines = queue.Queue()

        def pump():
            for line in self.proc.stdout:
                lines.put(line)
            lines.put(None)

        threading.Thread(target=pump, daemon=True).start()
        deadline = time.monotonic() + START_TIMEOUT_S
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = lines.get(timeout=left)
            except queue.Empty:
                break
            if line is None:
                break
            match = regex.search(line)
            if match:
                return match
        return None

    def stderr(self):
        self.log.seek(0)
        return self.log.read()[-2000:]

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=STOP_TIMEOUT_S)
        return self.proc.returncode


def _container(objects, command):
    for obj, pod, c in kvwire_containers(objects):
        if (c.get("args") or [None])[0] == command:
            return obj, pod, c
    raise RuntimeError(f"no container runs `{command}`")


def _policy_text(obj, pod, container, policy_file, configmaps):
    for mount in container.get("volumeMounts") or []:
        if policy_file.startswith(mount["mountPath"].rstrip("/") + "/"):
            volume = next(v for v in pod.get("volumes") or [] if v["name"] == mount["name"])
            name = (volume.get("configMap") or {}).get("name")
            key = policy_file[len(mount["mountPath"].rstrip("/")) + 1:]
            data = configmaps.get((validate.namespace_of(obj), name), {})
            if key in data:
                return data[key]
    raise RuntimeError(f"--policy-file {policy_file} is not a key of a mounted ConfigMap")


def fleet_problems(objects, bin_dir, model, render_name):
    """Starts control (and, with a model, decode and prefill) with the manifests' arguments."""
    configmaps = validate.configmaps_by_name(objects)
    obj, pod, c = _container(objects, "control")
    env = _environment(c, configmaps, validate.namespace_of(obj), "kvwire-control-0")
    args = [str(a) for a in c["args"]]
    policy_file = next(a.split("=", 1)[1] for a in args if a.startswith("--policy-file="))
    started, problems = [], []
    with tempfile.TemporaryDirectory() as tmp:
        policy = os.path.join(tmp, "budgets.yaml")
        with open(policy, "w", encoding="utf-8") as f:
            f.write(_policy_text(obj, pod, c, policy_file, configmaps))
        replacements = {"--listen": "127.0.0.1:0", "--metrics": "127.0.0.1:0",
                        "--policy-file": policy, "--model": model or None}
        argv = [os.path.join(bin_dir, "kvwire-control")] + local_args(args, env, replacements)
        try:
            control = Service(argv, dict(os.environ, **env),
                              r"kvwire-control listening on (\S+)")
            started.append(control)
            if control.match is None:
                return [f"{render_name}: kvwire-control with the manifest's arguments did not "
                        f"start: {control.stderr()}"]
            address = control.match.group(1)
            if model:
                problems += _start_nodes(objects, configmaps, bin_dir, model, address, started,
                                         render_name)
        finally:
            for service in reversed(started):
                code = service.stop()
                if code != 0:
                    problems.append(f"{render_name}: {os.path.basename(service.argv[0])} exited "
                                    f"{code} after SIGTERM: {service.stderr()}")
    return problems


def _start_nodes(objects, configmaps, bin_dir, model, control_address, started, render_name):
    node_ids = []
    for command in ("decode", "prefill"):
        obj, _, c = _container(objects, command)
        pod_name = f"kvwire-{command}-0"
        env = _environment(c, configmaps, validate.namespace_of(obj), pod_name)
        env["KVWIRE_CONTROL"] = control_address
        replacements = {"--listen": "127.0.0.1:0", "--metrics": "127.0.0.1:0",
                        "--advertise": None, "--model": model}
        argv = [os.path.join(bin_dir, f"kvwire-{command}")] + local_args(
            [str(a) for a in c["args"]], env, replacements)
        node = Service(argv, dict(os.environ, **env), r"listening (\S+)")
        started.append(node)
        if node.match is None:
            return [f"{render_name}: kvwire-{command} with the manifest's arguments did not "
                    f"start: {node.stderr()}"]
        node_ids.append(pod_name)
    deadline = time.monotonic() + START_TIMEOUT_S
    listing = ""
    while time.monotonic() < deadline:
        run = subprocess.run([os.path.join(bin_dir, "kvwire"), "--control", control_address,
                              "nodes"], capture_output=True, text=True, timeout=30, check=False)
        listing = run.stdout
        if all(n in listing for n in node_ids):
            return []
        time.sleep(0.2)
    return [f"{render_name}: nodes {node_ids} did not register with the control plane within "
            f"{START_TIMEOUT_S} s; `kvwire nodes` printed: {listing.strip()}"]


# --- driver -------------------------------------------------------------------------------------

def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bin-dir", required=True, help="the build's bin folder")
    parser.add_argument("--model", default=os.environ.get("KVWIRE_MODEL", ""),
                        help="GGUF model: also start the nodes (default: $KVWIRE_MODEL)")
    args = parser.parse_args(argv)
    bin_dir = os.path.abspath(args.bin_dir)
    rules = load_dockerignore(os.path.join(REPO, ".dockerignore"))
    problems, stages_by_file = [], {}
    for dockerfile in DOCKERFILES:
        found, stages = dockerfile_problems(dockerfile, bin_dir, rules)
        problems += found
        stages_by_file[dockerfile] = stages
        print(f"{'FAIL' if found else 'ok  '} {dockerfile}: {len(stages)} stages")
    problems += entrypoint_problems(stages_by_file, bin_dir)
    # The CPU image's configure step only: the CUDA one needs nvcc and NCCL.
    context = context_configure_problems(DOCKERFILES[0], rules)
    problems += context
    if not context:
        print(f"ok   {DOCKERFILES[0]}: its CMake configure step succeeds on the build context")
    for directory in validate.default_kustomizations():
        name = os.path.relpath(directory, REPO)
        try:
            objects = kustomize_lite.render(directory)
        except kustomize_lite.RenderError as e:
            problems.append(f"render {name}: {e}")
            continue
        problems += manifest_flag_problems(objects, bin_dir, name)
        problems += model_path_problems(objects, name)
    model = args.model if args.model and os.path.isfile(args.model) else ""
    if not model:
        print("note: no model file (--model or $KVWIRE_MODEL): starting kvwire-control only, "
              "not the prefill and decode nodes")
    elif os.path.basename(model) == fetch_model_file_name():
        problems += fetch_model_run_problems(model)
    base = kustomize_lite.render(os.path.join(REPO, "deploy", "k8s", "base"))
    fleet = fleet_problems(base, bin_dir, model, "deploy/k8s/base")
    problems += fleet
    if not fleet:
        print("ok   deploy/k8s/base: " + ("control, decode and prefill started with the "
                                          "manifests' arguments and registered" if model else
                                          "kvwire-control started with the manifest's "
                                          "arguments and policy ConfigMap"))
    return validate.finish("check_references", problems, "all references resolve")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
