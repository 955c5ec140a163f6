/* idmap: a hash index from (tag, string key) to a pointer.
 *
 * For finding one of thousands of live objects by its id without walking a
 * list: the bus finds a job or an unconfirmed ack by stream and entry id,
 * drest a route or a rate limit lane by its key, the ingress a channel by
 * its id.
 * Keys are borrowed: the caller keeps each key's bytes unchanged until its
 * entry is deleted (an id stored inside the object it indexes does). Open
 * addressing with linear probing; it grows at 70 % load and never shrinks
 * below its largest size until idmap_free. Not thread-safe. */
#ifndef BC_IDMAP_H
#define BC_IDMAP_H

#include <stddef.h>
#include <stdint.h>

struct idmap_slot {
    const char *key; /* NULL: empty; a marker of idmap.c: deleted */
    void *val;
    uint32_t hash;
    int tag;
};

struct idmap {
    struct idmap_slot *slots;
    size_t cap, used, live; /* used counts deleted slots too */
};

/* A zeroed struct idmap is an empty map; idmap_free empties it again. */
void idmap_free(struct idmap *m);
/* Index val under (tag, key); key is borrowed. A pair already there gets
 * the new val. Returns 0, or -EINVAL when m or key is NULL (memory comes
 * from mem_, which aborts when there is none). */
int idmap_put(struct idmap *m, int tag, const char *key, void *val);
/* The val of (tag, key), or NULL. */
void *idmap_get(const struct idmap *m, int tag, const char *key);
/* Remove (tag, key); returns its val, or NULL when it was not there. */
void *idmap_del(struct idmap *m, int tag, const char *key);
size_t idmap_count(const struct idmap *m);
/* Walk the entries in no particular order: start with *pos = 0 and call
 * until it returns NULL; each call returns the next live slot (read its
 * tag, key and val; do not change them). During a walk the entry just
 * returned may be deleted with idmap_del (deleting never moves another
 * entry), but idmap_put may move every entry and ends the walk. */
const struct idmap_slot *idmap_next(const struct idmap *m, size_t *pos);

#endif
