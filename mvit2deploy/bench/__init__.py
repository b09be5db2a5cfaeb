"""Latency benchmarks of MobileViTv2 models across runtimes, precisions, input sizes and batch sizes.

    from mvit2deploy.bench import BenchSettings, run_bench
    result = run_bench(["mobilevitv2-0.5"], runtimes=["torch", "onnxruntime"], precisions=["fp32", "int8"],
                       sizes=[(256, 256)], batches=[1], settings=BenchSettings(threads=2, runs=50))
    result.rows  # one BenchRow per configuration: status, parity, session/first-run time, latency stats

    run_bench(..., data="imagenet-val/", data_limit=500)  # + each measured row's val metrics (row.metrics)

Model ids are exported on the fly into a cache (`~/.cache/mvit2deploy/bench`, or `--cache-dir`), keyed by id,
image size, precision, weights and format, and reused when present. Without cached official weights (and no
`--weights`) a randomly initialised network is benchmarked: latency does not depend on the weight values, and
every row says so (`weights = random-init`, `random_init = true`, plus a note). Artifact paths are benchmarked
as they are (precisions / sizes they do not match are refused: those apply to model ids).

Methodology
-----------
* Fixed thread counts: `torch.set_num_threads(N)` and `set_num_interop_threads(1)`; ONNX Runtime
  `intra_op_num_threads = N`, `inter_op_num_threads = 1`, sequential execution, CPU provider, with the session
  options of `runtime.onnxruntime` (ort-mobile: the .ort file, graph optimisations off, as an app loads it).
* The same input for every runtime and precision: one float32 tensor per (image size, batch), uniform in [0, 1)
  from a fixed seed.
* Session creation (PyTorch: building the module and loading weights; ONNX Runtime: `InferenceSession(...)`;
  Core ML: loading the model) and the first run are timed and reported separately, never mixed into the stats.
* Warm-up: at least `--warmup N` runs, then more until the median of the last 5 is within 5% of the median of
  the previous 5, capped at +200 runs or 20 s (`warmup_settled` records whether it settled).
* Timed runs: `--runs N`, or as many as fit in `--min-time S` (at least 5). Only the runtime call is timed, with
  `time.perf_counter`: no image loading or preprocessing. The garbage collector is paused during timed runs.
* Statistics with numpy: mean, std (ddof 1), p50/p90/p99 (`numpy.percentile`, linear interpolation);
  throughput = batch * 1000 / mean latency (ms).
* Parity with PyTorch: the export-time validation of the very file (max abs error of the outputs and the
  task-level agreement: top-1 / pixel / detection match) from `export.validate`; trivially 0 / 1 for torch.
* All exports happen first, then the measurements in a fixed order: model, image size, batch (as given), runtime
  (torch, onnxruntime, ort-mobile, coreml), precision (fp32, fp16, int8). The configurations of one image size
  and batch take turns (`--rounds N`, default 5): each warms up, then in each round gets a pause, two untimed
  runs and its share of the timed runs, so host drift hits them all alike; `--rounds 1` runs them one at a time.
* torch eager runs fp32 only: torch fp16/int8 combinations are skipped with a note (not rows).
* --data DATASET (bench/data.py): checked before any export, scored by val's library after the last timed round,
  each distinct session once, all in one decoding pass; never between timed turns.
* Core ML runs only on macOS 12+ (`--compute-units`); elsewhere its rows are ❎ with the runtime's reason, the
  artifact size shown when the Core ML export itself worked, and no timings.
"""
from .planning import plan
from .rows import BenchResult, BenchRow, BenchSettings, Config, default_cache_dir
from .runner import run_bench

__all__ = ["BenchResult", "BenchRow", "BenchSettings", "Config", "default_cache_dir", "plan", "run_bench"]
