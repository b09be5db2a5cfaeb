"""Latency of ONE attention layer vs the number of tokens: MHSA, Linformer, MobileViTv2 separable attention.

Every layer: batch 1, fp32, the same embedding size d, input `[1, N, d]` (separable: `[1, d, 1, N]`).
- MHSA: qkv projection (d -> 3d), `heads` heads, softmax(Q K^T / sqrt(d/heads)) V, out projection (d -> d).
  The N x N score matrix is materialised per head, as in any plain implementation.
- Linformer: as MHSA, but K and V are first projected along the token axis from N to k (one learned k x N
  matrix each, shared by the heads), so the score matrix is N x k.
- Separable: `LinearSelfAttention` from the MobileViTv2 model (P = 1 pixel per patch, N patches).
"""
from __future__ import annotations

import math
import os
import statistics
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from ..bench.stats import fit_loglog_slope
from ..bench.timing import timed
from ..errors import UserError
from ..models.mobilevitv2 import LinearSelfAttention

METHODS = ("mhsa", "linformer", "separable")
ATTENTION_RUNTIMES = ("torch", "onnxruntime")  # of spec.RUNTIMES, those that run a bare layer
HEADS = 4
MAX_ATTN_MB = 2048.0  # MHSA rows whose score matrices (all heads) would exceed this are skipped, not run
MAX_ACTIVATION_MB = 2048.0  # token counts whose activations would exceed this are refused before any run
OPSET = 17  # the layers' ONNX graphs (plain MatMul/Softmax/Linear: any opset the tool supports would do)


class MHSA(nn.Module):
    def __init__(self, dim: int, heads: int = HEADS, linformer_k: Optional[int] = None, tokens: int = 0):
        super().__init__()
        self.heads, self.dh = heads, dim // heads
        self.scale = 1.0 / math.sqrt(self.dh)  # a Python constant, so the ONNX trace keeps no shape arithmetic
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        # Linformer: E, F project keys/values along the tokens (N -> k); a fixed N is inherent to the method.
        self.proj_k = nn.Linear(tokens, linformer_k, bias=False) if linformer_k else None
        self.proj_v = nn.Linear(tokens, linformer_k, bias=False) if linformer_k else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        if self.proj_k is not None:
            k = self.proj_k(k.transpose(1, 2)).transpose(1, 2)  # [B, k, d]
            v = self.proj_v(v.transpose(1, 2)).transpose(1, 2)
        dh = self.dh
        q = q.reshape(b, n, self.heads, dh).transpose(1, 2) * self.scale  # scale Q (N x dh), not the N x N scores
        k = k.reshape(b, -1, self.heads, dh).transpose(1, 2)
        v = v.reshape(b, -1, self.heads, dh).transpose(1, 2)
        attn = torch.softmax(q @ k.transpose(-2, -1), dim=-1)
        return self.out((attn @ v).transpose(1, 2).reshape(b, n, d))


@dataclass
class AttentionRow:
    method: str
    runtime: str
    tokens: int
    dim: int
    threads: int
    median_ms: Optional[float]
    p90_ms: Optional[float]
    attn_matrix_mb: float  # computed: bytes of the largest attention tensor (all heads), not measured
    peak_rss_delta_mb: Optional[float]  # measured: VmHWM after the runs minus VmRSS before (Linux only)
    status: str = "ok"  # "ok" or "skipped: memory"


@dataclass
class AttentionResult:
    rows: List[AttentionRow]
    slopes: Dict[str, Optional[float]]  # "method/runtime" -> fitted log-log slope
    load: Tuple[float, float] = (0.0, 0.0)  # 1-min load average before/after: other work skews timings


def attn_matrix_mb(method: str, tokens: int, linformer_k: int) -> float:
    if method == "mhsa":
        elems = HEADS * tokens * tokens
    elif method == "linformer":
        elems = HEADS * tokens * min(linformer_k, tokens)
    else:
        elems = tokens  # context scores [1, 1, 1, N]
    return elems * 4 / 2**20


def make_layer(method: str, dim: int, tokens: int, linformer_k: int) -> nn.Module:
    torch.manual_seed(0)
    if method == "mhsa":
        layer = MHSA(dim)
    elif method == "linformer":
        layer = MHSA(dim, linformer_k=min(linformer_k, tokens), tokens=tokens)
    else:
        layer = LinearSelfAttention(dim)
    return layer.eval()


def make_input(method: str, dim: int, tokens: int) -> torch.Tensor:
    shape = (1, dim, 1, tokens) if method == "separable" else (1, tokens, dim)
    return torch.randn(*shape, generator=torch.Generator().manual_seed(1))


def activation_mb(dim: int, tokens: int) -> float:
    """Bytes of a layer's largest activation besides the scores: the q/k/v projection, 3 x [N, d] (separable:
    [1 + 2d, N])."""
    return 3 * dim * tokens * 4 / 2**20


def _status_kb(key: str) -> Optional[int]:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_peak_rss() -> bool:
    try:  # Linux >= 4.0: writing 5 resets VmHWM to the current RSS
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _time(fn: Callable[[], object], warmup: int, runs: int) -> List[float]:
    for _ in range(warmup):
        fn()
    return timed(lambda _: fn(), None, runs, None)


def _torch_runner(layer: nn.Module, x: torch.Tensor) -> Callable[[], object]:
    def run():
        with torch.inference_mode():
            return layer(x)
    return run


