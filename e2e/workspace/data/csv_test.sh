#!/bin/bash
. "${TEST_SRCDIR}/${TEST_WORKSPACE}/testlib/lib.sh"
line="id,name,score"
IFS=, read -r f1 f2 f3 <<< "$line"
assert_eq name "$f2"
assert_eq score "$f3"
pass
