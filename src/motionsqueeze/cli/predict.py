"""``motionsqueeze predict CHECKPOINT INPUTS...``: class names with probabilities."""

from __future__ import annotations

import errno
import json
import os
import sys


def add_parser(sub):
    p = sub.add_parser(
        "predict",
        help="classify videos or frame folders with a trained model",
        description="Classify one or more videos (mp4, webm, avi, ...) or JPEG frame folders with a model "
        "file (.safetensors) or a training checkpoint (.pt); prints the top classes with probabilities.",
    )
    p.add_argument("checkpoint", help="model file (.safetensors) or training checkpoint (.pt)")
    p.add_argument("inputs", nargs="*", metavar="INPUT",
                   help="video files, frame folders, or folders holding them (searched recursively)")
    p.add_argument("--list", dest="list_file", default=None, help="text file with one input path per line")
    p.add_argument("--clips", type=int, default=1, help="temporal clips per video, fused as eval fuses them (default 1)")
    p.add_argument("--crops", type=int, choices=(1, 3), default=1, help="spatial crops per clip (default 1)")
    p.add_argument("--fusion", choices=("logits", "softmax"), default="logits",
                   help="fuse views by the mean of logits (default) or of probabilities")
    p.add_argument("--out", default=None,
                   help="also write the predictions to FILE.csv (input,rank,index,class,probability,error) or "
                   "FILE.jsonl (one JSON object per input), line by line as inputs finish (into "
                   "FILE.partial.csv or .jsonl, which replaces FILE.csv or .jsonl when every input is done and "
                   "is kept if the run is interrupted)")
    p.add_argument("--topk", type=int, default=5, help="classes to show (default 5)")
    p.add_argument("--json", action="store_true", help="print one JSON object per input")
    p.add_argument("--template", default=None,
                   help="frame file names of folders (default: the model's training data's, else {:05d}.jpg)")
    p.add_argument("--start-index", type=int, default=None,
                   help="number of the first frame file (default: the model's training data's, else 1)")
    p.add_argument("--test-segments", type=int, default=None,
                   help="frames per clip to test at (TSM's test_segments; default: the trained count)")
    p.add_argument("--onnx", action="store_true",
                   help="CHECKPOINT is an .onnx file written by motionsqueeze export; run it with ONNX Runtime")
    p.add_argument("--window", type=float, default=None,
                   help="long videos: classify windows of this many frames (seconds with --seconds) and print a "
                   "timeline of top classes")
    p.add_argument("--stride", type=float, default=None, help="step between windows (default: half the window)")
    p.add_argument("--seconds", action="store_true", help="--window and --stride are in seconds, not frames")
    p.add_argument("--timeline-out", default=None,
                   help="folder for the timelines: <input name>.json and .csv (default: print only)")
    p.add_argument("--annotate", action="store_true",
                   help="with --timeline-out, also write <input name>.annotated.mp4 with the top class on each frame")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N")
    return p


def run(args) -> int:
    from ..engine.config import check_device
    from ..engine.inputs import gather_inputs
    from ..models.card import card_of
    from ..models.weights.model_file import load_trained_model
    from ..engine.predict import predict_video

    if args.topk < 1:
        raise ValueError(f"--topk must be at least 1, got {args.topk}")
    check_device(args.device, "--device")
    if args.onnx:
        from ..models.export import OnnxRecognizer

        if args.test_segments is not None or args.window is not None:
            raise ValueError("--onnx runs the exported graph as it is: --test-segments and --window need the model file")
        model = OnnxRecognizer(args.checkpoint)
    else:
        model = load_trained_model(args.checkpoint, test_segments=args.test_segments)
    pre = card_of(model).preprocess  # frame file names of the training data, if it had frame folders
    args.template = args.template or pre.template or "{:05d}.jpg"
    args.start_index = args.start_index if args.start_index is not None else pre.start_index or 1
    if args.window is not None:
        return _run_timeline(model, args)
    if args.annotate or args.timeline_out or args.stride is not None:
        raise ValueError("--stride, --timeline-out and --annotate need --window")
    if args.clips < 1:
        raise ValueError(f"--clips must be at least 1, got {args.clips}")
    inputs = [source for source, _ in gather_inputs(args.inputs, args.list_file, template=args.template,
                                                    start_index=args.start_index)]
    skipped = []
    with _ResultFile(args.out, len(inputs)) as results:
        for source in inputs:
            try:
                top = predict_video(model, source, topk=args.topk, template=args.template,
                                    start_index=args.start_index, device=args.device, clips=args.clips,
                                    crops=args.crops, fusion=args.fusion)
            except (ValueError, OSError) as err:  # one unreadable input: report it and go on
                if len(inputs) == 1:
                    raise
                skipped.append(source)
                print(f"skipped: {err}" if source in str(err) else f"skipped {source}: {err}", file=sys.stderr)
                results.write(source, None, str(err))
                continue
            results.write(source, top, None)
            if args.json:
                print(json.dumps({"input": source, "predictions": top}))
                continue
            print(source)
            for row in top:
                print(f"  {row['rank']}. {row['class']:<50s} {row['probability'] * 100:6.2f}%")
    if skipped:
        print(f"motionsqueeze predict: {len(skipped)} of {len(inputs)} inputs could not be read: "
              + ", ".join(skipped), file=sys.stderr)
    return 1 if skipped else 0


