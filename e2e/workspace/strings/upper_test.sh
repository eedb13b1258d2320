#!/bin/bash
. "${TEST_SRCDIR}/${TEST_WORKSPACE}/testlib/lib.sh"
s=hello
assert_eq HELLO "${s^^}"
pass
