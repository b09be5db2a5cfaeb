"""`mvit2deploy weights`: download (resume, hash lock, offline), import of every layout, verify, CLI.

Everything runs against a local HTTP server in a thread; nothing touches the network.
"""
from __future__ import annotations

import hashlib
import http.server
import io
import json
import re
import socket
import threading
import time
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from mvit2deploy import hub
from mvit2deploy.cli import app
from mvit2deploy.fs import sha256 as fs_sha256
from mvit2deploy.hub import load_model
from mvit2deploy.models import build_model, get_entry, list_models
from mvit2deploy.models.checkpoint import official_to

MID = "mobilevitv2-0.5"
URL_PATH = "/" + get_entry(MID).url


def _checkpoint_bytes(seed: int) -> tuple[torch.nn.Module, bytes]:
    torch.manual_seed(seed)
    model = build_model(get_entry(MID))
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    return model, buf.getvalue()


@pytest.fixture(scope="module")
def ckpt():
    return _checkpoint_bytes(0)


@pytest.fixture(autouse=True)
def _home(tmp_path, monkeypatch):
    monkeypatch.setenv("MVIT2DEPLOY_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("MVIT2DEPLOY_BASE_URL", raising=False)
    monkeypatch.setattr(hub.download, "BACKOFF_S", 0.01)  # keep retry tests fast


class _Handler(http.server.BaseHTTPRequestHandler):
    """Serves `server.data` at the zoo path (else 404), honours `Range: bytes=N-`; `server.cut` cuts the first N responses."""

    def log_message(self, *args):  # quiet
        pass

    def do_GET(self):
        srv = self.server
        srv.requests.append(dict(self.headers))
        if self.path != URL_PATH:
            self.send_error(404)
            return
        data, start = srv.data, 0
        m = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", ""))
        if m and srv.honour_range:
            start = int(m.group(1))
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.send_header("ETag", '"%s"' % hashlib.md5(data).hexdigest())
        self.end_headers()
        if srv.cut > 0:  # send half, then drop the connection (or stall: `stall` seconds of silence)
            srv.cut -= 1
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            if srv.stall:
                time.sleep(srv.stall)
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.wfile.write(body)


@pytest.fixture
def server(ckpt):
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.data, srv.cut, srv.stall, srv.honour_range, srv.requests = ckpt[1], 0, 0, True, []
    srv.base = f"http://127.0.0.1:{srv.server_address[1]}/"
    threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    yield srv
    srv.shutdown()
    srv.server_close()


def _free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def _logits(model: torch.nn.Module) -> torch.Tensor:
    torch.manual_seed(123)
    x = torch.randn(1, 3, 128, 128)
    with torch.no_grad():
        return model.eval()(x)


def _cache_files() -> list[str]:
    return sorted(p.name for p in hub.home().iterdir() if p.name != "weights.lock.json")


# ---- pull --------------------------------------------------------------------------------------

def test_pull_downloads_and_records_hash(server, ckpt):
    seen = []
    path = hub.pull(MID, base_url=server.base, progress=lambda done, total: seen.append((done, total)))
    assert path == hub.home() / f"{MID}.pt"
    assert path.read_bytes() == ckpt[1]
    rec = json.loads(hub.lock_path().read_text())[MID]
    assert rec["sha256"] == hashlib.sha256(ckpt[1]).hexdigest()
    assert rec["size"] == len(ckpt[1]) and rec["source"] == "download"
    assert rec["url"] == server.base + get_entry(MID).url
    assert seen[-1] == (len(ckpt[1]), len(ckpt[1]))
    assert server.requests[0].get("Range") is None
    assert _cache_files() == [f"{MID}.pt"]
    # a second pull uses the cache (no request) and the loaded model is the served one
    assert hub.pull(MID, base_url=server.base) == path and len(server.requests) == 1
    assert torch.equal(_logits(load_model(MID, "official")), _logits(ckpt[0]))


def test_base_url_from_environment(server, ckpt, monkeypatch):
    monkeypatch.setenv("MVIT2DEPLOY_BASE_URL", server.base)
    assert hub.pull(MID).read_bytes() == ckpt[1]
    assert len(server.requests) == 1


def test_resume_after_cut_transfer(server, ckpt):
    server.cut = 1
    path = hub.pull(MID, base_url=server.base, retries=2)
    half = len(ckpt[1]) // 2
    assert len(server.requests) == 2
    assert server.requests[0].get("Range") is None
    assert server.requests[1]["Range"] == f"bytes={half}-"
    assert server.requests[1]["If-Range"] == '"%s"' % hashlib.md5(ckpt[1]).hexdigest()
    assert fs_sha256(path) == hashlib.sha256(ckpt[1]).hexdigest()
    assert _cache_files() == [f"{MID}.pt"]  # the .part was renamed away


def test_stalled_transfer_hits_read_timeout_and_resumes(server, ckpt):
    server.cut, server.stall = 1, 2.0
    t0 = time.monotonic()
    path = hub.pull(MID, base_url=server.base, timeout=(5.0, 0.3))
    assert time.monotonic() - t0 < 1.8  # gave up on the stalled read, did not wait for the server
    # resumes from every byte that arrived before the stall (reads take what has arrived, not whole chunks)
    start = int(re.fullmatch(r"bytes=(\d+)-", server.requests[1]["Range"]).group(1))
    assert start == len(ckpt[1]) // 2
    assert path.read_bytes() == ckpt[1]


def test_resume_from_part_left_by_earlier_run(server, ckpt):
    part = hub.part_file(MID)
    part.parent.mkdir(parents=True)
    part.write_bytes(ckpt[1][:1000])
    path = hub.pull(MID, base_url=server.base)
    assert server.requests[0]["Range"] == "bytes=1000-"
    assert path.read_bytes() == ckpt[1] and not part.exists()


def test_server_ignoring_range_restarts_cleanly(server, ckpt):
    server.cut, server.honour_range = 1, False
    path = hub.pull(MID, base_url=server.base)
    assert server.requests[1]["Range"] == f"bytes={len(ckpt[1]) // 2}-"  # asked, got a full 200
    assert path.read_bytes() == ckpt[1]


def test_gives_up_after_retries_and_keeps_part(server, ckpt):
    server.cut = 10
    with pytest.raises(hub.WeightsError, match=r"gave up after 2 attempts.*pull again to resume"):
        hub.pull(MID, base_url=server.base, retries=1)
    assert len(server.requests) == 2
    part = hub.part_file(MID)
    assert part.stat().st_size == len(ckpt[1]) // 2 + (len(ckpt[1]) - len(ckpt[1]) // 2) // 2
    assert ckpt[1].startswith(part.read_bytes()) and not hub.cache_file(MID).exists()


def test_changed_file_on_server_is_refused(server, ckpt):
    hub.pull(MID, base_url=server.base)
    recorded = hub.read_lock()[MID]["sha256"]
    server.data = _checkpoint_bytes(1)[1]  # loads fine, but is not the file we recorded
    with pytest.raises(hub.WeightsError, match="refused and removed"):
        hub.pull(MID, base_url=server.base, force=True)
    assert _cache_files() == []  # no .pt, no .part
    assert hub.read_lock()[MID]["sha256"] == recorded


def test_file_that_does_not_load_is_removed(server):
    server.data = b"not a checkpoint at all" * 100
    with pytest.raises(hub.WeightsError, match="does not load, removed"):
        hub.pull(MID, base_url=server.base)
    assert _cache_files() == [] and MID not in hub.read_lock()


def test_http_404_is_not_retried(server):
    with pytest.raises(hub.WeightsError, match="HTTP 404"):
        hub.pull(MID, base_url=server.base + "missing/", retries=3)
    assert len(server.requests) == 1 and _cache_files() == []


def test_server_that_never_answers_times_out_quickly():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)  # accepts the TCP connection in the backlog, never replies
    try:
        t0 = time.monotonic()
        with pytest.raises(hub.OfflineError, match=r"timed out after 0.5 s.*weights import FILE --as " + MID):
            hub.pull(MID, base_url=f"http://127.0.0.1:{listener.getsockname()[1]}/", timeout=0.5, retries=3)
        assert time.monotonic() - t0 < 3
    finally:
        listener.close()
    assert not hub.part_file(MID).exists()


