"""What a val run reports: the published metric note, the CI gates, JSON / CSV / --save-dir files, table cells."""
from __future__ import annotations

import csv
import io
import json
import re
import shutil
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

from .. import jsonsafe
from ..fs import atomic_write
from .metrics import METRIC_KEYS, PRIMARY

PUBLISHED_NAME = {"top1": "top1", "miou": "miou", "map": "map"}


def published(result, groups: Dict, image_size) -> List[dict]:
    """The zoo's published metric beside each reference row, and why it may not be comparable."""
    from ..models import get_entry

    out = []
    for row in result.rows:
        if not row.reference:
            continue
        entry = get_entry(row.model_id)
        if not entry.metric:
            continue
        why = []
        w = groups[row.group]
        if w.random_init:
            why.append("random weights")
        elif w.label != "official":
            why.append(f"weights {w.label}, not the cached official checkpoint")
        if result.limit is not None and result.limit < len(result.dataset.samples):
            why.append(f"--limit {result.limit}: a subset")
        if tuple(row.size) != (entry.input_size, entry.input_size):
            why.append(f"evaluated at {row.size[0]}x{row.size[1]}, published at {entry.input_size}")
        official = result.dataset.official_images
        if official is None:
            why.append(f"{result.dataset.layout} layout: not the official validation set")
        elif len(result.dataset.samples) != official:
            why.append(f"{len(result.dataset.samples)} images, the official set has {official}")
        if result.partial:
            why.append("partial run")
        out.append({"model": row.model_id, "metric": entry.metric["name"], "value": entry.metric["value"] / 100.0,
                    "comparable": not why, "why_not": "; ".join(why) or None})
    return out


def gates(result, max_drop: Optional[float], min_metric: Optional[float]) -> List[str]:
    """--max-drop / --min-metric violations (each a line); a failed row fails any gate asked for."""

    key = PRIMARY[result.task]
    out = []
    for i, row in enumerate(result.rows):
        if max_drop is None and min_metric is None:
            break
        m = result.metrics(i)
        if m is None:
            if row.state == "failed":
                out.append(f"{row.label}: no {key} (the row failed), the gate cannot pass")
            continue
        d = result.delta(i)
        if max_drop is not None and d is not None and d[key] is not None and d[key] < -max_drop:
            out.append(f"{row.label}: {key} {100 * m[key]:.2f} is {-d[key]:.2f} points below the reference "
                       f"(--max-drop {max_drop:g})")
        if min_metric is not None and m[key] is not None and m[key] < min_metric:
            out.append(f"{row.label}: {key} {m[key]:.4f} is below --min-metric {min_metric:g}")
    return out


# ---- files -------------------------------------------------------------------------------------------------

def to_json(result) -> str:
    return jsonsafe.dumps(result.to_dict(), indent=1, ensure_ascii=False)


def csv_rows(result) -> List[dict]:
    """The JSON rows, flat: metrics and deltas as columns, plus img/s and the row's state."""

    keys = METRIC_KEYS[result.task]
    out = []
    for i, row in enumerate(result.rows):
        d = result.row_dict(i)
        flat = {k: d[k] for k in ("model", "runtime", "precision", "artifact", "images")}
        flat.update({k: (d["metrics"] or {}).get(k) for k in keys})
        flat.update({f"delta_{k}": (d["delta"] or {}).get(k) for k in keys})
        flat.update(agreement=d["agreement"], seconds=d["seconds"],
                    images_per_s=round(d["images"] / d["seconds"], 3) if d["seconds"] else None,
                    state=row.state, reason=row.reason)
        out.append(flat)
    return out


def to_csv(result) -> str:
    rows = csv_rows(result)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")


def _class_names(result) -> List[str]:
    from ..models import load_labels
    from .coco_ids import coco_names

    if result.task == "detection":
        names = coco_names()
        return [names.get(c, str(c)) for c in sorted(result.dataset.coco.getCatIds())]
    label_file = {"ade20k": "ade20k", "voc": "voc"}.get(result.dataset.layout, "imagenet1k")
    labels = load_labels(label_file) if result.task == "segmentation" or result.dataset.num_classes == 1000 else []
    return labels if len(labels) == result.dataset.num_classes else [str(i) for i in range(result.dataset.num_classes)]


