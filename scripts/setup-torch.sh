#!/usr/bin/env bash
# Installs torch==2.11.0 (the libtorch that tch 0.24 links against) into a cached venv
# and points the repository's `.libtorch` link at it. Idempotent: a second run only checks.
#
#   TRIBUTARY_CACHE   cache root            (default: ~/.cache/tributary)
#   TORCH_VERSION     must match tch's pair (default: 2.11.0)
set -euo pipefail

TORCH_VERSION="${TORCH_VERSION:-2.11.0}"
CACHE="${TRIBUTARY_CACHE:-$HOME/.cache/tributary}"
VENV="$CACHE/venv-torch-$TORCH_VERSION"
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
LINK="$REPO/.libtorch"

say() { printf '[setup-torch] %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

installed_version() {
    "$VENV/bin/python" -W ignore -c 'import torch, sys; sys.stdout.write(torch.__version__.split("+")[0])' 2>/dev/null || true
}

if [[ "$(installed_version)" != "$TORCH_VERSION" ]]; then
    command -v python3 >/dev/null || die "python3 not found; install Python 3.9+ first"
    say "creating venv $VENV"
    mkdir -p "$CACHE"
    python3 -m venv "$VENV" || die "could not create a venv (on Debian: apt-get install python3-venv)"
    say "installing torch==$TORCH_VERSION from PyPI (about 4.6 GB with its CUDA libraries; cached in ~/.cache/pip)"
    if ! "$VENV/bin/python" -m pip install --progress-bar on --disable-pip-version-check \
        "torch==$TORCH_VERSION"; then
        die "pip could not install torch==$TORCH_VERSION: check that https://pypi.org is reachable and that the disk has ~10 GB free"
    fi
    [[ "$(installed_version)" == "$TORCH_VERSION" ]] || die "torch imported with an unexpected version: '$(installed_version)'"
else
    say "torch $TORCH_VERSION already installed in $VENV"
fi

TORCH_DIR="$("$VENV/bin/python" -W ignore -c 'import os, torch; print(os.path.dirname(torch.__file__))')"
[[ -f "$TORCH_DIR/lib/libtorch_cpu.so" ]] || die "no libtorch_cpu.so under $TORCH_DIR/lib: broken torch install, delete $VENV and rerun"
ln -sfn "$TORCH_DIR" "$LINK"
say "libtorch: $LINK -> $TORCH_DIR"

# transformers checks our Hugging Face export (worker/tests/hf_export.rs); numpy keeps torch quiet.
TRANSFORMERS_VERSION="${TRANSFORMERS_VERSION:-5.24.0}"
if ! "$VENV/bin/python" -W ignore -c "import transformers, sys; sys.exit(transformers.__version__ != '$TRANSFORMERS_VERSION')" 2>/dev/null; then
    say "installing transformers==$TRANSFORMERS_VERSION"
    "$VENV/bin/python" -m pip install --progress-bar on --disable-pip-version-check \
        "transformers==$TRANSFORMERS_VERSION" numpy \
        || die "pip could not install transformers==$TRANSFORMERS_VERSION"
fi
