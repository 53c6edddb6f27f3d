#!/usr/bin/env bash
# Vigil: the Home Assistant test harness.
#
# Home Assistant 2026.10 (pinned through pytest-homeassistant-custom-component in
# requirements/ha.txt) needs Python 3.14. Where `python3.14` is on PATH we use it directly
# (venv in .venv-ha/). Otherwise, as root on Debian, we build a Debian sid root once in the
# ignored folder .ha-root/, put Python 3.14 and the HA venv inside it, bind-mount this
# repository into it at the same path and run the command there with chroot.
#
#   scripts/ha_root.sh ensure          build/reuse the environment, print the HA version
#   scripts/ha_root.sh run CMD...      run CMD (in the repo root) inside the environment
#   scripts/ha_root.sh test [ARGS...]  start the real add-on on a free loopback port (for the
#                                      end-to-end test), run the HA test suite, stop the add-on
#   scripts/ha_root.sh mypy            mypy --strict on custom_components/vigil
#   scripts/ha_root.sh bench           benchmarks/ha_overhead.py against the real add-on
#   scripts/ha_root.sh clean           remove the root and the venv
#
# Environment: VIGIL_HA_ROOT (default .ha-root), VIGIL_HA_MODE=auto|native|chroot,
# VIGIL_ADDON_PYTHON (default .venv-addon/bin/python), VIGIL_E2E=required|auto|off
# (default required: `test` fails when the add-on cannot be started).
set -Eeuo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ROOT="${VIGIL_HA_ROOT:-$REPO/.ha-root}"
STATE="$REPO/.state/ha"
ROOT_MARKER="$ROOT/.vigil-root-complete"
ROOT_VENV=/opt/vigil-ha-venv            # path inside the root
NATIVE_VENV="$REPO/.venv-ha"
REQS="$REPO/requirements/ha.txt"
SUITE="sid"
PY=python3.14

cd "$REPO"
mkdir -p "$STATE"
STEP="start"
STEP_LOG=""

say() { printf 'ha_root: %s\n' "$*" >&2; }

on_error() {
    local rc=$?
    say "step '$STEP' failed (exit $rc)"
    if [[ -n "$STEP_LOG" && -s "$STEP_LOG" ]]; then
        say "last lines of $STEP_LOG:"
        tail -n 25 "$STEP_LOG" | sed 's/^/    /' >&2
    fi
    exit "$rc"
}
trap on_error ERR

# step NAME LOGFILE CMD...: run CMD with its output in LOGFILE; on failure name the step.
step() {
    STEP="$1"; STEP_LOG="$STATE/$2.log"; shift 2
    say "$STEP ..."
    "$@" >"$STEP_LOG" 2>&1
    STEP_LOG=""
}

fail() { say "step '$STEP' failed: $*"; exit 1; }

mode() {
    local m="${VIGIL_HA_MODE:-auto}"
    if [[ "$m" == auto ]]; then
        if command -v "$PY" >/dev/null 2>&1; then m=native; else m=chroot; fi
    fi
    echo "$m"
}

reqs_hash() { sha256sum "$REQS" | cut -d' ' -f1; }

# --------------------------------------------------------------------------- native mode
ensure_native() {
    STEP="native venv"
    command -v "$PY" >/dev/null || fail "$PY is not on PATH"
    if [[ ! -x "$NATIVE_VENV/bin/python" ]]; then
        step "create venv $NATIVE_VENV" venv "$PY" -m venv "$NATIVE_VENV"
    fi
    if [[ "$(cat "$NATIVE_VENV/.vigil-reqs" 2>/dev/null)" != "$(reqs_hash)" ]]; then
        step "pip install -r requirements/ha.txt (native)" pip \
            "$NATIVE_VENV/bin/python" -m pip install -r "$REQS"
        reqs_hash >"$NATIVE_VENV/.vigil-reqs"
    fi
}

# --------------------------------------------------------------------------- chroot mode
root_mounted() { grep -q " $ROOT/" /proc/mounts; }

