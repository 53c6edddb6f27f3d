"""ImageNet class names and groups: torchvision's list, read without importing torch."""

from __future__ import annotations

import subprocess
import sys

from addon_server.zoo.models import imagenet_classes as classes
from tests.addon_server.conftest import addon_process_env

CHECK = """
import sys
from addon_server.zoo.models.imagenet_classes import names
assert len(names()) == 1000
print(sorted(m for m in ("torch", "torchvision") if m in sys.modules))
"""


def test_names_are_read_without_importing_torch() -> None:
    """A fresh process (as the add-on with its default OpenCV detector) gets all 1000 names
    and has imported neither torch nor torchvision."""
    done = subprocess.run(
        [sys.executable, "-c", CHECK],
        env=addon_process_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert done.stdout.strip() == "[]"


def test_names_are_torchvisions_and_the_groups_name_what_they_say() -> None:
    from torchvision.models import ResNet18_Weights

    names = classes.names()
    assert names == tuple(ResNet18_Weights.DEFAULT.meta["categories"])
    assert [names[i] for i in classes.CATS] == [
        "tabby", "tiger cat", "Persian cat", "Siamese cat", "Egyptian cat"
    ]  # fmt: skip
    assert (names[classes.DOGS[0]], names[classes.DOGS[-1]]) == ("Chihuahua", "Mexican hairless")
    assert {names[i] for i in classes.WEAPONS["gun"]} == {"assault rifle", "revolver", "rifle"}
    assert names[classes.VEHICLE_TYPES["pickup"][0]] == "pickup"
    assert "red fox" in {names[i] for i in classes.WILD_ANIMALS["fox"]}
