# Home Assistant integration (custom_components/vigil): test harness targets.
# Included from the top-level Makefile. Everything runs through scripts/ha_root.sh,
# which uses python3.14 from PATH where there is one, and otherwise builds (once) a
# Debian sid root in .ha-root/ with Python 3.14 and the HA test venv inside.
#
#   make test-ha     mypy --strict on the integration, then the HA suite incl. the
#                    end-to-end test against the real add-on, with coverage; fails
#                    unless config_flow.py is 100 % covered
#   make ha-env      build / reuse the HA environment only, print the HA version
#   make ha-mypy     mypy --strict on custom_components/vigil (HA's Python 3.14)
#   make ha-bench    benchmarks/ha_overhead.py against the real add-on
#   make ha-clean    remove .ha-root/ and .venv-ha/
#
# HA_ADDON_DEPS (default: the top Makefile's $(STAMP)): what builds .venv-addon; the end-to-end
# test starts `.venv-addon/bin/python -m addon_server` on a free loopback port.
# VIGIL_E2E=required|auto|off (default required: no add-on means test-ha fails).

HA_ROOT_SH ?= scripts/ha_root.sh
HA_ADDON_DEPS ?= $(STAMP)
HA_PYTEST_ARGS ?=

.PHONY: ha-env test-ha ha-mypy ha-bench ha-clean

ha-env:
	@bash $(HA_ROOT_SH) ensure

test-ha: $(HA_ADDON_DEPS)
	@bash $(HA_ROOT_SH) mypy
	@bash $(HA_ROOT_SH) test $(HA_PYTEST_ARGS)

ha-mypy:
	@bash $(HA_ROOT_SH) mypy

ha-bench: $(HA_ADDON_DEPS)
	@bash $(HA_ROOT_SH) bench

ha-clean:
	@bash $(HA_ROOT_SH) clean