build_root() {
    STEP="preconditions"
    [[ "$(id -u)" == 0 ]] || fail "building the Debian root needs root (or put $PY on PATH)"
    command -v apt-get >/dev/null || fail "no apt-get: not Debian; put $PY on PATH instead"
    if ! command -v debootstrap >/dev/null; then
        step "apt-get install debootstrap" apt-install-debootstrap \
            bash -c 'apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y debootstrap'
    fi
    if [[ -e "$ROOT" ]]; then
        STEP="remove half-made root"
        root_mounted && fail "$ROOT has mounts under it (another run?); unmount them first"
        say "removing half-made root $ROOT (no completion marker)"
        rm -rf --one-file-system "$ROOT"
    fi
    mkdir -p "$ROOT"
    step "debootstrap --variant=minbase $SUITE $ROOT" debootstrap \
        debootstrap --variant=minbase "$SUITE" "$ROOT"
    # The sid Release file on the mirror can be past its Valid-Until date.
    echo 'Acquire::Check-Valid-Until "false";' >"$ROOT/etc/apt/apt.conf.d/99vigil-no-valid-until"
    step "apt-get update inside the root" root-apt-update \
        chroot "$ROOT" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin \
        apt-get -o Acquire::Check-Valid-Until=false update
    step "apt-get install $PY $PY-venv inside the root" root-apt-install \
        chroot "$ROOT" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive \
        apt-get -o Acquire::Check-Valid-Until=false install -y --no-install-recommends \
        "$PY" "$PY-venv"
    STEP="copy CA bundle into the root"
    [[ -s /etc/ssl/certs/ca-certificates.crt ]] || fail "/etc/ssl/certs/ca-certificates.crt is missing"
    install -D -m 0644 /etc/ssl/certs/ca-certificates.crt "$ROOT/etc/ssl/certs/ca-certificates.crt"
    cp /etc/resolv.conf "$ROOT/etc/resolv.conf" 2>/dev/null || true
    step "create venv $ROOT_VENV inside the root" root-venv \
        chroot "$ROOT" /usr/bin/env -i PATH=/usr/bin:/bin "$PY" -m venv "$ROOT_VENV"
    date -u +%FT%TZ >"$ROOT_MARKER"
}

# The environment a command sees inside the root: nothing of the host's but what we pass.
root_env() {
    local -a e=(
        PATH="$ROOT_VENV/bin:/usr/local/bin:/usr/bin:/bin"
        HOME=/root LANG=C.UTF-8 LC_ALL=C.UTF-8
        SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
        PIP_CERT=/etc/ssl/certs/ca-certificates.crt
        PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_DEFAULT_TIMEOUT=180
        PYTHONDONTWRITEBYTECODE=1
    )
    local v
    for v in $(compgen -e); do
        case "$v" in VIGIL_*|PYTEST_ADDOPTS|CI) e+=("$v=${!v}") ;; esac
    done
    printf '%s\0' "${e[@]}"
}

# Run CMD inside the root, in a private mount namespace: /proc, /dev and the repository are
# mounted for this command only and unmounted when it ends (trap), and since the namespace
# is private nothing can leak onto the host even if the trap never runs.
in_root() {
    local -a envv
    mapfile -d '' envv < <(root_env)
    unshare --mount --propagation private -- "$REPO/scripts/ha_root.sh" __ns "$(pwd)" "${envv[@]}" -- "$@"
}

NS_MOUNTED=()
ns_cleanup() {
    local i
    for ((i=${#NS_MOUNTED[@]}-1; i>=0; i--)); do umount -l "${NS_MOUNTED[$i]}" 2>/dev/null || true; done
    NS_MOUNTED=()
}

ns_stage() {   # internal: runs inside `unshare --mount`
    trap - ERR
    local cwd="$1"; shift
    local -a envv=()
    while [[ "$1" != -- ]]; do envv+=("$1"); shift; done
    shift
    trap ns_cleanup EXIT
    mkdir -p "$ROOT/proc" "$ROOT/dev" "$ROOT$REPO"
    mount -t proc proc "$ROOT/proc"; NS_MOUNTED+=("$ROOT/proc")
    mount --rbind /dev "$ROOT/dev"; mount --make-rslave "$ROOT/dev"; NS_MOUNTED+=("$ROOT/dev")
    mount --bind "$REPO" "$ROOT$REPO"; NS_MOUNTED+=("$ROOT$REPO")
    mkdir -p "$ROOT/tmp"; chmod 1777 "$ROOT/tmp"
    set +e
    chroot "$ROOT" /usr/bin/env -i "${envv[@]}" /bin/sh -c 'cd "$0" && exec "$@"' "$cwd" "$@"
    local rc=$?
    set -e
    return $rc
}

ensure_chroot() {
    if [[ ! -f "$ROOT_MARKER" ]]; then
        build_root
    fi
    if [[ "$(cat "$ROOT$ROOT_VENV/.vigil-reqs" 2>/dev/null)" != "$(reqs_hash)" ]]; then
        STEP="pip install -r requirements/ha.txt inside the root"
        STEP_LOG="$STATE/root-pip.log"
        say "$STEP ..."
        in_root python -m pip install -r requirements/ha.txt >"$STEP_LOG" 2>&1
        STEP_LOG=""
        reqs_hash >"$ROOT$ROOT_VENV/.vigil-reqs"
    fi
}

# --------------------------------------------------------------------------- common
ensure() {
    case "$(mode)" in
        native) ensure_native ;;
        chroot) ensure_chroot ;;
        *) STEP="mode"; fail "VIGIL_HA_MODE must be auto, native or chroot" ;;
    esac
    STEP="report HA version"
    local v
    v="$(run_in python -c 'import sys; from homeassistant.const import __version__ as v; print(v, "on Python", sys.version.split()[0])')"
    say "Home Assistant under test: $v ($(mode) mode)"
    echo "$v" >"$STATE/ha-version"
}

