#!/usr/bin/env bash
# Makes sure PostgreSQL (5432) and Redis (6379) answer on 127.0.0.1 before tests run.
# Uses ../shared/services.sh when it exists; otherwise says how to start them.
set -u
up() { (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null; }
if up 5432 && up 6379; then exit 0; fi
here=$(cd "$(dirname "$0")/.." && pwd)
if [ -x "$here/../shared/services.sh" ] || [ -f "$here/../shared/services.sh" ]; then
  bash "$here/../shared/services.sh"
fi
if up 5432 && up 6379; then exit 0; fi
echo "PostgreSQL (127.0.0.1:5432) or Redis (127.0.0.1:6379) is not answering." >&2
echo "Start them with: docker compose up -d postgres redis" >&2
exit 1
