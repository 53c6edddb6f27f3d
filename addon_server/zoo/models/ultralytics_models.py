"""The zoo families a user supplies as Ultralytics ``.pt`` files: a weapon detector, vehicle
instance masks, vehicle damage, and YOLO-World open-vocabulary detection.

No registry package ships these weights, so each loader looks for its file in the models dir
(the ``file`` option overrides the name) and reports ``not_installed`` with that path when it is
absent. All four run on the whole frame (they are detectors, not crop classifiers), once per
frame.

Ultralytics models are not safe to call from several threads at once (the predictor keeps
per-call state), so :class:`UltralyticsModel` holds a lock around the forward pass and copies the
results out of torch before releasing it. Boxes come back in the frame's pixels (Ultralytics
scales them back from its letterboxed input); masks are asked for at the frame's size
(``retina_masks``) so an area is a count of frame pixels.

YOLO-World needs a CLIP text encoder to turn prompts into class embeddings. A ``.pt`` saved after
``set_classes`` carries its vocabulary's embeddings and runs offline; a different prompt list
needs OpenAI's ``clip`` package and its ViT-B/32 weights (Ultralytics would download both), so
without them that model is ``not_installed`` with the reason rather than silently keeping the old
vocabulary.
"""

from __future__ import annotations

import importlib.util
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from addon_server.errors import ModelNotInstalledError
from addon_server.imaging import BGRImage
from addon_server.zoo.interface import Frame, LoadContext
from addon_server.zoo.models.boxes import Box
from addon_server.zoo.models.threat import Threat, ThreatResult
from addon_server.zoo.registry import VEHICLES

THREAT_FILE = "threat-yolov8n.pt"
VEHICLE_SEGMENT_FILE = "vehicle-segment-yolov8n-seg.pt"
VEHICLE_DAMAGE_FILE = "vehicle-damage-yolov8n.pt"
YOLO_WORLD_FILE = "yolov8s-worldv2.pt"
CLIP_WEIGHTS = "ViT-B-32.pt"
"""What Ultralytics' ``clip:ViT-B/32`` text encoder loads from its weights dir's ``clip/``."""
NOT_WEAPONS = frozenset({"person", "people", "hand", "background"})
"""Classes a user's weapon model may also name that are not threats themselves."""


@dataclass(frozen=True, slots=True)
class Detections:
    """One forward pass, copied out of torch: boxes in frame pixels, scores, class names and
    (segmentation models) one boolean mask per box at the frame's size."""

    boxes: tuple[Box, ...]
    scores: tuple[float, ...]
    names: tuple[str, ...]
    masks: npt.NDArray[np.bool_] | None = None


class UltralyticsModel:
    """One Ultralytics ``.pt`` on one device, called under a lock.

    Options: ``file`` (the weights' name in the models dir), ``min_confidence``,
    ``image_size`` (the network's input side).
    """

    default_file = ""
    task = "detect"
    what = "ultralytics model"
    default_confidence = 0.25

    def __init__(self, context: LoadContext) -> None:
        self.path: Path = context.path(str(context.options.get("file", self.default_file)))
        if not self.path.is_file():
            raise ModelNotInstalledError(f"{self.what} not installed: {self.path}")
        from ultralytics import YOLO

        self.min_confidence = float(context.options.get("min_confidence", self.default_confidence))
        self.image_size = int(context.options.get("image_size", 640))
        self.device = context.device
        self._lock = threading.Lock()
        self._model: Any = YOLO(str(self.path), task=self.task)
        self._model.to(context.device)

    @property
    def class_names(self) -> dict[int, str]:
        return dict(self._model.names)

    def detect(self, pixels: BGRImage) -> Detections:
        """One forward pass on the whole frame (the lock covers Ultralytics' shared state)."""
        height, width = pixels.shape[:2]
        masks = None
        with self._lock:
            if self._model is None:
                raise RuntimeError(f"{self.what} is closed")
            (result,) = self._model.predict(
                pixels,
                imgsz=self.image_size,
                conf=self.min_confidence,
                device=self.device,
                retina_masks=self.task == "segment",
                verbose=False,
            )
            names = result.names
            corners = result.boxes.xyxy.cpu().numpy()
            scores = result.boxes.conf.cpu().numpy()
            classes = result.boxes.cls.cpu().numpy().astype(int)
            if result.masks is not None:
                masks = result.masks.data.cpu().numpy() > 0.5
        boxes = tuple(
            Box.from_corners(float(x1), float(y1), float(x2), float(y2), width, height)
            for x1, y1, x2, y2 in corners
        )
        if masks is not None and masks.shape[1:] != (height, width):
            raise ValueError(f"{self.what}: masks {masks.shape[1:]} are not the frame's size")
        return Detections(
            boxes,
            tuple(float(s) for s in scores),
            tuple(str(names[int(c)]) for c in classes),
            masks,
        )

    def warmup(self) -> None:
        self.detect(np.zeros((360, 640, 3), dtype=np.uint8))

    def close(self) -> None:
        with self._lock:
            self._model = None


