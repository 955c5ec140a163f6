#include "discord/cmds.h"

#include <json.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>

static const struct cmd_table *const *all; /* set by cmds_use */

void cmds_use(const struct cmd_table *const *tables)
{
    all = tables;
}

const struct cmd_def *cmds_find(const char *name, int *en)
{
    for (size_t t = 0; all && all[t]; t++)
        for (size_t i = 0; i < all[t]->n; i++) {
            const struct cmd_def *d = &all[t]->defs[i];
            int is_en = d->name_en && !strcmp(d->name_en, name);
            if (is_en || !strcmp(d->name, name)) {
                if (en)
                    *en = is_en && d->twin;
                return d;
            }
        }
    return NULL;
}

const char *cmds_option_name(const struct cmd_def *d, int en, const char *key)
{
    for (const struct cmd_option *op = d ? d->options : NULL; op && op->key; op++)
        if (!strcmp(op->key, key))
            return en && op->name_en ? op->name_en : op->name;
    return NULL;
}

size_t cmds_count(void)
{
    size_t n = 0;
    for (size_t t = 0; all && all[t]; t++)
        for (size_t i = 0; i < all[t]->n; i++)
            n += 1 + (all[t]->defs[i].twin && all[t]->defs[i].name_en);
    return n;
}

static struct json_object *ko(const char *text)
{
    struct json_object *o = json_object_new_object();
    json_object_object_add(o, "ko", json_object_new_string(text));
    return o;
}

static struct json_object *choices_json(const struct cmd_choice *ch)
{
    struct json_object *arr = json_object_new_array();
    for (; ch->value; ch++) {
        struct json_object *o = json_object_new_object();
        json_object_object_add(o, "name", json_object_new_string(ch->name_en));
        json_object_object_add(o, "name_localizations", ko(ch->name_ko));
        json_object_object_add(o, "value", json_object_new_string(ch->value));
        json_object_array_add(arr, o);
    }
    return arr;
}

static struct json_object *option_json(const struct cmd_option *op, int en)
{
    struct json_object *o = json_object_new_object();
    json_object_object_add(o, "type", json_object_new_int(op->type));
    json_object_object_add(o, "name", json_object_new_string(en && op->name_en ? op->name_en : op->name));
    json_object_object_add(o, "description", json_object_new_string(op->desc_en));
    json_object_object_add(o, "description_localizations", ko(op->desc_ko));
    json_object_object_add(o, "required", json_object_new_boolean(op->required));
    if (op->max_length)
        json_object_object_add(o, "max_length", json_object_new_int(op->max_length));
    if (op->has_range) {
        json_object_object_add(o, "min_value", json_object_new_double(op->min_value));
        json_object_object_add(o, "max_value", json_object_new_double(op->max_value));
    }
    if (op->choices)
        json_object_object_add(o, "choices", choices_json(op->choices));
    return o;
}

/* The Korean command (en 0) or its English twin (en 1). A twin has no
 * en-US name localization: English clients would otherwise see two
 * commands of the same name. */
static struct json_object *command_json(const struct cmd_def *c, int en)
{
    struct json_object *o = json_object_new_object();
    json_object_object_add(o, "name", json_object_new_string(en ? c->name_en : c->name));
    if (c->name_en && !c->twin) {
        struct json_object *loc = json_object_new_object();
        json_object_object_add(loc, "en-US", json_object_new_string(c->name_en));
        json_object_object_add(loc, "en-GB", json_object_new_string(c->name_en));
        json_object_object_add(o, "name_localizations", loc);
    }
    json_object_object_add(o, "type", json_object_new_int(1));
    json_object_object_add(o, "description", json_object_new_string(c->desc_en));
    json_object_object_add(o, "description_localizations", ko(c->desc_ko));
    if (c->admin || c->permissions)
        json_object_object_add(o, "default_member_permissions",
                               json_object_new_string(c->admin ? "0" : c->permissions));
    struct json_object *opts = json_object_new_array();
    for (const struct cmd_option *op = c->options; op && op->key; op++)
        json_object_array_add(opts, option_json(op, en));
    json_object_object_add(o, "options", opts);
    return o;
}

void cmds_json(struct buf *out)
{
    struct json_object *arr = json_object_new_array();
    for (size_t t = 0; all && all[t]; t++)
        for (size_t i = 0; i < all[t]->n; i++) {
            const struct cmd_def *d = &all[t]->defs[i];
            json_object_array_add(arr, command_json(d, 0));
            if (d->twin && d->name_en)
                json_object_array_add(arr, command_json(d, 1));
        }
    buf_puts(out, json_object_to_json_string_ext(arr, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
    json_object_put(arr);
}

void cmds_hash(char out[65])
{
    struct buf b;
    buf_init(&b, 1 << 20);
    cmds_json(&b);
    unsigned char h[crypto_hash_sha256_BYTES];
    crypto_hash_sha256(h, (const unsigned char *)buf_str(&b), b.len);
    for (int i = 0; i < 32; i++)
        snprintf(out + 2 * i, 3, "%02x", h[i]);
    buf_free(&b);
}
