"""Every command the README shows, run from a shell as a user runs it (issue 17).

The README's fenced bash blocks and its inline `python ...` / `make ...` / `ray ...` / `pip ...`
commands are read in the order they appear, so a command added to the README is covered without
touching this file. Each is either run (a subprocess, cwd = the repo, PYTHONPATH unset) with the
tiny sample's folders put in place of the README's (`RUN_AS` says how each is changed), or listed
in NOT_RUN with the reason; a command that is neither fails `test_every_readme_command_is_covered`
with its text. The run is one scenario in one scratch folder, in the README's order: `make demo`
builds data/ (at --scale tiny) for the commands after it.
"""
from __future__ import annotations

import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
STAGES = ["sample_data.py", "data_optim.py", "split_data.py", "visual_features.py", "visual_reccs.py",
          "individual_baseline.py", "ranker.py", "final.py", "launch.py", "search.py"]

# Commands a test cannot run, each with the reason. A key matches a command equal to it or starting with it.
NOT_RUN = {
    "make test": "the suite itself (CI runs it in `.ci/run`); a test cannot run the suite it belongs to",
    "make test-fast": "a part of the suite itself; a test cannot run the suite it belongs to",
    "make bench": "full-scale benchmarks: a 5 GB sample and hours on 2 cores (each bench script's --help is run)",
    "make": "the bare word, in a sentence about what the first `make` builds",
    "ray": "the bare word, in a sentence about what the local Ray is",
    "pip install": "changes the environment the tests run in; the Makefile's venv target runs it and CI builds "
                   "that venv from a fresh clone",
    "ray start --head": "replaced by the session's local Ray (conftest.local_ray, loopback): `ray start` leaves "
                        "daemons that only `ray stop` ends, and `ray stop` ends every Ray on the machine",
    "ray start --address": "joins another machine to the cluster; a test has one machine",
    "ray job submit": "submits to a cluster's dashboard (HEAD:8265); the same command line runs here with "
                      "--ray-address",
    "ray up": "starts cloud machines from a cluster.yaml",
    "ray.init(": "Python, not a shell command (how conftest starts the local Ray)",
}
# How a runnable command is changed for the test (the rest of it runs as written).
RUN_AS = {
    "--data-dir / --images-dir": "a folder of the same name under the scratch folder; /shared/images (a "
                                 "cluster's shared storage) is the demo's images/",
    "no --data-dir": "the scratch data/ (and images/) given explicitly: the repo's data/ is the user's own",
    "--scale demo": "--scale tiny (make: SCALE=tiny)",
    "--ray-address": "the address of the session's local Ray",
    "make": "make -o .venv/.installed (the venv is the one running the tests: PY=this python), DATA= and IMAGES= "
            "the scratch folders",
    "make app": "started, read from /proc/net/tcp* that it listens on loopback only and answers HTTP, stopped",
    "make app ADDRESS=0.0.0.0": "ADDRESS=127.0.0.2: binding every interface in a test would expose the test "
                                "machine; another address shows ADDRESS reaches streamlit",
    "0XXXXXXXXX": "an article of the catalogue",
    "photo.jpg": "a catalogue photo of the scratch images/ (a user's own photo is tests/test_search.py's)",
    "python X.py --help": "--help of every stage",
    "python bench/*.py": "--help only: benchmarks take minutes to hours at the sizes they are written for",
}
PROGRESS_STAGES = {"sample_data.py", "data_optim.py", "visual_features.py", "visual_reccs.py", "ranker.py", "final.py"}
COMMAND_START = re.compile(r"^(python|make|ray|pip|\.venv/bin/python)\b")


def readme_commands(text: str | None = None) -> list[str]:
    """The shell commands of the README in order: fenced bash lines (comments dropped, `&&` split) and inline ones."""
    text = README.read_text() if text is None else text
    commands = []
    for match in re.finditer(r"```(\w*)\n(.*?)```|`([^`\n]+(?:\n[^`\n]+)?)`", text, re.S):
        if match.group(2) is not None:
            if match.group(1) not in ("bash", "sh", "shell"):
                continue
            lines = match.group(2).replace("\\\n", " ").splitlines()
            parts = [part for line in lines for part in re.sub(r"(^|\s)#.*", "", line).split("&&")]
        else:
            parts = [match.group(3)]
        for part in parts:
            command = " ".join(part.split())
            if command and (match.group(2) is not None or COMMAND_START.match(command)):
                commands.append(command)
    return commands


def not_run_reason(command: str) -> str | None:
    for key, reason in NOT_RUN.items():  # a one-word key only as the whole command, a longer one as its start
        if command == key or (" " in key or key.endswith("(")) and command.startswith(key):
            return reason
    return None


