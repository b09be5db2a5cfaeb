"""The bad-input corpus (cases.toml, built by gen.py): every row runs its command in a subprocess under
address-space and CPU-time limits and a wall timeout, and must end with its documented exit code, one readable
error line containing its message (one per bad input of a batch), no traceback, the other inputs of a batch
still processed, and no temporary, partial or orphaned file left behind (TMPDIR must be empty afterwards).

Rows run concurrently (HOSTILE_WORKERS, default min(6, 2 x CPUs)) in one session fixture, then each row is
checked by its own test, so a failure names the row. A row marked `inprocess` (a refusal that reads no FIFO,
device or bomb, so it cannot hang or run away) runs in this process with typer's CliRunner instead, one at a
time, with the same environment, working folder and TMPDIR, and the same checks (an uncaught exception counts
as a traceback): it saves the interpreter start and the imports (about 1.5 s of CPU a row).
"""
from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import re
import resource
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import gen  # noqa: E402
import table  # noqa: E402

CASES = table.cases()
ADDRESS_SPACE = int(os.environ.get("HOSTILE_MAX_AS_GB", "8")) << 30  # 8 GB: far below the 24 GB of defect 1
CPU_SECONDS = 240
ERROR_LINE = re.compile(r"^(error:|failed:|interrupted)")
LEFTOVER = ("*.tmp", "*.part", "*.import", ".probe-*", "mvit2deploy-*", ".*.tmp")
THIRD_PARTY_TMP = {".ses"}  # onnxruntime's native module leaves a session marker in TMPDIR on import
NOISE = ("Traceback", "has not been tested with coremltools", "Failed to load _MLModelProxy")
BASE_ENV = {k: v for k, v in os.environ.items() if not k.startswith("MVIT2DEPLOY_")}  # before any row changes it
IN_PROCESS = threading.Lock()  # in-process rows change this process's environment, working folder and tempdir


def _limits() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE, ADDRESS_SPACE))
    resource.setrlimit(resource.RLIMIT_CPU, (CPU_SECONDS, CPU_SECONDS))
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # Python then installs its own handler, as in a terminal


def _expand(word: str, case_dir: Path, ctx, made: dict) -> str:
    def sub(m):
        key = m.group(1)
        if key.startswith("gen:"):
            name = key[4:]
            if name not in made:
                made[name] = str(gen.KINDS[name](case_dir / "in", ctx))
            return made[name]
        return {"tmp": str(case_dir), "home": str(case_dir / "home"),
                "json": str(case_dir / "out" / "predict.jsonl")}[key]
    return re.sub(r"\{([a-z_]+(?::[a-z0-9_]+)?)\}", sub, word)


def _digest(path: Path):
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None


def _wait_then_signal(proc, case, case_dir, ctx, made, stderr_path: Path):
    """Send the row's signal once its trigger shows (a stderr text, or `file:PATH` existing); returns when."""
    when = _expand(case["signal_when"], case_dir, ctx, made)
    deadline = time.monotonic() + case.get("timeout", 120) - 10
    while proc.poll() is None and time.monotonic() < deadline:
        seen = Path(when[5:]).exists() if when.startswith("file:") else when in stderr_path.read_text(errors="replace")
        if seen:
            time.sleep(1.0)  # let the work get going
            proc.send_signal(getattr(signal, case["signal"]))
            return time.monotonic()
        time.sleep(0.1)
    return None


