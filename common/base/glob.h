/* glob: channel-name patterns that work for every script.
 *
 * '*' matches any run of characters, '?' exactly one character (a whole
 * UTF-8 sequence, so "채팅방-?" matches "채팅방-1" and "채팅방-가"; in a
 * name that is not valid UTF-8 each ill-formed byte is one), every
 * other character itself; ASCII letters compare case-insensitively, others
 * exactly. A list is comma-separated; spaces around entries are ignored. */
#ifndef BC_GLOB_H
#define BC_GLOB_H

#include <stddef.h>

/* 1 if name matches pattern (n bytes of it), else 0. */
int glob_match_n(const char *pattern, size_t n, const char *name);
int glob_match(const char *pattern, const char *name);
/* 1 if name matches any entry of the comma-separated list. */
int glob_list_match(const char *list, const char *name);

#endif