def test_closed_port_gives_offline_line():
    t0 = time.monotonic()
    with pytest.raises(hub.OfflineError) as info:
        hub.pull(MID, base_url=f"http://127.0.0.1:{_free_port()}/", retries=3)
    assert time.monotonic() - t0 < 3
    msg = str(info.value)
    assert "\n" not in msg and MID in msg and "refused" in msg.lower()
    assert f"mvit2deploy weights import FILE --as {MID}" in msg
    assert isinstance(info.value, hub.WeightsError) and info.value.exit_code == 2


# ---- import ------------------------------------------------------------------------------------

def _layouts(model: torch.nn.Module, tmp: Path) -> dict:
    sd = model.state_dict()
    files = {}
    files["official"] = tmp / "official.pt"
    torch.save(sd, files["official"])
    files["wrapped"] = tmp / "wrapped.pth"
    torch.save({"state_dict": sd, "epoch": 3}, files["wrapped"])
    files["timm"] = tmp / "timm.pth"
    torch.save({official_to("timm", k): v for k, v in sd.items() if official_to("timm", k)}, files["timm"])
    files["hf"] = tmp / "pytorch_model.bin"
    torch.save({official_to("hf", k): v for k, v in sd.items() if official_to("hf", k)}, files["hf"])
    from safetensors.torch import save_file

    files["safetensors"] = tmp / "model.safetensors"
    save_file({k: v.contiguous() for k, v in sd.items()}, str(files["safetensors"]))
    return files