run_in() {
    case "$(mode)" in
        native) PATH="$NATIVE_VENV/bin:$PATH" "$@" ;;
        chroot) in_root "$@" ;;
    esac
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

ADDON_DATA=""
# A folder under the repo (so the same path inside the root) through which the end-to-end test
# asks for a restart (VIGIL_E2E_CONTROL): it holds `pid`, the add-on's process group id (set
# with setsid: the LLM server it spawns goes too), `restart` (the test's request) and
# `restarted` (the answer, once the new process serves on the same port and data dir).
ADDON_CONTROL=""
ADDON_WATCHER=""
kill_addon_group() {
    local pid
    pid="$(cat "$ADDON_CONTROL/pid" 2>/dev/null || true)"
    if [[ -n "$pid" ]] && kill -0 -- "-$pid" 2>/dev/null; then
        kill -TERM -- "-$pid" 2>/dev/null || true
        for _ in $(seq 100); do kill -0 -- "-$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL -- "-$pid" 2>/dev/null || true
    fi
}
stop_addon() {
    if [[ -n "$ADDON_WATCHER" ]]; then   # first: it must not start another add-on meanwhile
        kill "$ADDON_WATCHER" 2>/dev/null || true
        wait "$ADDON_WATCHER" 2>/dev/null || true
        ADDON_WATCHER=""
    fi
    if [[ -n "$ADDON_CONTROL" ]]; then kill_addon_group; rm -rf "$ADDON_CONTROL"; ADDON_CONTROL=""; fi
    if [[ -n "$ADDON_DATA" ]]; then rm -rf "$ADDON_DATA"; ADDON_DATA=""; fi
}

# Start the add-on process on PORT with TOKEN and DATA and wait until it answers /health.
spawn_addon() {
    local port="$1" token="$2" data="$3" py="$4" log="$STATE/addon.log" pid i
    # The same offline settings the top-level Makefile exports, for runs without make.
    # LLM_POLICY=always (unless set): the two-phase test and bench need every event refined.
    HOST=127.0.0.1 PORT="$port" VIGIL_API_TOKEN="$token" VIGIL_DATA_DIR="$data" \
        LLM_POLICY="${LLM_POLICY:-always}" \
        YOLO_OFFLINE="${YOLO_OFFLINE:-1}" YOLO_AUTOINSTALL="${YOLO_AUTOINSTALL:-False}" \
        YOLO_CONFIG_DIR="${YOLO_CONFIG_DIR:-$REPO/.state/ultralytics}" \
        setsid "$py" -m addon_server serve >>"$log" 2>&1 &
    pid=$!
    echo "$pid" >"$ADDON_CONTROL/pid"
    for ((i=0; i<600; i++)); do
        if ! kill -0 "$pid" 2>/dev/null; then
            STEP_LOG="$log"; fail "the add-on exited during start-up (log: $log)"
        fi
        if python3 - "$port" <<'PY' 2>/dev/null; then break; fi
import json, sys, urllib.request
with urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/health", timeout=2) as r:
    sys.exit(0 if json.load(r).get("instance_id") else 1)
PY
        sleep 0.5
    done
    ((i < 600)) || { STEP_LOG="$log"; fail "the add-on did not answer /health within 300 s"; }
}

