/* opts.c: table-driven option parser with strict validation: long names,
 * and the aliases an entry lists after its name ("batch-size|-b"); an
 * unknown option's did-you-mean (edit distance, or the same name but for its
 * case or dashes) against the command's table and, for flags passed on (moco
 * run to moco train), the outer one's. */
#include "formats/opts.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#define MAX_OPTS 128
#define SEEN_SPECS 4 /* the last parses remembered (moco run parses its flags, then the trainer's) */
static _Thread_local const moco_optspec *seen_spec[SEEN_SPECS];
static _Thread_local unsigned char seen_flags[SEEN_SPECS][MAX_OPTS];
static _Thread_local unsigned seen_next;
static _Thread_local const moco_optspec *outer_spec; /* moco_opts_passed_on */

void moco_opts_passed_on(const moco_optspec *outer) { outer_spec = outer; }

/* The record of spec's last parse, or NULL. */
static unsigned char *seen_of(const moco_optspec *s)
{
    for (int i = 0; i < SEEN_SPECS; i++)
        if (seen_spec[i] == s) return seen_flags[i];
    return NULL;
}

/* The length of o's long name, the part of o->name before its aliases */
static size_t name_len(const moco_opt *o) { return strcspn(o->name, "|"); }

/* The entry whose long name is name[0..len) */
static const moco_opt *find(const moco_optspec *s, const char *name, size_t len)
{
    for (const moco_opt *o = s->opts; o && o->name; o++)
        if (name_len(o) == len && strncmp(o->name, name, len) == 0) return o;
    return NULL;
}

/* The i-th spelling of o, with its dashes, into buf: 0 "--batch-size", then
 * its aliases ("-b"). Returns 0 past the last. */
static int spelling(const moco_opt *o, int i, char *buf, size_t n)
{
    const char *p = o->name;
    size_t l = strcspn(p, "|");
    if (i == 0) {
        snprintf(buf, n, "--%.*s", (int)l, p);
        return 1;
    }
    while (p[l] == '|') {
        p += l + 1;
        l = strcspn(p, "|");
        if (--i == 0) {
            snprintf(buf, n, "%.*s", (int)l, p);
            return 1;
        }
    }
    return 0;
}

/* The length of the option an argument spells: "--name" of "--name=v"; "-x"
 * of "-x", "-xV" and "-x=V" (a one-letter alias, its value attached as
 * argparse takes it). */
static size_t spelt_len(const char *a) { return a[1] == '-' ? strcspn(a, "=") : 2; }

const moco_opt *moco_opts_find(const moco_optspec *s, const char *a, const char **attached)
{
    if (attached) *attached = NULL;
    if (a[0] != '-' || !a[1]) return NULL;
    size_t len = spelt_len(a);
    char sp[80];
    for (const moco_opt *o = s->opts; o && o->name; o++)
        for (int i = 0; spelling(o, i, sp, sizeof sp); i++)
            if (strlen(sp) == len && !strncmp(sp, a, len)) {
                const char *v = a + len;
                if (attached) *attached = *v == '=' ? v + 1 : *v ? v : NULL;
                return o;
            }
    return NULL;
}

static int choice_ok(const char *choices, const char *v)
{
    size_t n = strlen(v);
    for (const char *p = choices; *p;) {
        const char *e = strchr(p, '|');
        size_t l = e ? (size_t)(e - p) : strlen(p);
        if (l == n && strncmp(p, v, n) == 0) return 1;
        if (!e) break;
        p = e + 1;
    }
    return 0;
}

static int bad(const moco_optspec *s, const char *fmt, const char *a, const char *b)
{
    fprintf(stderr, "%s: ", s->cmd);
    fprintf(stderr, fmt, a, b);
    fprintf(stderr, "\nTry '%s --help'.\n", s->cmd);
    return MOCO_OPTS_USAGE;
}

/* Levenshtein distance between a[0..la) and b (names are short; a long one is far from all) */
static size_t distance(const char *a, size_t la, const char *b)
{
    size_t lb = strlen(b), d[64];
    if (la >= 64 || lb >= 64) return 64;
    for (size_t j = 0; j <= lb; j++) d[j] = j;
    for (size_t i = 1; i <= la; i++) {
        size_t diag = d[0];
        d[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t up = d[j], best = diag + (a[i - 1] != b[j - 1]);
            if (up + 1 < best) best = up + 1;
            if (d[j - 1] + 1 < best) best = d[j - 1] + 1;
            d[j] = best;
            diag = up;
        }
    }
    return d[lb];
}

