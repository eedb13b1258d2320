#!/bin/bash
. "${TEST_SRCDIR}/${TEST_WORKSPACE}/testlib/lib.sh"
s=WORLD
assert_eq world "${s,,}"
pass
