"""Mobile readiness of an ONNX / `.ort` file, computed with ONNX Runtime's own checker code.

Provider analysis: `onnxruntime.tools.mobile_helpers.usability_checker`, the code behind
`python -m onnxruntime.tools.check_onnx_model_mobile_usability`, step by step as its `analyze_model` does it
(optimise to BASIC, shape inference, partition check per provider against ORT's supported-operator tables),
but kept as data: nodes taken, partitions, unsupported ops and why, ORT's verdict. Plus the facts a mobile
build needs: opset, operator inventory, largest tensor rank, file size, required operators (the
`--include_ops_by_config` format). `.ort` files are read through ORT's flatbuffer bindings (operators,
saved runtime optimisations, host-only NCHWc ops).
"""
from __future__ import annotations

import logging
import tempfile
from collections import Counter
from pathlib import Path
from typing import Dict, List, Optional

import onnx

from .nms_mobile import PREFIX as NMS_PREFIX  # node names of the mobile NMS stage

NCHWC_DOMAIN = "com.microsoft.nchwc"
# provider -> ORT's supported-operator table (the file names ORT's own checker passes)
COREML_TABLES = {"CoreML NeuralNetwork": "coreml_supported_neuralnetwork_ops.md",
                 "CoreML MLProgram": "coreml_supported_mlprogram_ops.md"}
PROVIDERS = ("NNAPI", *COREML_TABLES)
NOT_ASSESSED = {"XNNPACK": "ONNX Runtime's checker has no XNNPACK table; XNNPACK takes what NNAPI leaves "
                           "(Conv, Gemm, MatMul, pooling, Softmax ...) on Android"}


def _partition_fn(provider: str):
    from onnxruntime.tools.mobile_helpers import usability_checker as uc

    if provider == "NNAPI":
        return uc.check_nnapi_partitions
    return lambda model, fixed: uc.check_coreml_partitions(model, fixed, COREML_TABLES[provider])


