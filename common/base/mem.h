/* mem: the one allocation wrapper.
 *
 * Out-of-memory policy: an allocation that fails logs one line to stderr and
 * aborts the process (as redis zmalloc does). A bot that cannot allocate a few
 * bytes cannot answer anyone; crashing lets the supervisor restart it and the
 * stream redeliver its unacknowledged jobs, so nothing is lost. Callers
 * therefore never check these for NULL. Everything is freed with mem_free. */
#ifndef BC_MEM_H
#define BC_MEM_H

#include <stddef.h>

void *mem_alloc(size_t n);
void *mem_calloc(size_t n, size_t size);
void *mem_realloc(void *p, size_t n);
char *mem_strdup(const char *s);
char *mem_strndup(const char *s, size_t n);
void mem_free(void *p);

#endif
