/* clock: the wall clock in milliseconds, the one copy of it.
 *
 * Wall time is what users and other processes see: timestamps written to
 * Redis or into a job, Discord snowflakes, "resets at midnight". It jumps
 * when the system clock is set, so durations and timeouts use the loop's
 * monotonic clock (uv_now) instead. */
#ifndef BC_CLOCK_H
#define BC_CLOCK_H

#include <stdint.h>

/* Milliseconds since the Unix epoch (UTC), from CLOCK_REALTIME, truncated
 * (not rounded) to the millisecond, as gettimeofday()'s seconds * 1000 +
 * microseconds / 1000 would be. Never fails; safe from any thread. */
int64_t clock_wall_ms(void);

#endif