# --- threat -------------------------------------------------------------------------------------


class ThreatYolo(UltralyticsModel):
    """A user's YOLO weapon detector: every class it names except :data:`NOT_WEAPONS` (or the
    ``classes`` option's list) is a threat, reported in the threat family's result."""

    default_file = THREAT_FILE
    what = "threat YOLO model"
    default_confidence = 0.4

    def __init__(self, context: LoadContext) -> None:
        super().__init__(context)
        wanted = context.options.get("classes")
        self.threat_classes = (
            frozenset(str(c) for c in wanted)
            if wanted
            else frozenset(n for n in self.class_names.values() if n.lower() not in NOT_WEAPONS)
        )

    def infer(self, frame: Frame) -> ThreatResult:
        found = self.detect(frame.pixels)
        threats = [
            Threat(name, score, "yolo", box)
            for box, score, name in zip(found.boxes, found.scores, found.names, strict=True)
            if name in self.threat_classes
        ]
        return ThreatResult(tuple(sorted(threats, key=lambda t: -t.confidence)))


# --- vehicle masks ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class VehicleMask:
    class_name: str
    confidence: float
    bbox: Box
    area_px: int
    area_fraction: float
    """The mask's share of the whole frame (how much of the view the vehicle fills)."""

    def as_json(self) -> dict[str, Any]:
        return {
            "class": self.class_name,
            "confidence": round(self.confidence, 3),
            "bbox": self.bbox.as_json(),
            "area_px": self.area_px,
            "area_fraction": round(self.area_fraction, 4),
        }


@dataclass(frozen=True, slots=True)
class VehicleSegmentResult:
    vehicles: tuple[VehicleMask, ...]

    def as_json(self) -> dict[str, Any]:
        return {"vehicles": [v.as_json() for v in self.vehicles]}

    def context_lines(self) -> list[str]:
        return [
            f"Vehicle: {v.class_name} filling {v.area_fraction:.0%} of the view "
            f"({round(v.confidence * 100)}%)"
            for v in self.vehicles
        ]


class VehicleSegmenter(UltralyticsModel):
    """YOLOv8-seg vehicle masks: per vehicle its mask area in frame pixels.

    The vehicle classes are the detector's (:data:`~addon_server.zoo.registry.VEHICLES`) unless
    the ``classes`` option names others (a model trained on its own vehicle labels).
    """

    default_file = VEHICLE_SEGMENT_FILE
    task = "segment"
    what = "vehicle segmentation model"

    def __init__(self, context: LoadContext) -> None:
        super().__init__(context)
        self.vehicle_classes = frozenset(context.options.get("classes", VEHICLES))

    def infer(self, frame: Frame) -> VehicleSegmentResult:
        found = self.detect(frame.pixels)
        height, width = frame.pixels.shape[:2]
        vehicles = []
        for i, (box, score, name) in enumerate(
            zip(found.boxes, found.scores, found.names, strict=True)
        ):
            if name not in self.vehicle_classes or found.masks is None:
                continue
            area = int(found.masks[i].sum())
            vehicles.append(VehicleMask(name, score, box, area, area / (height * width)))
        vehicles.sort(key=lambda v: -v.area_px)
        return VehicleSegmentResult(tuple(vehicles))


