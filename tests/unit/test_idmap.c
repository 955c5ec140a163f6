/* Unit tests for idmap: the hash index the bus, drest and the ingress find
 * their objects with. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "base/idmap.h"
#include "base/mem.h"
#include "ut.h"

#define N 20000

static void test_put_get_del_by_tag_and_key(void)
{
    struct idmap m = {0};
    int a, b, c;
    UT_ASSERT(idmap_get(&m, 0, "1-0") == NULL);
    UT_ASSERT(idmap_del(&m, 0, "1-0") == NULL);
    UT_EQ_INT(idmap_put(&m, 0, "1-0", &a), 0);
    UT_EQ_INT(idmap_put(&m, 1, "1-0", &b), 0); /* same id, another stream */
    UT_ASSERT(idmap_get(&m, 0, "1-0") == &a);
    UT_ASSERT(idmap_get(&m, 1, "1-0") == &b);
    UT_ASSERT(idmap_get(&m, 2, "1-0") == NULL);
    UT_EQ_INT(idmap_put(&m, 0, "1-0", &c), 0); /* replaced, not added */
    UT_EQ_INT(idmap_count(&m), 2);
    UT_ASSERT(idmap_del(&m, 0, "1-0") == &c);
    UT_ASSERT(idmap_get(&m, 0, "1-0") == NULL);
    UT_ASSERT(idmap_get(&m, 1, "1-0") == &b);
    UT_EQ_INT(idmap_count(&m), 1);
    UT_EQ_INT(idmap_put(NULL, 0, "x", &a), -EINVAL);
    UT_EQ_INT(idmap_put(&m, 0, NULL, &a), -EINVAL);
    idmap_free(&m);
    UT_EQ_INT(idmap_count(&m), 0);
    idmap_free(&m); /* twice is fine */
}

/* Many entries, deleted and added in turns (a bus with thousands of jobs
 * coming and going): every lookup stays right and deleted slots do not
 * pile up into a full table. */
static void test_churn_keeps_every_entry_findable(void)
{
    static char keys[N][24];
    struct idmap m = {0};
    for (int i = 0; i < N; i++) {
        snprintf(keys[i], sizeof keys[i], "1796665%06d-%d", i, i % 3);
        UT_EQ_INT(idmap_put(&m, i % 4, keys[i], keys[i]), 0);
    }
    UT_EQ_INT(idmap_count(&m), N);
    for (int round = 0; round < 5; round++) {
        for (int i = round % 2; i < N; i += 2)
            UT_ASSERT(idmap_del(&m, i % 4, keys[i]) == keys[i]);
        for (int i = round % 2; i < N; i += 2)
            UT_EQ_INT(idmap_put(&m, i % 4, keys[i], keys[i]), 0);
    }
    for (int i = 0; i < N; i++) {
        UT_ASSERT(idmap_get(&m, i % 4, keys[i]) == keys[i]);
        UT_ASSERT(idmap_get(&m, (i + 1) % 4, keys[i]) == NULL);
    }
    UT_EQ_INT(idmap_count(&m), N);
    UT_ASSERT(m.cap <= 4 * N); /* grew with the entries, not with the churn */
    idmap_free(&m);
}

/* A walk sees every live entry once, also while it deletes the entries it
 * is given (drest drops idle lanes so) and after deletions elsewhere. */
static void test_walk_sees_each_entry_once_and_may_delete_it(void)
{
    static char keys[1000][16];
    static int seen[1000];
    struct idmap m = {0};
    size_t pos = 0;
    UT_ASSERT(idmap_next(&m, &pos) == NULL);
    for (int i = 0; i < 1000; i++) {
        snprintf(keys[i], sizeof keys[i], "%d", i);
        UT_EQ_INT(idmap_put(&m, 1, keys[i], &seen[i]), 0);
    }
    for (int i = 0; i < 1000; i += 10)
        UT_ASSERT(idmap_del(&m, 1, keys[i]) == &seen[i]);
    const struct idmap_slot *s;
    int n = 0;
    for (pos = 0; (s = idmap_next(&m, &pos));) {
        int *v = s->val;
        (*v)++;
        n++;
        UT_EQ_INT(s->tag, 1);
        UT_ASSERT(s->key == keys[v - seen]);
        if ((v - seen) % 2)
            UT_ASSERT(idmap_del(&m, 1, s->key) == v);
    }
    UT_EQ_INT(n, 900);
    for (int i = 0; i < 1000; i++)
        UT_EQ_INT(seen[i], i % 10 ? 1 : 0);
    UT_EQ_INT(idmap_count(&m), 400);
    for (n = 0, pos = 0; idmap_next(&m, &pos);)
        n++;
    UT_EQ_INT(n, 400);
    idmap_free(&m);
}

static const struct ut_case cases[] = {
    UT_CASE(test_put_get_del_by_tag_and_key),
    UT_CASE(test_churn_keeps_every_entry_findable),
    UT_CASE(test_walk_sees_each_entry_once_and_may_delete_it),
    {0},
};
UT_MAIN(cases)
