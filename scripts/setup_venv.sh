# Sourced by run.sh and test.sh: make .venv and install the given requirements file.
# Re-installs only when the requirements file changed since the last install.
setup_venv() {
  local requirements="$1"
  local python="${PYTHON:-python3}"
  if [ ! -x .venv/bin/python ]; then
    echo "==> creating .venv with $($python --version)"
    "$python" -m venv .venv
  fi
  local stamp=".venv/.installed-$(basename "$requirements")"
  local digest
  digest=$(cat requirements*.txt | sha256sum | cut -d' ' -f1)
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$digest" ]; then
    echo "==> installing Python packages from $requirements"
    .venv/bin/pip install --quiet --upgrade pip
    .venv/bin/pip install --quiet -r "$requirements"
    echo "$digest" > "$stamp"
  fi
  .venv/bin/python scripts/compile_catalogues.py
}
