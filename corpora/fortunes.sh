#!/bin/sh
# Writes Debian's fortune cookies (the `fortunes` package: about 2.5 MB of English quotations, jokes and
# poems in /usr/share/games/fortunes) to corpora/fortunes.txt as plain UTF-8: the second corpus of the
# distillation sweep (tools/sweep). The data files are read in name order; the `%` line that ends each
# fortune becomes one empty line (so quotations stay apart without a marker the model must learn), and
# overstriking (`X\bX` bold, `_\bX` underline, from old terminals) is reduced to the plain letter.
# `ascii-art` is left out: it holds pictures, not text.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
output="$here/fortunes.txt"
source=${FORTUNES_DIR:-/usr/share/games/fortunes}
if [ ! -f "$source/fortunes" ]; then
    echo "error: the fortune data files are missing from $source: install them with apt-get install fortunes" >&2
    exit 1
fi
temporary="$output.tmp.$$"
trap 'rm -f "$temporary"' EXIT
: > "$temporary"
count=0
for file in $(ls "$source" | LC_ALL=C sort); do
    case "$file" in *.dat|*.u8|ascii-art) continue ;; esac
    [ -f "$source/$file" ] && [ ! -L "$source/$file" ] || continue
    # Overstrike pairs first (any byte, backspace), then the remaining control characters but tab.
    LC_ALL=C sed 's/.\x08//g' "$source/$file" | LC_ALL=C tr -d '\000-\010\013-\037\177' |
        awk '$0 == "%" { if (previous != "") print ""; previous = ""; next }
             { print; previous = $0 }
             END { if (previous != "") print "" }' >> "$temporary"
    count=$((count + 1))
done
if [ "$count" -lt 40 ]; then
    echo "error: expected about 45 fortune data files in $source, found $count: reinstall the fortunes package" >&2
    exit 1
fi
if ! iconv -f UTF-8 -t UTF-8 "$temporary" >/dev/null 2>&1; then
    echo "error: the fortune files are not valid UTF-8 after cleaning; check $source" >&2
    exit 1
fi
mv "$temporary" "$output"
trap - EXIT
echo "wrote $output ($count files, $(wc -l < "$output") lines, $(wc -c < "$output") bytes)"
