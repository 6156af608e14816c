#!/bin/sh
# Runs in the edge broker's container before mosquitto: one password per user, made once,
# kept in the site's secrets volume (the gateway and the devices read theirs from there).
set -eu
mkdir -p /mosquitto/auth /secrets
for user in devices gateway; do
  if [ ! -s "/secrets/$user" ]; then
    umask 077
    head -c 18 /dev/urandom | base64 | tr -d '\n/+=' > "/secrets/$user"
  fi
done
: > /mosquitto/auth/passwords
for user in devices gateway; do
  mosquitto_passwd -b /mosquitto/auth/passwords "$user" "$(cat "/secrets/$user")"
done
chown mosquitto:mosquitto /mosquitto/auth/passwords
chmod 600 /mosquitto/auth/passwords
chmod 644 /secrets/devices /secrets/gateway  # read by the gateway's and devices' containers
exec mosquitto -c /mosquitto/config/mosquitto.conf
