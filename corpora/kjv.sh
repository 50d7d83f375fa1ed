#!/bin/sh
# Writes the King James Bible (public domain; Debian's bible-kjv package) to corpora/kjv.txt as plain
# UTF-8, one verse per line. `bible -f` switches pretty-printing off, which prints each verse on one
# line after its reference ("Ge1:1 In the beginning ..."); the references are stripped because a
# language model would spend capacity memorising 31,102 book/chapter/verse labels.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
output="$here/kjv.txt"
if ! command -v bible >/dev/null 2>&1; then
    echo "error: the bible program is missing: install it with apt-get install bible-kjv" >&2
    exit 1
fi
temporary="$output.tmp.$$"
trap 'rm -f "$temporary"' EXIT
bible -f 'Gen1:1-Rev22:21' | sed -E 's/^[1-3]?[A-Za-z]+[0-9]+:[0-9]+ //' > "$temporary"
verses=$(wc -l < "$temporary")
if [ "$verses" -ne 31102 ]; then
    echo "error: expected 31102 verses from bible, got $verses" >&2
    exit 1
fi
mv "$temporary" "$output"
trap - EXIT
echo "wrote $output ($verses verses, $(wc -c < "$output") bytes)"
