#!/bin/bash
. "${TEST_SRCDIR}/${TEST_WORKSPACE}/testlib/lib.sh"
assert_eq "a b c" "$(printf "c\na\nb\n" | sort | tr "\n" " " | sed "s/ $//")"
pass
