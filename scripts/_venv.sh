# Shared by scripts/run and scripts/test: make sure a Python 3.11+ virtualenv exists at $1.
# shellcheck shell=bash
ensure_venv() {
  local venv=$1
  local python=${PYTHON:-python3}
  if ! command -v "$python" >/dev/null 2>&1; then
    echo "python3 is missing; on Debian: apt-get install python3 python3-venv" >&2
    return 1
  fi
  if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    echo "the appliance needs Python 3.11 or newer; $python is $("$python" --version 2>&1)" >&2
    return 1
  fi
  if [ ! -x "$venv/bin/python" ]; then
    if ! "$python" -m venv "$venv" 2>/dev/null; then
      rm -rf "$venv"
      if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "installing python3-venv (Debian ships venv separately)"
        apt-get install -y -qq python3-venv >/dev/null || { apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null; }
        "$python" -m venv "$venv"
      else
        echo "cannot create a virtualenv; on Debian: apt-get install python3-venv" >&2
        return 1
      fi
    fi
    "$venv/bin/python" -m pip install --quiet --upgrade pip
  fi
}

# True when anything the install is built from is newer than the stamp file $1.
sources_changed() {
  local stamp=$1
  [ ! -f "$stamp" ] && return 0
  [ -n "$(find setup.cfg pyproject.toml appliance templates static -newer "$stamp" -print -quit)" ]
}

# The test virtualenv (./.venv-test, or $APPLIANCE_TEST_VENV): the appliance installed
# editable with its test extras. Prints nothing when it is already current.
ensure_test_venv() {
  TEST_VENV=${APPLIANCE_TEST_VENV:-.venv-test}
  ensure_venv "$TEST_VENV"
  if [ ! -f "$TEST_VENV/.installed" ] || [ -n "$(find setup.cfg pyproject.toml -newer "$TEST_VENV/.installed" -print -quit)" ]; then
    echo "installing the appliance with its test extras into $TEST_VENV ..."
    "$TEST_VENV/bin/python" -m pip install --quiet -e ".[test,postgres]"
    touch "$TEST_VENV/.installed"
  fi
}