/* The spelling in opts nearest to the unknown argument a (its name without
 * dashes and value) into near[0..n), if nearer than *best: the same name but
 * for its case or dashes ("-B", "-lr", "--b", "--k"), else at most 2 edits
 * and fewer than a third of its length; *best updated. */
static void nearest(const moco_opt *opts, const char *a, size_t *best, char *near, size_t n)
{
    const char *bare = a + (a[1] == '-' ? 2 : 1);
    size_t len = strcspn(bare, "=");
    char sp[80];
    for (const moco_opt *o = opts; o && o->name; o++)
        for (int i = 0; spelling(o, i, sp, sizeof sp); i++) {
            const char *sb = sp + (sp[1] == '-' ? 2 : 1);
            size_t d = strlen(sb) == len && !strncasecmp(sb, bare, len) ? 0 : distance(bare, len, sb);
            if (d < *best && (d == 0 || (d <= 2 && 3 * d < len))) {
                *best = d;
                snprintf(near, n, "%s", sp);
            }
        }
}

/* "unknown option": with an outer command whose flags pass on to s (moco
 * run's to moco train), named as the outer's, with both helps. */
static int unknown(const moco_optspec *s, const char *a)
{
    const moco_optspec *out = outer_spec != s ? outer_spec : NULL;
    size_t best = 3;
    char near[80] = "";
    nearest(s->opts, a, &best, near, sizeof near);
    if (out) nearest(out->opts, a, &best, near, sizeof near);
    fprintf(stderr, "%s: unknown option '%s'", out ? out->cmd : s->cmd, a);
    int two = out && strcmp(out->cmd, s->cmd); /* moco lincls passes on to its own consumer: one name, one help */
    if (two) fprintf(stderr, " (neither a %s flag nor a %s flag)", out->cmd + (strncmp(out->cmd, "moco ", 5) ? 0 : 5),
                     s->cmd + (strncmp(s->cmd, "moco ", 5) ? 0 : 5));
    if (*near) fprintf(stderr, "; did you mean %s?", near);
    if (two) fprintf(stderr, "\nTry '%s --help' and '%s --help'.\n", out->cmd, s->cmd);
    else fprintf(stderr, "\nTry '%s --help'.\n", s->cmd);
    return MOCO_OPTS_USAGE;
}

int moco_opts_suffix(const moco_optspec *s, const char *flag, const char *value, const char *suffix, const char *what)
{
    size_t lv = strlen(value), ls = strlen(suffix);
    if (lv > ls && !strcasecmp(value + lv - ls, suffix)) return 1;
    fprintf(stderr, "%s: --%s %s: %s; give a name ending in %s\nTry '%s --help'.\n", s->cmd, flag, value, what, suffix, s->cmd);
    return 0;
}

/* Store v, given to the option spelt as (its long name or an alias), in o's destination */
static int set_value(const moco_optspec *s, const moco_opt *o, const char *as, const char *v)
{
    char *end = NULL;
    int range = o->min < o->max;
    errno = 0;
    switch (o->kind) {
    case MOCO_OPT_INT: {
        long x = strtol(v, &end, 10);
        if (!*v || *end || errno) return bad(s, "%s: '%s' is not an integer", as, v);
        if (range && (x < o->min || x > o->max)) {
            char r[64];
            snprintf(r, sizeof r, "[%.0f, %.0f]", o->min, o->max);
            fprintf(stderr, "%s: %s: %ld is outside %s\nTry '%s --help'.\n", s->cmd, as, x, r, s->cmd);
            return MOCO_OPTS_USAGE;
        }
        *(long *)o->dst = x;
        break;
    }
    case MOCO_OPT_U64: {
        if (*v == '-') return bad(s, "%s: '%s' is not a non-negative integer", as, v);
        unsigned long long x = strtoull(v, &end, 10);
        if (!*v || *end || errno) return bad(s, "%s: '%s' is not a non-negative integer", as, v);
        if (range && ((double)x < o->min || (double)x > o->max)) {
            fprintf(stderr, "%s: %s: %llu is outside [%.0f, %.0f]\nTry '%s --help'.\n", s->cmd, as, x, o->min, o->max, s->cmd);
            return MOCO_OPTS_USAGE;
        }
        *(uint64_t *)o->dst = x;
        break;
    }
    case MOCO_OPT_DOUBLE: {
        double x = strtod(v, &end);
        if (!*v || *end || errno || !isfinite(x)) return bad(s, "%s: '%s' is not a finite number", as, v);
        if (range && (x < o->min || x > o->max)) {
            fprintf(stderr, "%s: %s: %g is outside [%g, %g]\nTry '%s --help'.\n", s->cmd, as, x, o->min, o->max, s->cmd);
            return MOCO_OPTS_USAGE;
        }
        *(double *)o->dst = x;
        break;
    }
    case MOCO_OPT_STR:
        if (!*v) return bad(s, "%s: empty value%s", as, "");
        *(const char **)o->dst = v;
        break;
    case MOCO_OPT_CHOICE:
        if (!choice_ok(o->choices, v)) {
            fprintf(stderr, "%s: %s: '%s' is not one of %s\nTry '%s --help'.\n", s->cmd, as, v, o->choices, s->cmd);
            return MOCO_OPTS_USAGE;
        }
        *(const char **)o->dst = v;
        break;
    case MOCO_OPT_FLAG:
        break;
    }
    return MOCO_OPTS_OK;
}

