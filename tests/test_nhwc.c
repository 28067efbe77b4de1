/* test_nhwc.c: the AVX2 transposes around oneDNN's fp32 convolutions
 * (trainer/engine/nhwc.h) against a plain loop beside them, bit for bit:
 *  - pack: (C, ldc) rows, fp32 or bf16 (widened exactly), into (P, C), the
 *    rows P..Ppad zero, nothing written past them;
 *  - unpack: (P, C) into (C, ldc) rows, written or added, the rest of each
 *    row (P..ldc) untouched;
 * on channel counts of 3 (the stem), 8, 16, 20, 32 and position counts that
 * are and are not multiples of 8. Skipped on a CPU without AVX2 and FMA. */
#include "tests/testutil.h"

#include <math.h>

#include "formats/rng.h"
#include "trainer/engine/nhwc.h"

static const float SENT = -12345.5f; /* in memory the kernels must not touch */

static void randu(float *p, size_t n, uint64_t seed)
{
    moco_rng r;
    moco_rng_init(&r, seed, 9, 0, 0);
    for (size_t i = 0; i < n; i++) p[i] = (float)(2.0 * moco_rng_uniform(&r) - 1.0);
}

static float bf16_value(uint16_t h)
{
    uint32_t b = (uint32_t)h << 16;
    float f;
    memcpy(&f, &b, sizeof f);
    return f;
}

/* C, ldc, P, Ppad */
static const size_t shapes[][4] = {{3, 37, 29, 32}, {8, 64, 64, 64}, {16, 130, 120, 128}, {20, 50, 45, 48}, {32, 96, 96, 100}, {16, 7, 7, 8}};

static void test_pack(void **st)
{
    (void)st;
    int checked = 0;
    for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++)
        for (int half = 0; half < 2; half++) {
            const size_t C = shapes[s][0], ldc = shapes[s][1], P = shapes[s][2], Ppad = shapes[s][3], guard = 64;
            float *src = test_calloc(C * ldc, sizeof(float)), *dst = test_calloc(Ppad * C + guard, sizeof(float));
            uint16_t *srch = test_calloc(C * ldc, sizeof(uint16_t));
            randu(src, C * ldc, 1 + s);
            for (size_t i = 0; i < C * ldc; i++) {
                uint32_t b;
                memcpy(&b, &src[i], sizeof b);
                srch[i] = (uint16_t)(b >> 16);
            }
            for (size_t i = 0; i < Ppad * C + guard; i++) dst[i] = SENT;
            nhwc_pack_f32_avx2(dst, half ? (const void *)srch : (const void *)src, half, (int)C, ldc, P, Ppad);
            for (size_t p = 0; p < Ppad; p++)
                for (size_t c = 0; c < C; c++) {
                    const float want = p >= P ? 0.0f : half ? bf16_value(srch[c * ldc + p]) : src[c * ldc + p];
                    if (memcmp(&dst[p * C + c], &want, sizeof want))
                        fail_msg("pack C %zu ldc %zu P %zu Ppad %zu%s: position %zu channel %zu is %g, want %g", C, ldc, P, Ppad,
                                 half ? " (bf16)" : "", p, c, dst[p * C + c], want);
                    checked++;
                }
            for (size_t i = Ppad * C; i < Ppad * C + guard; i++)
                if (dst[i] != SENT) fail_msg("pack C %zu P %zu Ppad %zu: wrote past the padded rows, at %zu", C, P, Ppad, i);
            test_free(src), test_free(dst), test_free(srch);
        }
    printf("pack: %d values checked\n", checked);
    assert_int_equal(checked, 13888); /* every position up to Ppad of every channel, of every shape, fp32 and bf16 */
}

static void test_unpack(void **st)
{
    (void)st;
    int checked = 0;
    for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++)
        for (int add = 0; add < 2; add++) {
            const size_t C = shapes[s][0], ldc = shapes[s][1], P = shapes[s][2];
            float *src = test_calloc(P * C, sizeof(float)), *dst = test_calloc(C * ldc, sizeof(float)),
                  *old = test_calloc(C * ldc, sizeof(float));
            randu(src, P * C, 11 + s);
            randu(old, C * ldc, 21 + s);
            for (size_t c = 0; c < C; c++)
                for (size_t p = 0; p < ldc; p++)
                    if (p >= P) old[c * ldc + p] = SENT;
            memcpy(dst, old, sizeof(float) * C * ldc);
            nhwc_unpack_avx2(dst, src, (int)C, ldc, P, add);
            for (size_t c = 0; c < C; c++)
                for (size_t p = 0; p < ldc; p++) {
                    const float o = old[c * ldc + p], want = p >= P ? o : add ? o + src[p * C + c] : src[p * C + c];
                    if (memcmp(&dst[c * ldc + p], &want, sizeof want))
                        fail_msg("unpack C %zu ldc %zu P %zu%s: channel %zu position %zu is %g, want %g", C, ldc, P, add ? " (add)" : "",
                                 c, p, dst[c * ldc + p], want);
                    checked++;
                }
            test_free(src), test_free(dst), test_free(old);
        }
    printf("unpack: %d values checked\n", checked);
    assert_int_equal(checked, 13774); /* the whole of every row (ldc), of every shape, written and added */
}

int main(void)
{
#if defined(__x86_64__) /* elsewhere the functions are plain loops, for any CPU */
    if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma")) {
        printf("test_nhwc: this CPU has no AVX2 and FMA: skipped\n");
        return TEST_SKIP_STATUS;
    }
#endif
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pack),
        cmocka_unit_test(test_unpack),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
