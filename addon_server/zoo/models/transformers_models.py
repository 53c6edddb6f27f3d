"""The zoo families that run Hugging Face ``transformers`` models from a local folder.

No registry package ships these weights, so each model is a folder in the models dir (what
``save_pretrained`` writes: ``config.json``, the weights, the image processor's and tokenizer's
files; the ``folder`` option overrides the name). A folder without ``config.json`` is
``not_installed`` naming the path; nothing is ever fetched from the hub (``local_files_only``).

Families: ViTPose keypoints on person boxes (postures by the pose family's rules), Depth
Anything V2 (a 16-bit PNG depth map with min/max/mean), CLIP or SigLIP zero-shot clothing on
person crops and 768-d image/text embeddings, X-CLIP actions over the camera's recent frames,
Florence-2 captions of person crops, violence and weather image classifiers (labels from the
config's ``id2label``) and SegFormer clothes segmentation (each garment's share of the person).

A forward pass holds the model's lock: torch modules in eval mode would run concurrently, but a
fast tokenizer raises "Already borrowed" when two threads pad at once, and the work is
CPU-bound on the same cores anyway. Crop models look at the :func:`largest` few detections.

Florence-2 runs only in the transformers-native form (``florence-community/Florence-2-base``):
Microsoft's original folder needs ``trust_remote_code`` and the hub's modelling code, which an
offline add-on must not fetch or execute, so such a folder is ``not_installed`` with that reason.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import cv2
import numpy as np
import numpy.typing as npt

from addon_server.detector.base import Detection
from addon_server.errors import ModelNotInstalledError
from addon_server.imaging import BGRImage
from addon_server.zoo.interface import Frame, LoadContext
from addon_server.zoo.models.appearance import BodyEmbedding
from addon_server.zoo.models.boxes import Box, crop_limit, largest
from addon_server.zoo.models.crops import Floats, region
from addon_server.zoo.models.pose import KEYPOINTS, PersonPose, PoseResult, posture_of

TRANSFORMERS_PIN = "transformers==5.24.0"
"""The version requirements/addon.txt pins (named in not_installed messages)."""
WARMUP_PERSON = Detection("person", 1.0, 260, 60, 120, 280)
"""A person-sized box in the 640×360 warm-up frame."""


def _box(d: Detection) -> Box:
    return Box(d.x, d.y, d.width, d.height)


def _rgb(pixels: BGRImage) -> npt.NDArray[np.uint8]:
    return np.ascontiguousarray(pixels[:, :, ::-1])


def _softmax(logits: Floats) -> Floats:
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return np.asarray(shifted / shifted.sum(axis=-1, keepdims=True), dtype=np.float32)


def _percent(score: float) -> int:
    return round(score * 100)


@dataclass(frozen=True, slots=True)
class Score:
    """One label and its probability."""

    label: str
    score: float

    def as_json(self) -> dict[str, Any]:
        return {"label": self.label, "score": round(self.score, 3)}


class HFModel:
    """One transformers model from a local folder, on one device, called under a lock.

    Subclasses set ``default_folder`` and ``what`` and build ``self._model`` (and the processors
    they need) in :meth:`_load`; :meth:`_run` moves inputs to the device and runs the model
    without autograd.
    """

    default_folder: ClassVar[str] = ""
    what: ClassVar[str] = "transformers model"

    def __init__(self, context: LoadContext) -> None:
        self.folder: Path = context.path(str(context.options.get("folder", self.default_folder)))
        config = self.folder / "config.json"
        if not config.is_file():
            raise ModelNotInstalledError(
                f"{self.what} not installed: {self.folder} (a save_pretrained folder with "
                "config.json)"
            )
        if importlib.util.find_spec("transformers") is None:
            raise ModelNotInstalledError(f"{self.what} needs python module transformers "
                                         f"(pip install {TRANSFORMERS_PIN})")  # fmt: skip
        import torch

        self.config: dict[str, Any] = json.loads(config.read_text())
        self.options: Mapping[str, Any] = context.options
        self.device = torch.device(context.device)
        self.max_crops = crop_limit(context.options)
        self._lock = threading.Lock()
        self._model: Any = None
        self._load()  # sets self._model (and the processors it needs)
        model: Any = self._model
        model.to(self.device).eval()

    def _load(self) -> None:
        raise NotImplementedError

    def _pretrained(self, factory: Any) -> Any:
        return factory.from_pretrained(str(self.folder), local_files_only=True)

    def _run(self, method: str = "__call__", **inputs: Any) -> Any:
        """``self._model.<method>(**inputs)`` on the device, no autograd (caller holds the lock)."""
        import torch

        if self._model is None:
            raise RuntimeError(f"{self.what} is closed")
        moved = {k: v.to(self.device) if hasattr(v, "to") else v for k, v in inputs.items()}
        with torch.inference_mode():
            return getattr(self._model, method)(**moved)

    def warmup(self) -> None:
        frame = Frame(np.zeros((360, 640, 3), dtype=np.uint8), (WARMUP_PERSON,))
        self.infer(frame)  # type: ignore[attr-defined]

    def close(self) -> None:
        """Drop the weights (the processors and tokenizer are kilobytes and stay)."""
        with self._lock:
            self._model = None


# --- ViTPose ------------------------------------------------------------------------------------


class VitPose(HFModel):
    """ViTPose on the largest person boxes: 17 COCO keypoints each, then the pose family's
    posture rules. The box's detector confidence is the person's score."""

    default_folder = "vitpose-base-simple"
    what = "ViTPose model"

    def _load(self) -> None:
        from transformers import AutoImageProcessor, VitPoseForPoseEstimation

        self._processor = self._pretrained(AutoImageProcessor)
        self._model = self._pretrained(VitPoseForPoseEstimation)
        labels = self._model.config.num_labels
        if labels != len(KEYPOINTS):
            raise ValueError(f"{self.folder}: {labels} keypoints, not the 17 COCO keypoints")

    def infer(self, frame: Frame) -> PoseResult:
        people = largest(frame.of_class("person"), self.max_crops)
        if not people:
            return PoseResult(())
        boxes = [[[float(p.x), float(p.y), float(p.width), float(p.height)] for p in people]]
        with self._lock:
            inputs = self._processor(images=_rgb(frame.pixels), boxes=boxes, return_tensors="pt")
            outputs = self._run(pixel_values=inputs["pixel_values"])
            (found,) = self._processor.post_process_pose_estimation(outputs, boxes=boxes)
        persons = []
        for person, pose in zip(people, found, strict=True):
            xy = pose["keypoints"].cpu().numpy().astype(float)
            scores = pose["scores"].cpu().numpy().astype(float)
            points = tuple(
                (float(x), float(y), float(s)) for (x, y), s in zip(xy, scores, strict=True)
            )
            posture, alerts = posture_of(points)
            persons.append(PersonPose(points, _box(person), person.confidence, posture, alerts))
        return PoseResult(tuple(persons))


# --- Depth Anything -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DepthResult:
    """Relative depth (Depth Anything's disparity-like values: larger is nearer) at the frame's
    size, as statistics and a 16-bit greyscale PNG scaled from min (0) to max (65535)."""

    min: float
    max: float
    mean: float
    width: int
    height: int
    png_base64: str

    def as_json(self) -> dict[str, Any]:
        return {
            "min": round(self.min, 4),
            "max": round(self.max, 4),
            "mean": round(self.mean, 4),
            "width": self.width,
            "height": self.height,
            "png_base64": self.png_base64,
        }

    def context_lines(self) -> list[str]:
        return []  # a relative depth map says nothing a sentence could carry


def depth_png(depth: Floats) -> str:
    """The map scaled to 16 bits between its own min and max (a flat map is all zeros)."""
    low, high = float(depth.min()), float(depth.max())
    span = high - low
    scaled = (depth - low) / span if span > 0 else np.zeros_like(depth)
    ok, png = cv2.imencode(".png", np.round(scaled * 65535).astype(np.uint16))
    if not ok:
        raise ValueError("the depth map could not be encoded as PNG")
    return base64.b64encode(png.tobytes()).decode("ascii")


class DepthEstimator(HFModel):
    """Depth Anything V2 on the whole frame; the map is resized back to the frame's size."""

    default_folder = "depth-anything-v2-small"
    what = "Depth Anything model"

    def _load(self) -> None:
        from transformers import AutoImageProcessor, AutoModelForDepthEstimation

        self._processor = self._pretrained(AutoImageProcessor)
        self._model = self._pretrained(AutoModelForDepthEstimation)

    def infer(self, frame: Frame) -> DepthResult:
        height, width = frame.pixels.shape[:2]
        with self._lock:
            inputs = self._processor(images=_rgb(frame.pixels), return_tensors="pt")
            outputs = self._run(pixel_values=inputs["pixel_values"])
            (post,) = self._processor.post_process_depth_estimation(
                outputs, target_sizes=[(height, width)]
            )
            depth = post["predicted_depth"].float().cpu().numpy().astype(np.float32)
        return DepthResult(
            float(depth.min()), float(depth.max()), float(depth.mean()), width, height,
            depth_png(depth),
        )  # fmt: skip


# --- CLIP / SigLIP ------------------------------------------------------------------------------


class ClipModel(HFModel):
    """CLIP (softmax over a label group) or SigLIP (its own sigmoid per label), whichever the
    folder's config names; image and text embeddings come back L2-normalised."""

    def _load(self) -> None:
        from transformers import AutoImageProcessor, AutoModel, AutoTokenizer

        self._processor = self._pretrained(AutoImageProcessor)
        self._tokenizer = self._pretrained(AutoTokenizer)
        self._model = self._pretrained(AutoModel)
        self.siglip = str(self.config.get("model_type", "")).startswith("siglip")

    @staticmethod
    def _features(out: Any) -> Floats:
        tensor = out if hasattr(out, "norm") else out.pooler_output
        tensor = tensor / tensor.norm(dim=-1, keepdim=True)
        return np.asarray(tensor.float().cpu().numpy(), dtype=np.float32)

    def embed_images(self, images: Sequence[BGRImage]) -> Floats:
        with self._lock:
            inputs = self._processor(images=[_rgb(i) for i in images], return_tensors="pt")
            return self._features(
                self._run("get_image_features", pixel_values=inputs["pixel_values"])
            )

    def embed_texts(self, texts: Sequence[str]) -> Floats:
        padding = "max_length" if self.siglip else True  # SigLIP was trained on padded text
        with self._lock:
            tokens = self._tokenizer(list(texts), padding=padding, truncation=True,
                                     return_tensors="pt")  # fmt: skip
            inputs = {k: v for k, v in tokens.items() if k in ("input_ids", "attention_mask")}
            return self._features(self._run("get_text_features", **inputs))

    def probabilities(self, images: Floats, texts: Floats) -> Floats:
        """Per image, each text's probability (CLIP: a softmax over ``texts``)."""
        with self._lock:
            scale = float(self._model.logit_scale.detach().exp())
            bias = float(self._model.logit_bias.detach()) if self.siglip else 0.0
        logits = scale * images @ texts.T + bias
        if self.siglip:
            return np.asarray(1 / (1 + np.exp(-logits)), dtype=np.float32)
        return _softmax(logits.astype(np.float32))


CLOTHING_GROUPS: Mapping[str, tuple[str, ...]] = {
    "top": ("a t-shirt", "a shirt", "a hoodie", "a jacket", "a coat", "a dress",
            "a high-visibility vest", "a uniform"),
    "bottom": ("jeans", "trousers", "shorts", "a skirt"),
    "headwear": ("no hat", "a cap", "a hood up", "a helmet", "a beanie"),
}  # fmt: skip
"""Zero-shot choices, one per group (the ``groups`` option replaces them)."""
CLOTHING_PROMPT = "a photo of a person wearing {}"


@dataclass(frozen=True, slots=True)
class PersonClothing:
    bbox: Box
    attributes: Mapping[str, Score]
    """Per group, the most likely choice."""

    def as_json(self) -> dict[str, Any]:
        return {"bbox": self.bbox.as_json(),
                "attributes": {g: s.as_json() for g, s in self.attributes.items()}}  # fmt: skip


@dataclass(frozen=True, slots=True)
class ClothingResult:
    persons: tuple[PersonClothing, ...]

    def as_json(self) -> dict[str, Any]:
        return {"persons": [p.as_json() for p in self.persons]}

    def context_lines(self) -> list[str]:
        return [
            "Clothing: " + ", ".join(f"{s.label} ({_percent(s.score)}%)"
                                     for s in p.attributes.values() if s.label != "no hat")
            for p in self.persons
        ]  # fmt: skip


class ClothingClip(ClipModel):
    """FashionCLIP/SigLIP zero-shot clothing on the largest person crops: per group the choice
    whose prompt the crop matches best. The prompts' embeddings are computed once at load."""

    default_folder = "fashion-clip"
    what = "FashionCLIP model"

    def _load(self) -> None:
        super()._load()
        groups = self.options.get("groups") or CLOTHING_GROUPS
        self.groups = {str(g): tuple(str(c) for c in choices) for g, choices in groups.items()}
        self._texts = {
            g: self.embed_texts([CLOTHING_PROMPT.format(c) for c in choices])
            for g, choices in self.groups.items()
        }

    def infer(self, frame: Frame) -> ClothingResult:
        people = largest(frame.of_class("person"), self.max_crops)
        if not people:
            return ClothingResult(())
        images = self.embed_images([region(frame.pixels, _box(p)) for p in people])
        chosen: list[dict[str, Score]] = [{} for _ in people]
        for group, texts in self._texts.items():
            probs = self.probabilities(images, texts)
            for row, best in zip(probs, chosen, strict=True):
                i = int(row.argmax())
                best[group] = Score(self.groups[group][i], float(row[i]))
        return ClothingResult(
            tuple(PersonClothing(_box(p), b) for p, b in zip(people, chosen, strict=True))
        )


@dataclass(frozen=True, slots=True)
class ClipEmbeddingResult:
    embeddings: tuple[BodyEmbedding, ...]
    """The frame first (its box is the whole frame), then the largest detections' crops."""
    dimension: int
    matches: tuple[Score, ...] = ()
    """The frame's similarity to each of the ``texts`` option's prompts (cosine)."""

    def as_json(self) -> dict[str, Any]:
        """Boxes and matches only; ``as_full_json`` carries the vectors."""
        return {
            "dimension": self.dimension,
            "embeddings": [{"bbox": e.bbox.as_json()} for e in self.embeddings],
            "matches": [m.as_json() for m in self.matches],
        }

    def as_full_json(self) -> dict[str, Any]:
        full = self.as_json()
        full["embeddings"] = [
            {"bbox": e.bbox.as_json(), "vector": [round(float(v), 5) for v in e.vector]}
            for e in self.embeddings
        ]
        return full

    def context_lines(self) -> list[str]:
        return []


class ClipEmbedder(ClipModel):
    """CLIP ViT-L/14 embeddings (768-d) of the frame and of its largest detections; the
    ``texts`` option's prompts are embedded at load and matched against the frame."""

    default_folder = "clip-vit-large-patch14"
    what = "CLIP model"

    def _load(self) -> None:
        super()._load()
        self.texts = tuple(str(t) for t in self.options.get("texts", ()))
        self._text_vectors = self.embed_texts(self.texts) if self.texts else None

    def infer(self, frame: Frame) -> ClipEmbeddingResult:
        height, width = frame.pixels.shape[:2]
        boxes = [Box(0, 0, width, height)]
        boxes += [_box(d) for d in largest(frame.detections, self.max_crops)]
        boxes = [b for b in boxes if b.area]
        vectors = self.embed_images([region(frame.pixels, b) for b in boxes])
        matches: tuple[Score, ...] = ()
        if self._text_vectors is not None:
            sims = vectors[0] @ self._text_vectors.T
            matches = tuple(Score(t, float(s)) for t, s in zip(self.texts, sims, strict=True))
        embeddings = tuple(BodyEmbedding(v, b) for v, b in zip(vectors, boxes, strict=True))
        return ClipEmbeddingResult(embeddings, int(vectors.shape[1]), matches)


# --- X-CLIP actions -----------------------------------------------------------------------------


ACTIONS = (
    "walking", "running", "standing still", "loitering", "climbing a fence",
    "breaking into a car", "breaking a window", "fighting", "falling down",
    "delivering a package", "carrying a box",
)  # fmt: skip
"""Default action labels (the ``labels`` option replaces them)."""
ACTION_MIN = 0.4
"""A label this likely is told to the language model (``min_confidence`` option)."""


@dataclass(frozen=True, slots=True)
class ActionResult:
    actions: tuple[Score, ...]
    """Every label, most likely first (a softmax over the labels)."""
    frames: int
    """How many distinct frames the clip was built from (the rest repeat them)."""
    min_confidence: float = ACTION_MIN

    @property
    def top(self) -> Score | None:
        return self.actions[0] if self.actions else None

    def as_json(self) -> dict[str, Any]:
        return {"actions": [a.as_json() for a in self.actions[:5]], "frames": self.frames}

    def context_lines(self) -> list[str]:
        return [
            f"Action: {a.label} ({_percent(a.score)}%)"
            for a in self.actions
            if a.score >= self.min_confidence
        ]


def clip_frames(history: Sequence[BGRImage], current: BGRImage, count: int) -> list[BGRImage]:
    """``count`` frames spread evenly over history + current, oldest first, the current last;
    fewer frames than ``count`` repeat (X-CLIP's input has a fixed number of frames)."""
    frames = [*history, current]
    picks = np.linspace(0, len(frames) - 1, count).round().astype(int)
    return [frames[int(i)] for i in picks]


class ActionRecognizer(HFModel):
    """X-CLIP over the camera's recent frames (``frame.history``) and this one."""

    default_folder = "xclip-base-patch32"
    what = "X-CLIP model"

    def _load(self) -> None:
        from transformers import AutoImageProcessor, AutoModel, AutoTokenizer

        self._processor = self._pretrained(AutoImageProcessor)
        self._tokenizer = self._pretrained(AutoTokenizer)
        self._model = self._pretrained(AutoModel)
        self.num_frames = int(self._model.config.vision_config.num_frames)
        self.labels = tuple(str(a) for a in self.options.get("labels", ACTIONS))
        self.min_confidence = float(self.options.get("min_confidence", ACTION_MIN))

    def infer(self, frame: Frame) -> ActionResult:
        frames = clip_frames(frame.history, frame.pixels, self.num_frames)
        with self._lock:
            clip = self._processor(images=[_rgb(f) for f in frames], return_tensors="pt")
            pixels = clip["pixel_values"]
            if pixels.ndim == 4:  # frames, not yet one clip of T frames
                pixels = pixels.unsqueeze(0)
            tokens = self._tokenizer(list(self.labels), padding=True, return_tensors="pt")
            outputs = self._run(
                input_ids=tokens["input_ids"],
                attention_mask=tokens["attention_mask"],
                pixel_values=pixels,
            )
            logits = outputs.logits_per_video.float().cpu().numpy()[0]
        probs = _softmax(logits.astype(np.float32))
        ranked = sorted(zip(self.labels, probs, strict=True), key=lambda p: -p[1])
        return ActionResult(
            tuple(Score(label, float(p)) for label, p in ranked),
            min(len(frame.history) + 1, self.num_frames),
            self.min_confidence,
        )


# --- Florence-2 ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PersonCaption:
    bbox: Box
    caption: str

    def as_json(self) -> dict[str, Any]:
        return {"bbox": self.bbox.as_json(), "caption": self.caption}


@dataclass(frozen=True, slots=True)
class CaptionResult:
    persons: tuple[PersonCaption, ...]

    def as_json(self) -> dict[str, Any]:
        return {"persons": [p.as_json() for p in self.persons]}

    def context_lines(self) -> list[str]:
        return [f"Person appearance: {p.caption}" for p in self.persons if p.caption]


CAPTION_TASKS = ("<CAPTION>", "<DETAILED_CAPTION>", "<MORE_DETAILED_CAPTION>")
"""Florence-2's plain-text tasks: the answer is the decoded text, no region parsing."""


class FlorenceAttributes(HFModel):
    """Florence-2 captions of the largest person crops (``task`` option, one of
    :data:`CAPTION_TASKS`, default ``<CAPTION>``; at most ``max_persons`` crops, default 2:
    generation is the slowest work in the zoo)."""

    default_folder = "florence-2-base"
    what = "Florence-2 model"

    def _load(self) -> None:
        if "auto_map" in self.config:
            raise ModelNotInstalledError(
                f"{self.folder} is Florence-2 in its remote-code form (config.json auto_map: "
                "it needs trust_remote_code and modelling code from the hub, which Vigil never "
                "fetches or runs); install the transformers-native conversion "
                "(florence-community/Florence-2-base) in that folder"
            )
        from transformers import AutoModelForImageTextToText, AutoProcessor

        self._processor = self._pretrained(AutoProcessor)
        self._model = self._pretrained(AutoModelForImageTextToText)
        self.task = str(self.options.get("task", "<CAPTION>"))
        if self.task not in CAPTION_TASKS:
            raise ValueError(f"Florence-2 task {self.task!r} is not one of {CAPTION_TASKS}")
        self.max_persons = min(self.max_crops, int(self.options.get("max_persons", 2)))
        self.max_new_tokens = int(self.options.get("max_new_tokens", 40))

    def infer(self, frame: Frame) -> CaptionResult:
        people = [
            p for p in largest(frame.of_class("person"), self.max_persons) if p.width * p.height
        ]
        if not people:
            return CaptionResult(())
        crops = [_rgb(region(frame.pixels, _box(p))) for p in people]
        with self._lock:
            inputs = self._processor(text=[self.task] * len(crops), images=crops,
                                     return_tensors="pt")  # fmt: skip
            generated = self._run(
                "generate",
                input_ids=inputs["input_ids"],
                pixel_values=inputs["pixel_values"].to(self._model.dtype),
                max_new_tokens=self.max_new_tokens,
                num_beams=1,
                do_sample=False,
            )
            texts = self._processor.batch_decode(generated, skip_special_tokens=True)
        captions = [" ".join(t.split()) for t in texts]
        return CaptionResult(
            tuple(PersonCaption(_box(p), c) for p, c in zip(people, captions, strict=True))
        )


# --- image classifiers --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ClassifierResult:
    """The whole frame's classes, most likely first (the top five)."""

    scores: tuple[Score, ...]
    alert: bool
    """Violence: the top label is a violent one. Weather: the top label is not clear weather."""
    kind: str

    @property
    def label(self) -> str:
        return self.scores[0].label

    @property
    def confidence(self) -> float:
        return self.scores[0].score

    def as_json(self) -> dict[str, Any]:
        key = "violent" if self.kind == "violence" else "adverse"
        return {
            "label": self.label,
            "confidence": round(self.confidence, 3),
            key: self.alert,
            "scores": [s.as_json() for s in self.scores],
        }

    def context_lines(self) -> list[str]:
        if self.kind == "violence":
            if not self.alert:
                return []
            confidence = _percent(self.confidence)
            return [f"[WARNING] VIOLENCE DETECTED: {self.label} (confidence={confidence}%)"]
        return [f"Weather: {self.label} ({_percent(self.confidence)}%)"]


class ImageClassifier(HFModel):
    """An image classifier on the whole frame; its labels are the config's ``id2label``."""

    kind: ClassVar[str] = ""

    def _load(self) -> None:
        from transformers import AutoImageProcessor, AutoModelForImageClassification

        self._processor = self._pretrained(AutoImageProcessor)
        self._model = self._pretrained(AutoModelForImageClassification)
        id2label = self._model.config.id2label
        self.labels = tuple(str(id2label[i]) for i in range(len(id2label)))
        self.multi_label = self._model.config.problem_type == "multi_label_classification"

    def is_alert(self, label: str) -> bool:
        raise NotImplementedError

    def infer(self, frame: Frame) -> ClassifierResult:
        with self._lock:
            inputs = self._processor(images=_rgb(frame.pixels), return_tensors="pt")
            logits = self._run(pixel_values=inputs["pixel_values"]).logits
            row = logits.float().cpu().numpy()[0].astype(np.float32)
        probs = 1 / (1 + np.exp(-row)) if self.multi_label else _softmax(row)
        order = np.argsort(-probs)[:5]
        scores = tuple(Score(self.labels[int(i)], float(probs[int(i)])) for i in order)
        return ClassifierResult(scores, self.is_alert(scores[0].label), self.kind)


class ViolenceClassifier(ImageClassifier):
    default_folder = "violence-classifier"
    what = "violence classifier"
    kind = "violence"

    def is_alert(self, label: str) -> bool:
        """ "violence", "Violent", "fight" are; "non-violence", "NonViolence", "no fight" not."""
        text = label.lower().replace("_", " ").replace("-", " ")
        negated = text.startswith(("non", "no ", "not "))
        return not negated and any(w in text for w in ("violen", "fight", "assault"))


class WeatherClassifier(ImageClassifier):
    default_folder = "weather-classifier"
    what = "weather classifier"
    kind = "weather"

    def is_alert(self, label: str) -> bool:
        return label.lower() not in {"clear", "sunny", "sunrise", "shine", "cloudy", "day"}


# --- SegFormer clothes --------------------------------------------------------------------------


NOT_CLOTHES = frozenset(
    {"background", "hair", "face", "skin", "neck", "left-leg", "right-leg", "left-arm",
     "right-arm", "left leg", "right leg", "left arm", "right arm", "unlabeled"}
)  # fmt: skip
"""Segment classes that are the person, not what they wear (the segformer_b2_clothes labels)."""


@dataclass(frozen=True, slots=True)
class PersonClothes:
    bbox: Box
    clothes: tuple[Score, ...]
    """Each garment class's share of the person box's pixels, largest first."""

    def as_json(self) -> dict[str, Any]:
        return {
            "bbox": self.bbox.as_json(),
            "clothes": [{"label": c.label, "fraction": round(c.score, 4)} for c in self.clothes],
        }


@dataclass(frozen=True, slots=True)
class ClothesResult:
    persons: tuple[PersonClothes, ...]

    def as_json(self) -> dict[str, Any]:
        return {"persons": [p.as_json() for p in self.persons]}

    def context_lines(self) -> list[str]:
        return [
            "Clothing: " + ", ".join(c.label for c in p.clothes[:4])
            for p in self.persons
            if p.clothes
        ]


class ClothesSegmenter(HFModel):
    """SegFormer per-pixel clothes classes on the largest person crops."""

    default_folder = "segformer-b2-clothes"
    what = "SegFormer clothes model"
    MIN_FRACTION: ClassVar[float] = 0.01

    def _load(self) -> None:
        from transformers import AutoImageProcessor, AutoModelForSemanticSegmentation

        self._processor = self._pretrained(AutoImageProcessor)
        self._model = self._pretrained(AutoModelForSemanticSegmentation)
        id2label = self._model.config.id2label
        self.labels = tuple(str(id2label[i]) for i in range(len(id2label)))
        self.clothes = np.array([label.lower() not in NOT_CLOTHES for label in self.labels])

    def infer(self, frame: Frame) -> ClothesResult:
        people = [
            p for p in largest(frame.of_class("person"), self.max_crops) if p.width * p.height
        ]
        persons = []
        for person in people:
            crop = region(frame.pixels, _box(person))
            with self._lock:
                inputs = self._processor(images=_rgb(crop), return_tensors="pt")
                outputs = self._run(pixel_values=inputs["pixel_values"])
                (classes,) = self._processor.post_process_semantic_segmentation(
                    outputs, target_sizes=[crop.shape[:2]]
                )
            counts = np.bincount(classes.cpu().numpy().ravel(), minlength=len(self.labels))
            fractions = counts / max(1, counts.sum())
            worn = [
                Score(self.labels[i], float(fractions[i]))
                for i in np.argsort(-fractions)
                if self.clothes[i] and fractions[i] >= self.MIN_FRACTION
            ]
            persons.append(PersonClothes(_box(person), tuple(worn)))
        return ClothesResult(tuple(persons))
