#!/bin/sh
# Print the path of a working Python VERSION (e.g. 3.12) interpreter, or fail.
# Looks on PATH first, then in pyenv's versions (whose shims answer only for
# the versions `pyenv global` names).
set -u
version=${1:?usage: find-python.sh X.Y}
for candidate in "python$version" \
    "${PYENV_ROOT:-$HOME/.pyenv}"/versions/"$version".*/bin/python"$version"; do
    if path=$(command -v "$candidate" 2>/dev/null) &&
        [ "$("$path" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)" = "$version" ]; then
        echo "$path"
        exit 0
    fi
done
echo "find-python.sh: no working python$version (install it, e.g. pyenv install $version)" >&2
exit 1