def runnable(command: str) -> bool:
    """True when run_readme_command knows how to run it."""
    words = command.split()
    if words[0] == "python" and len(words) > 1:
        return words[1] in STAGES or words[1] == "X.py" or words[1].startswith("bench/")
    return words[0] == "make" and words[1:2] in (["demo"], ["app"], ["lint"])


def test_every_readme_command_is_covered():
    """A README command that is neither run below nor listed in NOT_RUN fails here, with its text."""
    commands = readme_commands()
    assert "make demo" in commands and any(c.startswith("python visual_features.py --engine ray") for c in commands)
    uncovered = [c for c in commands if not_run_reason(c) is None and not runnable(c)]
    assert not uncovered, "README commands no test runs: " + "; ".join(uncovered)


def test_the_parser_reads_blocks_and_inline_commands():
    text = ("```bash\nmake demo   # builds it\npython a.py --x 1 && python b.py \\\n  --y 2\n```\n"
            "and `python launch.py --article\n0XXXXXXXXX` then `.venv` and `ray.init(num_cpus=2)`\n```\ntree\n```")
    assert readme_commands(text) == ["make demo", "python a.py --x 1", "python b.py --y 2",
                                     "python launch.py --article 0XXXXXXXXX", "ray.init(num_cpus=2)"]


# ---------------------------------------------------------------------------- running them

def clean_env(**extra: str) -> dict:
    """The user's environment: no PYTHONPATH (the repo is found as the script's folder or the editable install)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return env | extra


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def listening_addresses(port: int) -> set[str]:
    """The local addresses a TCP port listens on, from /proc/net/tcp and tcp6 (state 0A = LISTEN), as hex."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.split(":")
            if state == "0A" and int(hex_port, 16) == port:
                found.add(address)
    return found


def hex_address(ip: str) -> str:
    """127.0.0.1 -> 0100007F, as /proc/net/tcp writes it."""
    return "".join(f"{int(b):02X}" for b in reversed(ip.split(".")))


class Scenario:
    """The README's folders mapped into one scratch folder, and the local Ray's address."""

    def __init__(self, scratch: Path, ray_address: str):
        self.scratch = scratch
        self.ray_address = ray_address

    def folder(self, name: str) -> str:
        if name == "/shared/images":
            name = "images"
        return str(self.scratch / name.lstrip("/"))

    def argv(self, command: str) -> list[str]:
        """The command's words with the test's folders, scale, Ray address and python."""
        words = shlex.split(command)
        out = []
        for i, word in enumerate(words):
            before = words[i - 1] if i else ""
            if before in ("--data-dir", "--images-dir"):
                word = self.folder(word)
            elif before == "--scale" and word == "demo":
                word = "tiny"
            elif before == "--ray-address":
                word = self.ray_address
            elif word == "0XXXXXXXXX":
                word = self.article()
            elif before == "--image" and word == "photo.jpg":
                word = str(min(Path(self.folder("images")).rglob("*.jpg")))
            out.append(word)
        if out[0] == "python":
            out[0] = sys.executable
        if out[1] in STAGES and "--data-dir" not in out:  # the default, data/ in the repo, is the user's own
            out += ["--data-dir", self.folder("data")]
        if out[1] in ("sample_data.py", "visual_features.py") and "--images-dir" not in out:
            out += ["--images-dir", self.folder("images")]
        return out

    def article(self) -> str:
        import polars as pl

        articles = pl.read_parquet(Path(self.folder("data")) / "processed" / "articles.parquet")
        return f"{articles['article_id'][0]:010d}"

    def make(self, target: str, *variables: str) -> list[str]:
        return ["make", "-o", ".venv/.installed", target, f"PY={sys.executable}", f"DATA={self.folder('data')}",
                f"IMAGES={self.folder('images')}", "SCALE=tiny", *variables]


def run_app(scenario: Scenario, address: str | None) -> str | None:
    """`make app` (with ADDRESS=address): None when it listens on that address alone and answers, else what failed."""
    return serve(scenario.make("app", *([f"ADDRESS={address}"] if address else [])), address or "127.0.0.1")


def serve(argv: list[str], expected: str) -> str | None:
    """Start the app with argv: None when it listens on `expected` alone and answers HTTP, else what failed."""
    port = free_port()
    process = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True,
                               env=clean_env(STREAMLIT_SERVER_PORT=str(port), STREAMLIT_SERVER_HEADLESS="true"))
    try:
        deadline = time.monotonic() + 90
        while not listening_addresses(port) and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.5)
        found = listening_addresses(port)
        if found != {hex_address(expected)}:
            return f"listens on {found or 'nothing'} (hex), expected {expected} only"
        with urllib.request.urlopen(f"http://{expected}:{port}/healthz", timeout=30) as response:
            if response.status != 200:
                return f"/healthz answered {response.status}"
        return None
    finally:
        os.killpg(process.pid, signal.SIGTERM)  # make and the streamlit it started: the group this test made
        process.wait(timeout=30)


