#!/usr/bin/env bash
# cli_layout.sh: the rooms of the code keep to themselves (what each may
# #include "..."; system headers are free):
#   formats/          formats/ only (the contract between processes)
#   loader/ augment/  formats/ and their own folder
#   trainer/          formats/, trainer/ and trainer/engine/
#   trainer/engine/   formats/ and trainer/engine/ only: the engine never
#                     includes a command file
#   cli/, tests/, tools/: anything (they join the rooms)
# The checker first proves it can fail: on a scratch tree with a loader file
# that includes a trainer header and an engine file that includes a command
# header, it must report both. And every command gets its exit status from
# the one options entry point (moco_opts_run / moco_opts_status in
# formats/opts.c): no other file uses MOCO_OPTS_HELP outside a comment (the
# checker proves first, on a scratch tree, that it catches an if and a
# ternary);
# and the presets live in one table (train_cmd.c), which moco run reads through
# the trainer's parser rather than a copy.
set -u
fail() { echo "FAIL: $*"; exit 1; }
T=${MOCO_TEST_TMP:?}/layout
cd "$(dirname "$0")/.."

# check ROOT: prints "file: includes X" for each violation; exit 1 if any
check() {
  local root=$1 bad=0 f inc dir allowed ok a
  while IFS= read -r f; do
    dir=${f#"$root"/}; dir=${dir%/*}
    case $dir in
      formats) allowed="formats";;
      loader) allowed="formats loader";;
      augment) allowed="formats augment";;
      trainer) allowed="formats trainer trainer/engine";;
      trainer/engine) allowed="formats trainer/engine";;
      *) continue;;
    esac
    while IFS= read -r inc; do
      ok=0
      for a in $allowed; do [ "${inc%/*}" = "$a" ] && ok=1; done
      [ "${inc#*/}" = "$inc" ] && ok=1 # a file beside it, without a folder
      if [ $ok = 0 ]; then echo "${f#"$root"/}: includes $inc"; bad=1; fi
    done < <(sed -n 's/^[[:space:]]*#[[:space:]]*include[[:space:]]*"\([^"]*\)".*/\1/p' "$f")
  done < <(find "$root/formats" "$root/loader" "$root/augment" "$root/trainer" -name '*.[ch]' 2>/dev/null | sort)
  return $bad
}

# 1. the checker can fail
rm -rf "$T" && mkdir -p "$T/formats" "$T/loader" "$T/augment" "$T/trainer/engine"
printf '#include "formats/db.h"\n#include "trainer/train.h"\n' > "$T/loader/x.c"
printf '#include "formats/errors.h"\n#include "trainer/engine/nn.h"\n' > "$T/trainer/y.c"
printf '#include "trainer/engine/nn.h"\n#include "trainer/train.h"\n' > "$T/trainer/engine/z.c"
out=$(check "$T"); rc=$?
[ $rc -ne 0 ] || fail "the checker passed a tree with bad includes"
echo "$out" | grep -q "loader/x.c: includes trainer/train.h" || fail "a loader file including the trainer was not reported: $out"
echo "$out" | grep -q "trainer/engine/z.c: includes trainer/train.h" || fail "the engine including a command was not reported: $out"
echo "$out" | grep -q "trainer/y.c" && fail "a command including the engine was reported: $out"

# 2. the real tree
out=$(check "$PWD"); rc=$?
[ $rc -eq 0 ] || fail "includes across rooms:
$out"
# 3. one options entry point: no command maps a parse result to an exit status by hand. Any
# use of MOCO_OPTS_HELP outside formats/opts.[ch] is one (a ternary or an if alike); comment
# lines are not uses. hand_map ROOT prints each "file:line: text"; the checker first proves it
# can fail on a scratch tree with both spellings, and a comment that names the constant
hand_map() {
  (cd "$1" && grep -rnw MOCO_OPTS_HELP --include='*.[ch]' formats loader augment trainer cli tools 2>/dev/null) \
    | grep -v '^formats/opts\.[ch]:' | grep -vE '^[^:]*:[0-9]+:[[:space:]]*(/\*|\*|//)'
}
mkdir -p "$T/cli"
printf 'int a(int r) {\n    if (r == MOCO_OPTS_HELP) return 0;\n    return 2;\n}\nint b(int r) { return r == MOCO_OPTS_HELP ? 0 : 2; }\n' > "$T/cli/x.c"
printf '/* MOCO_OPTS_OK, MOCO_OPTS_HELP (help\n * printed) or MOCO_OPTS_HELP */\n' > "$T/cli/x.h"
out=$(hand_map "$T")
echo "$out" | grep -q '^cli/x.c:2:.*if (r == MOCO_OPTS_HELP) return 0' || fail "an if mapping MOCO_OPTS_HELP by hand was not reported: $out"
echo "$out" | grep -q '^cli/x.c:5:.*MOCO_OPTS_HELP ? 0 : 2' || fail "a ternary mapping MOCO_OPTS_HELP by hand was not reported: $out"
echo "$out" | grep -q 'x\.h' && fail "a comment naming MOCO_OPTS_HELP was reported: $out"
hand=$(hand_map "$PWD")
[ -z "$hand" ] || fail "exit status mapped by hand instead of moco_opts_run / moco_opts_status: $hand"
grep -q 'MOCO_OPTS_HELP ? 0 : 2' formats/opts.c || fail "formats/opts.c no longer holds the mapping (the check above would pass vacuously)"
# 4. one preset table (trainer/train_cmd.c): the supervisor passes the trainer's
# flags through and learns a preset's recipe from the trainer's own parser
grep -q '"moco-v1|moco-v2|cifar"' trainer/train_cmd.c || fail "trainer/train_cmd.c no longer holds the presets (the check below would pass vacuously)"
own=$(grep -n 'moco-v[12]\|"cifar"' cli/run.c)
[ -z "$own" ] && grep -q 'train_parse_args' cli/run.c || fail "cli/run.c keeps presets of its own instead of the trainer's table: $own"
n=$(find formats loader augment trainer -name '*.[ch]' | wc -l)
echo "layout: $n files keep to their rooms$( [ -d trainer/engine ] && echo " (engine: $(ls trainer/engine/*.[ch] | wc -l) files)")"
