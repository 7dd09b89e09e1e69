#!/bin/sh
# pip, reading the optional BuildKit build secrets when they are mounted (see docker/Dockerfile):
# ca_bundle (PEM bundle, e.g. for a TLS-inspecting proxy) and pip_conf (index settings).
set -eu
if [ -s /run/secrets/pip_conf ]; then export PIP_CONFIG_FILE=/run/secrets/pip_conf; fi
if [ -s /run/secrets/ca_bundle ]; then export PIP_CERT=/run/secrets/ca_bundle; fi
exec pip "$@"
