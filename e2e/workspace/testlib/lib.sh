# Shared helper for the e2e sh_test targets. Every test starts with
#
#   . "${TEST_SRCDIR}/${TEST_WORKSPACE}/testlib/lib.sh"
#
# Loading it records that the test really executed: if E2E_SIDE_FILE is set
# (the harness passes --test_env=E2E_SIDE_FILE=/abs/path), one line
#
#   <label> <pid> <unix time with nanoseconds>
#
# is appended to that file with a single short write (O_APPEND, atomic for
# concurrent writers). A remote or local cache hit does not execute the test,
# so it adds no line. When E2E_SIDE_FILE is unset or empty nothing is written.
# If the append fails (e.g. the sandbox makes the directory read-only: pass
# --sandbox_writable_path=<its directory>) the test fails loudly instead of
# silently skewing the execution count.

e2e_label() {
  if [ -n "${TEST_TARGET:-}" ]; then
    printf '%s\n' "${TEST_TARGET}"
  else
    # TEST_BINARY is e.g. "math/add_test" -> "//math:add_test"
    _b="${TEST_BINARY#./}"
    printf '//%s:%s\n' "$(dirname "${_b}")" "$(basename "${_b}")"
  fi
}

if [ -n "${E2E_SIDE_FILE:-}" ]; then
  echo "$(e2e_label) $$ $(date +%s.%N)" >> "${E2E_SIDE_FILE}" || {
    echo "FAIL: cannot append to E2E_SIDE_FILE=${E2E_SIDE_FILE}" \
      "(missing --sandbox_writable_path?)" >&2
    exit 1
  }
fi

fail() {
  echo "FAIL: $*" >&2
  exit 1
}

assert_eq() {  # assert_eq EXPECTED ACTUAL [MESSAGE]
  [ "$1" = "$2" ] || fail "${3:-assert_eq}: expected '$1', got '$2'"
}

assert_ne() {  # assert_ne UNEXPECTED ACTUAL [MESSAGE]
  [ "$1" != "$2" ] || fail "${3:-assert_ne}: did not expect '$1'"
}

assert_contains() {  # assert_contains HAYSTACK NEEDLE
  case "$1" in
    *"$2"*) ;;
    *) fail "'$1' does not contain '$2'" ;;
  esac
}

pass() {
  echo "PASS: $(e2e_label)"
  exit 0
}

# A test the harness holds open: with --test_env=E2E_GATE=FILE, the test named by
# --test_env=E2E_GATE_TARGET=LABEL waits (at most 5 minutes) for FILE to exist before it goes
# on; //slow:sleep4_test also waits when no target is named.
e2e_wait_for_gate() {
  for _ in $(seq 1 3000); do
    [ -e "${E2E_GATE}" ] && return 0
    sleep 0.1
  done
  fail "the gate ${E2E_GATE} never opened"
}

if [ -n "${E2E_GATE:-}" ] && [ "${E2E_GATE_TARGET:-}" = "$(e2e_label)" ]; then
  e2e_wait_for_gate
fi
