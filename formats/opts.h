/* opts.h: the command-line parser every `moco` subcommand uses, so that all
 * of them behave alike: `--name value` or `--name=value`, a flag's one-letter
 * alias (main_moco.py's -a -b -j) as `-b 256`, `-b256` or `-b=256` (as
 * Python's argparse takes them), `--help` (or -h) lists every flag with its
 * aliases and default, and an unknown flag, a missing value, a value out of
 * range or a wrong number of positional arguments is an error (the caller
 * exits with status 2). Nothing is silently ignored. */
#ifndef MOCO_OPTS_H
#define MOCO_OPTS_H

#include <stdio.h>

#include <stdint.h>

typedef enum {
    MOCO_OPT_FLAG,   /* dst: int*, set to 1 when present; takes no value */
    MOCO_OPT_INT,    /* dst: long* */
    MOCO_OPT_U64,    /* dst: uint64_t* */
    MOCO_OPT_DOUBLE, /* dst: double* */
    MOCO_OPT_STR,    /* dst: const char** (points into argv) */
    MOCO_OPT_CHOICE, /* dst: const char**; value must be one of `choices` */
} moco_opt_kind;

typedef struct {
    const char *name;    /* long name without "--", then its aliases, each after a '|' and spelt with its dashes:
                          * "batch-size|-b" also takes -b (a one-letter alias), "moco-k|--K" also --K. moco_opts_seen,
                          * `required` and messages use the long name (before the '|'); --help lists every spelling */
    moco_opt_kind kind;
    void *dst;
    const char *help;
    double min, max;     /* inclusive range for numbers; ignored if min >= max */
    const char *choices; /* MOCO_OPT_CHOICE: "a|b|c" */
} moco_opt;

typedef struct {
    const char *cmd;      /* "moco mkdb" */
    const char *synopsis; /* "SRC OUT [options]" */
    const char *about;    /* one paragraph, may be NULL */
    const moco_opt *opts; /* terminated by an entry with name == NULL */
    int min_pos, max_pos; /* allowed count of positional arguments */
    const char *required; /* flags that must be given, space-separated ("db bind"), or NULL: a parse without
                           * them is a usage error naming them; --help marks them */
} moco_optspec;

enum { MOCO_OPTS_OK = 0, MOCO_OPTS_HELP = 1, MOCO_OPTS_USAGE = 2 };

/* A subcommand of bin/moco: each process folder lists its own in one table
 * (loader/cmd.h, augment/cmd.h, trainer/cmd.h, cli/run.h), ended by
 * {NULL, NULL, NULL}; cli/moco.c only walks the tables. main returns the
 * exit status: 0 ok, 1 failure, 2 bad usage, 130 stopped by a signal. */
typedef struct {
    const char *name;
    int (*main)(int argc, char **argv);
    const char *about;
} moco_command;

/* Parse argv[1..argc) (argv[0] is the subcommand name). Positional arguments
 * are stored in pos[0..*npos) (pos must hold max_pos entries). Returns
 * MOCO_OPTS_OK; MOCO_OPTS_HELP after printing help to stdout; or
 * MOCO_OPTS_USAGE after printing the error and a hint to stderr. Each
 * option may be given more than once; the last value wins. */
int moco_opts_parse(const moco_optspec *spec, int argc, char **argv, char **pos, int *npos);

/* A command's flags, its one entry point: moco_opts_parse, then what the
 * command does next. Returns 1: go on; or 0 with *status the exit status to
 * return at once (0 after --help, 2 after a usage error). */
int moco_opts_run(const moco_optspec *spec, int argc, char **argv, char **pos, int *npos, int *status);

/* The exit status of a parse result that is not MOCO_OPTS_OK (for parsers
 * built on moco_opts_parse, such as train_parse_args): 0 for MOCO_OPTS_HELP,
 * 2 for MOCO_OPTS_USAGE. */
int moco_opts_status(int parse_rc);

/* Print the help text of spec to stdout. */
void moco_opts_help(const moco_optspec *spec);

/* Flags passed on: until called again with NULL, a parse (on this thread)
 * of a spec other than outer reports an unknown option as outer's ("moco
 * run: unknown option '--worker' (neither a run flag nor a train flag)"),
 * with a did-you-mean against both tables and both helps. moco run sets it
 * around the trainer's parse of the flags it passes on. (Without it an
 * unknown option's did-you-mean looks at the command's own table.) */
void moco_opts_passed_on(const moco_optspec *outer);

/* Whether value, given to --flag, ends in suffix (any case): 1; else 0 after
 * printing "CMD: --FLAG VALUE: WHAT; give a name ending in SUFFIX" and the
 * --help hint (the caller exits 2). For outputs whose format is fixed (a
 * PNG), so that a ".jpg" name is not filled with PNG data. */
int moco_opts_suffix(const moco_optspec *spec, const char *flag, const char *value, const char *suffix, const char *what);

/* moco_opts_seen(spec, "name"): whether the last parse saw --name (or one
 * of its aliases). */
int moco_opts_seen(const moco_optspec *spec, const char *name);

/* The entry of spec that the command-line argument arg names ("--workers",
 * "--workers=2", an alias: "-j", "-j2", "-j=2"), or NULL. *attached: the
 * value given in arg itself ("2"), or NULL (the value, if the entry takes
 * one, is the next argument). For commands that pass some flags on (moco
 * run: its own, the trainer's). */
const moco_opt *moco_opts_find(const moco_optspec *spec, const char *arg, const char **attached);

/* Print " ARG" to f, quoted for a POSIX shell when it needs it ('...', a
 * single quote as '\''), so that a printed command can be pasted. */
void moco_print_shell_arg(FILE *f, const char *arg);

/* Print "  EXE SUBCOMMAND ARGS" to f: this program's path (or "moco"), then
 * argv[0..argc) without the flags named in drop (each "--name" also drops
 * "--name=..." and, unless it is in drop_flags, the value after it) and
 * without the flags in drop_flags (no value); no newline. For the commands
 * a run prints to be pasted: the resume command, a worker's. */
void moco_print_command(FILE *f, int argc, char **argv, const char *const *drop, const char *const *drop_flags);

#endif
