"""Packaging: the zoo manifest ships inside the package, so a wheel install (not only `pip install -e .`) finds it."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MANIFEST = ROOT / "weights" / "zoo.json"  # the documented, human-edited file
PACKAGED = ROOT / "mvit2deploy" / "data" / "zoo.json"  # the copy that ships in the wheel


def test_packaged_manifest_is_a_copy_of_weights_zoo_json():
    assert PACKAGED.read_bytes() == MANIFEST.read_bytes(), \
        "weights/zoo.json was edited: copy it over with `cp weights/zoo.json mvit2deploy/data/zoo.json`"


def test_wheel_ships_the_manifest_and_an_install_finds_it(tmp_path):
    # Build from a copy of the sources so the checkout gets no build/ or egg-info writes.
    src = tmp_path / "src"
    src.mkdir()
    shutil.copytree(ROOT / "mvit2deploy", src / "mvit2deploy", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run(pip + ["wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", str(tmp_path / "dist"),
                          str(src)], check=True, timeout=120)
    wheel = next((tmp_path / "dist").glob("mvit2deploy-*.whl"))
    with zipfile.ZipFile(wheel) as z:
        assert z.read("mvit2deploy/data/zoo.json") == MANIFEST.read_bytes()

    target = tmp_path / "site"
    subprocess.run(pip + ["install", "--no-deps", "--no-index", "--target", str(target), str(wheel)],
                   check=True, timeout=120)
    code = ("import json; from mvit2deploy import hub; from mvit2deploy.models import zoo; "
            "print(json.dumps([zoo.__file__, len(zoo.list_models()), zoo.get_entry('mobilevitv2-0.5').task, "
            "str(hub.home())]))")
    # cwd and PYTHONPATH keep the checkout off sys.path; the installed copy is found before the editable finder.
    env = dict(os.environ, PYTHONPATH=str(target), XDG_CACHE_HOME=str(tmp_path / "xdg"))
    env.pop("MVIT2DEPLOY_HOME", None)
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                         check=True, timeout=120)
    file, count, task, cache = json.loads(out.stdout.strip().splitlines()[-1])
    assert Path(file).is_relative_to(target)
    assert count == len(json.loads(MANIFEST.read_text())["models"])
    assert task == "classification"
    # an installed wheel keeps downloaded weights in the user cache, never inside site-packages
    assert Path(cache) == tmp_path / "xdg" / "mvit2deploy" / "weights"
