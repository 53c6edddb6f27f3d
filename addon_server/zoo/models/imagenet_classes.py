"""ImageNet-1k class indices grouped for the pet, vehicle and threat families (one owner).

Names are torchvision's ``ResNet18_Weights.DEFAULT.meta["categories"]`` (the standard order
EfficientNet-Lite0 uses; offline, no download). Ranges were checked name by name. They are read
from torchvision's source (the ``_IMAGENET_CATEGORIES`` list its weights' metadata is built
from) without importing it: importing torchvision imports torch, about 630 MiB of resident
memory and seconds of import in an add-on whose default detector never loads torch — on the
first weapon or pet found, after the zoo had measured the model without it.
"""

from __future__ import annotations

import ast
import importlib.util
from functools import cache
from pathlib import Path

from addon_server.errors import ModelNotInstalledError

DOGS = range(151, 269)
"""Domestic dog breeds (Chihuahua … Mexican hairless)."""
CATS = range(281, 286)
"""Domestic cats: tabby, tiger cat, Persian, Siamese, Egyptian."""
WILD_ANIMALS: dict[str, tuple[int, ...]] = {
    "wolf": (269, 270, 271),
    "coyote": (272,),
    "wild dog": (273, 274, 275),
    "hyena": (276,),
    "fox": (277, 278, 279, 280),
    "big cat": tuple(range(286, 294)),
    "bear": (294, 295, 296, 297),
    "wild boar": (342,),
    "skunk": (361,),
    "badger": (362,),
}
VEHICLE_TYPES: dict[str, tuple[int, ...]] = {
    "car": (436, 468, 511, 609, 627, 661, 751, 817),
    "pickup": (717,),
    "van": (656, 675, 734, 407),
    "truck": (555, 569, 864, 867),
    "bus": (654, 779, 874),
    "motorcycle": (665, 670),
    "bicycle": (444, 671, 870),
}
WEAPONS: dict[str, tuple[int, ...]] = {
    "gun": (413, 763, 764),
    "knife": (499,),
    "hatchet": (596,),
}
"""Classes that mean a weapon on a person or hand crop (letter opener and chain saw left out:
everyday objects that look alike too often)."""


_SOURCE = "models/_meta.py"
_LIST = "_IMAGENET_CATEGORIES"


@cache
def names() -> tuple[str, ...]:
    """The 1000 ImageNet class names in index order (loaders call it, so a load pays for it)."""
    spec = importlib.util.find_spec("torchvision")
    locations = list(spec.submodule_search_locations or []) if spec else []
    if not locations:
        raise ModelNotInstalledError("ImageNet class names need python module torchvision")
    tree = ast.parse((Path(locations[0]) / _SOURCE).read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == _LIST for t in node.targets
        ):
            found = tuple(str(n) for n in ast.literal_eval(node.value))
            if len(found) == 1000:
                return found
    raise ModelNotInstalledError(f"no ImageNet class list {_LIST} in torchvision's {_SOURCE}")
