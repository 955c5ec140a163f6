/* jget: read one member of a json-c object, with the type check the caller
 * wants, in one call.
 *
 * Every function takes an object o and a member name key (not NULL). o may
 * be NULL or a value that is not an object: then every member is missing,
 * so calls chain (jget_str(jget_member(ix, "user"), "id")). A member whose
 * value is JSON null is missing too (json-c stores null as NULL).
 *
 * Returned pointers are borrowed from o: they stay valid while o holds its
 * reference and the member is not replaced; never free them. Nothing here
 * allocates, logs or can fail. */
#ifndef BC_JGET_H
#define BC_JGET_H

#include <stdint.h>

#include <json.h>

/* The member, of any type; NULL when it is missing (or null). */
struct json_object *jget_member(struct json_object *o, const char *key);

/* The member if it has type t, else NULL (missing or another type). An
 * integer is not a double here, nor the other way round. */
struct json_object *jget_typed(struct json_object *o, const char *key, enum json_type t);

/* A string member's text (NUL-terminated; it may hold an earlier NUL byte),
 * else NULL: missing, null, or any other type (a number is not a string). */
const char *jget_str(struct json_object *o, const char *key);

/* An integer member's value, else 0: missing, or any other type, also a
 * double or a numeric string. An unsigned value above INT64_MAX is
 * INT64_MAX. */
int64_t jget_int(struct json_object *o, const char *key);

/* A number some senders write as a string: an integer as jget_int; a double
 * truncated toward zero (saturating at INT64_MIN/INT64_MAX); a string as
 * strtoll(s, NULL, 10) reads its start (saturating; 0 if it has no digits
 * there). 0 when missing or a boolean, object or array. */
int64_t jget_num(struct json_object *o, const char *key);

/* json-c's own conversion of whatever the member is: as jget_num, and a
 * boolean is 0 or 1. 0 when missing, an object or an array. */
int64_t jget_int_any(struct json_object *o, const char *key);

#endif