def per_class_csv(result) -> str:
    """One line per class, one column per row: top-1 accuracy / IoU / AP (empty: no such class here)."""
    names = _class_names(result)
    live = [i for i in range(len(result.rows)) if result.metrics(i) is not None]
    values = {i: result.scorers[i].metric.per_class_values() for i in live}
    ids = sorted(result.dataset.coco.getCatIds()) if result.task == "detection" else range(len(names))
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["index" if result.task != "detection" else "coco_id", "name"] + [result.rows[i].label for i in live])
    for k, (cid, name) in enumerate(zip(ids, names)):
        w.writerow([cid, name] + ["" if np.isnan(values[i][k]) else f"{values[i][k]:.6f}" for i in live])
    return buf.getvalue()


def write_save_dir(result, save_dir: Path) -> None:
    """per_class_<metric>.csv; disagreements.csv and disagreements/<row>/NN_<name> (copies of the images where
    each row differs most from its reference); detections/<row>.json (COCO results) for detection."""
    metric = {"classification": "top1", "segmentation": "iou", "detection": "ap"}[result.task]
    save_dir.mkdir(parents=True, exist_ok=True)
    atomic_write(save_dir / f"per_class_{metric}.csv", per_class_csv(result))
    lines = ["row,rank,disagreement,file,copy"]
    for i, row in enumerate(result.rows):
        if result.metrics(i) is None:
            continue
        if result.task == "detection":
            atomic_write(save_dir / "detections" / f"{slug(row.label)}.json",
                         jsonsafe.dumps(result.scorers[i].metric.results_json()))
        if row.reference:
            continue
        for rank, (value, path) in enumerate(result.scorers[i].worst.ranked(), 1):
            dest = save_dir / "disagreements" / slug(row.label) / f"{rank:02d}_{Path(path).name}"
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, dest)
            lines.append(",".join([slug(row.label), str(rank), f"{value:.6f}", json.dumps(path), json.dumps(str(dest))]))
    atomic_write(save_dir / "disagreements.csv", "\n".join(lines) + "\n")


def write_outputs(result, json_file=None, csv_file=None, save_dir=None) -> None:
    if json_file is not None:
        atomic_write(Path(json_file), to_json(result))
    if csv_file is not None:
        atomic_write(Path(csv_file), to_csv(result))
    if save_dir is not None:
        write_save_dir(result, Path(save_dir))


# ---- table cells -------------------------------------------------------------------------------------------

METRIC_NAMES = {"top1": "top-1 %", "top5": "top-5 %", "miou": "mIoU %", "pixel_acc": "pixel acc %", "map": "mAP %",
                "map50": "AP50", "map75": "AP75", "map_small": "APs", "map_medium": "APm", "map_large": "APl"}


def pct(v: Optional[float]) -> str:
    """A fraction as the table shows it: percent, two decimals."""
    return "-" if v is None else f"{100 * v:.2f}"


def _pts(v: Optional[float]) -> str:
    return "-" if v is None else f"{v:+.2f}"


def table_rows(result) -> List[List[str]]:
    """Cells for each row: model, runtime, precision, metrics (%), Δ (points, the primary metric), agreement,
    images, img/s, published (reference rows), status."""

    keys, key = METRIC_KEYS[result.task], PRIMARY[result.task]
    pub = {p["model"]: p for p in result.published}
    out = []
    for i, row in enumerate(result.rows):
        m, d = result.metrics(i) or {}, result.delta(i) or {}
        secs = result.seconds.get(i, 0.0)
        n = result.images.get(i, 0)
        p = pub.get(row.model_id) if row.reference else None
        published_cell = "" if p is None else f"{100 * p['value']:.2f}" + ("" if p["comparable"] else " *")
        status = {"ok": "✅", "failed": "❌", "not_runnable": "❎"}.get(row.state, row.state)
        out.append([row.model_id, row.runtime + (" (ref)" if row.reference else ""), row.precision]
                   + [pct(m.get(k)) for k in keys]
                   + [_pts(d.get(key)), pct(result.agreement(i)), str(n), f"{n / secs:.1f}" if secs else "-",
                      published_cell, status])
    return out


def table_header(task: str) -> List[str]:
    names = METRIC_NAMES
    agree = {"classification": "top-1 agree %", "segmentation": "pixel agree %", "detection": "det matched %"}
    return (["model", "runtime", "precision"] + [names[k] for k in METRIC_KEYS[task]]
            + [f"Δ {names[PRIMARY[task]].split()[0]} (pts)", agree[task], "images", "img/s", "published", ""])
