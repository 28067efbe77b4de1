/* clock.h: the monotonic clock every process uses for rates, timeouts and
 * heartbeats (never for anything that must be reproducible). */
#ifndef MOCO_CLOCK_H
#define MOCO_CLOCK_H

#include <time.h>

/* Seconds on CLOCK_MONOTONIC. */
static inline double moco_now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

#endif
