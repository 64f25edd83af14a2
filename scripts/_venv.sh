# Sourced by scripts/demo and scripts/test: makes .venv and installs splitwatch into it,
# again only when pyproject.toml or requirements.lock changed since the last install.
# Third-party packages come from requirements.lock (scripts/lock), pinned and hash-checked, so
# a fresh machine runs what CI tested; splitwatch itself is then installed editable on top.
set -euo pipefail
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    echo "splitwatch: creating .venv with $($PY --version)" >&2
    "$PY" -m venv .venv
fi
stamp=.venv/.splitwatch-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ requirements.lock -nt "$stamp" ]; then
    echo "splitwatch: installing dependencies into .venv (first run takes a minute)" >&2
    .venv/bin/python -m pip install -q --disable-pip-version-check -U pip
    .venv/bin/python -m pip install -q --disable-pip-version-check --require-hashes -r requirements.lock
    .venv/bin/python -m pip install -q --disable-pip-version-check --no-deps -e .
    touch "$stamp"
fi
export PATH="$PWD/.venv/bin:$PATH"