def _ort_runner(layer: nn.Module, x: torch.Tensor, threads: int, tmp: str) -> Callable[[], object]:
    import onnxruntime as ort

    from ..runtime.onnxruntime import session_options

    path = os.path.join(tmp, f"{type(layer).__name__}-{x.numel()}.onnx")
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation notices; it is chosen on purpose
        torch.onnx.export(layer, (x,), path, dynamo=False, opset_version=OPSET, input_names=["x"],
                          output_names=["y"])
    # a bare layer has no artifact metadata, so no runtime.open_session: the same session options, though
    sess = ort.InferenceSession(path, session_options(threads), providers=["CPUExecutionProvider"])
    feed = {"x": x.numpy()}
    return lambda: sess.run(None, feed)


@dataclass(frozen=True)
class _Sweep:
    dim: int
    threads: int
    warmup: int
    runs: int
    linformer_k: int
    max_attn_mb: float


def _check(dim: int, tokens: List[int], runtimes: Sequence[str], methods: Sequence[str], threads: int,
           warmup: int, runs: int, linformer_k: int) -> None:
    bad = [t for t in tokens if t < 1] + ([dim] if dim < HEADS or dim % HEADS else [])
    if bad or runs < 1 or warmup < 0 or threads < 1 or linformer_k < 1:
        raise UserError(f"invalid benchmark settings: tokens >= 1, dim a multiple of {HEADS}, runs >= 1, "
                        f"threads >= 1, linformer-k >= 1 (got dim={dim}, tokens={tokens}, runs={runs})")
    from ..runtime import check_threads

    check_threads(threads)
    for name, given, known in (("runtime", runtimes, ATTENTION_RUNTIMES), ("method", methods, METHODS)):
        unknown = [r for r in given if r not in known]
        if unknown:
            raise UserError(f"unknown {name} {', '.join(unknown)} (choose from {', '.join(known)})")
    too_big = [t for t in tokens if activation_mb(dim, t) > MAX_ACTIVATION_MB]
    if too_big:
        raise UserError(f"--tokens {too_big[0]}: at d={dim} one layer's activations would take "
                        f"{activation_mb(dim, too_big[0]):.0f} MB (at most {MAX_ACTIVATION_MB:g} MB: "
                        f"{int(MAX_ACTIVATION_MB * 2**20 / (3 * dim * 4))} tokens)")


def run_attention_bench(dim: int = 256, tokens: Sequence[int] = (64, 256, 1024, 4096, 16384),
                        runtimes: Sequence[str] = ATTENTION_RUNTIMES, methods: Sequence[str] = METHODS,
                        threads: int = 1, warmup: int = 3, runs: int = 20, linformer_k: int = 256,
                        max_attn_mb: float = MAX_ATTN_MB,
                        progress: Optional[Callable[[AttentionRow], None]] = None) -> AttentionResult:
    tokens = sorted(set(int(t) for t in tokens))
    _check(dim, tokens, runtimes, methods, threads, warmup, runs, linformer_k)
    sweep = _Sweep(dim, threads, warmup, runs, linformer_k, max_attn_mb)
    rows: List[AttentionRow] = []
    loadavg = getattr(os, "getloadavg", lambda: (0.0,))  # not on Windows
    load0 = loadavg()[0]
    prev_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with tempfile.TemporaryDirectory(prefix="mvit2deploy-attn-") as tmp:
            for runtime in runtimes:
                for method in methods:
                    for n in tokens:
                        rows.append(_one(method, runtime, n, sweep, tmp))
                        if progress:
                            progress(rows[-1])
    finally:
        torch.set_num_threads(prev_threads)
    return AttentionResult(rows, slopes(rows), (load0, loadavg()[0]))


def _one(method: str, runtime: str, n: int, sweep: _Sweep, tmp: str) -> AttentionRow:
    mb = attn_matrix_mb(method, n, sweep.linformer_k)
    row = AttentionRow(method, runtime, n, sweep.dim, sweep.threads, None, None, round(mb, 3), None)
    if mb > sweep.max_attn_mb:
        row.status = "skipped: memory"
        return row
    layer, x = make_layer(method, sweep.dim, n, sweep.linformer_k), make_input(method, sweep.dim, n)
    fn = _torch_runner(layer, x) if runtime == "torch" else _ort_runner(layer, x, sweep.threads, tmp)
    rss0 = _status_kb("VmRSS") if _reset_peak_rss() else None
    times = _time(fn, sweep.warmup, sweep.runs)
    hwm = _status_kb("VmHWM")
    row.median_ms = statistics.median(times)
    row.p90_ms = float(np.percentile(times, 90))
    if rss0 is not None and hwm is not None:
        row.peak_rss_delta_mb = round(max(hwm - rss0, 0) / 1024, 1)
    return row


def series(rows: Sequence[AttentionRow]) -> Dict[str, List[Tuple[int, float]]]:
    """"method/runtime" -> its measured (tokens, median ms) points, in row order."""
    out: Dict[str, List[Tuple[int, float]]] = {}
    for r in rows:
        points = out.setdefault(f"{r.method}/{r.runtime}", [])
        if r.median_ms:
            points.append((r.tokens, r.median_ms))
    return out


def slopes(rows: Sequence[AttentionRow]) -> Dict[str, Optional[float]]:
    return {key: fit_loglog_slope([p[0] for p in pts], [p[1] for p in pts]) for key, pts in series(rows).items()}