def run_readme_command(scenario: Scenario, command: str) -> str | None:
    """Run one README command as the test does (RUN_AS); None when it worked, else what went wrong."""
    words = command.split()
    if words[0] == "make":
        if words[1] == "app":
            address = "127.0.0.2" if any(w.startswith("ADDRESS=") for w in words) else None
            return run_app(scenario, address)
        argv = scenario.make(words[1])
    elif words[1] == "X.py":
        for stage in STAGES:
            done = subprocess.run([sys.executable, stage, "--help"], cwd=ROOT, capture_output=True, text=True,
                                  env=clean_env(), timeout=300)
            if done.returncode != 0 or "usage:" not in done.stdout:
                return f"{stage} --help: exit {done.returncode}: {done.stderr[-1500:]}"
        return None
    elif words[1].startswith("bench/"):
        argv = [sys.executable, words[1], "--help"]
    else:
        argv = scenario.argv(command)
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, env=clean_env(), timeout=900)
    if done.returncode != 0 or "Traceback" in done.stderr:
        return f"exit {done.returncode}: {done.stderr[-2000:]}"
    return None


@pytest.mark.slow
def test_every_readme_command_runs_from_a_shell(local_ray, tmp_path):
    """Each runnable README command, in the README's order, on the tiny sample: exit 0, no traceback."""
    scenario = Scenario(tmp_path, local_ray.get_runtime_context().gcs_address)
    failed, ran = [], []
    for command in dict.fromkeys(readme_commands()):  # each once, in the order first shown
        if not_run_reason(command) is not None:
            continue
        problem = run_readme_command(scenario, command)
        ran.append(command)
        if problem:
            failed.append(f"`{command}`: {problem}")
    assert not failed, "\n".join(failed)
    assert {"make demo", "make app", "make lint"} <= set(ran)
    assert (tmp_path / "data" / "results" / "submission.csv").exists()  # make demo ran the whole pipeline
    assert (tmp_path / "hab" / "data" / "results" / "submission.csv").exists()  # the habitual regime's commands


# ---------------------------------------------------------------------------- the Ray engine from a shell

@pytest.mark.slow
def test_ray_embedding_from_a_shell_equals_the_local_engine(tiny, local_ray, tmp_path):
    """Before: `python visual_features.py --engine ray` from a shell failed with `cannot pickle 'GenericModule'`
    (the actor class lived in the script run as __main__). Now: a local Ray started by the command, and a
    running Ray given by --ray-address, both write the local engine's vectors exactly."""
    import shutil

    address = local_ray.get_runtime_context().gcs_address
    outputs = {}
    for name, extra in [("local", []), ("ray", ["--engine", "ray"]),
                        ("ray_address", ["--engine", "ray", "--ray-address", address])]:
        data = tmp_path / name / "data"
        shutil.copytree(tiny.processed_dir, data / "processed")
        done = subprocess.run([sys.executable, "visual_features.py", "--data-dir", str(data), "--images-dir",
                               str(tiny.images_dir), "--backbone", "mobilenet_v2", "--no-progress", *extra],
                              cwd=ROOT, capture_output=True, text=True, env=clean_env(), timeout=900)
        assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr[-3000:]
        outputs[name] = (np.load(data / "visual" / "visual_features.npy"),
                         np.load(data / "visual" / "visual_article_ids.npy"))
    for name in ("ray", "ray_address"):
        np.testing.assert_array_equal(outputs[name][1], outputs["local"][1])
        np.testing.assert_array_equal(outputs[name][0], outputs["local"][0])


# ---------------------------------------------------------------------------- one flag, one meaning

def stage_help(stage: str) -> str:
    done = subprocess.run([sys.executable, stage, "--help"], cwd=ROOT, capture_output=True, text=True,
                          env=clean_env(), timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.parametrize("stage", STAGES)
def test_progress_bars_are_hidden_by_one_flag(stage):
    """Before: visual_features.py and visual_reccs.py said --quiet, the others --no-progress."""
    text = stage_help(stage)
    assert ("--no-progress" in text) == (stage in PROGRESS_STAGES)
    assert "--quiet" not in text  # the old name still parses (a hidden alias) but is not offered


# ---------------------------------------------------------------------------- the app on loopback

@pytest.mark.slow
def test_the_app_listens_on_loopback_only(pipeline):
    """Before: `*:8501`, purchase histories reachable from the network. Now .streamlit/config.toml binds
    loopback, so `streamlit run app.py` without an address flag (the README's expansion of `make app`) does too."""
    import tomllib

    assert tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())["server"]["address"] == "127.0.0.1"
    argv = [sys.executable, "-m", "streamlit", "run", "app.py", "--", "--data-dir", str(pipeline.data_dir),
            "--images-dir", str(pipeline.images_dir)]
    assert serve(argv, "127.0.0.1") is None
