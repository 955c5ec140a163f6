/* fuzz_jscan: the scanner that routes every gateway event without a tree
 * (common/parse/jscan.c), on the shapes the ingress asks of it: an envelope, a
 * message's members, its author object and its mentions array.
 *
 * Checks: every value found lies inside the input; a member that is an
 * object of an accepted document scans again on its own, and an accepted
 * array iterates to its end without an error (what was validated once
 * must not be refused the second time: routing relies on it); numbers
 * convert or refuse, never crash. */
#include <stdlib.h>
#include "fuzz.h"
#include "parse/jscan.h"

FUZZ_INIT_DEFAULT

static const char *base;
static size_t base_len;

static void inside(const struct jscan_val *v)
{
    if (v->type == JSCAN_ABSENT)
        return;
    if (v->p < base || v->p + v->n > base + base_len)
        abort();
}

static void walk(const struct jscan_val *v, int depth);

static void walk_object(const struct jscan_val *v, int depth)
{
    static const char *const keys[] = {"op", "t", "s", "d", "author", "mentions", "id", "bot", "channel_id"};
    struct jscan_val out[9];
    if (jscan_object(v->p, v->n, keys, 9, out))
        abort(); /* it was accepted as part of its parent */
    for (int i = 0; i < 9; i++) {
        inside(&out[i]);
        walk(&out[i], depth + 1);
    }
}

static void walk(const struct jscan_val *v, int depth)
{
    if (depth > JSCAN_MAX_DEPTH + 1)
        abort();
    if (v->type == JSCAN_OBJECT) {
        walk_object(v, depth);
    } else if (v->type == JSCAN_ARRAY) {
        size_t pos = 0;
        struct jscan_val el;
        int rc;
        while ((rc = jscan_array_next(v, &pos, &el)) == 1) {
            inside(&el);
            walk(&el, depth + 1);
        }
        if (rc != 0)
            abort();
    } else if (v->type == JSCAN_NUMBER) {
        int64_t x;
        (void)jscan_int64(v, &x);
    } else if (v->type == JSCAN_STRING) {
        (void)jscan_eq(v, "123");
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* an exact-size copy: a read past it is an ASan report */
    char *p = malloc(size ? size : 1);
    memcpy(p, data, size);
    base = p;
    base_len = size;
    static const char *const keys[] = {"op", "t", "s", "d"};
    struct jscan_val env[4];
    if (jscan_object(p, size, keys, 4, env) == 0) {
        struct jscan_val whole = {JSCAN_OBJECT, p, size};
        for (int i = 0; i < 4; i++)
            inside(&env[i]);
        /* leading/trailing whitespace is allowed at the top only */
        while (whole.n && strchr(" \t\r\n", whole.p[0]))
            whole.p++, whole.n--;
        while (whole.n && strchr(" \t\r\n", whole.p[whole.n - 1]))
            whole.n--;
        walk(&whole, 0);
    }
    free(p);
    return 0;
}
