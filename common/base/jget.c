/* jget: see jget.h. */
#include "base/jget.h"

struct json_object *jget_member(struct json_object *o, const char *key)
{
    struct json_object *v;
    /* json-c answers 0 for a NULL or non-object o and leaves v NULL for null. */
    return json_object_object_get_ex(o, key, &v) ? v : NULL;
}

struct json_object *jget_typed(struct json_object *o, const char *key, enum json_type t)
{
    struct json_object *v = jget_member(o, key);
    return v && json_object_is_type(v, t) ? v : NULL;
}

const char *jget_str(struct json_object *o, const char *key)
{
    struct json_object *v = jget_typed(o, key, json_type_string);
    return v ? json_object_get_string(v) : NULL;
}

int64_t jget_int(struct json_object *o, const char *key)
{
    struct json_object *v = jget_typed(o, key, json_type_int);
    return v ? json_object_get_int64(v) : 0;
}

int64_t jget_num(struct json_object *o, const char *key)
{
    struct json_object *v = jget_member(o, key);
    if (v && (json_object_is_type(v, json_type_int) || json_object_is_type(v, json_type_double) ||
              json_object_is_type(v, json_type_string)))
        return json_object_get_int64(v);
    return 0;
}

int64_t jget_int_any(struct json_object *o, const char *key)
{
    return json_object_get_int64(jget_member(o, key));
}
