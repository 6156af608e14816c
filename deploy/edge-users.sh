#!/bin/sh
# Runs in the edge broker's container before mosquitto: one password per user, made once,
# kept in the site's secrets volume (the gateway and the devices read theirs from there).
#
# Users (deploy/edge-acl): `gateway`; `devices`, the simulated fleet; and one per real device
# named in EDGE_DEVICES, e.g. EDGE_DEVICES="line-1/m-01 line-1/m-02" (its line or farm, a
# slash, its machine or plot, as in its topics). A device's password is kept in
# /secrets/devices.d/<name> (0600: hand it to the device, e.g. `docker compose exec`).
# The paths can be moved with EDGE_AUTH_DIR, EDGE_SECRETS_DIR and EDGE_CONF.
set -eu
auth="${EDGE_AUTH_DIR:-/mosquitto/auth}"
secrets="${EDGE_SECRETS_DIR:-/secrets}"
conf="${EDGE_CONF:-/mosquitto/config/mosquitto.conf}"
devices="${EDGE_DEVICES:-}"
for name in $devices; do
  case "$name" in
    */*/* | /* | */ | *[!A-Za-z0-9._/-]*) bad=1 ;;
    */*) bad=0 ;;
    *) bad=1 ;;
  esac
  if [ "$bad" = 1 ]; then
    echo "edge-users.sh: EDGE_DEVICES: '$name' is not <line>/<machine> (letters, digits, '.', '_', '-' and one '/'), e.g. line-1/m-01" >&2
    exit 2
  fi
done
mkdir -p "$auth" "$secrets/devices.d"
umask 077
secret() {  # the password kept in file $1, made on first use
  if [ ! -s "$1" ]; then
    mkdir -p "$(dirname "$1")"
    head -c 18 /dev/urandom | base64 | tr -d '\n/+=' > "$1"
  fi
}
: > "$auth/passwords"
for user in devices gateway; do
  secret "$secrets/$user"
  mosquitto_passwd -b "$auth/passwords" "$user" "$(cat "$secrets/$user")"
done
for name in $devices; do
  secret "$secrets/devices.d/$name"
  mosquitto_passwd -b "$auth/passwords" "$name" "$(cat "$secrets/devices.d/$name")"
done
chown mosquitto:mosquitto "$auth/passwords" 2>/dev/null || true  # no such user outside the image
chmod 600 "$auth/passwords"
chmod 644 "$secrets/devices" "$secrets/gateway"  # read by the gateway's and devices' containers
exec mosquitto -c "$conf"
