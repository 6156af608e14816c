#!/bin/sh
# The cloud's side of provisioning, on every `docker compose up` (it keeps what exists):
# the broker's ACL and the cloud's broker user and signing key, then each gateway named in
# FOGLINE_GATEWAYS: its broker credentials, its registered key and its identity file,
# written into that gateway's data volume (/identities/<id>/identity.json).
set -eu
fogline cloud gateway init --broker-dir /auth --broker-owner 1883:1883 \
  --password-out /secrets/cloud-broker-password
for gw in $FOGLINE_GATEWAYS; do
  if [ ! -s "/identities/$gw/identity.json" ]; then
    mkdir -p "/identities/$gw"
    fogline cloud gateway add "$gw" --broker-dir /auth --broker-owner 1883:1883 \
      --out "/identities/$gw/identity.json"
  fi
  chown -R 10001:10001 "/identities/$gw"  # the gateway's data volume: it runs as fogline
done
# What the cloud (fogline, uid 10001) reads; the broker's own files stay 1883's.
chown 10001:10001 /secrets /secrets/cloud-broker-password /secrets/cloud.key
