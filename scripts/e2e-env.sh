#!/usr/bin/env bash
# External services for the task-sharding end-to-end tests and the demo.
#
# Usage:
#   scripts/e2e-env.sh install
#       Install Bazel 4.2.3 (Debian bazel-bootstrap + bazel-rules-java) and nginx
#       if any of them is missing. Runs `apt-get update` only when something is
#       missing. Quiet on success; on failure prints apt's output and exits 1.
#   scripts/e2e-env.sh nginx-start DIR PORT
#       Write DIR/nginx.conf (WebDAV on 127.0.0.1:PORT, cache in DIR/cache),
#       start nginx in the background (pid in DIR/nginx.pid), wait until a
#       PUT+GET round trip works, print the cache URL http://127.0.0.1:PORT on
#       stdout (the only line on stdout). Idempotent: if the nginx recorded in
#       DIR is already running and answering on PORT, just prints the URL.
#   scripts/e2e-env.sh nginx-stop DIR
#       Stop the nginx started for DIR (TERM, then KILL after 10 s). Succeeds
#       if nothing is running.
#
# Exit status: 0 on success, 1 on failure (message on stderr), 2 on bad usage.
# Safe to call from Rust via std::process::Command::output(): nginx does not
# inherit the script's stdout/stderr (its output goes to DIR/nginx.out).
set -euo pipefail

PACKAGES=(bazel-bootstrap bazel-rules-java nginx)

die() {
  echo "e2e-env: $*" >&2
  exit 1
}

usage() {
  sed -n '2,/^set -euo/p' "$0" | sed -e '/^set -euo/d' -e 's/^# \{0,1\}//' >&2
  exit 2
}

# ---------------------------------------------------------------- install ---

cmd_install() {
  local missing=() p
  for p in "${PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
      missing+=("$p")
    fi
  done
  [ "${#missing[@]}" -eq 0 ] && return 0

  local sudo=()
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || die "need root (or sudo) to install: ${missing[*]}"
    sudo=(sudo -n)
  fi
  local log
  log="$(mktemp "${TMPDIR:-/tmp}/e2e-env-install.XXXXXX")"
  # Wait for a concurrent apt/dpkg run instead of failing on its lock.
  local apt=(env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 -q -y)
  if ! "${sudo[@]}" "${apt[@]}" update >"$log" 2>&1 ||
     ! "${sudo[@]}" "${apt[@]}" install --no-install-recommends "${missing[@]}" >>"$log" 2>&1; then
    cat "$log" >&2
    rm -f "$log"
    die "installing ${missing[*]} failed"
  fi
  rm -f "$log"
  for p in "${missing[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' ||
      die "package $p still not installed"
  done
}

# ------------------------------------------------------------------ nginx ---

nginx_bin() {
  local b
  for b in "$(command -v nginx 2>/dev/null || true)" /usr/sbin/nginx; do
    [ -n "$b" ] && [ -x "$b" ] && { echo "$b"; return 0; }
  done
  die "nginx not found (run: $0 install)"
}

# Prints the pid of the nginx master recorded in DIR if it is alive.
running_pid() {
  local dir="$1" pid
  [ -s "$dir/nginx.pid" ] || return 1
  pid="$(tr -dc '0-9' <"$dir/nginx.pid")"
  [ -n "$pid" ] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  grep -q nginx "/proc/$pid/cmdline" 2>/dev/null || return 1
  echo "$pid"
}

# Succeeds if something accepts TCP connections on 127.0.0.1:PORT.
port_open() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# PUT then GET a small object; succeeds if the server on PORT stores it under
# DIR/cache (so it is our nginx, not another server on that port) and returns it.
probe() {
  local port="$1" dir="$2" body="probe-$$-$RANDOM" ok=1
  if command -v curl >/dev/null 2>&1; then
    curl -fsS -m 2 -X PUT --data-binary "$body" "http://127.0.0.1:$port/e2e-probe" >/dev/null 2>&1 || return 1
    [ "$(curl -fsS -m 2 "http://127.0.0.1:$port/e2e-probe" 2>/dev/null)" = "$body" ] || ok=0
  else
    local resp
    resp="$(
      exec 3<>"/dev/tcp/127.0.0.1/$port" || exit 1
      printf 'PUT /e2e-probe HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Length: %d\r\n\r\n%s' "${#body}" "$body" >&3
      cat <&3
    )" 2>/dev/null || return 1
    case "$resp" in HTTP/1.?\ 20[14]*) ;; *) return 1 ;; esac
    resp="$(
      exec 3<>"/dev/tcp/127.0.0.1/$port" || exit 1
      printf 'GET /e2e-probe HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' >&3
      cat <&3
    )" 2>/dev/null || return 1
    case "$resp" in HTTP/1.?\ 200*"$body") ;; *) ok=0 ;; esac
  fi
  [ "$(cat "$dir/cache/e2e-probe" 2>/dev/null)" = "$body" ] || ok=0
  rm -f "$dir/cache/e2e-probe"
  [ "$ok" -eq 1 ]
}

