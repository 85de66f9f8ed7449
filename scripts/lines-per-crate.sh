#!/bin/sh
# Lines of Rust per top-level crate directory at a commit (default: HEAD):
#   scripts/lines-per-crate.sh 4dbddab
set -eu
rev=${1:-HEAD}
git ls-tree -r --name-only "$rev" | grep '\.rs$' | while read -r f; do
  printf '%s %s\n' "${f%%/*}" "$(git show "$rev:$f" | wc -l)"
done | awk '{s[$1]+=$2; t+=$2} END {for (k in s) printf "%-12s %6d\n", k, s[k]; printf "%-12s %6d\n", "total", t}' | sort
