#!/usr/bin/env bash
# Provisioning, the PBX Manager plugin's job, from a shell.
#
#   deploy/provision.sh URL            show the two App objects to create on the PBX
#   deploy/provision.sh URL --apply    create or update `microsoft365-api` through the
#                                      PbxAdminApi of the connected App object (idempotent)
#
# URL is the instance base, e.g. https://ap.example.com/example.com/m365. --apply signs in
# like the admin page (AppLogin digest over a fresh challenge, so the password never crosses
# the wire) and needs the instance password in M365_ADMIN_PASSWORD (never on the command
# line, where other users could read it). Needs curl and sha256sum.
set -euo pipefail

url="${1:?usage: provision.sh URL [--apply]}"
url="${url%/}"
apply="${2:-}"

field() { # the string value of a top-level JSON field (the values used here hold no quotes)
    sed -n "s/.*\"$1\":\"\([^\"]*\)\".*/\1/p" | head -n 1
}

if [ "$apply" != "--apply" ]; then
    curl -fsS "$url/provisioning"
    echo
    exit 0
fi

password="${M365_ADMIN_PASSWORD:?set M365_ADMIN_PASSWORD to the instance password}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

challenge_json="$(curl -fsS -X POST "$url/admin/api/challenge")"
challenge="$(field challenge <<<"$challenge_json")"
app="$(field app <<<"$challenge_json")"
domain="$(field domain <<<"$challenge_json")"
# innovaphone AppLogin digest without info: app:domain:sip:guid:dn:challenge:password.
digest="$(printf '%s' "$app:$domain::::$challenge:$password" | sha256sum | cut -d' ' -f1)"

code="$(curl -sS -o "$work/login" -D "$work/headers" -w '%{http_code}' -X POST \
    -H 'content-type: application/json' \
    --data "{\"challenge\":\"$challenge\",\"digest\":\"$digest\"}" "$url/admin/api/login")"
if [ "$code" != 200 ]; then
    echo "login refused ($code): $(cat "$work/login")" >&2
    exit 1
fi
csrf="$(field csrf <"$work/login")"
cookie="$(sed -n 's/^[Ss]et-[Cc]ookie: *\(m365admin=[^;]*\).*/\1/p' "$work/headers" | head -n 1)"

code="$(curl -sS -o "$work/start" -w '%{http_code}' -X POST \
    -H "cookie: $cookie" -H "x-csrf-token: $csrf" "$url/provisioning")"
if [ "$code" != 202 ]; then
    echo "not started ($code): $(cat "$work/start")" >&2
    exit 1
fi

# The PBX answers on its own connection; the outcome shows up in GET /provisioning.
for _ in $(seq 1 60); do
    status="$(curl -fsS "$url/provisioning")"
    last="${status#*\"last\":}"
    case "$last" in
    *'"state":"done"'*)
        echo "microsoft365-api $(field action <<<"$last") (guid $(field guid <<<"$last"))"
        exit 0
        ;;
    *'"state":"failed"'*)
        echo "failed: $(field detail <<<"$last")" >&2
        exit 1
        ;;
    esac
    sleep 0.5
done
echo "no answer from the PBX within 30 s" >&2
exit 1
