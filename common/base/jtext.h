/* jtext: a json-c value as the compact text we send and store.
 *
 * Every request body, job payload and stored result is written the same
 * way: no spaces or newlines, and '/' left as it is (json-c escapes it as
 * "\/" by default, which is valid JSON but longer and harder to read in
 * Redis and logs). */
#ifndef BC_JTEXT_H
#define BC_JTEXT_H

#include <json.h>

/* The text of o, in a new string the caller frees with mem_free; never NULL
 * (out of memory aborts, see base/mem.h). Takes the caller's reference to o:
 * o is released (freed, unless someone else holds a reference) before this
 * returns. o NULL gives "null". */
char *jtext_take(struct json_object *o);

#endif
