#!/usr/bin/env bash
# Start script: the app's options become the add-on's config file, then the add-on runs.
set -euo pipefail
python3 /opt/vigil-app/options_to_config.py /data/options.json /data/vigil.yaml
cd /data
exec vigil-addon --config /data/vigil.yaml serve
