/* blascore.c: OpenBLAS's kernel set against the CPU's instruction sets
 * (blascore.h). */
#include "trainer/engine/blascore.h"

#include <limits.h>
#include <stdlib.h>
#include <strings.h>
#include <unistd.h>

char *openblas_get_corename(void); /* OpenBLAS exports it; cblas.h declares it only in some versions */

const char *blas_core(void)
{
    const char *n = openblas_get_corename();
    return n ? n : "unknown";
}

/* 0 SSE only, 1 AVX, 2 AVX2 with FMA, 3 AVX-512: the level of a kernel set,
 * by OpenBLAS's names for the x86-64 ones. */
static int level_of(const char *core)
{
    static const char *const l3[] = {"SkylakeX", "Cooperlake", "SapphireRapids", NULL};
    static const char *const l2[] = {"Haswell", "Zen", "Excavator", NULL};
    static const char *const l1[] = {"Sandybridge", "Bulldozer", "Piledriver", "Steamroller", NULL};
    const char *const *sets[] = {l1, l2, l3};
    for (int l = 3; l >= 1; l--)
        for (const char *const *n = sets[l - 1]; *n; n++)
            if (!strcasecmp(core, *n)) return l;
    return 0;
}

const char *blas_core_wanted(void)
{
    if (getenv("OPENBLAS_CORETYPE")) return NULL;
    const char *want = NULL;
    int level = 0;
#if defined(__x86_64__) && defined(__GNUC__) /* elsewhere OpenBLAS's own choice stands */
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512cd") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl")) {
        want = __builtin_cpu_supports("avx512bf16") ? "Cooperlake" : "SkylakeX", level = 3;
    } else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
        want = "Haswell", level = 2;
    }
#endif
    return want && level_of(blas_core()) < level ? want : NULL;
}

void blas_core_restart(char **argv)
{
    const char *core = blas_core_wanted();
    if (!core || setenv("OPENBLAS_CORETYPE", core, 1)) return;
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n > 0) {
        self[n] = 0;
        execv(self, argv);
    }
    execv("/proc/self/exe", argv);
    unsetenv("OPENBLAS_CORETYPE");
}
