/* opts.c: table-driven long-option parser with strict validation; an
 * unknown option's did-you-mean (edit distance) against the command's table
 * and, for flags passed on (moco run to moco train), the outer one's. */
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

static const moco_opt *find(const moco_optspec *s, const char *name, size_t len)
{
    for (const moco_opt *o = s->opts; o && o->name; o++)
        if (strlen(o->name) == len && strncmp(o->name, name, len) == 0) return o;
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

/* The name in opts nearest to name[0..len) if nearer than *best (at most 2
 * edits, and fewer than a third of its length); *best updated. */
static const char *nearest(const moco_opt *opts, const char *name, size_t len, size_t *best)
{
    const char *near = NULL;
    for (const moco_opt *o = opts; o && o->name; o++) {
        size_t d = distance(name, len, o->name);
        if (d < *best && d <= 2 && 3 * d < len) *best = d, near = o->name;
    }
    return near;
}

/* "unknown option": with an outer command whose flags pass on to s (moco
 * run's to moco train), named as the outer's, with both helps. */
static int unknown(const moco_optspec *s, const char *a, const char *name, size_t len)
{
    const moco_optspec *out = outer_spec != s ? outer_spec : NULL;
    size_t best = 3;
    const char *near = nearest(s->opts, name, len, &best), *n2 = out ? nearest(out->opts, name, len, &best) : NULL;
    if (n2) near = n2;
    fprintf(stderr, "%s: unknown option '%s'", out ? out->cmd : s->cmd, a);
    if (out) fprintf(stderr, " (neither a %s flag nor a %s flag)", out->cmd + (strncmp(out->cmd, "moco ", 5) ? 0 : 5),
                     s->cmd + (strncmp(s->cmd, "moco ", 5) ? 0 : 5));
    if (near) fprintf(stderr, "; did you mean --%s?", near);
    if (out) fprintf(stderr, "\nTry '%s --help' and '%s --help'.\n", out->cmd, s->cmd);
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

static int set_value(const moco_optspec *s, const moco_opt *o, const char *v)
{
    char *end = NULL;
    int range = o->min < o->max;
    errno = 0;
    switch (o->kind) {
    case MOCO_OPT_INT: {
        long x = strtol(v, &end, 10);
        if (!*v || *end || errno) return bad(s, "--%s: '%s' is not an integer", o->name, v);
        if (range && (x < o->min || x > o->max)) {
            char r[64];
            snprintf(r, sizeof r, "[%.0f, %.0f]", o->min, o->max);
            fprintf(stderr, "%s: --%s: %ld is outside %s\nTry '%s --help'.\n", s->cmd, o->name, x, r, s->cmd);
            return MOCO_OPTS_USAGE;
        }
        *(long *)o->dst = x;
        break;
    }
    case MOCO_OPT_U64: {
        if (*v == '-') return bad(s, "--%s: '%s' is not a non-negative integer", o->name, v);
        unsigned long long x = strtoull(v, &end, 10);
        if (!*v || *end || errno) return bad(s, "--%s: '%s' is not a non-negative integer", o->name, v);
        if (range && ((double)x < o->min || (double)x > o->max)) {
            fprintf(stderr, "%s: --%s: %llu is outside [%.0f, %.0f]\nTry '%s --help'.\n", s->cmd, o->name, x, o->min, o->max, s->cmd);
            return MOCO_OPTS_USAGE;
        }
        *(uint64_t *)o->dst = x;
        break;
    }
    case MOCO_OPT_DOUBLE: {
        double x = strtod(v, &end);
        if (!*v || *end || errno || !isfinite(x)) return bad(s, "--%s: '%s' is not a finite number", o->name, v);
        if (range && (x < o->min || x > o->max)) {
            fprintf(stderr, "%s: --%s: %g is outside [%g, %g]\nTry '%s --help'.\n", s->cmd, o->name, x, o->min, o->max, s->cmd);
            return MOCO_OPTS_USAGE;
        }
        *(double *)o->dst = x;
        break;
    }
    case MOCO_OPT_STR:
        if (!*v) return bad(s, "--%s: empty value%s", o->name, "");
        *(const char **)o->dst = v;
        break;
    case MOCO_OPT_CHOICE:
        if (!choice_ok(o->choices, v)) {
            fprintf(stderr, "%s: --%s: '%s' is not one of %s\nTry '%s --help'.\n", s->cmd, o->name, v, o->choices, s->cmd);
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
        if (a[1] != '-') return bad(s, "unknown option '%s' (options are --long)%s", a, "");
        const char *name = a + 2, *eq = strchr(name, '=');
        size_t len = eq ? (size_t)(eq - name) : strlen(name);
        const moco_opt *o = find(s, name, len);
        if (!o) return unknown(s, a, name, len);
        seen[o - s->opts] = 1;
        if (o->kind == MOCO_OPT_FLAG) {
            if (eq) return bad(s, "--%s takes no value%s", o->name, "");
            *(int *)o->dst = 1;
            continue;
        }
        const char *v = eq ? eq + 1 : NULL;
        if (!v) {
            if (i + 1 >= argc) return bad(s, "--%s needs a value%s", o->name, "");
            v = argv[++i];
        }
        int rc = set_value(s, o, v);
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
            snprintf(missing + at, sizeof missing - at, "%s--%s", nmiss ? " and " : "", o->name);
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

/* Is --name in s->required? */
static int required(const moco_optspec *s, const char *name)
{
    size_t n = strlen(name);
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
        char lhs[64], def[96] = "";
        const char *mv = o->kind == MOCO_OPT_FLAG ? "" : o->kind == MOCO_OPT_STR ? " S"
                       : o->kind == MOCO_OPT_CHOICE ? " X" : o->kind == MOCO_OPT_DOUBLE ? " F" : " N";
        snprintf(lhs, sizeof lhs, "--%s%s", o->name, mv);
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
        printf("  %-22s %s%s%s\n", lhs, o->help, required(s, o->name) ? " (required)" : "", def);
    }
    printf("  %-22s %s\n", "--help", "show this help and exit");
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
