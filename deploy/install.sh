#!/bin/sh
# Install kefu with what it needs at run time, and nothing else, into a new virtualenv.
# This is the container image's recipe (the Dockerfile runs it) and .ci/run runs it in CI, so the image's
# install steps are tested where no container engine runs. It is also the install step of docs/deploy.md.
#
#   sh deploy/install.sh VENV [SOURCE]      SOURCE: a kefu checkout (default: the one holding this script)
set -eu

venv=${1:?usage: sh deploy/install.sh VENV [SOURCE]}
src=$(cd "${2:-$(dirname "$0")/..}" && pwd)

python3 -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --upgrade pip
# Not editable: the image keeps no source tree. The `fast` extra is uvloop, the event loop the bench ran on.
"$venv/bin/python" -m pip install --quiet "$src[fast]"

# The installed kefu must run on its own, from outside the source tree (so that `bot` is imported from
# the virtualenv): its version, the bundled example checked, and the console's files packaged.
cd /
"$venv/bin/kefu" --version
"$venv/bin/kefu" check --config "$src/bot.yaml"
"$venv/bin/python" - <<'PY'
from importlib.resources import files

console = files("bot.console")
missing = [name for name in ("templates", "static") if not console.joinpath(name).is_dir()]
if missing:
    raise SystemExit(f"install.sh: the installed package lacks bot/console/{', '.join(missing)}")
PY
echo "install.sh: kefu installed in $venv"
