#!/bin/bash
. "${TEST_SRCDIR}/${TEST_WORKSPACE}/testlib/lib.sh"
# With --test_env=E2E_GATE=FILE and no E2E_GATE_TARGET, this test waits for FILE (see lib.sh),
# holding its session open.
if [ -n "${E2E_GATE:-}" ] && [ -z "${E2E_GATE_TARGET:-}" ]; then
  e2e_wait_for_gate
fi
sleep 4
pass