# --- vehicle damage -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Damage:
    kind: str
    confidence: float
    bbox: Box

    def as_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "confidence": round(self.confidence, 3),
            "bbox": self.bbox.as_json(),
        }


@dataclass(frozen=True, slots=True)
class VehicleDamageResult:
    damages: tuple[Damage, ...]

    def as_json(self) -> dict[str, Any]:
        return {
            "damage_detected": bool(self.damages),
            "damages": [d.as_json() for d in self.damages],
        }

    def context_lines(self) -> list[str]:
        return [f"Vehicle damage: {d.kind} ({round(d.confidence * 100)}%)" for d in self.damages]


class VehicleDamage(UltralyticsModel):
    """A damage detector's boxes (dent, scratch, broken glass…: whatever its classes are)."""

    default_file = VEHICLE_DAMAGE_FILE
    what = "vehicle damage model"

    def infer(self, frame: Frame) -> VehicleDamageResult:
        found = self.detect(frame.pixels)
        damages = [
            Damage(name, score, box)
            for box, score, name in zip(found.boxes, found.scores, found.names, strict=True)
        ]
        return VehicleDamageResult(tuple(sorted(damages, key=lambda d: -d.confidence)))


# --- open vocabulary ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Sighting:
    label: str
    confidence: float
    bbox: Box

    def as_json(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "confidence": round(self.confidence, 3),
            "bbox": self.bbox.as_json(),
        }


@dataclass(frozen=True, slots=True)
class OpenVocabularyResult:
    prompts: tuple[str, ...]
    objects: tuple[Sighting, ...]

    def as_json(self) -> dict[str, Any]:
        return {"prompts": list(self.prompts), "objects": [o.as_json() for o in self.objects]}

    def context_lines(self) -> list[str]:
        return [f"Object: {o.label} ({round(o.confidence * 100)}%)" for o in self.objects]


def clip_weights() -> Path:
    """Where Ultralytics' CLIP text encoder looks for (and would download) its weights."""
    from ultralytics.utils import WEIGHTS_DIR

    return Path(WEIGHTS_DIR) / "clip" / CLIP_WEIGHTS


class OpenVocabularyDetector(UltralyticsModel):
    """YOLO-World over the ``prompts`` option's labels (default: the vocabulary saved in the .pt).

    A prompt list other than the saved one is encoded by CLIP ViT-B/32 at load; without the
    ``clip`` package or its weights the model is not installed (Ultralytics would fetch both).
    """

    default_file = YOLO_WORLD_FILE
    what = "YOLO-World model"
    default_confidence = 0.1

    def __init__(self, context: LoadContext) -> None:
        super().__init__(context)
        saved = tuple(self.class_names[i] for i in sorted(self.class_names))
        prompts = tuple(str(p) for p in context.options.get("prompts", ()) or saved)
        if prompts != saved:
            self._encode(prompts)
        self.prompts = prompts

    def _encode(self, prompts: Sequence[str]) -> None:
        weights = clip_weights()
        if importlib.util.find_spec("clip") is None or not weights.is_file():
            raise ModelNotInstalledError(
                f"YOLO-World prompts {list(prompts)} need a CLIP ViT-B/32 text encoder: the clip "
                f"package (github.com/ultralytics/CLIP) and {weights}; the saved vocabulary of "
                f"{self.path} works without them"
            )
        self._model.set_classes(list(prompts))  # pragma: no cover - needs the CLIP weights

    def infer(self, frame: Frame) -> OpenVocabularyResult:
        found = self.detect(frame.pixels)
        objects = [
            Sighting(name, score, box)
            for box, score, name in zip(found.boxes, found.scores, found.names, strict=True)
        ]
        return OpenVocabularyResult(
            self.prompts, tuple(sorted(objects, key=lambda o: -o.confidence))
        )
