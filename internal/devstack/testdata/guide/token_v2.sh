#!/bin/sh
# The curl request of Microsoft's "Create an app to access Microsoft Defender
# XDR without a user" guide, with only the host changed (and --cacert instead
# of -k: the devstack has a real CA). Inputs come from the environment so the
# secret never appears on a command line.
exec curl -s -X POST -H "Content-Type:application/x-www-form-urlencoded" \
  -d "grant_type=client_credentials" -d "client_id=${CLIENT_ID}" \
  -d "scope=https://api.security.microsoft.com/.default" \
  --data-urlencode "client_secret=${CLIENT_SECRET}" \
  --cacert "${CA_FILE}" "${AUTHORITY}/${TENANT_ID}/oauth2/v2.0/token"
