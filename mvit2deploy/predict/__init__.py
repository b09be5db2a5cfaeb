"""predict: collect inputs, decode + pre-process (thread pool) overlapped with inference, post-process to the
original image coordinates, save pictures, time every stage.

    from mvit2deploy.runtime import open_session
    from mvit2deploy.predict import predict

    session = open_session("exports/mobilevitv2-0.5-fp32.onnx", threads=2)
    summary = predict(["photos/", "more/*.jpg"], session, batch=4, top_k=5, save_dir=None,
                      on_result=lambda rec: print(rec.to_json()))
    summary.ok, summary.failed, summary.timing.images_per_s

One module per job:
  inputs.py    INPUT arguments (files, folders, globs) -> image files and one Failure per unusable argument
  pipeline.py  predict(): the threaded decode / inference / post-process pipeline
  records.py   Prediction / Failure records, Timing, Summary, and the JSON Lines schema of `predict --json`
  outputs.py   picture names, the numbered run folder, the JSON Lines file or stream
  model.py     the newest export when no model is named, the runtime check, the reference's options, notes
"""
from .inputs import GLOB_CHARS, Inputs, NoInputs, collect_inputs, is_image_name, open_image
from .model import latest_export, newest_export, notes, open_model, reference_options
from .outputs import (RUNS_DIR, JsonSink, check_json_target, check_pictures_free, check_save_dir,
                      existing_pictures, looks_like_json_file, next_run_dir, stdout_to_devnull, unique_stems)
from .pipeline import default_workers, predict
from .records import Failure, Prediction, Record, Summary, Timing

__all__ = ["predict", "collect_inputs", "Inputs", "NoInputs", "GLOB_CHARS", "is_image_name", "open_image",
           "latest_export", "newest_export", "open_model", "reference_options", "notes", "RUNS_DIR", "JsonSink",
           "check_json_target", "check_pictures_free", "check_save_dir", "existing_pictures", "looks_like_json_file",
           "next_run_dir", "stdout_to_devnull", "unique_stems", "default_workers", "Failure", "Prediction", "Record", "Summary",
           "Timing"]
