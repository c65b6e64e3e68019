#!/usr/bin/env sh
# Install the Debian packages real-component tests need, when missing and allowed (root, apt-get),
# as CI runs; elsewhere say which tests will be skipped and how to enable them.
# Usage: tools/ensure-packages.sh COMMAND=PACKAGE[,PACKAGE...] ...
set -u
missing=""
for pair in "$@"; do
    command_name=${pair%%=*}
    packages=$(echo "${pair#*=}" | tr ',' ' ')
    command -v "$command_name" >/dev/null 2>&1 || missing="$missing $packages"
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing with apt-get:$missing"
    export DEBIAN_FRONTEND=noninteractive
    # shellcheck disable=SC2086
    apt-get install -y --no-install-recommends $missing >/dev/null 2>&1 || {
        apt-get update >/dev/null 2>&1
        # shellcheck disable=SC2086
        apt-get install -y --no-install-recommends $missing >/dev/null || {
            echo "could not install:$missing" >&2
            exit 1
        }
    }
else
    echo "missing:$missing — the tests that need them are skipped (run 'make test' as root, or apt-get install$missing)"
fi