cmd_nginx_start() {
  [ "$#" -eq 2 ] || usage
  local dir="$1" port="$2"
  case "$port" in '' | *[!0-9]*) die "PORT must be a number: $port" ;; esac
  [ "$port" -ge 1 ] && [ "$port" -le 65535 ] || die "PORT out of range: $port"
  mkdir -p "$dir"
  dir="$(cd "$dir" && pwd -P)"
  local url="http://127.0.0.1:$port"

  if running_pid "$dir" >/dev/null; then
    probe "$port" "$dir" || die "nginx already running for $dir but not answering on port $port (stop it first)"
    echo "$url"
    return 0
  fi

  local nginx
  nginx="$(nginx_bin)"
  port_open "$port" && die "port $port on 127.0.0.1 is already in use"
  mkdir -p "$dir/cache" "$dir/tmp"
  local user_line=""
  [ "$(id -u)" -eq 0 ] && user_line="user root root;"
  cat >"$dir/nginx.conf" <<EOF
# Generated by scripts/e2e-env.sh: WebDAV HTTP cache for bazel --remote_cache.
$user_line
worker_processes 1;
daemon off;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 256; }
http {
  access_log $dir/access.log;
  client_body_temp_path $dir/tmp/client_body;
  proxy_temp_path $dir/tmp/proxy;
  fastcgi_temp_path $dir/tmp/fastcgi;
  uwsgi_temp_path $dir/tmp/uwsgi;
  scgi_temp_path $dir/tmp/scgi;
  server {
    listen 127.0.0.1:$port;
    location / {
      root $dir/cache;
      dav_methods PUT DELETE;
      create_full_put_path on;
      dav_access user:rw group:rw all:r;
      client_max_body_size 0;
    }
  }
}
EOF
  rm -f "$dir/nginx.pid"
  # Own session so a Ctrl-C in the caller's terminal does not hit it; no
  # inherited stdio so Command::output() in the caller does not block on it.
  setsid "$nginx" -c "$dir/nginx.conf" -p "$dir/" </dev/null >>"$dir/nginx.out" 2>&1 &
  local pid=$!
  local i
  for ((i = 0; i < 100; i++)); do
    if ! kill -0 "$pid" 2>/dev/null; then
      wait "$pid" 2>/dev/null || true
      tail -n 20 "$dir/error.log" "$dir/nginx.out" >&2 2>/dev/null || true
      die "nginx exited during startup (port $port in use?)"
    fi
    if probe "$port" "$dir"; then
      # nginx writes the pid file itself; make sure it is there for nginx-stop.
      [ -s "$dir/nginx.pid" ] || echo "$pid" >"$dir/nginx.pid"
      echo "$url"
      return 0
    fi
    sleep 0.1
  done
  kill "$pid" 2>/dev/null || true
  tail -n 20 "$dir/error.log" "$dir/nginx.out" >&2 2>/dev/null || true
  die "nginx did not answer on $url within 10 s"
}

cmd_nginx_stop() {
  [ "$#" -eq 1 ] || usage
  local dir="$1" pid i
  [ -d "$dir" ] || return 0
  pid="$(running_pid "$dir")" || { rm -f "$dir/nginx.pid"; return 0; }
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 100; i++)); do
    kill -0 "$pid" 2>/dev/null || { rm -f "$dir/nginx.pid"; return 0; }
    sleep 0.1
  done
  # nginx-start runs nginx under setsid, so the master's pid is also the
  # process group of its workers: kill the whole group.
  kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
  rm -f "$dir/nginx.pid"
}

main() {
  [ "$#" -ge 1 ] || usage
  local cmd="$1"
  shift
  case "$cmd" in
    install) [ "$#" -eq 0 ] || usage; cmd_install ;;
    nginx-start) cmd_nginx_start "$@" ;;
    nginx-stop) cmd_nginx_stop "$@" ;;
    -h | --help | help) usage ;;
    *) usage ;;
  esac
}

main "$@"
