#!/usr/bin/env bash
# readme-commands.sh: check the README's command lines and paths against the
# binary and the repository, so that every command it shows runs as written.
#
#   scripts/readme-commands.sh [BINARY] [FILE...]
#
# BINARY is the applianced binary whose `--help` output is the reference
# (default target/debug/applianced); FILE are the Markdown files to check
# (default README.md). In each file's fenced code blocks and inline code:
#
#   1. every `applianced <subcommand> ...` (also `.../applianced`, and
#      `cargo run ... -- <subcommand> ...`) names a subcommand that
#      `applianced --help` lists, and every `--option` after it, up to the end
#      of that shell command, is listed by `applianced <subcommand> --help`;
#      so are the options in APPLIANCED_RUN_ARGS="..." (for `run`), and in
#      inline code that starts with a subcommand name (`run --metrics-uid UID`);
#   2. inline code that is an option alone (`--once`) names an option of some
#      subcommand (cargo's own options excepted, see CARGO_OPTIONS);
#   3. every repository path (under the top-level folders below, or a root
#      file) that the text or its code mentions, and every relative link
#      target, exists.
#
# Prints one line per problem, FILE:LINE: what is wrong, and exits 1 if there
# is any; exits 2 if the binary cannot be run.
set -eEuo pipefail
trap 'echo "readme-commands: internal error at line $LINENO" >&2' ERR

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"

