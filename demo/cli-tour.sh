#!/usr/bin/env bash
# A request's whole life from the command line, on a fresh database and the simulated cloud.
# Usage: demo/cli-tour.sh [path/to/mailfleet]
set -euo pipefail
bin=${1:-target/release/mailfleet}
db=$(mktemp -d)/tour.db
# You act as the account running this script. Four-eyes: another account approves; set
# APPROVER to one (the script runs it with sudo -u), or the big request is rejected instead.
mf() { "$bin" --db "$db" "$@"; }

echo "== a new database"
mf init

echo "== a small node, and a big one that needs approval"
small=$(mf request create --tenant acme --region dallas --plan ssd-1 --label node-us-east-045 --json | sed -n 's/.*"id": "\(.*\)".*/\1/p' | head -1)
big=$(mf request create --tenant acme --region eu-west-1 --plan ssd-16 --label big-eu-1 --json | sed -n 's/.*"id": "\(.*\)".*/\1/p' | head -1)
mf request list
echo "== the account that asked cannot approve its own request"
mf request approve "$big" || true
if [ -n "${APPROVER:-}" ]; then
  echo "== $APPROVER clears the big one"
  chmod -R a+rwX "$(dirname "$db")"
  sudo -u "$APPROVER" "$bin" --db "$db" request approve "$big" --reason "capacity plan Q4"
else
  echo "== no APPROVER set: the big one is rejected"
  mf request reject "$big" --reason "nobody else here to approve it"
fi
echo "== the engine runs until nothing can move"
mf work --until-idle 2>/dev/null
mf request list
mf node list
echo "== suspend, reactivate, deprovision"
mf request suspend "$small" --reason "tenant asked for a pause"
mf request reactivate "$small"
mf request deprovision "$small" --reason "no longer needed"
mf work --until-idle 2>/dev/null
mf request show "$small" | sed -n '/transitions:/,$p'
echo "== provider inventory against the store"
mf reconcile
echo "== the last events"
mf events --limit 8
