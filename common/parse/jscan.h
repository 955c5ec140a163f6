/* jscan: find a few members of a JSON object without building a tree.
 *
 * The gateway delivers thousands of events a second and the holder needs
 * four members of each envelope (op, t, s, d) and a handful of a message's
 * (channel, guild, author, mentions) to route it; building a json-c tree of
 * every event, to throw it away again, cost most of its time. jscan walks
 * the bytes once, checks them as it goes (strings, escapes, numbers,
 * literals, nesting up to JSCAN_MAX_DEPTH), and reports where the wanted
 * members' values are. Nothing is allocated and nothing is copied: values
 * point into the input.
 *
 * What it checks is what routing relies on: the structure (a value is
 * skipped exactly as a JSON parser would), string escapes and control
 * characters, number syntax, and nothing but whitespace after the object.
 * It does not check UTF-8; whoever parses a routed payload does that. A key
 * is matched by its raw bytes, so a key written with escapes does not match
 * (Discord never escapes its keys). When a key appears twice the last one
 * wins, as in json-c.
 *
 * Input is untrusted: every function is bounded by len, never reads past
 * it, and fails with -1 on anything malformed. */
#ifndef BC_JSCAN_H
#define BC_JSCAN_H

#include <stddef.h>
#include <stdint.h>

#define JSCAN_MAX_DEPTH 64

enum jscan_type {
    JSCAN_ABSENT = 0,
    JSCAN_STRING, /* p/n: the characters between the quotes, escapes as sent */
    JSCAN_NUMBER, /* p/n: the number as sent */
    JSCAN_OBJECT, /* p/n: from '{' to '}' inclusive */
    JSCAN_ARRAY,  /* p/n: from '[' to ']' inclusive */
    JSCAN_TRUE,
    JSCAN_FALSE,
    JSCAN_NULL,
};

struct jscan_val {
    enum jscan_type type;
    const char *p;
    size_t n;
};

/* The object at p (leading whitespace allowed; the whole of p..p+len must
 * be the object and trailing whitespace): out[i] gets the value of keys[i],
 * or JSCAN_ABSENT. Returns 0, or -1 when the input is not one well-formed
 * JSON object. */
int jscan_object(const char *p, size_t len, const char *const *keys, int nkeys, struct jscan_val *out);

/* Iterate an array value (v->type == JSCAN_ARRAY): *pos starts at 0; each
 * call stores the next element in *el and returns 1, returns 0 at the end,
 * -1 on malformed input. */
int jscan_array_next(const struct jscan_val *v, size_t *pos, struct jscan_val *el);

/* A string value equal to s (no escapes involved); 0 otherwise. */
int jscan_eq(const struct jscan_val *v, const char *s);

/* A number value that is an integer in int64 range into *out: 0, else -1. */
int jscan_int64(const struct jscan_val *v, int64_t *out);

#endif