def run_case(case: dict, root: Path, ctx) -> dict:
    case_dir = root / case["id"]
    for sub in ("in", "out", "home", "tmp", "work", "cache"):
        (case_dir / sub).mkdir(parents=True, exist_ok=True)
    made: dict = {}
    for name in case.get("setup", []):
        made[name] = str(gen.KINDS[name](case_dir / "in", ctx))
    args = [_expand(w, case_dir, ctx, made) for w in shlex.split(case["cmd"])]
    unchanged = {p: _digest(Path(p)) for p in (_expand(u, case_dir, ctx, made) for u in case.get("unchanged", []))}
    env = dict(BASE_ENV)
    env.update(MVIT2DEPLOY_HOME=str(case_dir / "home"), TMPDIR=str(case_dir / "tmp"),
               XDG_CACHE_HOME=str(case_dir / "cache"), PYTHONPATH=os.pathsep.join(
                   [str(gen.ROOT)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]),
               COLUMNS="200", **case.get("env", {}))
    out_path, err_path = case_dir / "stdout.txt", case_dir / "stderr.txt"
    t0 = time.monotonic()
    if case.get("inprocess"):
        ctx.ready()  # the shared export reads MVIT2DEPLOY_HOME and the tempdir this row changes: let it finish
        rc = _in_process(args, env, case_dir, out_path, err_path)
        signalled = None
    else:
        rc, signalled = _subprocess(case, args, env, case_dir, ctx, made, out_path, err_path)
    return {"rc": rc, "seconds": time.monotonic() - t0,
            "after_signal": None if signalled is None else time.monotonic() - signalled, "stdout": out_path.read_text(errors="replace"),
            "stderr": err_path.read_text(errors="replace"), "dir": case_dir, "args": args,
            "unchanged": unchanged, "after": {p: _digest(Path(p)) for p in unchanged}}


def _in_process(args, env, case_dir: Path, out_path: Path, err_path: Path):
    from typer.testing import CliRunner

    from mvit2deploy.cli import app

    with IN_PROCESS:
        saved_env, saved_cwd, saved_tmp = dict(os.environ), os.getcwd(), tempfile.tempdir
        os.environ.clear()
        os.environ.update(env)
        os.chdir(case_dir / "work")
        tempfile.tempdir = str(case_dir / "tmp")
        try:
            result = CliRunner().invoke(app, args)
        finally:
            tempfile.tempdir = saved_tmp
            os.chdir(saved_cwd)
            os.environ.clear()
            os.environ.update(saved_env)
    stderr = result.stderr
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        stderr += "".join(traceback.format_exception(result.exception))  # what the terminal would have shown
    out_path.write_text(result.stdout)
    err_path.write_text(stderr)
    return result.exit_code


def _subprocess(case, args, env, case_dir: Path, ctx, made, out_path: Path, err_path: Path):
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        proc = subprocess.Popen([sys.executable, "-c", "from mvit2deploy.cli import main; main()", *args],
                                cwd=case_dir / "work", env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                preexec_fn=_limits)
        signalled = _wait_then_signal(proc, case, case_dir, ctx, made, err_path) if case.get("signal") else None
        try:
            rc = proc.wait(timeout=case.get("timeout", 120))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            rc = "timeout"
    return rc, signalled


@pytest.fixture(scope="session")
def corpus(tmp_path_factory):
    ctx = gen.Corpus(tmp_path_factory.mktemp("hostile-shared"))
    root = tmp_path_factory.mktemp("hostile")
    only = re.compile(os.environ.get("HOSTILE_ONLY", ""))  # a regex of row ids, to rerun a few while working
    runnable = [c for c in CASES if not c.get("pending") and only.search(c["id"])]
    runnable.sort(key=_waits)  # while the shared export is built, the rows that do not wait for it run
    workers = int(os.environ.get("HOSTILE_WORKERS", min(6, 2 * (os.cpu_count() or 1))))
    try:
        with ThreadPoolExecutor(workers) as pool:
            results = dict(zip([c["id"] for c in runnable], pool.map(lambda c: run_case(c, root, ctx), runnable)))
    finally:
        ctx.close()
    return results


def _waits(case: dict) -> bool:
    """Whether the row waits for the shared export: it uses a file made from it, or runs in this process."""
    kinds = set(re.findall(r"\{gen:([a-z0-9_]+)\}", case["cmd"])) | set(case.get("setup", []))
    return bool(kinds & gen.NEEDS_EXPORT) or bool(case.get("inprocess"))


