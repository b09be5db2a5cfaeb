"""What predict returns: one record per input, the timing of the run, its summary.

JSON Lines schema (`mvit2deploy predict --json [FILE]`): one JSON object per input, in input order.

  every record
    file          str    the input path as given / expanded
    ok            bool
  ok: true
    width, height int    size of the decoded image (after EXIF orientation): the coordinate system of all results
    task          str    "classification" | "segmentation" | "detection"
    model_id      str    zoo id of the model (from the artifact metadata)
    runtime       str    "onnxruntime" | "ort-mobile" | "torch" | "coreml"
    classification:
      topk        list of {"label": str, "index": int, "probability": float}   softmax of the logits, best first
    segmentation:
      classes     list of {"label": str, "index": int, "fraction": float}      every class present, largest first;
                  fraction = its pixels / all pixels of the original image
      mask_png    str | null   palette PNG at the original size; pixel value = class index (255 = not seen by the
                               model, only with centre-crop preprocessing); null with --no-save
      overlay_png str | null   the photo with the colour mask blended at 50 %, original size
    detection (COCO style):
      detections  list of {"bbox": [x, y, w, h] (float pixels, top-left origin, within the image),
                           "category_id": int (the model's label index, 1..80 for COCO models),
                           "category_name": str, "score": float}   score > threshold, best first
      image_png   str | null   the photo with boxes, names and scores drawn, original size
    non_finite    true         only when the model produced NaN / inf: those numbers are written as null
  ok: false
    error         str    one line: the file and the reason (e.g. "x.jpg: empty file (0 bytes)")
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Union

from ..jsonsafe import flag_record
from ..tasks import TaskResult


@dataclass
class Failure:
    file: str
    error: str  # one line naming the file and the reason
    # From collect_inputs: how many collected images come before it, so it is reported at its input position.
    position: Optional[int] = None
    ok = False

    def to_json(self) -> dict:
        return {"file": self.file, "ok": False, "error": self.error}


@dataclass
class Prediction:
    file: str
    width: int
    height: int
    task: str
    model_id: str
    runtime: str
    result: TaskResult
    ok = True

    def to_json(self) -> dict:
        return flag_record({"file": self.file, "width": self.width, "height": self.height, "task": self.task,
                            "model_id": self.model_id, "runtime": self.runtime, "ok": True,
                            **self.result.to_json()})


Record = Union[Prediction, Failure]


@dataclass
class Timing:
    images: int = 0  # images predicted successfully
    preprocess_s: float = 0.0  # decode + pre-process, summed over images (runs in worker threads, overlapped)
    inference_s: float = 0.0  # session.run, summed over batches
    postprocess_s: float = 0.0  # task post-processing + pictures, summed over images (worker threads)
    wall_s: float = 0.0  # the whole pipeline, first decode to last record

    @property
    def images_per_s(self) -> float:
        return self.images / self.wall_s if self.wall_s > 0 else 0.0

    def ms_per_image(self) -> Dict[str, float]:
        n = max(self.images, 1)
        return {"preprocess": 1e3 * self.preprocess_s / n, "inference": 1e3 * self.inference_s / n,
                "postprocess": 1e3 * self.postprocess_s / n, "wall": 1e3 * self.wall_s / n}


@dataclass
class Summary:
    total: int
    ok: int
    failed: int
    timing: Timing
    batch: int
    workers: int
    save_dir: Optional[Path]
    records: List[dict] = field(default_factory=list)  # JSON records, only with keep_records=True

    @property
    def exit_code(self) -> int:
        return 0 if self.failed == 0 else 1

    def line(self, model_id: str, runtime: str) -> str:
        """The run in one line: counts, throughput and where the time went."""
        t, ms = self.timing, self.timing.ms_per_image()
        failed = f", {self.failed} failed" if self.failed else ""
        return (f"{self.total} input{'s' if self.total != 1 else ''}: {self.ok} ok{failed} in {t.wall_s:.2f} s, "
                f"{t.images_per_s:.1f} images/s; ms per image: pre-process {ms['preprocess']:.1f}, "
                f"inference {ms['inference']:.1f}, post-process {ms['postprocess']:.1f} "
                f"({model_id}, {runtime}, batch {self.batch}, {self.workers} decode threads)")
