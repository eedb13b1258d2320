#!/bin/bash
. "${TEST_SRCDIR}/${TEST_WORKSPACE}/testlib/lib.sh"
a=task b=sharding
assert_eq task-sharding "${a}-${b}"
assert_contains "${a}${b}" ksh
pass
