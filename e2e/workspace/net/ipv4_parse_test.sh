#!/bin/bash
. "${TEST_SRCDIR}/${TEST_WORKSPACE}/testlib/lib.sh"
IFS=. read -r a b c d <<< "192.168.10.1"
assert_eq "192 168 10 1" "$a $b $c $d"
pass