# In the background while the tests run: restart the add-on (same port, token and data dir)
# each time the test asks, and answer when the new process serves.
watch_restarts() {
    trap - EXIT   # the parent's trap: the watcher must never remove the add-on's data
    while sleep 0.2; do
        [[ -f "$ADDON_CONTROL/restart" ]] || continue
        rm -f "$ADDON_CONTROL/restart"
        kill_addon_group
        spawn_addon "$@"
        touch "$ADDON_CONTROL/restarted"
    done
}

# Start the real add-on outside the root (its own Python 3.11 venv) on 127.0.0.1; the root
# shares the host's network, so HA inside reaches it on loopback.
start_addon() {
    STEP="start the add-on for the end-to-end test"
    local want="${VIGIL_E2E:-required}" py="${VIGIL_ADDON_PYTHON:-$REPO/.venv-addon/bin/python}"
    [[ "$want" == off ]] && { say "VIGIL_E2E=off: the end-to-end test will be skipped"; return 0; }
    if [[ -n "${VIGIL_E2E_URL:-}" ]]; then say "using the add-on at $VIGIL_E2E_URL"; return 0; fi
    if ! [[ -x "$py" ]] || ! "$py" -c 'import addon_server' >/dev/null 2>&1; then
        [[ "$want" == auto ]] && { say "no add-on venv ($py): the end-to-end test will be skipped"; return 0; }
        fail "$py cannot import addon_server (build the add-on venv first, or set VIGIL_E2E=auto|off)"
    fi
    local port token
    port="$(free_port)"
    token="e2e-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"
    ADDON_DATA="$(mktemp -d "$STATE/addon-data.XXXXXX")"
    ADDON_CONTROL="$(mktemp -d "$STATE/addon-control.XXXXXX")"
    trap 'stop_addon' EXIT
    : >"$STATE/addon.log"
    spawn_addon "$port" "$token" "$ADDON_DATA" "$py"
    watch_restarts "$port" "$token" "$ADDON_DATA" "$py" &
    ADDON_WATCHER=$!
    export VIGIL_E2E_URL="http://127.0.0.1:$port" VIGIL_E2E_TOKEN="$token"
    export VIGIL_E2E_CONTROL="$ADDON_CONTROL"
    say "add-on (pid $(cat "$ADDON_CONTROL/pid")) answers on $VIGIL_E2E_URL; log: $STATE/addon.log"
    [[ -f "${VIGIL_MODELS_DIR:-models}/faceres.onnx" ]] || say "no ${VIGIL_MODELS_DIR:-models}/faceres.onnx:" \
        "the add-on runs with face re-ID off (README: 'Face re-identification models')"
}

cmd="${1:-ensure}"; shift || true
case "$cmd" in
    __ns) ns_stage "$@" ;;
    ensure) ensure ;;
    run) ensure; STEP="run: $*"; run_in "$@" ;;
    test)
        ensure
        start_addon
        STEP="pytest tests/components/vigil"
        say "Home Assistant under test: $(cat "$STATE/ha-version")"
        set +e
        run_in python -m pytest -c tests/components/vigil/pytest.ini --rootdir "$REPO" \
            --cov=custom_components/vigil --cov-report=term-missing:skip-covered \
            tests/components/vigil "$@"
        rc=$?
        set -e
        stop_addon
        if ((rc == 0 && $# == 0)); then   # the gate needs the whole suite
            STEP="coverage of config_flow.py (must be 100 %)"
            run_in python -m coverage report --include='custom_components/vigil/config_flow.py' \
                --fail-under=100 || { rc=$?; say "step '$STEP' failed"; }
        fi
        say "HA test suite on Home Assistant $(cat "$STATE/ha-version"): exit $rc"
        exit $rc
        ;;
    bench)
        ensure
        start_addon
        STEP="benchmarks/ha_overhead.py"
        run_in python benchmarks/ha_overhead.py "$@"
        ;;
    mypy)
        ensure
        STEP="mypy --strict custom_components/vigil"
        run_in python -m mypy --config-file tests/components/vigil/mypy.ini custom_components/vigil
        ;;
    clean)
        STEP="clean"
        root_mounted && fail "$ROOT has mounts under it"
        rm -rf --one-file-system "$ROOT" "$NATIVE_VENV"
        ;;
    *) STEP="usage"; fail "unknown command '$cmd' (ensure|run|test|bench|mypy|clean)" ;;
esac
