# Cairn agent: the script of the SSM Command document (cdk/lib/agent-command-document.ts).
# SSM passes the document parameters as environment variables (interpolationType ENV_VAR):
# SSM_operation, SSM_planId, SSM_taskToken, SSM_request. Nothing is substituted into this
# text, and every value is quoted where it is used. The document prepends
# CAIRN_AGENT_SHA256 (SHA-256 of the bundled agent), CAIRN_AGENT_KIND (node: an ES module run by
# the host's Node 22; sea: a single executable that needs no Node, docs/single-binary.md),
# CAIRN_AGENT_DOWNLOAD (where the aws:downloadContent step put it), CAIRN_AGENT_OBJECT (its file
# name) and AWS_DEFAULT_REGION.
#
# Contract with the agent: `cairn agent <operation> --plan-id ID [--request B64URL]` reads the
# task token from CAIRN_TASK_TOKEN, reports to Step Functions itself, and writes a line to the
# file named by CAIRN_REPORT_FILE once Step Functions accepted its SendTaskSuccess/Failure.
# If it exits without that line, this script reports Cairn.AgentCrashed with the exit code.
# Without a task token (a scheduled `archive`, the one-shot binlog push) nobody waits for a
# report: the agent's exit code is the command's status, and a push that keeps failing shows
# as archive lag (the ArchiveLagSeconds alarm).
#
# PostgreSQL plans with PITR archive through the server itself, not through this document:
#   archive_command = '/usr/local/bin/cairn --repo <plan repository> --password-file /etc/cairn/<plan>.passphrase wal-push %p'
#   restore_command = '/usr/local/bin/cairn --repo <plan repository> --password-file /etc/cairn/<plan>.passphrase wal-fetch %f "%p"'
# (the stack outputs PostgresArchiveCommand-<plan> and PostgresRestoreCommand-<plan> hold the exact lines).
set -uo pipefail
umask 022

CAIRN_HOME="${CAIRN_HOME:-/opt/cairn}"
CAIRN_LINK="${CAIRN_LINK:-/usr/local/bin/cairn}"
operation="${SSM_operation:-}"
plan_id="${SSM_planId:-}"
task_token="${SSM_taskToken:-}"
request="${SSM_request:-}"

# $1 as the inside of a JSON string: backslashes, quotes and the usual control characters escaped, others dropped.
json_text() {
  local s
  s="$(printf '%s' "$1" | tr -d '\000-\010\013\014\016-\037')"
  s="${s//\\/\\\\}"
  s="${s//\"/\\\"}"
  s="${s//$'\n'/\\n}"
  s="${s//$'\t'/\\t}"
  s="${s//$'\r'/\\r}"
  printf '%s' "$s"
}

report_failure() {
  # $1: Cairn.* error code, $2: cause. Without a task token (a console install) there is no one to tell.
  echo "cairn: $1: $2" >&2
  [ -n "$task_token" ] || return 0
  if command -v aws >/dev/null 2>&1; then
    # The token goes through stdin, never argv (any user of the host can read a process's command
    # line, and the token is the capability to report for the run); printf is a builtin, so no
    # process ever has it in its arguments.
    printf '{"taskToken":"%s","error":"%s","cause":"%s"}' "$task_token" "$(json_text "$1")" "$(json_text "$2")" |
      aws stepfunctions send-task-failure --cli-input-json file:///dev/stdin >/dev/null ||
      echo "cairn: could not report $1; the execution's heartbeat timeout will end it" >&2
  else
    echo "cairn: no AWS CLI on this host to report $1; the execution's heartbeat timeout will end it" >&2
  fi
}

fail() {
  report_failure Cairn.AgentCrashed "$1"
  exit "${2:-1}"
}

# SSM validated the parameters against the document's patterns already; check again, cheaply,
# so that this script is safe whoever runs it.
case "$operation" in
  backup | restore | verify | drill | install | archive) ;;
  *) fail "invalid operation parameter" 2 ;;
esac
[[ "$plan_id" =~ ^[a-z][a-z0-9-]{0,38}[a-z0-9]$ ]] || fail "invalid planId parameter" 2
[[ "$task_token" =~ ^[A-Za-z0-9+/=_-]{0,2048}$ ]] || fail "invalid taskToken parameter" 2
[[ "$request" =~ ^[A-Za-z0-9_-]*$ ]] || fail "invalid request parameter" 2
[[ "${CAIRN_AGENT_SHA256:-}" =~ ^[0-9a-f]{64}$ ]] || fail "the document names no agent checksum" 2
agent_kind="${CAIRN_AGENT_KIND:-node}"

