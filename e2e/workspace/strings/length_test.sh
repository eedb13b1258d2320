#!/bin/bash
. "${TEST_SRCDIR}/${TEST_WORKSPACE}/testlib/lib.sh"
s=sharding
assert_eq 8 "${#s}"
pass
