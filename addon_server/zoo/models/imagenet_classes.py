"""ImageNet-1k class indices grouped for the pet, vehicle and threat families (one owner).

Names are torchvision's ``ResNet18_Weights.DEFAULT.meta["categories"]`` (the standard order
EfficientNet-Lite0 uses; importable offline, no download). Ranges were checked name by name.
"""

from __future__ import annotations

from functools import cache

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


@cache
def names() -> tuple[str, ...]:
    from torchvision.models import ResNet18_Weights

    return tuple(ResNet18_Weights.DEFAULT.meta["categories"])