def _leftovers(case_dir: Path, keep) -> list:
    found = []
    for dirpath, dirnames, filenames in os.walk(case_dir):
        if Path(dirpath) == case_dir / "in":
            dirnames[:] = []  # the inputs themselves
            continue
        for name in dirnames + filenames:
            if any(fnmatch.fnmatch(name, g) for g in LEFTOVER) and not any(fnmatch.fnmatch(name, g) for g in keep):
                found.append(os.path.join(dirpath, name))
    found += [str(p) for p in (case_dir / "tmp").iterdir() if p.name not in THIRD_PARTY_TMP]  # TMPDIR left empty
    return found


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_bad_input(case, corpus):
    if case.get("pending"):
        pytest.skip(f"pending: {case['pending']}")
    if case["id"] not in corpus:
        pytest.skip("not selected by HOSTILE_ONLY")
    r = corpus[case["id"]]
    where = f"{' '.join(r['args'])}\n--- stderr ---\n{r['stderr'][-3000:]}\n--- stdout ---\n{r['stdout'][-1500:]}"
    assert r["rc"] == case["exit"], where
    if case.get("signal"):
        # stopped promptly: the bound leaves room for interpreter teardown (torch) on a loaded machine
        assert r["after_signal"] is not None and r["after_signal"] < case.get("max_after_signal", 30), r
    for noise in NOISE:
        assert noise not in r["stderr"] and noise not in r["stdout"], where
    errors = [line for line in r["stderr"].splitlines() if ERROR_LINE.match(line)]
    assert len(errors) == case.get("failures", 1), where
    if case.get("message"):
        assert any(case["message"].lower() in line.lower() for line in errors), where
    for line in errors:
        assert len(line) < 700 and line.isprintable(), line
    if "batch_ok" in case:
        records = [json.loads(line, parse_constant=_no_constant) if case.get("strict_json") else json.loads(line)
                   for line in (r["dir"] / "out" / "predict.jsonl").read_text().splitlines()]
        assert sum(rec["ok"] for rec in records) == case["batch_ok"], records
        assert len(records) == case["batch_ok"] + case.get("failures", 1), records
        if "non_finite" in case:
            assert sum(rec.get("non_finite", False) for rec in records) == case["non_finite"], records
    if case.get("stdout"):
        assert case["stdout"].lower() in " ".join(r["stdout"].split()).lower(), where
    if "val_json" in case:  # val: the bad images counted and named, the others evaluated
        doc = json.loads((r["dir"] / "out" / "val.json").read_text(), parse_constant=_no_constant)
        assert len(doc["dataset"]["failed"]) == case["val_json"]["failed"], doc["dataset"]
        assert doc["dataset"]["evaluated"] == case["val_json"]["evaluated"], doc["dataset"]
    assert r["after"] == r["unchanged"], "a file that must not change was changed"
    if "part_bytes" in case:
        part = r["dir"] / "home" / f"{gen.MID}.pt.part"
        assert part.stat().st_size == case["part_bytes"], "the bytes that arrived before the stall were not kept"
    assert not _leftovers(r["dir"], case.get("keep", [])), _leftovers(r["dir"], case.get("keep", []))
    assert not (r["dir"] / "work" / "pwned.txt").exists()


def _no_constant(name: str):
    raise AssertionError(f"not valid JSON: {name}")


def test_table_has_enough_kinds_and_all_generators_exist():
    assert len(CASES) >= 40
    used = {m for c in CASES for m in re.findall(r"\{gen:([a-z0-9_]+)\}", c["cmd"])} | \
        {s for c in CASES for s in c.get("setup", [])}
    assert used <= set(gen.KINDS), used - set(gen.KINDS)
    for c in CASES:
        assert {"id", "area", "cmd", "exit"} <= set(c), c


def test_docs_table_is_generated_from_the_data():
    text = table.DOC.read_text()
    assert table.markdown(CASES) in text, "docs/reliability.md is stale: run python tests/hostile/table.py"
