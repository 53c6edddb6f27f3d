#!/usr/bin/env bash
# Copy the add-on's source into the app folder, the only build context Home Assistant gives it.
#   prepare.sh [APP_DIR]   (default: deploy/ha-app/vigil)
set -euo pipefail
repo="$(cd "$(dirname "$0")/../.." && pwd)"
dest="${1:-$repo/deploy/ha-app/vigil}/vigil-src"
rm -rf "$dest"
mkdir -p "$dest"
cp -r "$repo/pyproject.toml" "$repo/README.md" "$repo/requirements" "$repo/addon_server" \
  "$repo/deploy/install-addon.sh" "$dest/"
find "$dest" -name __pycache__ -prune -exec rm -rf {} +
echo "prepared $dest"
