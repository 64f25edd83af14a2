# Sourced by scripts/demo and scripts/test: makes .venv and installs splitwatch into it,
# again only when pyproject.toml changed since the last install.
set -euo pipefail
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    echo "splitwatch: creating .venv with $($PY --version)" >&2
    "$PY" -m venv .venv
fi
stamp=.venv/.splitwatch-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    echo "splitwatch: installing dependencies into .venv (first run takes a minute)" >&2
    .venv/bin/python -m pip install -q --disable-pip-version-check -U pip
    .venv/bin/python -m pip install -q --disable-pip-version-check -e ".[server,dev]"
    touch "$stamp"
fi
export PATH="$PWD/.venv/bin:$PATH"
