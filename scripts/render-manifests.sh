#!/usr/bin/env bash
# Render deploy/porterlb.yaml from charts/porterlb (tests/integration/test_chart.py fails when
# they differ). Needs the helm that `porterlb lab build-tools` builds.
set -euo pipefail
cd "$(dirname "$0")/.."
uv run --frozen python -m porterlb.lab.chart > deploy/porterlb.yaml.tmp
mv deploy/porterlb.yaml.tmp deploy/porterlb.yaml
echo "wrote deploy/porterlb.yaml"