int moco_opts_parse(const moco_optspec *s, int argc, char **argv, char **pos, int *npos)
{
    int np = 0, only_pos = 0;
    unsigned char *seen = seen_of(s);
    if (!seen) { /* a new spec takes the oldest slot */
        seen_spec[seen_next] = s;
        seen = seen_flags[seen_next];
        seen_next = (seen_next + 1) % SEEN_SPECS;
    }
    memset(seen, 0, MAX_OPTS);
    /* --help anywhere (before "--") wins before any value is read: "--pull --help" took it as
     * --pull's value, and flags given before it showed as their defaults */
    for (int i = 1; i < argc && strcmp(argv[i], "--"); i++)
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            moco_opts_help(s);
            return MOCO_OPTS_HELP;
        }
    for (int i = 1; i < argc; i++) {
        char *a = argv[i];
        if (only_pos || a[0] != '-' || a[1] == 0) {
            if (np >= s->max_pos) return bad(s, "unexpected argument '%s'%s", a, "");
            pos[np++] = a;
            continue;
        }
        if (strcmp(a, "--") == 0) { only_pos = 1; continue; }
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            moco_opts_help(s);
            return MOCO_OPTS_HELP;
        }
        const char *v;
        const moco_opt *o = moco_opts_find(s, a, &v);
        if (!o) return unknown(s, a);
        seen[o - s->opts] = 1;
        char as[80]; /* the option as given: its long name or an alias */
        snprintf(as, sizeof as, "%.*s", (int)spelt_len(a), a);
        if (o->kind == MOCO_OPT_FLAG) {
            if (v) return bad(s, "%s takes no value%s", as, "");
            *(int *)o->dst = 1;
            continue;
        }
        if (!v) {
            if (i + 1 >= argc) return bad(s, "%s needs a value%s", as, "");
            v = argv[++i];
        }
        int rc = set_value(s, o, as, v);
        if (rc) return rc;
    }
    if (np < s->min_pos) return bad(s, "missing argument(s): expected %s%s", s->synopsis, "");
    char missing[256] = "";
    int nmiss = 0;
    for (const char *r = s->required; r && *r;) { /* "db bind": --db and --bind are required */
        size_t l = strcspn(r, " ");
        const moco_opt *o = find(s, r, l);
        if (o && !seen[o - s->opts]) {
            size_t at = strlen(missing);
            snprintf(missing + at, sizeof missing - at, "%s--%.*s", nmiss ? " and " : "", (int)name_len(o), o->name);
            nmiss++;
        }
        r += l;
        while (*r == ' ') r++;
    }
    if (nmiss) return bad(s, "%s %s required", missing, nmiss > 1 ? "are" : "is");
    *npos = np;
    return MOCO_OPTS_OK;
}

int moco_opts_seen(const moco_optspec *s, const char *name)
{
    const unsigned char *seen = seen_of(s);
    const moco_opt *o = seen ? find(s, name, strlen(name)) : NULL;
    return o ? seen[o - s->opts] : 0;
}

/* Is o in s->required? */
static int required(const moco_optspec *s, const moco_opt *o)
{
    const char *name = o->name;
    size_t n = name_len(o);
    for (const char *r = s->required; r && *r;) {
        size_t l = strcspn(r, " ");
        if (l == n && !strncmp(r, name, n)) return 1;
        r += l;
        while (*r == ' ') r++;
    }
    return 0;
}

