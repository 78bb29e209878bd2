#!/bin/sh
# Refuse to start a container with a missing or placeholder secret, then run its command.
#
#   sh check-secrets.sh NAME [NAME ...] [-- COMMAND [ARG ...]]
#
# Each NAME is read from the file named by $NAME_FILE or $NAME__FILE (Grafana's spelling)
# when one is set, which is how compose secrets under /run/secrets/ arrive, else from $NAME
# itself (.env). A value is refused when it is missing, empty, shorter than 16 characters,
# or a placeholder such as change-me. All refused names go on one line on stderr, without
# their values, and the script exits 2; otherwise it execs COMMAND, or exits 0 without one.
#
# POSIX sh only: it runs in the Airflow, Postgres, Redis (Alpine) and Grafana images. Values
# never appear in an argument list (printf is a builtin, tr reads them from a pipe), so `ps`
# cannot show them.
set -eu

MIN_LENGTH=16

refused=""
while [ $# -gt 0 ] && [ "$1" != "--" ]; do
    name=$1
    shift
    case $name in
        "" | [0-9]* | *[!A-Za-z0-9_]*)
            echo "error: check-secrets.sh: $name is not a variable name" >&2
            exit 2
            ;;
    esac
    # eval on a checked name only: the value itself is never evaluated
    eval "file=\${${name}_FILE:-\${${name}__FILE:-}}"
    if [ -n "$file" ]; then
        where=$file
        if [ ! -f "$file" ] || [ ! -r "$file" ]; then
            refused="${refused:+$refused, }$name (cannot read $where)"
            continue
        fi
        value=$(cat "$file")
    else
        where="\$$name"
        eval "value=\${${name}:-}"
    fi
    lower=$(printf '%s' "$value" | tr 'A-Z' 'a-z')
    case $lower in
        *change-me* | *changeme* | *change_me* | *replace-me* | *replaceme* | *placeholder* | *example*)
            refused="${refused:+$refused, }$name (a placeholder in $where)"
            ;;
        *)
            if [ "${#value}" -lt "$MIN_LENGTH" ]; then
                refused="${refused:+$refused, }$name (empty or under $MIN_LENGTH characters in $where)"
            fi
            ;;
    esac
done

if [ -n "$refused" ]; then
    echo "error: refusing to start with a missing or placeholder secret: $refused; see .env.example" >&2
    exit 2
fi

if [ $# -gt 0 ]; then
    shift # the --
    exec "$@"
fi
