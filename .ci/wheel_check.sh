#!/usr/bin/env bash
# CI: build a wheel of this checkout and check that a plain (non-editable) install of it works.
#
#   .ci/wheel_check.sh [VENV]     # VENV: where the fresh environment goes [default: a temp folder]
#
# The wheel is built from a copy of the tracked (and untracked, not ignored) files, so no stale
# build/ folder can slip files into it. It is installed into a new virtual environment (torch and
# torchvision first, pinned as in the README; every other dependency as the wheel declares it),
# and then, from an empty folder, the README's first session runs: `msurg shrink resnet18` and
# `msurg grow`, whose fidelity check must read its images from the installed package.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1
unset MODELSURGERY_FIXTURES
start=$SECONDS
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
venv=${1:-$work/venv}

mkdir "$work/src" "$work/dist" "$work/run"
git ls-files -z --cached --others --exclude-standard | while IFS= read -r -d '' f; do
  if [ -e "$f" ]; then cp --parents "$f" "$work/src"; fi   # a tracked file deleted here is skipped
done
python3 -m venv --clear "$venv"
"$venv/bin/pip" install -q --upgrade pip >/dev/null 2>&1 || true
"$venv/bin/pip" install -q torch==2.14.1 torchvision==0.29.1 2> >(grep -v "^WARNING: Location" >&2)
"$venv/bin/pip" wheel -q --no-deps -w "$work/dist" "$work/src" 2> >(grep -v "^WARNING: Location" >&2)
wheel=$(ls "$work/dist"/modelsurgery-*.whl)
"$venv/bin/pip" install -q "$wheel" 2> >(grep -v "^WARNING: Location" >&2)

cd "$work/run"
# The package must come from the wheel, with its data, and without the repository's fixtures/.
"$venv/bin/python" - <<'PY'
import pathlib, sys
import modelsurgery
from modelsurgery.train.data import fixture_path, load_fidelity_images
where = pathlib.Path(modelsurgery.__file__).resolve()
assert where.is_relative_to(pathlib.Path(sys.prefix).resolve()), f"modelsurgery imported from {where}"
assert load_fidelity_images() is not None, "the wheel lacks modelsurgery/data/fidelity.safetensors"
assert not fixture_path().is_file(), f"{fixture_path()} is reachable: the check would not be honest"
print(f"wheel check: modelsurgery {modelsurgery.__version__} from {where.parent}")
PY
"$venv/bin/msurg" shrink resnet18 --out s.safetensors
"$venv/bin/msurg" grow s.safetensors | tee grow.txt
grep -q "^fidelity on 8 fixture images" grow.txt
test -f s-target.safetensors
# --calibrate fixture needs the repository's fixtures/: one line, exit 1, and nothing written.
if "$venv/bin/msurg" grow s.safetensors --out c.safetensors --calibrate fixture 2> err.txt; then
  echo "wheel check: --calibrate fixture should fail outside a checkout" >&2; exit 1
fi
grep -q "^error: 'fixture' names the Fashion-MNIST subset" err.txt && test "$(wc -l < err.txt)" -eq 1
test ! -e c.safetensors
echo "wheel check passed in $((SECONDS - start)) s"