def _ort_summary(info, provider: str) -> str:
    """ORT's own verdict sentence (the last line print_analysis logs)."""
    lines: List[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: lines.append(record.getMessage())
    logger = logging.getLogger("mvit2deploy.readiness.ort")
    logger.propagate, logger.handlers = False, [handler]
    logger.setLevel(logging.INFO)
    info.print_analysis(logger, provider)
    return lines[-1] if lines else ""


def _network_share(info, graph) -> Dict[str, object]:
    """With an NMS stage (nodes named "nms/...", export/onnx/nms_mobile.py): how much of the network itself the
    main partition holds, and the NMS nodes per partition (the post-processing may stay on the CPU)."""
    tail = sum(n.name.startswith(NMS_PREFIX) for n in graph.node)
    if not tail:
        return {}
    network = len(graph.node) - tail
    groups = info.supported_groups
    main = sum(not n.name.startswith(NMS_PREFIX) for n in groups[0]) if groups else 0
    return {"nms_stage_nodes": tail, "network_nodes": network,
            "network_in_main_partition": round(100.0 * main / max(1, network), 2),
            "nms_nodes_per_partition": [sum(n.name.startswith(NMS_PREFIX) for n in g) for g in groups]}


def _partition_dict(info, provider: str, graph) -> Dict[str, object]:
    unsupported = {op: "operator not in the provider's table" for op in sorted(info.unsupported_ops)}
    for op in sorted(info.ops_with_unsupported_rank):
        unsupported[op] = (unsupported.get(op, "") + "; " if op in unsupported else "") + "input rank above the provider's limit"
    taken = info.num_supported_nodes
    return {
        "nodes": info.num_nodes, "nodes_taken": taken,
        "coverage": round(100.0 * taken / max(1, info.num_nodes), 2),
        "partitions": info.num_partitions, "partition_sizes": [len(g) for g in info.supported_groups],
        "unsupported_ops": unsupported,
        "nodes_not_taken": {"operator": info.nodes_unsupported_due_to_op,
                            "dynamic_shape": info.nodes_unsupported_due_to_dynamic_input,
                            "rank": info.num_unsupported_nodes_due_to_rank},
        "caveats": info.supported_ops_checker.get_caveats(),
        "verdict": info.suitability().name, "ort_says": _ort_summary(info, provider),
        **_network_share(info, graph),
    }


def provider_report(onnx_path: Path) -> Dict[str, Dict[str, object]]:
    """Per provider, as ORT's checker computes it; `if_shapes_fixed` when the shapes are dynamic."""
    from onnxruntime.tools.mobile_helpers import usability_checker as uc
    from onnxruntime.tools.onnx_model_utils import ModelProtoWithShapeInfo, optimize_model

    with tempfile.TemporaryDirectory() as tmp:
        optimized = Path(tmp) / "model.onnx"
        optimize_model(Path(onnx_path), optimized, use_external_initializers=True)  # as analyze_model does
        model = ModelProtoWithShapeInfo(optimized).model_with_shape_info
    dynamic_inputs, _ = uc.check_shapes(model.graph)
    out = {}
    for provider in PROVIDERS:
        fn = _partition_fn(provider)
        info = fn(model, True)
        entry = _partition_dict(info, provider, model.graph)
        if dynamic_inputs and info.suitability() != uc.PartitioningInfo.TryWithEP.YES:
            entry["if_shapes_fixed"] = _partition_dict(fn(model, False), provider, model.graph)
        out[provider] = entry
    return out


def max_rank(model: onnx.ModelProto) -> int:
    """Largest tensor rank after shape inference (inputs, outputs, intermediate values, initializers)."""
    inferred = onnx.shape_inference.infer_shapes(model)
    g = inferred.graph
    ranks = [len(v.type.tensor_type.shape.dim) for v in [*g.input, *g.output, *g.value_info]
             if v.type.HasField("tensor_type") and v.type.tensor_type.HasField("shape")]
    return max([*ranks, *(len(t.dims) for t in g.initializer)], default=0)


def onnx_facts(path: Path) -> Dict[str, object]:
    model = onnx.load(str(path))
    opsets = {(o.domain or "ai.onnx"): o.version for o in model.opset_import}
    ops = Counter(f"{n.domain or 'ai.onnx'}:{n.op_type}" for n in model.graph.node)
    required: Dict[str, set] = {}
    for key in ops:
        domain, op = key.split(":", 1)
        required.setdefault(f"{domain};{opsets.get(domain, '?')}", set()).add(op)
    return {"format": "onnx", "opset": opsets.get("ai.onnx"), "opsets": opsets, "file_bytes": path.stat().st_size,
            "nodes": len(model.graph.node), "ops": dict(sorted(ops.items())), "max_rank": max_rank(model),
            "required_operators": [f"{k};{','.join(sorted(v))}" for k, v in sorted(required.items())],
            "nchwc_ops": sorted(k for k in ops if k.startswith(NCHWC_DOMAIN + ":"))}


def _ort_root(path: Path):
    import onnxruntime.tools.ort_format_model  # noqa: F401  (puts ORT's flatbuffer bindings on sys.path)
    from ort_flatbuffers_py.fbs.InferenceSession import InferenceSession

    buf = bytearray(Path(path).read_bytes())
    if not InferenceSession.InferenceSessionBufferHasIdentifier(buf, 0):
        raise ValueError("not an ORT format file")
    return InferenceSession.GetRootAsInferenceSession(buf, 0)


def _ort_ops(path: Path) -> Counter:
    graph = _ort_root(path).Model().Graph()
    return Counter(f"{graph.Nodes(i).Domain().decode() or 'ai.onnx'}:{graph.Nodes(i).OpType().decode()}"
                   for i in range(graph.NodesLength()))


def nchwc_ops(path: Path) -> List[str]:
    """Host-only x86 NCHWc operators in an `.ort` file (they fail on ARM phones: onnxruntime issue 20247)."""
    return sorted(k for k in _ort_ops(path) if k.startswith(NCHWC_DOMAIN + ":"))


def runtime_optimizations(path: Path) -> Dict[str, int]:
    """Saved runtime optimisations of an `.ort` file (Runtime style): optimizer name -> records."""
    opt = _ort_root(path).Model().Graph().RuntimeOptimizations()
    if opt is None:
        return {}
    out = {}
    for i in range(opt.RecordsLength()):
        entry = opt.Records(i)
        out[entry.OptimizerName().decode()] = entry.RuntimeOptimizationRecordsLength()
    return out


def ort_facts(path: Path) -> Dict[str, object]:
    from onnxruntime.tools.ort_format_model import OrtFormatModelProcessor

    model = _ort_root(path).Model()
    opsets = {}
    for i in range(model.OpsetImportLength()):
        o = model.OpsetImport(i)
        opsets[o.Domain().decode() or "ai.onnx"] = o.Version()
    required: Dict[str, Dict[int, set]] = {}
    OrtFormatModelProcessor(str(path), required, None).process()  # ORT's own reduced-build op extraction
    ops = _ort_ops(path)
    saved = runtime_optimizations(path)
    return {"format": "ort", "opset": opsets.get("ai.onnx"), "opsets": opsets, "file_bytes": path.stat().st_size,
            "nodes": sum(ops.values()), "ops": dict(sorted(ops.items())),
            "required_operators": [f"{d};{v};{','.join(sorted(o))}" for d in sorted(required)
                                   for v, o in sorted(required[d].items())],
            "nchwc_ops": sorted(k for k in ops if k.startswith(NCHWC_DOMAIN + ":")),
            "runtime_optimizations": saved, "style": ort_style(ops, saved)}


def ort_style(ops: Counter, saved: Dict[str, int]) -> str:
    """What the file shows of its optimisation style (an .ort file does not record the style itself)."""
    if saved:
        return "Runtime (saved runtime optimizations: " + ", ".join(f"{k} x{v}" for k, v in saved.items()) + ")"
    fused = sorted(k for k in ops if k.split(":")[0].startswith("com.microsoft"))
    if fused:
        return "Fixed (CPU-provider ops baked in: " + ", ".join(fused) + ")"
    return "plain ONNX ops only (nothing for runtime optimizations to record; as the Runtime style writes it)"


def readiness(path: Path, target: Optional[str] = None) -> Dict[str, object]:
    """The report for an `.onnx` file: file facts, then the providers (ORT's checker)."""
    report = {"target": target, **onnx_facts(Path(path)), "providers": provider_report(Path(path)),
              "not_assessed": dict(NOT_ASSESSED)}
    return report


def _ort_props(path: Path) -> Dict[str, str]:
    model = _ort_root(path).Model()
    return {model.MetadataProps(i).Key().decode(): model.MetadataProps(i).Value().decode()
            for i in range(model.MetadataPropsLength())}


def _our_meta(props: Dict[str, str], missing: List[str]) -> Optional[Dict[str, object]]:
    from ...artifact import PREFIX, ArtifactMeta
    from ...errors import UserError

    if not any(k.startswith(PREFIX) for k in props):
        missing.append("mvit2deploy metadata (model id, task, preprocessing, labels, validation): "
                       "not exported by mvit2deploy")
        return None
    try:
        meta = ArtifactMeta.from_props(props, where="this file")
    except UserError as exc:  # ours, but damaged: say which key, and report what the file itself says
        missing.append(f"mvit2deploy metadata: damaged, {exc}")
        return None
    return {"model_id": meta.model_id, "task": meta.task, "precision": meta.precision, "format": meta.format,
            "target": meta.options.get("target", "cpu"), "batch": meta.options.get("batch"),
            "input_size": list(meta.input_size), "validation_passed": meta.validation.get("passed"),
            "stored_readiness": meta.readiness}


def inspect_artifact(path: Path) -> Dict[str, object]:
    """Everything `mvit2deploy inspect` reports; `missing` says what could not be known and why."""
    from ...artifact import check_model_file
    from ...errors import UserError
    from ...spec import format_of

    path = Path(path)
    check_model_file(path)  # stat() only: a FIFO, a device, a folder or an empty file is named, never opened
    missing: List[str] = []
    if format_of(path.suffix) == "ort":
        try:
            facts, props = ort_facts(path), _ort_props(path)
        except Exception as exc:  # a hostile or truncated flatbuffer fails anywhere inside the bindings
            raise UserError(f"{path}: not a readable ORT format file ({type(exc).__name__})") from None
        meta = _our_meta(props, missing)
        providers = (meta or {}).get("stored_readiness", {}).get("providers")
        if not providers:
            missing.append("provider analysis: ONNX Runtime's checker works on ONNX graphs; inspect the .onnx "
                           "this file was converted from")
        report = {**facts, "providers": providers or {}}
    else:
        try:
            model = onnx.load(str(path), load_external_data=False)
        except Exception as exc:
            raise UserError(f"{path}: not a readable ONNX file ({type(exc).__name__})") from None
        meta = _our_meta({p.key: p.value for p in model.metadata_props}, missing)
        report = {**onnx_facts(path)}
        try:
            report["providers"] = provider_report(path)
        except Exception as exc:  # ORT's checker needs a graph it can optimise and shape-infer
            report["providers"] = {}
            missing.append(f"provider analysis: ONNX Runtime's checker failed ({type(exc).__name__}: "
                           f"{str(exc).splitlines()[0][:160] if str(exc) else ''})")
    if meta:
        meta.pop("stored_readiness", None)
    return {"path": str(path), **report, "not_assessed": dict(NOT_ASSESSED), "artifact": meta, "missing": missing}
