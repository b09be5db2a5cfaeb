"""bench says whether an int8 row is worth keeping against the float rows of the same runtime (issue 16)."""
from mvit2deploy.bench.rows import MEASURED, BenchRow
from mvit2deploy.bench.verdicts import int8_verdicts


def row(precision, p50, runtime="openvino", state=MEASURED, agreement=None):
    r = BenchRow(status="", state="", reason=None, model="mobilevitv2-0.5", runtime=runtime, precision=precision,
                 image_size="64x64", height=64, width=64, pixels=4096, batch=1, threads=2, weights="random-init",
                 random_init=True, p50_ms=p50, parity_agreement=agreement, parity_metric="top1_agreement")
    return r.decide(state)


def test_int8_slower_than_bf16_is_not_kept():
    lines = int8_verdicts([row("fp32", 30.0), row("bf16", 16.0, agreement=0.99), row("int8", 16.5, agreement=0.88)])
    assert len(lines) == 1
    assert "vs bf16 16.00 ms" in lines[0] and "not faster: keep bf16" in lines[0] and "0.88" in lines[0]


def test_int8_faster_than_every_float_row_says_by_how_much():
    lines = int8_verdicts([row("fp32", 30.0), row("int8", 15.0)])
    assert len(lines) == 1 and "2.00x faster" in lines[0] and "vs fp32" in lines[0]


def test_no_verdict_without_a_measured_rival_or_across_runtimes():
    assert int8_verdicts([row("int8", 15.0), row("fp32", 30.0, state="failed")]) == []
    assert int8_verdicts([row("int8", 15.0), row("fp32", 30.0, runtime="onnxruntime")]) == []
