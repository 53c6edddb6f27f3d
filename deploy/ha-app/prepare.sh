#!/usr/bin/env bash
# Copy the add-on's source into the app folder, the only build context Home Assistant gives it.
set -euo pipefail
repo="$(cd "$(dirname "$0")/../.." && pwd)"
dest="$repo/deploy/ha-app/vigil/vigil-src"
rm -rf "$dest"
mkdir -p "$dest"
cp -r "$repo/pyproject.toml" "$repo/README.md" "$repo/requirements" "$repo/addon_server" "$dest/"
find "$dest" -name __pycache__ -prune -exec rm -rf {} +
echo "prepared $dest"
