#include "base/idmap.h"

#include <errno.h>
#include <string.h>

#include "base/mem.h"

#define IDMAP_GONE ((const char *)&idmap_gone)
#define IDMAP_MIN 64

static const char idmap_gone;

/* FNV-1a over the key, the tag mixed in first. */
static uint32_t hash_of(int tag, const char *key)
{
    uint32_t h = 2166136261u ^ (uint32_t)tag;
    h *= 16777619u;
    for (const unsigned char *p = (const unsigned char *)key; *p; p++) {
        h ^= *p;
        h *= 16777619u;
    }
    return h;
}

static int same(const struct idmap_slot *s, uint32_t h, int tag, const char *key)
{
    return s->key && s->key != IDMAP_GONE && s->hash == h && s->tag == tag && !strcmp(s->key, key);
}

/* The slot holding (tag, key), or NULL. */
static struct idmap_slot *find(const struct idmap *m, uint32_t h, int tag, const char *key)
{
    if (!m->cap)
        return NULL;
    size_t mask = m->cap - 1;
    for (size_t i = h & mask;; i = (i + 1) & mask) {
        struct idmap_slot *s = &m->slots[i];
        if (!s->key)
            return NULL;
        if (same(s, h, tag, key))
            return s;
    }
}

static void insert_new(struct idmap *m, uint32_t h, int tag, const char *key, void *val)
{
    size_t mask = m->cap - 1;
    size_t i = h & mask;
    while (m->slots[i].key && m->slots[i].key != IDMAP_GONE)
        i = (i + 1) & mask;
    if (!m->slots[i].key)
        m->used++;
    m->slots[i] = (struct idmap_slot){.key = key, .val = val, .hash = h, .tag = tag};
    m->live++;
}

static void rehash(struct idmap *m, size_t cap)
{
    struct idmap_slot *old = m->slots;
    size_t oldcap = m->cap;
    m->slots = mem_calloc(cap, sizeof(*m->slots));
    m->cap = cap;
    m->used = m->live = 0;
    for (size_t i = 0; i < oldcap; i++)
        if (old[i].key && old[i].key != IDMAP_GONE)
            insert_new(m, old[i].hash, old[i].tag, old[i].key, old[i].val);
    mem_free(old);
}

int idmap_put(struct idmap *m, int tag, const char *key, void *val)
{
    if (!m || !key)
        return -EINVAL;
    uint32_t h = hash_of(tag, key);
    struct idmap_slot *s = find(m, h, tag, key);
    if (s) {
        s->val = val;
        return 0;
    }
    if ((m->used + 1) * 10 > m->cap * 7) {
        size_t cap = m->cap ? m->cap : IDMAP_MIN;
        while ((m->live + 1) * 10 > cap * 5) /* room to grow after deletions, too */
            cap *= 2;
        rehash(m, cap);
    }
    insert_new(m, h, tag, key, val);
    return 0;
}

void *idmap_get(const struct idmap *m, int tag, const char *key)
{
    struct idmap_slot *s = m && key ? find(m, hash_of(tag, key), tag, key) : NULL;
    return s ? s->val : NULL;
}

void *idmap_del(struct idmap *m, int tag, const char *key)
{
    struct idmap_slot *s = m && key ? find(m, hash_of(tag, key), tag, key) : NULL;
    if (!s)
        return NULL;
    void *val = s->val;
    s->key = IDMAP_GONE;
    s->val = NULL;
    m->live--;
    return val;
}

size_t idmap_count(const struct idmap *m)
{
    return m ? m->live : 0;
}

const struct idmap_slot *idmap_next(const struct idmap *m, size_t *pos)
{
    for (; m && *pos < m->cap; (*pos)++) {
        const struct idmap_slot *s = &m->slots[*pos];
        if (s->key && s->key != IDMAP_GONE) {
            (*pos)++;
            return s;
        }
    }
    return NULL;
}

void idmap_free(struct idmap *m)
{
    mem_free(m->slots);
    memset(m, 0, sizeof(*m));
}
