/* jtext: see jtext.h. */
#include "base/jtext.h"

#include "base/mem.h"

char *jtext_take(struct json_object *o)
{
    /* Copy before the put: the text lives in o's print buffer. */
    char *s = mem_strdup(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
    json_object_put(o);
    return s;
}
