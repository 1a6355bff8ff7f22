#!/bin/sh
# The DNS server and ACME CA a lab points at, started on loopback for a rehearsal:
#   PowerDNS (SQLite backend): DNS on 127.0.0.1:5300, its API on 127.0.0.1:8081, holding
#     the zone $ZONE (default lab.test) and the lab's reverse zone $REVERSE (default
#     0.77.10.in-addr.arpa, for the default subnet 10.77.0.0/24);
#   Pebble: ACME on https://127.0.0.1:14000/dir, validating through that PowerDNS.
# Everything lives in $DIR (default /var/lib/mailfleet-lab-services: not inside the lab's
# folder, which `lab down` removes); it prints the lab
# config to use and the API key's variable. `demo/lab-services.sh stop` stops both.
#
# Needs: pdns-server pdns-backend-sqlite3 pebble sqlite3 openssl.
set -eu
DIR=${DIR:-/var/lib/mailfleet-lab-services}
ZONE=${ZONE:-lab.test}
REVERSE=${REVERSE:-0.77.10.in-addr.arpa}

if [ "${1:-}" = stop ]; then
    for p in "$DIR"/pdns.pid "$DIR"/pebble.pid; do
        [ -f "$p" ] && kill "$(cat "$p")" 2>/dev/null || true
        rm -f "$p"
    done
    exit 0
fi

mkdir -p "$DIR"
chmod 755 "$DIR"
cd "$DIR"

# PowerDNS: a fresh database with the two zones, the API key kept in a file of its own.
[ -f api-key ] || od -An -tx1 -N16 /dev/urandom | tr -d ' \n' > api-key
chmod 600 api-key
if [ ! -f pdns.sqlite3 ]; then
    sqlite3 pdns.sqlite3 < /usr/share/doc/pdns-backend-sqlite3/schema.sqlite3.sql
fi
cat > pdns.conf <<EOF
launch=gsqlite3
gsqlite3-database=$DIR/pdns.sqlite3
local-address=127.0.0.1
local-port=5300
api=yes
api-key=$(cat api-key)
webserver=yes
webserver-address=127.0.0.1
webserver-port=8081
webserver-allow-from=127.0.0.0/8
socket-dir=$DIR
guardian=no
daemon=no
disable-syslog=yes
cache-ttl=0
query-cache-ttl=0
negquery-cache-ttl=0
zone-cache-refresh-interval=0
security-poll-suffix=
EOF
for z in "$ZONE" "$REVERSE"; do
    pdnsutil --config-dir="$DIR" list-zone "$z" >/dev/null 2>&1 ||
        pdnsutil --config-dir="$DIR" create-zone "$z" "ns1.$ZONE" >/dev/null
done
/usr/sbin/pdns_server --config-dir="$DIR" > pdns.log 2>&1 &
echo $! > pdns.pid

# Pebble: its HTTPS certificate from a root of its own (the lab config trusts that root).
if [ ! -f pebble-root.pem ]; then
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 3650 \
        -subj "/CN=mailfleet lab Pebble root" -keyout pebble-root.key -out pebble-root.pem 2>/dev/null
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -subj "/CN=localhost" -keyout pebble.key -out pebble.csr 2>/dev/null
    printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' > pebble.ext
    openssl x509 -req -in pebble.csr -CA pebble-root.pem -CAkey pebble-root.key \
        -CAcreateserial -days 3650 -extfile pebble.ext -out pebble.pem 2>/dev/null
fi
cat > pebble.json <<EOF
{"pebble": {"listenAddress": "127.0.0.1:14000", "managementListenAddress": "127.0.0.1:15000",
 "certificate": "$DIR/pebble.pem", "privateKey": "$DIR/pebble.key",
 "httpPort": 5002, "tlsPort": 5001, "ocspResponderURL": "",
 "externalAccountBindingRequired": false}}
EOF
PEBBLE_VA_NOSLEEP=1 PEBBLE_WFE_NONCEREJECT=0 pebble -config pebble.json \
    -dnsserver 127.0.0.1:5300 > pebble.log 2>&1 &
echo $! > pebble.pid

cat <<EOF
PowerDNS on 127.0.0.1:5300 (API http://127.0.0.1:8081), Pebble on https://127.0.0.1:14000/dir.
export MAILFLEET_PDNS_KEY=\$(cat $DIR/api-key)
and in the lab config:
[dns]
provider = "powerdns"
nameservers = ["127.0.0.1:5300"]
[dns.powerdns]
api_url = "http://127.0.0.1:8081"
api_key_env = "MAILFLEET_PDNS_KEY"
[tls]
acme = "https://127.0.0.1:14000/dir"
ca_roots = ["$DIR/pebble-root.pem"]
EOF
