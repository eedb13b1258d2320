#!/bin/bash
. "${TEST_SRCDIR}/${TEST_WORKSPACE}/testlib/lib.sh"
# A test that must not finish before the harness says so passes --test_env=E2E_GATE=FILE: this
# test then waits (at most 5 minutes) for FILE to exist, holding its session open.
if [ -n "${E2E_GATE:-}" ]; then
  for _ in $(seq 1 3000); do
    [ -e "${E2E_GATE}" ] && break
    sleep 0.1
  done
  [ -e "${E2E_GATE}" ] || fail "the gate ${E2E_GATE} never opened"
fi
sleep 4
pass
