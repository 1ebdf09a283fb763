#!/usr/bin/env bash
# A user's install, checked as CI: a fresh virtualenv, torch 2.13.0 first (the CPU wheel), then
# amc-mobile itself NON-editable and WITHOUT extras through the lock, then the CLI run from another
# directory (so nothing may depend on the checkout: shipped tables and teachers are package data).
#
#   bash .ci/user_install.sh            # PYTHON=python3.11 by default; KEEP=1 keeps the temp dir
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
PYTHON="${PYTHON:-python3.11}"
work="$(mktemp -d "${TMPDIR:-/tmp}/amc-user-install.XXXXXX")"
if [ "${KEEP:-0}" != 1 ]; then trap 'rm -rf "$work"' EXIT; fi
say() { printf '\n== user install: %s\n' "$*"; }

say "source copy (tracked + untracked, not ignored) in $work/src"
mkdir -p "$work/src"
if git -C "$repo" rev-parse --git-dir >/dev/null 2>&1; then
    (cd "$repo" && git ls-files -z --cached --others --exclude-standard \
        | while IFS= read -r -d '' f; do [ -e "$f" ] && printf '%s\0' "$f"; done \
        | tar --null -T - -cf -) | tar -C "$work/src" -xf -
else
    cp -a "$repo/." "$work/src/"
fi

say "fresh virtualenv ($PYTHON), torch==2.13.0, then 'pip install -c requirements/lock.txt .'"
"$PYTHON" -m venv "$work/venv"
pip="$work/venv/bin/pip"
# shellcheck disable=SC2086  # TORCH_PIP_ARGS: extra pip arguments for torch alone (see the Makefile)
"$pip" install -q ${TORCH_PIP_ARGS:-} torch==2.13.0
"$pip" install -q -c "$work/src/requirements/lock.txt" "$work/src"
bin="$work/venv/bin"

# From an unrelated directory, with a private per-user store; the checkout is gone from sys.path.
mkdir -p "$work/elsewhere" "$work/home"
cd "$work/elsewhere"
export AMC_MOBILE_HOME="$work/home"
rm -rf "$work/src"   # a user has no checkout: everything must come from the installed package

say "installed where?"
"$bin/python" - <<'PY'
import amc_mobile, sys
path = amc_mobile.__file__
print(path)
if "site-packages" not in path:
    sys.exit(f"amc_mobile imported from {path}, not from the installed package")
PY

say "amc-mobile --help";   "$bin/amc-mobile" --help >/dev/null
say "amc-mobile --version"; "$bin/amc-mobile" --version
say "amc-bench --version";  "$bin/amc-bench" --version
say "amc-mobile (no arguments) prints help"; "$bin/amc-mobile" | grep -q "Usage:"
say "amc-mobile models";   "$bin/amc-mobile" models
say "amc-bench devices";   "$bin/amc-bench" devices
say "a usage error is one line with exit 2"
set +e; err="$("$bin/amc-mobile" train --no-such-option 2>&1 >/dev/null)"; code=$?; set -e
if [ "$code" != 2 ] || [ "$(printf '%s\n' "$err" | grep -c .)" != 1 ]; then
    echo "expected one line and exit 2, got exit $code:"; printf '%s\n' "$err"; exit 1
fi
say "3-episode search on the shipped teacher"
"$bin/amc-mobile" search --checkpoint zoo:mobilenet_v1-fmnist --device host-cpu --latency-budget 50% \
    --episodes 3 --out "$work/elsewhere/search"
test -s "$work/elsewhere/search/policy.json"
say "OK (search outputs in the temp dir, per-user store in AMC_MOBILE_HOME=$work/home)"
