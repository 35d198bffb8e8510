# Source this file, then `ensure_venv <dir> <requirements.txt> <log name>`: creates the
# virtualenv <dir> (with $PYTHON, default python3) if it is missing, and installs the pinned
# requirements into it whenever the file changes (a hash of it is kept in the virtualenv).
# Sets venv_python to the virtualenv's interpreter.
ensure_venv() {
  local venv=$1 requirements=$2 name=$3
  venv_python="$venv/bin/python"
  if [ ! -x "$venv_python" ]; then
    echo "$name: creating virtualenv $venv"
    "${PYTHON:-python3}" -m venv "$venv"
  fi
  local stamp="$venv/.requirements.sha256" wanted
  wanted=$(sha256sum "$requirements" | cut -d' ' -f1)
  if [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]; then
    echo "$name: installing $requirements"
    "$venv_python" -m pip install --quiet --disable-pip-version-check -r "$requirements"
    echo "$wanted" > "$stamp"
  fi
}