binary=${1:-target/debug/applianced}
shift $(($# > 0 ? 1 : 0))
files=("$@")
[ ${#files[@]} -gt 0 ] || files=(README.md)

# Top-level entries a path in the docs may start with (build output under
# target/ and absolute paths of an installed system are not checked).
TOP='src|tests|hardening|docs|scripts|packaging|producer-c|python|examples|sql|fuzz|deb|rpm|\.ci'
ROOT_FILES='README\.md|Cargo\.toml|Cargo\.lock|clippy\.toml|rustfmt\.toml'
# Options of cargo and of the test harness that the docs quote on their own.
CARGO_OPTIONS=' --release --features --no-default-features --nocapture --test --lib --workspace --all-targets --all --check '

if ! top_help=$("$binary" --help 2>&1); then
    echo "readme-commands: cannot run $binary --help (build it first)" >&2
    exit 2
fi
# The subcommands: the indented first words of the "Commands:" section.
subcommands=" $(printf '%s\n' "$top_help" | awk '/^Commands:/ {on = 1; next} on && /^  [a-z]/ {print $1}' | tr '\n' ' ') "

declare -A help_of=()
# The options `applianced SUB --help` lists (indented lines that start with --).
options_of() {
    local sub=$1
    if [ -z "${help_of[$sub]+set}" ]; then
        help_of[$sub]=" $("$binary" "$sub" --help 2>/dev/null | awk '/^  +--[a-z]/ {print $1}' | tr '\n' ' ') "
    fi
    printf '%s' "${help_of[$sub]}"
}
all_options() {
    local sub all=""
    for sub in $subcommands; do all+="$(options_of "$sub")"; done
    printf '%s' "$all"
}

problems=0
declare -A reported=()
problem() {
    [ -z "${reported["$1: $2"]+set}" ] || return 0
    reported["$1: $2"]=1
    echo "$1: $2"
    problems=$((problems + 1))
}

# check_options WHERE SUB TEXT: every --option in TEXT is one of SUB's.
check_options() {
    local where=$1 sub=$2 text=$3 option
    text=${text#"${text%%[![:space:]]*}"}
    if [[ $subcommands != *" $sub "* ]]; then
        problem "$where" "\`applianced $sub\`: no such subcommand (in: $text)"
        return
    fi
    for option in $(printf '%s\n' "$text" | { grep -oE -- '(^|[^A-Za-z0-9-])--[a-z][a-z0-9-]*' || true; } | sed 's/^[^-]*//'); do
        [ "$option" = --help ] && continue
        [[ $(options_of "$sub") == *" $option "* ]] ||
            problem "$where" "\`applianced $sub\` has no option $option (in: $text)"
    done
}

# check_command WHERE TEXT: the applianced invocations in one line of code.
check_command() {
    local where=$1 text=$2 rest sub args
    # Cut at shell comments and command separators; each piece is one command.
    text=$(printf '%s\n' "$text" | sed -E 's/(^|[[:space:]])#.*$//')
    while IFS= read -r piece; do
        rest=$piece
        if [[ $rest =~ (^|[[:space:]])cargo[[:space:]]+run[[:space:]].*[[:space:]]--[[:space:]]+([a-z][a-z-]*)(.*)$ ]]; then
            check_options "$where" "${BASH_REMATCH[2]}" "${BASH_REMATCH[3]}"
        fi
        while [[ $rest =~ (^|[[:space:]/\`\"])applianced[[:space:]]+([^[:space:]]+)(.*)$ ]]; do
            sub=${BASH_REMATCH[2]}
            args=${BASH_REMATCH[3]}
            rest=$args
            # `systemctl stop applianced`, `applianced <command>`: no subcommand named.
            [[ $sub =~ ^[a-z][a-z-]*$ ]] || continue
            check_options "$where" "$sub" "$args"
        done
        if [[ $piece =~ APPLIANCED_RUN_ARGS=\"([^\"]*) ]]; then
            check_options "$where" run "${BASH_REMATCH[1]}"
        fi
    done < <(printf '%s\n' "$text" | sed -E 's/(\|\||&&|;|[[:space:]]\|[[:space:]]|[[:space:]]&([[:space:]]|$))/\n/g')
}

# check_span WHERE TEXT: inline code that is not a whole command line.
check_span() {
    local where=$1 text=$2 first option
    first=${text%% *}
    if [[ $text == --* ]]; then
        option=$(printf '%s\n' "$text" | grep -oE -- '^--[a-z][a-z0-9-]*' || true)
        [ -n "$option" ] || return 0
        [[ $CARGO_OPTIONS == *" $option "* || $(all_options) == *" $option "* ]] ||
            problem "$where" "no subcommand has the option $option (in: $text)"
    elif [[ $text == *" --"* && $subcommands == *" $first "* ]]; then
        check_options "$where" "$first" "${text#* }"
    fi
}

# check_path WHERE PATH BASE: PATH (relative to BASE) exists; <placeholders>
# match any name, {a,b} lists each name.
check_path() {
    local where=$1 path=$2 base=$3 pattern expanded found=0
    path=${path%%#*}
    path=$(printf '%s' "$path" | sed -E 's/[.,:;)]+$//')
    [ -n "$path" ] || return 0
    pattern=$(printf '%s' "$path" | sed -E 's/<[^>]*>/*/g')
    if [[ $pattern == *'{'*'}'* && $pattern =~ ^[A-Za-z0-9_./{},*-]+$ ]]; then
        expanded=$(eval "printf '%s\n' $pattern")
    else
        expanded=$pattern
    fi
    while IFS= read -r one; do
        found=0
        # shellcheck disable=SC2086 # the pattern is meant to glob
        for match in "$base"/$one; do
            if [ -e "$match" ]; then found=1; break; fi
        done
        [ "$found" = 1 ] || problem "$where" "no such path: $path"
    done <<< "$expanded"
}

# extract FILE: one line per piece to check, "LINE<TAB>KIND<TAB>TEXT", KIND
# code (a line of a fenced block, continuations joined), prose (a paragraph or
# table, joined; for its paths), span (inline code of a paragraph) or link (a
# link target). LINE is the code's line, or the paragraph's first line.
extract() {
    awk '
    function flush(   text, start, s) {
        if (para == "") return
        printf "%d\tprose\t%s\n", para_line, para
        text = para
        while (match(text, /`[^`]+`/)) {
            s = substr(text, RSTART + 1, RLENGTH - 2)
            printf "%d\tspan\t%s\n", para_line, s
            text = substr(text, RSTART + RLENGTH)
        }
        text = para
        while (match(text, /\]\([^) ]+\)/)) {
            printf "%d\tlink\t%s\n", para_line, substr(text, RSTART + 2, RLENGTH - 3)
            text = substr(text, RSTART + RLENGTH)
        }
        para = ""
    }
    /^[[:space:]]*```/ {
        flush()
        fenced = !fenced
        next
    }
    fenced {
        line = $0
        if (held != "") { line = held " " line; start = held_line } else { start = NR }
        if (line ~ /\\$/) { held = substr(line, 1, length(line) - 1); held_line = start; next }
        held = ""
        printf "%d\tcode\t%s\n", start, line
        next
    }
    /^[[:space:]]*$/ { flush(); next }
    {
        if (para == "") { para = $0; para_line = NR } else { para = para " " $0 }
    }
    END { flush() }
    ' "$1"
}

path_regex="(^|[][:space:]\`\"'(=,[])((\\.\\./)*(($TOP)(/[^][:space:]\`\"');]*)?|($ROOT_FILES)))"

for file in "${files[@]}"; do
    if [ ! -f "$file" ]; then
        problem "$file" "no such file"
        continue
    fi
    dir=$(dirname "$file")
    while IFS=$'\t' read -r line kind text; do
        where="$file:$line"
        case $kind in
            code) check_command "$where" "$text" ;;
            prose) ;;
            span)
                check_command "$where" "$text"
                check_span "$where" "$text"
                continue
                ;;
            link)
                case $text in
                    http://* | https://* | mailto:* | '#'*) continue ;;
                esac
                check_path "$where" "$text" "$dir"
                continue
                ;;
        esac
        # Paths in code and prose: relative to the repository, or to the file with ../.
        while IFS= read -r path; do
            [ -n "$path" ] || continue
            if [[ $path == ../* ]]; then
                check_path "$where" "$path" "$dir"
            else
                check_path "$where" "$path" .
            fi
        done < <(printf '%s\n' "$text" | { grep -oE -- "$path_regex" || true; } | sed -E "s/^[][:space:]\`\"'(=,[]//")
    done < <(extract "$file")
done

if [ "$problems" -gt 0 ]; then
    echo "readme-commands: $problems problem(s) in ${files[*]} (checked against $binary)" >&2
    exit 1
fi
echo "readme-commands: ${files[*]}: every applianced command and path checked against $binary"
