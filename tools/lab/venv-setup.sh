#!/bin/bash
# Runs inside the guest root (chroot) at build time: the Python virtual
# environment the guest runs, with this project's requirements (Debian's 3.11).
set -euo pipefail
[ -n "${PIP_INDEX_URL:-}" ] || unset PIP_INDEX_URL
rm -rf /opt/lab-venv
python3 -m venv /opt/lab-venv
/opt/lab-venv/bin/pip install -q -U pip wheel
# rtslib-fb: what cinder-rtstool (the lioadm target helper) imports.
/opt/lab-venv/bin/pip install -q -r /tmp/requirements.txt -r /tmp/test-requirements.txt rtslib-fb
/opt/lab-venv/bin/pip list
