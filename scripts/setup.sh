#!/usr/bin/env bash
# One command that installs everything tunecraft needs on a fresh clone:
#   bash scripts/setup.sh
# It creates .venv (override with VENV=path), installs the CPU build of torch 2.13.0 first
# (so that the pinned range installs nothing more), then tunecraft with every extra.
# Environment knobs:
#   VENV=path            virtual environment to create or reuse (default .venv)
#   PYTHON=python3.11    interpreter used to create it
#   TORCH_SPEC=...       torch requirement to install first (default torch==2.13.0)
#   WITH_FLUIDR3=1       also install Debian's FluidR3_GM soundfont (145 MB)
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}

# Debian packages: tinysoundfont's wheel requires pyaudio, which compiles against portaudio.
debs=(portaudio19-dev)
[ "${WITH_FLUIDR3:-0}" = "1" ] && debs+=(fluid-soundfont-gm)
missing=()
for p in "${debs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  if command -v apt-get >/dev/null 2>&1; then
    SUDO=""; [ "$(id -u)" != "0" ] && SUDO="sudo"
    echo "setup: installing Debian packages: ${missing[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "setup: please install ${missing[*]} (or portaudio headers) with your system package manager" >&2
    exit 1
  fi
fi

# pip, minus the warnings some machines print for configured-but-absent local indexes.
pip_install() {
  "$VENV/bin/python" -m pip install -q "$@" 2>&1 | { grep -v "^WARNING: Location '.*' is ignored" || true; }
  return "${PIPESTATUS[0]}"
}

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
pip_install --upgrade pip
pip_install "$TORCH_SPEC"
pip_install -e ".[all,dev]"
"$VENV/bin/python" -c "import tunecraft, torch; print(f'setup: tunecraft {tunecraft.__version__} with torch {torch.__version__} in $VENV')"