def test_import_every_layout_gives_same_logits(ckpt, tmp_path):
    model = ckpt[0]
    want = _logits(model)
    torch.manual_seed(99)
    assert not torch.allclose(_logits(build_model(get_entry(MID))), want)  # a fresh init differs
    files = _layouts(model, tmp_path)
    assert official_to("timm", "conv_1.block.conv.weight") != "conv_1.block.conv.weight"
    for layout, f in files.items():
        path = hub.import_file(f, MID, force=True)
        assert path == hub.cache_file(MID)
        rec = hub.read_lock()[MID]
        assert rec["sha256"] == fs_sha256(path) and rec["url"] is None and rec["source"].startswith(f.name)
        stored = torch.load(path, weights_only=True)  # plain official keys, whatever came in
        assert set(stored) == set(model.state_dict()), layout
        got = _logits(load_model(MID, "official"))
        assert torch.equal(got, want), layout
        assert hub.verify(MID).ok
    assert _cache_files() == [f"{MID}.pt"]  # no temporary files left behind


def test_import_refuses_overwrite_without_force(ckpt, tmp_path):
    f = _layouts(ckpt[0], tmp_path)["official"]
    hub.import_file(f, MID)
    with pytest.raises(hub.WeightsError, match="already cached.*--force"):
        hub.import_file(f, MID)


def test_import_wrong_architecture_is_refused(tmp_path):
    other = tmp_path / "w1.pt"
    torch.save(build_model(get_entry("mobilevitv2-1.0")).state_dict(), other)
    with pytest.raises(hub.WeightsError, match="wrong-shape"):
        hub.import_file(other, MID)
    assert not hub.cache_file(MID).exists() and MID not in hub.read_lock()


class _Evil:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):  # unpickling would create the marker file
        return (open, (str(self.marker), "w"))


def test_malicious_pickle_is_refused(tmp_path):
    marker, control_marker = tmp_path / "pwned", tmp_path / "control"
    evil = tmp_path / "evil.pt"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "x": _Evil(marker)}, evil)
    control = tmp_path / "control.pt"
    torch.save({"x": _Evil(control_marker)}, control)
    torch.load(control, weights_only=False)  # proves the payload is live when unpickled unsafely
    assert control_marker.exists()
    with pytest.raises(hub.WeightsError, match="refused: the file needs arbitrary code"):
        hub.import_file(evil, MID)
    assert not marker.exists()
    assert not hub.cache_file(MID).exists()


def test_verify_detects_tampering(ckpt, tmp_path):
    hub.import_file(_layouts(ckpt[0], tmp_path)["official"], MID)
    assert hub.verify(MID).ok
    p = hub.cache_file(MID)
    p.write_bytes(p.read_bytes()[:-10] + b"0123456789")
    r = hub.verify(MID)
    assert not r.ok and "sha256 mismatch" in r.detail
    with pytest.raises(hub.WeightsError, match="does not match its recorded sha256"):
        hub.require_cached(MID)


# ---- CLI ---------------------------------------------------------------------------------------

runner = CliRunner()


def test_cli_list():
    r = runner.invoke(app, ["weights", "list", "--json"])
    assert r.exit_code == 0, r.output
    rows = json.loads(r.stdout)
    assert len(rows) == 49 and rows[0]["id"] == MID and rows[0]["cached"] is False
    r = runner.invoke(app, ["weights", "list"])
    assert r.exit_code == 0
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("│")]
    assert len(lines) == 49
    assert all(e.id in r.stdout for e in list_models())
    r = runner.invoke(app, ["weights", "list", "--task", "detection", "--json"])
    assert {row["task"] for row in json.loads(r.stdout)} == {"detection"}


def test_cli_pull_offline_is_one_line(monkeypatch):
    monkeypatch.setenv("MVIT2DEPLOY_BASE_URL", f"http://127.0.0.1:{_free_port()}/")
    r = runner.invoke(app, ["weights", "pull", MID])
    assert r.exit_code == 2
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.output
    assert MID in lines[0] and f"mvit2deploy weights import FILE --as {MID}" in lines[0]


def test_cli_pull_import_verify(server, ckpt, tmp_path):
    r = runner.invoke(app, ["weights", "pull", MID, "--base-url", server.base])
    assert r.exit_code == 0, r.output
    assert hub.cache_file(MID).read_bytes() == ckpt[1]
    r = runner.invoke(app, ["weights", "list", "--json"])
    assert json.loads(r.stdout)[0]["cached"] is True
    r = runner.invoke(app, ["weights", "import", str(_layouts(ckpt[0], tmp_path)["timm"]), "--as", MID])
    assert r.exit_code == 2 and "--force" in r.output
    r = runner.invoke(app, ["weights", "import", str(tmp_path / "timm.pth"), "--as", MID, "--force"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["weights", "verify"])
    assert r.exit_code == 0 and MID in r.stdout and "ok" in r.stdout
    hub.cache_file(MID).write_bytes(b"corrupt")
    r = runner.invoke(app, ["weights", "verify", MID])
    assert r.exit_code == 1 and "FAIL" in r.stdout
    r = runner.invoke(app, ["weights", "pull", "no-such-model"])
    assert r.exit_code == 2 and "unknown model id" in r.output