# What runs the agent: the host's Node 22 with the bundle, or the single executable on its own.
if [ "$agent_kind" = sea ]; then
  agent_file=cairn
  machine="$(uname -m)"
  [ "$machine" = x86_64 ] ||
    fail "the agent is a linux-x64 single executable and this host is $machine: deploy the agent for Node (hosts then need Node.js 22)"
elif [ "$agent_kind" = node ]; then
  agent_file=cairn.mjs
  node_bin="$(command -v node || true)"
  [ -n "$node_bin" ] || fail "Node.js 22 is not installed on this host (the agent needs node on PATH)"
  "$node_bin" -e 'process.exit(Number(process.versions.node.split(".")[0]) >= 22 ? 0 : 1)' ||
    fail "the agent needs Node.js 22 or newer, this host has $("$node_bin" --version)"
else
  fail "the document names an unknown agent kind" 2
fi

# Install (every operation makes sure of it): the downloaded bundle, checked against the
# SHA-256 the document was built with, goes to a versioned directory; `current` and the
# stable `cairn` link point at it (the WAL archive_command and binlog follower use the link).
version_dir="$CAIRN_HOME/versions/$CAIRN_AGENT_SHA256"
bundle="$version_dir/$agent_file"
sha_of() { sha256sum "$1" | cut -d' ' -f1; }
if [ ! -f "$bundle" ] || [ "$(sha_of "$bundle")" != "$CAIRN_AGENT_SHA256" ]; then
  downloaded="${CAIRN_AGENT_DOWNLOAD:-}"
  [ -d "$downloaded" ] && downloaded="$downloaded/${CAIRN_AGENT_OBJECT:-$agent_file}"
  [ -f "$downloaded" ] || fail "the agent bundle was not downloaded to ${CAIRN_AGENT_DOWNLOAD:-?}"
  actual="$(sha_of "$downloaded")"
  [ "$actual" = "$CAIRN_AGENT_SHA256" ] || fail "agent bundle checksum mismatch: expected $CAIRN_AGENT_SHA256, got $actual; nothing was installed"
  mkdir -p "$version_dir" "$CAIRN_HOME/bin" || fail "cannot create $version_dir"
  cp "$downloaded" "$bundle.tmp" && chmod 0755 "$bundle.tmp" && mv -f "$bundle.tmp" "$bundle" || fail "cannot install the agent into $version_dir"
fi
if [ "$agent_kind" = sea ]; then
  agent=("$bundle")
  printf '#!/bin/sh\nexec %s "$@"\n' "$CAIRN_HOME/current/cairn" >"$CAIRN_HOME/bin/cairn.tmp"
else
  agent=("$node_bin" "$bundle")
  printf '#!/bin/sh\nexec %s %s "$@"\n' "$node_bin" "$CAIRN_HOME/current/cairn.mjs" >"$CAIRN_HOME/bin/cairn.tmp"
fi &&
  chmod 0755 "$CAIRN_HOME/bin/cairn.tmp" && mv -f "$CAIRN_HOME/bin/cairn.tmp" "$CAIRN_HOME/bin/cairn" &&
  ln -sfn "$version_dir" "$CAIRN_HOME/current" &&
  ln -sfn "$CAIRN_HOME/bin/cairn" "$CAIRN_LINK" || fail "cannot link the agent at $CAIRN_LINK"

if [ "$operation" = install ]; then
  echo "cairn: agent $CAIRN_AGENT_SHA256 installed at $version_dir, linked as $CAIRN_LINK"
  exit 0
fi

report_file="$(mktemp "${TMPDIR:-/tmp}/cairn-report.XXXXXX")" || fail "cannot create a temporary file"
# --json: the agent prints text unless told; SSM output and its log group get one JSON object a line.
args=(--json agent "$operation" --plan-id "$plan_id")
# One word with its option: a request may start with "-" (base64url), which must not read as an option of its own.
[ -n "$request" ] && args+=("--request=$request")
CAIRN_TASK_TOKEN="$task_token" CAIRN_REPORT_FILE="$report_file" "${agent[@]}" "${args[@]}"
code=$?
if [ -z "$task_token" ]; then
  rm -f "$report_file"
  exit "$code"
fi
if [ ! -s "$report_file" ]; then
  rm -f "$report_file"
  fail "cairn agent $operation exited with code $code before reporting to Step Functions" "$(( code == 0 ? 1 : code ))"
fi
rm -f "$report_file"
exit "$code"