class _ResultFile:
    """``--out``: predictions appended and flushed per input to ``<name>.partial<suffix>`` next
    to the output, which becomes the output (atomically) when every input is done. So an
    earlier output of the same name stays whole until the new one is complete, and an
    interrupted run keeps what it finished in the partial file and says where it is."""

    def __init__(self, path, total: int):
        from pathlib import Path

        self.path = Path(path) if path else None
        if self.path is not None and self.path.suffix not in (".csv", ".jsonl"):
            raise ValueError(f"--out must end in .csv or .jsonl, got {path}")
        self.total, self.done = total, 0
        self.file = None

    @property
    def partial(self):
        return self.path.with_name(f"{self.path.stem}.partial{self.path.suffix}")

    def __enter__(self):
        if self.path is not None:
            if self.path.is_dir():
                raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(self.path))
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.file = open(self.partial, "w", newline="", encoding="utf-8")
            if self.path.suffix == ".csv":
                import csv

                self.csv = csv.writer(self.file)
                self.csv.writerow(["input", "rank", "index", "class", "probability", "error"])
        return self

    def write(self, source, top, error):
        if self.file is None:
            return
        if self.path.suffix == ".jsonl":
            row = {"input": source, "predictions": top} if error is None else {"input": source, "error": error}
            self.file.write(json.dumps(row) + "\n")
        elif error is not None:
            self.csv.writerow([source, "", "", "", "", error])
        else:
            for r in top:
                self.csv.writerow([source, r["rank"], r["index"], r["class"], f"{r['probability']:.6f}", ""])
        self.file.flush()
        self.done += 1

    def __exit__(self, kind, value, tb):
        if self.file is None:
            return False
        self.file.close()
        if kind is None:
            from ..files import atomic_write

            try:
                atomic_write(self.path, lambda f: f.write(self.partial.read_bytes()))
            except OSError:
                self._say_where(f"all {self.total} inputs are done but {self.path.name} could not be written")
                raise
            self.partial.unlink()
        elif self.done:
            self._say_where(f"stopped after {self.done} of {self.total} inputs")
        else:
            self.partial.unlink(missing_ok=True)
        return False

    def _say_where(self, what: str) -> None:
        earlier = "is unchanged" if self.path.exists() else "was not written"
        print(f"motionsqueeze predict: {what}; their predictions are in {self.partial} ({self.path} {earlier})",
              file=sys.stderr)


def _run_timeline(model, args) -> int:
    from pathlib import Path

    from ..engine.timeline import predict_timeline, write_annotated_video, write_timeline

    stride = args.stride if args.stride is not None else (args.window / 2 if args.seconds else max(1, int(args.window) // 2))
    unit = "seconds" if args.seconds else "frames"
    from ..engine.inputs import gather_inputs

    for source, _ in gather_inputs(args.inputs, args.list_file, template=args.template, start_index=args.start_index):
        tl = predict_timeline(model, source, window=args.window, stride=stride, unit=unit, topk=args.topk,
                              template=args.template, start_index=args.start_index, device=args.device)
        if args.json:
            print(json.dumps(tl.to_dict()))
        else:
            rate = f", {tl.fps:g} fps" if tl.fps else ""
            print(f"{source}  ({tl.num_frames} frames{rate}; windows of {tl.window} frames every {tl.stride})")
            for seg in tl.segments():
                when = f"{seg['start'] / tl.fps:7.2f}s - {seg['end'] / tl.fps:7.2f}s" if tl.fps else ""
                print(f"  frames {seg['start']:>6d} - {seg['end']:>6d}  {when}  {seg['class']}")
        if args.timeline_out:
            out = Path(args.timeline_out)
            name = Path(source).name
            write_timeline(tl, out / f"{name}.json")
            write_timeline(tl, out / f"{name}.csv")
            if args.annotate:
                write_annotated_video(tl, out / f"{name}.annotated.mp4", template=args.template,
                                      start_index=args.start_index)
    return 0