void moco_opts_help(const moco_optspec *s)
{
    printf("usage: %s %s\n", s->cmd, s->synopsis);
    if (s->about) printf("\n%s\n", s->about);
    printf("\noptions:\n");
    for (const moco_opt *o = s->opts; o && o->name; o++) {
        char lhs[160] = "", sp[80], def[96] = "";
        const char *mv = o->kind == MOCO_OPT_FLAG ? "" : o->kind == MOCO_OPT_STR ? " S"
                       : o->kind == MOCO_OPT_CHOICE ? " X" : o->kind == MOCO_OPT_DOUBLE ? " F" : " N";
        for (int i = 1; spelling(o, i, sp, sizeof sp); i++) /* "-b, --batch-size N", "--moco-k, --K N" */
            if (sp[1] != '-') snprintf(lhs + strlen(lhs), sizeof lhs - strlen(lhs), "%s, ", sp);
        spelling(o, 0, sp, sizeof sp);
        snprintf(lhs + strlen(lhs), sizeof lhs - strlen(lhs), "%s", sp);
        for (int i = 1; spelling(o, i, sp, sizeof sp); i++)
            if (sp[1] == '-') snprintf(lhs + strlen(lhs), sizeof lhs - strlen(lhs), ", %s", sp);
        snprintf(lhs + strlen(lhs), sizeof lhs - strlen(lhs), "%s", mv);
        switch (o->kind) {
        case MOCO_OPT_INT: snprintf(def, sizeof def, " (default %ld)", *(long *)o->dst); break;
        case MOCO_OPT_U64: snprintf(def, sizeof def, " (default %" PRIu64 ")", *(uint64_t *)o->dst); break;
        case MOCO_OPT_DOUBLE: snprintf(def, sizeof def, " (default %g)", *(double *)o->dst); break;
        case MOCO_OPT_STR:
            if (*(const char **)o->dst) snprintf(def, sizeof def, " (default %s)", *(const char **)o->dst);
            break;
        case MOCO_OPT_CHOICE:
            snprintf(def, sizeof def, " [%s] (default %s)", o->choices,
                     *(const char **)o->dst ? *(const char **)o->dst : "none");
            break;
        case MOCO_OPT_FLAG: break;
        }
        printf("  %-22s %s%s%s\n", lhs, o->help, required(s, o) ? " (required)" : "", def);
    }
    printf("  %-22s %s\n", "-h, --help", "show this help and exit");
}

void moco_print_shell_arg(FILE *f, const char *a)
{
    int plain = *a != 0;
    for (const char *p = a; *p; p++)
        if (!(isalnum((unsigned char)*p) || strchr("-_./:=,@%+", *p))) plain = 0;
    if (plain) {
        fprintf(f, " %s", a);
        return;
    }
    fputs(" '", f);
    for (const char *p = a; *p; p++) {
        if (*p == '\'') fputs("'\\''", f);
        else fputc(*p, f);
    }
    fputc('\'', f);
}

static int listed(const char *const *list, const char *a, size_t n)
{
    for (int i = 0; list && list[i]; i++)
        if (strlen(list[i]) == n && !strncmp(list[i], a, n)) return 1;
    return 0;
}

void moco_print_command(FILE *f, int argc, char **argv, const char *const *drop, const char *const *drop_flags)
{
    char exe[4096];
    ssize_t l = readlink("/proc/self/exe", exe, sizeof exe - 1);
    exe[l > 0 ? l : 0] = 0;
    moco_print_shell_arg(f, l > 0 ? exe : "moco");
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        size_t n = strcspn(a, "=");
        if (i > 0 && listed(drop_flags, a, n)) continue;
        if (i > 0 && listed(drop, a, n)) {
            if (!a[n] && i + 1 < argc) i++; /* its value */
            continue;
        }
        moco_print_shell_arg(f, a);
    }
}

int moco_opts_status(int parse_rc) { return parse_rc == MOCO_OPTS_HELP ? 0 : 2; }

int moco_opts_run(const moco_optspec *spec, int argc, char **argv, char **pos, int *npos, int *status)
{
    int rc = moco_opts_parse(spec, argc, argv, pos, npos);
    *status = rc ? moco_opts_status(rc) : 0;
    return rc == MOCO_OPTS_OK;
}
