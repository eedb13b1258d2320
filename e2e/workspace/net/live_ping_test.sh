#!/bin/bash
. "${TEST_SRCDIR}/${TEST_WORKSPACE}/testlib/lib.sh"
# Tagged "manual": never part of //..., runs only when named explicitly.
echo "pretending to ping a live host"
pass
