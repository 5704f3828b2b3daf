#!/bin/sh
# render-manpage.sh BINARY VERSION DATE: print applianced(8), the template
# packaging/applianced.8.in with its COMMANDS section rendered from
# `BINARY --help` and `BINARY COMMAND --help` of every command the binary
# lists, so the man page always matches the binary it ships with.
set -eu
binary=$1
version=$2
date=$3
here=$(dirname "$0")

# roff-escape one line of help text: backslashes, hyphens, a leading dot or quote.
escape() {
    sed -e 's/\\/\\e/g' -e 's/-/\\-/g' -e "s/^\\([.']\\)/\\\\\\&\\1/"
}

# The command names of the top-level help, in its order.
commands() {
    "$binary" --help | awk '/^Commands:/ { on = 1; next } on && /^  [a-z]/ { print $1 }'
}

# One command's --help rendered as a subsection: usage, description, options.
render_command() {
    name=$1
    echo ".SS \"$name\""
    "$binary" "$name" --help | escape | awk '
        /^Usage: / { sub(/^Usage: /, ""); print ".B " $0; print ".PP"; next }
        /^Options:/ { options = 1; next }
        !options && NF { print; next }
        !options { next }
        /^  \\-\\-help/ { skip = 1; next }
        /^  \\-/ {
            skip = 0
            print ".TP"
            line = $0; sub(/^  /, "", line)
            # The option name ends at the first run of two spaces.
            split_at = index(line, "  ")
            if (split_at == 0) { print ".B " line; next }
            print ".B " substr(line, 1, split_at - 1)
            text = substr(line, split_at); sub(/^ +/, "", text); print text
            next
        }
        skip { next }
        NF { text = $0; sub(/^ +/, "", text); print text }
    '
}

section=$(mktemp)
trap 'rm -f "$section"' EXIT
for name in $(commands); do
    render_command "$name" >> "$section"
done
[ -s "$section" ] || { echo "render-manpage: $binary listed no commands" >&2; exit 1; }

sed -e "s/@VERSION@/$version/" -e "s/@DATE@/$date/" "$here/applianced.8.in" | awk -v section="$section" '
    /^\.\\" @COMMANDS@$/ { while ((getline line < section) > 0) print line; next }
    { print }
'
