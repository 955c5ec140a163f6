/* drest: Discord REST on hcl, with per-route lanes and a cluster-wide global
 * limiter. See drest.h for the contract and docs/rate-limits.md for the
 * design and the reasons behind it.
 *
 * A request moves through these places, each a list it sits on:
 *   lane queue  -> waits for its lane (bucket, major parameter) to allow it
 *   gwait       -> waits for a slot of the global limit (exempt routes skip it)
 *   admitting   -> a Redis EVAL is deciding (the reply moves it on)
 *   sendq       -> admitted, handed to hcl on this pump
 *   sending     -> on the wire; the answer either completes it or puts it
 *                  back at the head of its lane (429, retry with backoff).
 * Lanes release requests and requests are handed to hcl only in the pump
 * (on_timer). "Kicking" starts its timer at 0, so no public function calls
 * back synchronously and no user callback runs while the pump walks a list
 * it could change. */
#include "discord/drest.h"

#include <errno.h>
#include <json.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/time.h>

#include "base/buf.h"
#include "base/err.h"
#include "base/idmap.h"
#include "base/jget.h"
#include "base/log.h"
#include "base/mem.h"
#include "discord/dpath.h"
#include "io/hcl.h"
#include "io/rds.h"

#ifndef BC_VERSION
#define BC_VERSION "0"
#endif

#define NEVER UINT64_MAX
#define DREST_MAX_PATH 2048
#define DREST_MAX_SEGS 32
#define DREST_MAX_ROUTES 4096
#define DREST_DEFAULT_TIMEOUT_MS 15000L
#define DREST_BACKOFF_CAP_MS 10000
/* The global limiter counts admissions in a sliding window a little longer
 * than one second: admission and arrival at Discord are a few ms apart and
 * not always by the same amount. */
#define DREST_WINDOW_MS 1050
/* Added to every reset time learned from headers: uv_now has 1 ms steps and
 * Discord rounds reset_after to 1 ms. */
#define DREST_RESET_MARGIN_MS 5
#define DREST_MAX_429 5                 /* 429 retries of one request */
#define DREST_MAX_RETRY_AFTER_MS 60000  /* longer waits go back to the caller */
#define DREST_GC_MS 10000               /* how often idle lanes are dropped */
#define DREST_INV_SLOT_MS 10000         /* invalid-request counter: 60 x 10 s */
#define DREST_INV_SLOTS 60

/* Slides a log of admissions (sorted set, scored by Redis' own clock) one
 * window back and admits if fewer than the limit remain. Also reports a
 * cluster-wide pause set by a global 429. Reply {0,0} admitted, {1,ms}
 * paused, {2,ms} full: try again in ms. */
static const char ADMIT_LUA[] =
    "if redis.replicate_commands then redis.replicate_commands() end\n"
    "local p = redis.call('PTTL', KEYS[2])\n"
    "if p > 0 then return {1, p} end\n"
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
    "local win = tonumber(ARGV[2])\n"
    "redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - win)\n"
    "if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[1]) then\n"
    "  redis.call('ZADD', KEYS[1], now, ARGV[3])\n"
    "  redis.call('PEXPIRE', KEYS[1], win + 1000)\n"
    "  return {0, 0}\n"
    "end\n"
    "local o = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')\n"
    "return {2, tonumber(o[2]) + win - now}\n";

/* Sets the pause key unless a longer pause is already in force. */
static const char PAUSE_LUA[] =
    "if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[1]) then\n"
    "  redis.call('SET', KEYS[1], '1', 'PX', ARGV[1])\n"
    "end\n"
    "return 1\n";

static const char CT_JSON[] = "Content-Type: application/json";
/* An empty header removes the form-urlencoded type curl adds to a body. */
static const char CT_NONE[] = "Content-Type:";

/* ---- types --------------------------------------------------------------- */

/* A route template ("POST /channels/{id}/messages") and the bucket Discord
 * said it belongs to. Routes live until drest is freed (capped). */
struct route {
    char *key;    /* the template; indexes d->routes */
    char *bucket; /* NULL until learned */
};

/* A FIFO of requests for one (bucket, major parameter), or (route, major)
 * while the route's bucket is unknown, with what the headers said. */
struct lane {
    char *key;            /* "b <bucket> <major>" or "r <route> <major>"; indexes d->lanes */
    struct route *route;  /* set while keyed by route */
    char *major;          /* "channels/1", "webhooks/1/<token>", "" */
    struct dreq *qh, *qt; /* waiting, oldest first */
    size_t qlen;
    unsigned inflight;    /* released and not yet answered */
    int known;            /* limit/remaining/reset_at come from headers */
    long limit, remaining;
    uint64_t reset_at;     /* loop ms when the bucket refills */
    uint64_t paused_until; /* after a 429 of scope user/shared */
    struct lane *aprev, *anext; /* d->active: lanes with a queue */
    int on_active;
};

enum dq_state { DQ_LANE, DQ_GWAIT, DQ_ADMIT, DQ_SENDQ, DQ_SEND };

struct dreq {
    struct drest *d;
    struct lane *lane;
    struct route *route;
    enum dq_state st;
    unsigned holds_lane : 1; /* counted in lane->inflight */
    unsigned dead : 1;       /* callback ran at close; an EVAL reply is still due */
    unsigned cancelled : 1;  /* hcl_cancel called at close */
    unsigned bot_auth : 1, retry_safe : 1, exempt : 1, idempotent : 1;
    char method[8];
    char *url;     /* holds tokens: never logged */
    char *logpath; /* path with tokens replaced by "***" */
    char *body;
    size_t body_len;   /* bytes held in memory: the JSON, or the form's in-memory parts */
    const char *ctype; /* CT_JSON, CT_NONE, or NULL for a form (hcl sets it) */
    struct hcl_part *parts; /* a multipart form: payload_json, files[n]; owned */
    int nparts;
    uint64_t file_bytes;    /* of which streamed from disk (path files) */
    long timeout_ms;
    int attempts, nfail, n429;
    uint64_t seq, not_before, blocked_since;
    drest_cb *cb;
    void *arg;
    struct hcl_xfer *xfer;
    struct dreq *prev, *next;   /* lane queue, gwait or sendq */
    struct dreq *aprev, *anext; /* d->all */
};

struct drest {
    uv_loop_t *loop;
    struct hcl *http;
    struct rds *redis;
    char *base, *ua_hdr, *auth_hdr;
    char *k_log, *k_pause; /* Redis keys */
    char member[24];       /* unique per instance, for the admission log */
    int cluster_size, max_attempts, retry_base_ms, global_limit;
    size_t max_queue, max_lane_queue, max_queue_bytes, max_body, max_response;

    struct idmap routes, lanes; /* route by key, lane by key (tag 0) */
    struct lane *active;
    struct dreq *gw_head, *gw_tail; /* waiting for a global slot, by seq */
    struct dreq *sq_head, *sq_tail; /* admitted, to be sent */
    struct dreq *all;               /* every request not yet freed */
    size_t nreq, nbytes, nsend;
    uint64_t seq, admissions;
    unsigned rds_out; /* our Redis commands awaiting a reply */
    uint64_t gwait_until, gpause_until;
    uint64_t last_gc;

    uint64_t *lring; /* local limiter: admission times, oldest at lhead */
    int lcap, lhead, lcount;
    int gfallback;   /* the local limiter is in use (logged once) */

    uint64_t inv_slot[DREST_INV_SLOTS];
    unsigned inv_count[DREST_INV_SLOTS];
    struct drest_stats st;

    uv_timer_t timer;
    int kicked, closing, timer_closed;
    void (*done)(void *arg);
    void *done_arg;
};

static void on_timer(uv_timer_t *t);

/* Run the pump on the next loop iteration (never from inside the caller). */
static void drest_kick(struct drest *d)
{
    if (d->timer_closed)
        return;
    d->kicked = 1;
    uv_timer_start(&d->timer, on_timer, 0, 0);
}

/* ---- paths: route template, major parameter, redacted form --------------- */

struct rpath {
    char route[DREST_MAX_PATH + 64];
    char major[DREST_MAX_PATH];
    char logp[DREST_MAX_PATH + 8];
    int exempt;
};

static int path_valid(const char *p)
{
    if (p[0] != '/')
        return 0;
    size_t n = 0;
    for (; p[n]; n++) {
        unsigned char c = (unsigned char)p[n];
        if (c <= 0x20 || c >= 0x7f || c == '#' || c == '\\')
            return 0;
    }
    return n <= DREST_MAX_PATH;
}

/* Append to a fixed buffer; the buffers are sized so that a valid path fits. */
static void sput(char *dst, size_t cap, size_t *len, const char *s, size_t n)
{
    if (*len + n >= cap)
        n = cap - 1 - *len;
    memcpy(dst + *len, s, n);
    *len += n;
    dst[*len] = '\0';
}

/* A path cut at '/' up to its query string. */
struct segs {
    const char *s[DREST_MAX_SEGS];
    size_t len[DREST_MAX_SEGS];
    int n;
    const char *query; /* "?..." or "" */
};

static int seg_is(const struct segs *g, int i, const char *lit)
{
    return i >= 0 && i < g->n && g->len[i] == strlen(lit) && !memcmp(g->s[i], lit, g->len[i]);
}

static int path_split(const char *path, struct segs *g)
{
    g->n = 0;
    g->query = path + strcspn(path, "?");
    for (const char *s = path + 1;;) {
        const char *e = memchr(s, '/', (size_t)(g->query - s));
        if (!e)
            e = g->query;
        if (g->n == DREST_MAX_SEGS || e == s)
            return -EINVAL; /* too deep, or an empty segment */
        g->s[g->n] = s;
        g->len[g->n++] = (size_t)(e - s);
        if (e == g->query)
            return 0;
        s = e + 1;
    }
}

/* How many leading segments name the major parameter (channel, guild,
 * webhook id + token, interaction id + token), and which of them is a token
 * (*tok, -1 if none). Requests carrying a token are exempt from the global
 * limit. */
static int path_major(const struct segs *g, int *tok)
{
    *tok = -1;
    if (g->n < 2 || !dpath_is_snowflake(g->s[1], g->len[1]))
        return 0;
    if (seg_is(g, 0, "channels") || seg_is(g, 0, "guilds"))
        return 2;
    if (!seg_is(g, 0, "webhooks") && !seg_is(g, 0, "interactions"))
        return 0;
    if (g->n < 3)
        return seg_is(g, 0, "webhooks") ? 2 : 0;
    *tok = 2;
    return 3;
}

/* Split path into its template (ids replaced, the major parameter kept as a
 * placeholder), the major parameter's value, and a loggable form. */
static int path_parse(const char *method, const char *path, struct rpath *rp)
{
    struct segs g;
    if (path_split(path, &g))
        return -EINVAL;
    int tok, keep = path_major(&g, &tok);
    size_t rl = 0, ml = 0, ll = 0;
    rp->exempt = tok >= 0;
    rp->route[0] = rp->major[0] = rp->logp[0] = '\0';
    sput(rp->route, sizeof rp->route, &rl, method, strlen(method));
    sput(rp->route, sizeof rp->route, &rl, " ", 1);
    for (int i = 0; i < g.n; i++) {
        const char *r = NULL;
        if (i < keep && i > 0)
            r = i == tok ? "{token}" : "{id}";
        else if (i >= keep && dpath_is_snowflake(g.s[i], g.len[i]))
            r = "{id}";
        else if (seg_is(&g, i - 1, "reactions"))
            r = "{emoji}";
        sput(rp->route, sizeof rp->route, &rl, "/", 1);
        sput(rp->route, sizeof rp->route, &rl, r ? r : g.s[i], r ? strlen(r) : g.len[i]);
        if (i < keep) {
            if (i)
                sput(rp->major, sizeof rp->major, &ml, "/", 1);
            sput(rp->major, sizeof rp->major, &ml, g.s[i], g.len[i]);
        }
        sput(rp->logp, sizeof rp->logp, &ll, "/", 1);
        sput(rp->logp, sizeof rp->logp, &ll, i == tok ? "***" : g.s[i], i == tok ? 3 : g.len[i]);
    }
    sput(rp->logp, sizeof rp->logp, &ll, g.query, strlen(g.query));
    return 0;
}

/* ---- routes and lanes ---------------------------------------------------- */

static struct route *route_get(struct drest *d, const char *key)
{
    struct route *rt = idmap_get(&d->routes, 0, key);
    if (rt || idmap_count(&d->routes) >= DREST_MAX_ROUTES)
        return rt;
    rt = mem_calloc(1, sizeof *rt);
    rt->key = mem_strdup(key);
    idmap_put(&d->routes, 0, rt->key, rt);
    return rt;
}

static char *lane_key(char kind, const char *what, const char *major)
{
    size_t n = strlen(what) + strlen(major) + 4;
    char *k = mem_alloc(n);
    snprintf(k, n, "%c %s %s", kind, what, major);
    return k;
}

/* The lane a new request for (rt, major) joins. A lane still keyed by the
 * route wins over the bucket's lane, so that requests queued before the
 * bucket was learned keep their order. */
static struct lane *lane_find(struct drest *d, struct route *rt, const char *major, int create)
{
    char *k = lane_key('r', rt->key, major);
    struct lane *ln = idmap_get(&d->lanes, 0, k);
    if (!ln && rt->bucket) {
        mem_free(k);
        k = lane_key('b', rt->bucket, major);
        ln = idmap_get(&d->lanes, 0, k);
    }
    if (ln || !create) {
        mem_free(k);
        return ln;
    }
    ln = mem_calloc(1, sizeof *ln);
    ln->key = k;
    ln->route = rt->bucket ? NULL : rt;
    ln->major = mem_strdup(major);
    idmap_put(&d->lanes, 0, ln->key, ln);
    return ln;
}

static void lane_free(struct lane *ln)
{
    mem_free(ln->key);
    mem_free(ln->major);
    mem_free(ln);
}

static void active_add(struct drest *d, struct lane *ln)
{
    if (ln->on_active)
        return;
    ln->on_active = 1;
    ln->aprev = NULL;
    ln->anext = d->active;
    if (d->active)
        d->active->aprev = ln;
    d->active = ln;
}

static void active_del(struct drest *d, struct lane *ln)
{
    if (!ln->on_active)
        return;
    ln->on_active = 0;
    if (ln->aprev)
        ln->aprev->anext = ln->anext;
    else
        d->active = ln->anext;
    if (ln->anext)
        ln->anext->aprev = ln->aprev;
    ln->aprev = ln->anext = NULL;
}

static void lane_push_tail(struct drest *d, struct lane *ln, struct dreq *q)
{
    q->st = DQ_LANE;
    q->lane = ln;
    q->next = NULL;
    q->prev = ln->qt;
    if (ln->qt)
        ln->qt->next = q;
    else
        ln->qh = q;
    ln->qt = q;
    ln->qlen++;
    active_add(d, ln);
}

static void lane_push_head(struct drest *d, struct lane *ln, struct dreq *q)
{
    q->st = DQ_LANE;
    q->lane = ln;
    q->prev = NULL;
    q->next = ln->qh;
    if (ln->qh)
        ln->qh->prev = q;
    else
        ln->qt = q;
    ln->qh = q;
    ln->qlen++;
    active_add(d, ln);
}

static struct dreq *lane_pop(struct drest *d, struct lane *ln)
{
    struct dreq *q = ln->qh;
    ln->qh = q->next;
    if (ln->qh)
        ln->qh->prev = NULL;
    else
        ln->qt = NULL;
    q->prev = q->next = NULL;
    if (--ln->qlen == 0)
        active_del(d, ln);
    return q;
}

/* Fold lane `from` into `to` (the same bucket and major, reached through
 * another route): its queue goes behind to's, its in-flight requests now
 * count against to. */
static void lane_merge(struct drest *d, struct lane *from, struct lane *to)
{
    while (from->qlen)
        lane_push_tail(d, to, lane_pop(d, from));
    to->inflight += from->inflight;
    if (from->paused_until > to->paused_until)
        to->paused_until = from->paused_until;
    for (struct dreq *q = d->all; q; q = q->anext)
        if (q->lane == from)
            q->lane = to;
    idmap_del(&d->lanes, 0, from->key);
    lane_free(from);
}

/* The route of q turned out to live in bucket b: remember it for the
 * route, and re-key q's lane from (route, major) to (bucket, major). */
static void lane_learn_bucket(struct drest *d, struct dreq *q, const char *b)
{
    struct route *rt = q->route;
    if (!rt->bucket || strcmp(rt->bucket, b)) {
        log_debug("discord: route bucket learned", LF_STR("route", rt->key), LF_STR("bucket", b));
        mem_free(rt->bucket);
        rt->bucket = mem_strdup(b);
    }
    struct lane *ln = q->lane;
    if (!ln->route)
        return; /* already keyed by bucket (a changed bucket only affects new lanes) */
    char *k = lane_key('b', b, ln->major);
    struct lane *to = idmap_get(&d->lanes, 0, k);
    if (to) {
        mem_free(k);
        lane_merge(d, ln, to);
        return;
    }
    idmap_del(&d->lanes, 0, ln->key);
    mem_free(ln->key);
    ln->key = k;
    ln->route = NULL;
    idmap_put(&d->lanes, 0, ln->key, ln);
}

static int lane_idle(const struct lane *ln, uint64_t now)
{
    return !ln->qlen && !ln->inflight && ln->paused_until <= now &&
           (!ln->known || ln->reset_at <= now);
}

/* Drop lanes with nothing queued and nothing learned that still matters. */
static void lanes_gc(struct drest *d, uint64_t now)
{
    d->last_gc = now;
    const struct idmap_slot *s;
    for (size_t pos = 0; (s = idmap_next(&d->lanes, &pos));) {
        struct lane *ln = s->val;
        if (lane_idle(ln, now)) {
            idmap_del(&d->lanes, 0, ln->key);
            lane_free(ln);
        }
    }
}

/* ---- headers ------------------------------------------------------------- */

static int parse_long(const char *s, long lo, long hi, long *out)
{
    if (!s || !*s)
        return -1;
    char *e;
    errno = 0;
    long v = strtol(s, &e, 10);
    if (errno || *e || v < lo || v > hi)
        return -1;
    *out = v;
    return 0;
}

static int parse_secs(const char *s, double hi, double *out)
{
    if (!s || !*s)
        return -1;
    char *e;
    double v = strtod(s, &e);
    if (*e || !isfinite(v) || v < 0 || v > hi)
        return -1;
    *out = v;
    return 0;
}

static int bucket_valid(const char *b)
{
    size_t n = 0;
    for (; b[n]; n++)
        if ((unsigned char)b[n] <= 0x20 || (unsigned char)b[n] >= 0x7f)
            return 0;
    return n > 0 && n <= 128;
}

static uint64_t ms_ceil(double secs)
{
    return (uint64_t)ceil(secs * 1000.0);
}

static double wall_secs(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (double)tv.tv_sec + (double)tv.tv_usec / 1e6;
}

/* Seconds until the bucket refills: Reset-After, else Reset (epoch). */
static int header_reset_after(const struct hcl_response *r, double *out)
{
    if (!parse_secs(hcl_response_header(r, "X-RateLimit-Reset-After"), 86400.0, out))
        return 0;
    double at;
    if (parse_secs(hcl_response_header(r, "X-RateLimit-Reset"), 1e11, &at))
        return -1;
    double left = at - wall_secs();
    *out = left > 0 ? left : 0;
    return 0;
}

/* Learn the bucket and its state from an answer to q. A lane sends one
 * request at a time, so the answer describes the bucket as it is now; only
 * after two lanes merged can other requests of the lane still be on the
 * wire, and those are assumed to count against what is left. */
static void lane_learn(struct drest *d, struct dreq *q, const struct hcl_response *r, uint64_t now)
{
    const char *b = hcl_response_header(r, "X-RateLimit-Bucket");
    if (b && bucket_valid(b))
        lane_learn_bucket(d, q, b);
    long limit, remaining;
    double after;
    if (parse_long(hcl_response_header(r, "X-RateLimit-Limit"), 1, 1000000, &limit) ||
        parse_long(hcl_response_header(r, "X-RateLimit-Remaining"), 0, 1000000, &remaining) ||
        header_reset_after(r, &after))
        return;
    struct lane *ln = q->lane;
    long others = (long)ln->inflight - (q->holds_lane ? 1 : 0);
    ln->known = 1;
    ln->limit = limit;
    ln->remaining = remaining - others > 0 ? remaining - others : 0;
    ln->reset_at = now + ms_ceil(after) + DREST_RESET_MARGIN_MS;
}

/* ---- counters ------------------------------------------------------------ */

static void invalid_note(struct drest *d, uint64_t now)
{
    uint64_t slot = now / DREST_INV_SLOT_MS;
    size_t i = (size_t)(slot % DREST_INV_SLOTS);
    if (d->inv_slot[i] != slot) {
        d->inv_slot[i] = slot;
        d->inv_count[i] = 0;
    }
    d->inv_count[i]++;
}

static unsigned invalid_count(const struct drest *d, uint64_t now)
{
    uint64_t slot = now / DREST_INV_SLOT_MS;
    unsigned n = 0;
    for (size_t i = 0; i < DREST_INV_SLOTS; i++)
        if (d->inv_slot[i] <= slot && d->inv_slot[i] + DREST_INV_SLOTS > slot)
            n += d->inv_count[i];
    return n;
}

static void count_answer(struct drest *d, const struct hcl_response *r)
{
    if (r->err || r->status < 200) {
        d->st.transport_errors++;
        return;
    }
    switch (r->status / 100) {
    case 2: d->st.status_2xx++; break;
    case 3: d->st.status_3xx++; break;
    case 4: d->st.status_4xx++; break;
    default: d->st.status_5xx++; break;
    }
}

static void req_blocked(struct dreq *q, uint64_t now)
{
    if (!q->blocked_since)
        q->blocked_since = now ? now : 1;
}

static void req_unblocked(struct drest *d, struct dreq *q, uint64_t now)
{
    if (!q->blocked_since)
        return;
    d->st.rl_waits++;
    d->st.rl_wait_ms += now > q->blocked_since ? now - q->blocked_since : 0;
    q->blocked_since = 0;
}

/* ---- request lists and completion ---------------------------------------- */

static void list_push_tail(struct dreq **h, struct dreq **t, struct dreq *q)
{
    q->next = NULL;
    q->prev = *t;
    if (*t)
        (*t)->next = q;
    else
        *h = q;
    *t = q;
}

static struct dreq *list_pop(struct dreq **h, struct dreq **t)
{
    struct dreq *q = *h;
    *h = q->next;
    if (*h)
        (*h)->prev = NULL;
    else
        *t = NULL;
    q->prev = q->next = NULL;
    return q;
}

/* gwait stays in request order (seq), so requests sent back by a "full"
 * answer do not overtake older ones. */
static void gwait_insert(struct drest *d, struct dreq *q)
{
    q->st = DQ_GWAIT;
    struct dreq *at = d->gw_tail;
    while (at && at->seq > q->seq)
        at = at->prev;
    q->prev = at;
    q->next = at ? at->next : d->gw_head;
    if (q->next)
        q->next->prev = q;
    else
        d->gw_tail = q;
    if (at)
        at->next = q;
    else
        d->gw_head = q;
}

static void sendq_push(struct drest *d, struct dreq *q, uint64_t now)
{
    req_unblocked(d, q, now);
    q->st = DQ_SENDQ;
    list_push_tail(&d->sq_head, &d->sq_tail, q);
}

static void req_leave_lane(struct dreq *q)
{
    if (q->holds_lane) {
        q->holds_lane = 0;
        q->lane->inflight--;
    }
}

static void parts_free(struct hcl_part *p, int n)
{
    for (int i = 0; p && i < n; i++) {
        mem_free((char *)p[i].name);
        mem_free((char *)p[i].filename);
        mem_free((char *)p[i].content_type);
        mem_free((void *)p[i].data);
        mem_free((char *)p[i].path);
    }
    mem_free(p);
}

static void req_free(struct drest *d, struct dreq *q)
{
    if (q->aprev)
        q->aprev->anext = q->anext;
    else
        d->all = q->anext;
    if (q->anext)
        q->anext->aprev = q->aprev;
    mem_free(q->url);
    mem_free(q->logpath);
    mem_free(q->body);
    parts_free(q->parts, q->nparts);
    mem_free(q);
}

/* Run q's callback with out and release q (or leave a shell for the Redis
 * reply still due). */
static void req_finish(struct drest *d, struct dreq *q, const struct drest_resp *out)
{
    req_leave_lane(q);
    q->lane = NULL;
    d->nreq--;
    d->nbytes -= q->body_len;
    drest_cb *cb = q->cb;
    q->cb = NULL;
    drest_kick(d); /* the lane may release its next request */
    cb(out, q->arg);
    if (q->st == DQ_ADMIT)
        q->dead = 1;
    else
        req_free(d, q);
}

static void req_fail(struct drest *d, struct dreq *q, int err, const char *why)
{
    struct drest_resp out = {.err = err, .errstr = why ? why : bc_strerror(err), .message = "",
                             .detail = "", .body = "", .attempts = q->attempts};
    req_finish(d, q, &out);
}

/* Back to the head of its lane: a 429 or a retry keeps its place in line. */
static void req_requeue(struct drest *d, struct dreq *q)
{
    req_leave_lane(q);
    lane_push_head(d, q->lane, q);
}

/* ---- Discord's error JSON ------------------------------------------------ */

static struct json_object *json_parse_obj(const char *s, size_t n)
{
    if (!n || n > (size_t)INT32_MAX)
        return NULL;
    struct json_tokener *t = json_tokener_new_ex(32);
    if (!t)
        return NULL;
    struct json_object *o = json_tokener_parse_ex(t, s, (int)n);
    if (json_tokener_get_error(t) != json_tokener_success || !json_object_is_type(o, json_type_object)) {
        json_object_put(o);
        o = NULL;
    }
    json_tokener_free(t);
    return o;
}

/* Depth-first search for the first {"_errors":[{code,message}]} under
 * "errors"; writes "a.0.b: message (CODE)" into out. */
static int form_error(struct json_object *o, char *path, size_t plen, char *out, size_t outlen,
                      int depth)
{
    struct json_object *errs;
    if (depth > 16 || !json_object_is_type(o, json_type_object))
        return 0;
    if (json_object_object_get_ex(o, "_errors", &errs) &&
        json_object_is_type(errs, json_type_array) && json_object_array_length(errs) > 0) {
        struct json_object *e = json_object_array_get_idx(errs, 0);
        const char *m = jget_str(e, "message"), *c = jget_str(e, "code");
        snprintf(out, outlen, "%s: %s%s%s%s", *path ? path : "(body)", m ? m : "invalid",
                 c ? " (" : "", c ? c : "", c ? ")" : "");
        return 1;
    }
    size_t base = strlen(path);
    json_object_object_foreach(o, key, val)
    {
        snprintf(path + base, plen - base, "%s%s", base ? "." : "", key);
        if (form_error(val, path, plen, out, outlen, depth + 1))
            return 1;
        path[base] = '\0';
    }
    return 0;
}

/* ---- answering the caller ------------------------------------------------ */

static void req_reply(struct drest *d, struct dreq *q, const struct hcl_response *r)
{
    struct drest_resp out = {.status = r->status, .body = r->body, .body_len = r->body_len,
                             .errstr = "", .message = "", .detail = "", .attempts = q->attempts};
    char es[384], detail[320] = "", path[160] = "";
    struct json_object *o = NULL, *c;
    if (r->err) {
        out.err = r->err;
        out.status = 0;
        out.body = "";
        out.body_len = 0;
        out.errstr = r->errstr[0] ? r->errstr : bc_strerror(r->err);
    } else if (r->status / 100 != 2) {
        o = json_parse_obj(r->body, r->body_len);
        if (o && json_object_object_get_ex(o, "code", &c) && json_object_is_type(c, json_type_int))
            out.code = json_object_get_int(c);
        const char *m = jget_str(o, "message");
        out.message = m ? m : "";
        struct json_object *errs;
        if (o && json_object_object_get_ex(o, "errors", &errs))
            form_error(errs, path, sizeof path, detail, sizeof detail, 0);
        out.detail = detail;
        out.err = BC_EHTTP;
        char codes[32] = "";
        if (out.code)
            snprintf(codes, sizeof codes, " (code %d)", out.code);
        snprintf(es, sizeof es, "HTTP %ld%s%.200s%s", r->status, *out.message ? ": " : "",
                 out.message, codes);
        out.errstr = es;
        if (r->status >= 500)
            log_warn("discord: server error", LF_STR("method", q->method), LF_STR("path", q->logpath),
                     LF_INT("status", r->status), LF_INT("attempts", q->attempts));
        else if (r->status != 401 && r->status != 403)
            log_info("discord: request failed", LF_STR("method", q->method),
                     LF_STR("path", q->logpath), LF_INT("status", r->status),
                     LF_INT("discord_code", out.code), LF_STR("message", out.message),
                     LF_STR("detail", detail));
    }
    req_finish(d, q, &out);
    json_object_put(o);
}

/* ---- the global limit ---------------------------------------------------- */

static void global_fallback(struct drest *d, const char *why)
{
    if (d->gfallback)
        return;
    d->gfallback = 1;
    log_warn("discord: redis unavailable for the global rate limit; using this process's share",
             LF_STR("reason", why), LF_INT("per_second", d->lcap));
}

static void global_restored(struct drest *d)
{
    if (!d->gfallback)
        return;
    d->gfallback = 0;
    log_info("discord: global rate limit shared through redis again");
}

/* Local sliding window of lcap admissions: 0 when admitted, else ms to wait. */
static uint64_t local_take(struct drest *d, uint64_t now)
{
    if (d->lcount < d->lcap) {
        d->lring[(d->lhead + d->lcount++) % d->lcap] = now;
        return 0;
    }
    uint64_t oldest = d->lring[d->lhead];
    if (now - oldest < DREST_WINDOW_MS)
        return oldest + DREST_WINDOW_MS - now;
    d->lring[d->lhead] = now;
    d->lhead = (d->lhead + 1) % d->lcap;
    return 0;
}

static void local_admit(struct drest *d, struct dreq *q, uint64_t now)
{
    uint64_t wait = local_take(d, now);
    if (!wait) {
        sendq_push(d, q, now);
        return;
    }
    if (now + wait > d->gwait_until)
        d->gwait_until = now + wait;
    req_blocked(q, now);
    gwait_insert(d, q);
}

static void on_admit(struct rds *r, int status, const redisReply *rep, void *arg)
{
    (void)r;
    struct dreq *q = arg;
    struct drest *d = q->d;
    d->rds_out--;
    drest_kick(d);
    if (q->dead) {
        req_free(d, q);
        return;
    }
    uint64_t now = uv_now(d->loop);
    long long kind = -1, ms = 0;
    if (!status && rep && rep->type == REDIS_REPLY_ARRAY && rep->elements == 2 &&
        rep->element[0]->type == REDIS_REPLY_INTEGER && rep->element[1]->type == REDIS_REPLY_INTEGER) {
        kind = rep->element[0]->integer;
        ms = rep->element[1]->integer;
    }
    if (kind < 0 || kind > 2 || ms < 0 || ms > 3600000) {
        const char *e = rds_reply_error(rep);
        global_fallback(d, status ? bc_strerror(status) : e ? e : "unexpected reply");
        local_admit(d, q, now);
        return;
    }
    global_restored(d);
    if (kind == 0) {
        sendq_push(d, q, now);
        return;
    }
    uint64_t *until = kind == 1 ? &d->gpause_until : &d->gwait_until;
    if (now + (uint64_t)ms > *until)
        *until = now + (uint64_t)ms;
    req_blocked(q, now);
    gwait_insert(d, q);
}

/* Ask for a global slot: Redis when it is up, else the local share. */
static void admit_start(struct drest *d, struct dreq *q, uint64_t now)
{
    if (d->redis && rds_up(d->redis)) {
        char lim[16], win[16], mem[48];
        snprintf(lim, sizeof lim, "%d", d->global_limit);
        snprintf(win, sizeof win, "%d", DREST_WINDOW_MS);
        /* One member per admission: a retried request is counted again. */
        snprintf(mem, sizeof mem, "%s:%llu", d->member, (unsigned long long)++d->admissions);
        const char *av[] = {"EVAL", ADMIT_LUA, "2", d->k_log, d->k_pause, lim, win, mem};
        if (!rds_cmd(d->redis, on_admit, q, 8, av, NULL)) {
            q->st = DQ_ADMIT;
            d->rds_out++;
            return;
        }
    }
    if (d->redis)
        global_fallback(d, rds_errstr(d->redis));
    local_admit(d, q, now);
}

static void on_pause_set(struct rds *r, int status, const redisReply *rep, void *arg)
{
    (void)r;
    struct drest *d = arg;
    d->rds_out--;
    if (status || rds_reply_error(rep))
        log_warn("discord: could not share the global pause through redis",
                 LF_STR("reason", status ? bc_strerror(status) : rds_reply_error(rep)));
    if (d->closing)
        drest_kick(d);
}

/* A global 429: stop every non-exempt request here, and through the pause
 * key in every other process of the cluster. */
static void global_pause(struct drest *d, uint64_t now, uint64_t ms)
{
    if (now + ms > d->gpause_until)
        d->gpause_until = now + ms;
    if (!d->redis || !rds_up(d->redis))
        return;
    char msb[24];
    snprintf(msb, sizeof msb, "%llu", (unsigned long long)(ms ? ms : 1));
    const char *av[] = {"EVAL", PAUSE_LUA, "1", d->k_pause, msb};
    if (!rds_cmd(d->redis, on_pause_set, d, 5, av, NULL))
        d->rds_out++;
}

/* ---- answers ------------------------------------------------------------- */

static uint64_t retry_after_ms(const struct hcl_response *r, struct json_object *o)
{
    struct json_object *v;
    double s = -1;
    if (o && json_object_object_get_ex(o, "retry_after", &v) &&
        (json_object_is_type(v, json_type_double) || json_object_is_type(v, json_type_int)))
        s = json_object_get_double(v);
    if (!(s >= 0 && s <= 86400.0) &&
        parse_secs(hcl_response_header(r, "Retry-After"), 86400.0, &s) &&
        parse_secs(hcl_response_header(r, "X-RateLimit-Reset-After"), 86400.0, &s))
        s = 1.0; /* a 429 that says nothing: wait a second */
    uint64_t ms = ms_ceil(s) + DREST_RESET_MARGIN_MS;
    return ms > 3600000 ? 3600000 : ms;
}

/* Returns 1 when q was put back to be retried, 0 when the 429 goes to the
 * caller (a wait too long to hold a request for, or too many 429s). */
static int handle_429(struct drest *d, struct dreq *q, const struct hcl_response *r, uint64_t now)
{
    struct json_object *o = json_parse_obj(r->body, r->body_len), *g;
    uint64_t ms = retry_after_ms(r, o);
    const char *scope = hcl_response_header(r, "X-RateLimit-Scope");
    const char *gh = hcl_response_header(r, "X-RateLimit-Global");
    int global = (scope && !strcasecmp(scope, "global")) || (gh && !strcasecmp(gh, "true")) ||
                 (o && json_object_object_get_ex(o, "global", &g) &&
                  json_object_is_type(g, json_type_boolean) && json_object_get_boolean(g));
    int shared = !global && scope && !strcasecmp(scope, "shared");
    json_object_put(o);
    if (global)
        d->st.rl429_global++;
    else if (shared)
        d->st.rl429_shared++;
    else
        d->st.rl429_user++;
    if (!shared)
        invalid_note(d, now);
    const char *b = hcl_response_header(r, "X-RateLimit-Bucket");
    log_warn("discord: 429 rate limited (our bookkeeping missed it)", LF_STR("method", q->method),
             LF_STR("path", q->logpath), LF_STR("scope", global ? "global" : shared ? "shared" : "user"),
             LF_INT("retry_after_ms", ms), LF_STR("bucket", b && bucket_valid(b) ? b : ""));
    /* The lane waits in every case: an exempt request skips global pauses
     * and must not come straight back. */
    if (global)
        global_pause(d, now, ms);
    if (now + ms > q->lane->paused_until)
        q->lane->paused_until = now + ms;
    if (ms > DREST_MAX_RETRY_AFTER_MS || ++q->n429 > DREST_MAX_429)
        return 0;
    req_requeue(d, q);
    return 1;
}

/* Whether a failed attempt may be repeated. Never 401/403/4xx; 5xx and
 * network errors only where repeating cannot do a thing twice. A refused
 * connection never reached Discord, so it is safe for any method. */
static int retryable(const struct drest *d, const struct dreq *q, const struct hcl_response *r)
{
    int safe = q->idempotent || q->retry_safe;
    if (r->err) {
        switch (r->err) {
        case BC_ETOOBIG:
        case BC_ESHUTDOWN:
        case -ECANCELED:
            return 0;
        case -ECONNREFUSED:
        case -EHOSTUNREACH:
        case -ENETUNREACH:
            break;
        default:
            if (!safe)
                return 0;
        }
    } else if (!safe || (r->status != 502 && r->status != 503 && r->status != 504)) {
        return 0;
    }
    return q->nfail + 1 < d->max_attempts;
}

static void schedule_retry(struct drest *d, struct dreq *q, const struct hcl_response *r, uint64_t now)
{
    int shift = q->nfail < 10 ? q->nfail : 10;
    uint64_t step = (uint64_t)d->retry_base_ms << shift;
    if (step > DREST_BACKOFF_CAP_MS)
        step = DREST_BACKOFF_CAP_MS;
    uint64_t delay = step / 2 + (uint64_t)random() % (step / 2 + 1);
    q->nfail++;
    q->not_before = now + delay;
    d->st.retries++;
    log_info("discord: retrying", LF_STR("method", q->method), LF_STR("path", q->logpath),
             LF_INT("status", r->err ? 0 : r->status), LF_STR("err", r->err ? bc_strerror(r->err) : ""),
             LF_INT("attempt", q->attempts), LF_INT("delay_ms", delay));
    req_requeue(d, q);
}

static void on_xfer_done(const struct hcl_response *r, void *arg)
{
    struct dreq *q = arg;
    struct drest *d = q->d;
    uint64_t now = uv_now(d->loop);
    q->xfer = NULL;
    d->nsend--;
    if (q->cancelled || r->err == BC_ESHUTDOWN || (d->closing && r->err == -ECANCELED)) {
        req_fail(d, q, BC_ESHUTDOWN, d->closing ? "drest is closing" : "the HTTP client is closing");
        return;
    }
    count_answer(d, r);
    drest_kick(d);
    if (!r->err) {
        lane_learn(d, q, r, now);
        log_debug("discord: answer", LF_STR("method", q->method), LF_STR("path", q->logpath),
                  LF_INT("status", r->status), LF_DBL("ms", r->total_ms),
                  LF_INT("remaining", q->lane->known ? q->lane->remaining : -1));
    }
    if (!r->err && r->status == 429 && handle_429(d, q, r, now))
        return;
    if (retryable(d, q, r)) {
        schedule_retry(d, q, r, now);
        return;
    }
    if (!r->err && (r->status == 401 || r->status == 403)) {
        invalid_note(d, now);
        log_warn("discord: request refused, not retried (invalid requests risk a ban)",
                 LF_STR("method", q->method), LF_STR("path", q->logpath), LF_INT("status", r->status),
                 LF_INT("invalid_10min", invalid_count(d, now)));
    }
    req_reply(d, q, r);
}

static void req_send(struct drest *d, struct dreq *q)
{
    const char *hdrs[4];
    int n = 0;
    hdrs[n++] = d->ua_hdr;
    if (q->bot_auth)
        hdrs[n++] = d->auth_hdr;
    if (q->ctype)
        hdrs[n++] = q->ctype;
    hdrs[n] = NULL;
    struct hcl_request hr = {.method = q->method,
                             .url = q->url,
                             .headers = hdrs,
                             .body = q->parts ? NULL : q->body,
                             .body_len = q->parts ? 0 : q->body_len,
                             .parts = q->parts,
                             .nparts = q->nparts,
                             .timeout_ms = q->timeout_ms,
                             .max_response = d->max_response};
    q->st = DQ_SEND;
    q->attempts++;
    d->st.sent++;
    int rc = hcl_request(d->http, &hr, on_xfer_done, q, &q->xfer);
    if (rc) {
        q->xfer = NULL;
        req_fail(d, q, rc, "the HTTP client refused the request");
        return;
    }
    d->nsend++;
    log_debug("discord: request", LF_STR("method", q->method), LF_STR("path", q->logpath),
              LF_INT("attempt", q->attempts));
}

/* ---- the pump ------------------------------------------------------------ */

/* 0 when ln may send now, else when to look again (NEVER: at an answer). */
static uint64_t lane_blocked_until(struct lane *ln, uint64_t now)
{
    if (ln->paused_until > now)
        return ln->paused_until;
    if (!ln->known || ln->remaining > 0)
        return 0;
    if (ln->reset_at > now)
        return ln->reset_at;
    ln->remaining = ln->limit; /* the window has passed */
    return 0;
}

/* Release the head of ln if its bucket allows. One request per lane is on
 * its way at a time: an unknown bucket is probed, a known one's remaining
 * count stays exact, and requests reach Discord in order. */
static uint64_t lane_release(struct drest *d, struct lane *ln, uint64_t now)
{
    if (ln->inflight)
        return NEVER;
    struct dreq *q = ln->qh;
    if (q->not_before > now)
        return q->not_before;
    uint64_t until = lane_blocked_until(ln, now);
    if (until) {
        req_blocked(q, now);
        return until;
    }
    lane_pop(d, ln);
    q->holds_lane = 1;
    ln->inflight++;
    if (ln->known)
        ln->remaining--;
    if (q->exempt)
        sendq_push(d, q, now);
    else
        gwait_insert(d, q);
    return NEVER;
}

static uint64_t global_release(struct drest *d, uint64_t now)
{
    while (d->gw_head) {
        uint64_t until = d->gpause_until > d->gwait_until ? d->gpause_until : d->gwait_until;
        if (until > now) {
            for (struct dreq *q = d->gw_head; q; q = q->next)
                req_blocked(q, now);
            return until;
        }
        if (d->rds_out >= (unsigned)d->global_limit)
            return NEVER; /* a reply will kick */
        admit_start(d, list_pop(&d->gw_head, &d->gw_tail), now);
    }
    return NEVER;
}

static void drest_free(uv_handle_t *h)
{
    struct drest *d = h->data;
    const struct idmap_slot *s;
    for (size_t pos = 0; (s = idmap_next(&d->lanes, &pos));)
        lane_free(s->val);
    for (size_t pos = 0; (s = idmap_next(&d->routes, &pos));) {
        struct route *rt = s->val;
        mem_free(rt->bucket);
        mem_free(rt->key);
        mem_free(rt);
    }
    idmap_free(&d->lanes);
    idmap_free(&d->routes);
    if (d->auth_hdr) {
        memset(d->auth_hdr, 0, strlen(d->auth_hdr));
        mem_free(d->auth_hdr);
    }
    mem_free(d->base);
    mem_free(d->ua_hdr);
    mem_free(d->k_log);
    mem_free(d->k_pause);
    mem_free(d->lring);
    void (*done)(void *) = d->done;
    void *arg = d->done_arg;
    mem_free(d);
    if (done)
        done(arg);
}

/* Closing: fail what waits, cancel what is on the wire, and free once the
 * last transfer and Redis reply are back. */
static void close_step(struct drest *d)
{
    while (d->active) {
        struct lane *ln = d->active;
        req_fail(d, lane_pop(d, ln), BC_ESHUTDOWN, "drest is closing");
    }
    while (d->gw_head)
        req_fail(d, list_pop(&d->gw_head, &d->gw_tail), BC_ESHUTDOWN, "drest is closing");
    while (d->sq_head)
        req_fail(d, list_pop(&d->sq_head, &d->sq_tail), BC_ESHUTDOWN, "drest is closing");
    for (struct dreq *q = d->all, *nx; q; q = nx) {
        nx = q->anext;
        if (q->st == DQ_ADMIT && !q->dead) {
            req_fail(d, q, BC_ESHUTDOWN, "drest is closing");
        } else if (q->st == DQ_SEND && q->xfer && !q->cancelled) {
            q->cancelled = 1;
            hcl_cancel(q->xfer);
        }
    }
    if (d->all || d->rds_out || d->timer_closed)
        return;
    d->timer_closed = 1;
    uv_close((uv_handle_t *)&d->timer, drest_free);
}

static void on_timer(uv_timer_t *t)
{
    struct drest *d = t->data;
    d->kicked = 0;
    if (d->closing) {
        close_step(d);
        return;
    }
    uint64_t now = uv_now(d->loop), next = NEVER, w;
    for (struct lane *ln = d->active, *nx; ln; ln = nx) {
        nx = ln->anext;
        if ((w = lane_release(d, ln, now)) < next)
            next = w;
    }
    if ((w = global_release(d, now)) < next)
        next = w;
    /* Sending may fail at once and run a callback, which may queue more or
     * close: both kick, and the timer is then left at 0. */
    while (d->sq_head && !d->closing)
        req_send(d, list_pop(&d->sq_head, &d->sq_tail));
    if (now - d->last_gc >= DREST_GC_MS)
        lanes_gc(d, now);
    if (!d->kicked && !d->timer_closed) {
        if (next == NEVER)
            uv_timer_stop(&d->timer);
        else
            uv_timer_start(&d->timer, on_timer, next > now ? next - now : 0, 0);
    }
}

/* ---- building a request -------------------------------------------------- */

static const char *method_canon(const char *m)
{
    static const char *const ok[] = {"GET", "POST", "PUT", "PATCH", "DELETE"};
    for (size_t i = 0; m && i < sizeof ok / sizeof ok[0]; i++)
        if (!strcmp(m, ok[i]))
            return ok[i];
    return NULL;
}

/* Printable, no quote/backslash, at most max bytes; UTF-8 bytes allowed
 * when utf8 (file names), never control characters. */
static int text_ok(const char *s, size_t max, int utf8)
{
    size_t n = 0;
    for (; s[n]; n++) {
        unsigned char c = (unsigned char)s[n];
        if (c < 0x20 || c == 0x7f || c == '"' || c == '\\' || (!utf8 && c >= 0x80))
            return 0;
    }
    return n > 0 && n <= max;
}

static void random_hex(char *out, size_t nbytes)
{
    unsigned char r[32];
    if (nbytes > sizeof r)
        nbytes = sizeof r;
    if (uv_random(NULL, NULL, r, nbytes, 0, NULL)) {
        uint64_t x = uv_hrtime() ^ ((uint64_t)random() << 21);
        for (size_t i = 0; i < nbytes; i++, x = x * 6364136223846793005ULL + 1442695040888963407ULL)
            r[i] = (unsigned char)(x >> 56);
    }
    for (size_t i = 0; i < nbytes; i++)
        snprintf(out + 2 * i, 3, "%02x", r[i]);
}

static char *dup_n(const void *p, size_t n)
{
    char *c = mem_alloc(n + 1);
    if (n)
        memcpy(c, p, n);
    c[n] = '\0';
    return c;
}

/* multipart/form-data: payload_json (if any), then files[0..n), as hcl
 * parts that libcurl's mime API sends (it picks the boundary and writes
 * the part headers). In-memory content is copied and counted against
 * max_body; a file given by path is streamed from disk as it is sent and
 * costs no memory, so only its existence is checked here. */
static int form_build(struct drest *d, const struct drest_req *rq, const char *json, size_t jl,
                      struct dreq *q)
{
    size_t held = json ? jl : 0;
    for (int i = 0; i < rq->nfiles; i++) {
        const struct drest_file *f = &rq->files[i];
        if (f->path) {
            struct stat st;
            if (stat(f->path, &st))
                return -errno;
            if (!S_ISREG(st.st_mode))
                return -EINVAL;
            q->file_bytes += (uint64_t)st.st_size;
        } else if (f->len > d->max_body - held) {
            return BC_ETOOBIG;
        } else {
            held += f->len;
        }
    }
    if (held > d->max_body)
        return BC_ETOOBIG;
    struct hcl_part *p = mem_calloc((size_t)rq->nfiles + 1, sizeof *p);
    int n = 0;
    if (json) {
        p[n].name = mem_strdup("payload_json");
        p[n].content_type = mem_strdup("application/json");
        p[n].data = dup_n(json, jl);
        p[n++].len = jl;
    }
    for (int i = 0; i < rq->nfiles; i++, n++) {
        const struct drest_file *f = &rq->files[i];
        char name[24];
        snprintf(name, sizeof name, "files[%d]", i);
        p[n].name = mem_strdup(name);
        p[n].filename = mem_strdup(f->name);
        p[n].content_type = mem_strdup(f->content_type ? f->content_type : "application/octet-stream");
        if (f->path) {
            p[n].path = mem_strdup(f->path);
        } else {
            p[n].data = dup_n(f->data, f->len);
            p[n].len = f->len;
        }
    }
    q->parts = p;
    q->nparts = n;
    q->body_len = held;
    q->ctype = NULL;
    return 0;
}

static int body_build(struct drest *d, const struct drest_req *rq, struct dreq *q)
{
    size_t jl = rq->json ? (rq->json_len ? rq->json_len : strlen(rq->json)) : 0;
    if (rq->nfiles)
        return form_build(d, rq, rq->json, jl, q);
    q->ctype = CT_NONE;
    if (!rq->json)
        return 0;
    if (jl > d->max_body)
        return BC_ETOOBIG;
    q->body = mem_alloc(jl + 1);
    memcpy(q->body, rq->json, jl);
    q->body[jl] = '\0';
    q->body_len = jl;
    q->ctype = CT_JSON;
    return 0;
}

static int req_check(const struct drest *d, const struct drest_req *rq, const char *m)
{
    if (!m || !rq->path || !path_valid(rq->path))
        return -EINVAL;
    int get = !strcmp(m, "GET"), del = !strcmp(m, "DELETE");
    if (rq->nfiles < 0 || rq->nfiles > DREST_MAX_FILES || (rq->nfiles && !rq->files))
        return -EINVAL;
    if ((get && (rq->json || rq->nfiles)) || (del && rq->nfiles))
        return -EINVAL;
    if (rq->bot_auth && !d->auth_hdr)
        return -EINVAL;
    for (int i = 0; i < rq->nfiles; i++) {
        const struct drest_file *f = &rq->files[i];
        if (!f->name || !text_ok(f->name, 255, 1) || (f->len && !f->data) || (f->path && (f->data || !*f->path)) ||
            (f->content_type && !text_ok(f->content_type, 127, 0)))
            return -EINVAL;
    }
    return 0;
}

/* ---- public API ---------------------------------------------------------- */

/* A new request for rq, with its body built; NULL and *rc on refusal. */
static struct dreq *req_new(struct drest *d, const struct drest_req *rq, const char *m,
                            const struct rpath *rp, int *rc)
{
    struct dreq *q = mem_calloc(1, sizeof *q);
    *rc = body_build(d, rq, q);
    if (!*rc && d->nbytes + q->body_len > d->max_queue_bytes)
        *rc = -ENOBUFS;
    if (*rc) {
        mem_free(q->body);
        parts_free(q->parts, q->nparts);
        mem_free(q);
        return NULL;
    }
    q->d = d;
    snprintf(q->method, sizeof q->method, "%s", m);
    q->idempotent = strcmp(m, "POST") != 0;
    q->bot_auth = !!rq->bot_auth;
    q->retry_safe = !!rq->retry_safe;
    q->exempt = rp->exempt;
    /* A big file needs time on the wire: the default grows by 1 ms per KiB
     * streamed from disk (an uplink of about 1 MiB/s; 200 MiB: 3.6 min). */
    q->timeout_ms = rq->timeout_ms > 0 ? rq->timeout_ms
                                       : DREST_DEFAULT_TIMEOUT_MS + (long)(q->file_bytes / 1024);
    q->url = mem_alloc(strlen(d->base) + strlen(rq->path) + 1);
    strcpy(stpcpy(q->url, d->base), rq->path);
    q->logpath = mem_strdup(rp->logp);
    q->seq = ++d->seq;
    return q;
}

/* Check, route and build; the caller queues the result. */
static struct dreq *req_prepare(struct drest *d, const struct drest_req *rq, int *rc)
{
    const char *m = method_canon(rq->method);
    if ((*rc = req_check(d, rq, m)))
        return NULL;
    struct rpath *rp = mem_alloc(sizeof *rp);
    struct route *rt = NULL;
    struct lane *ln = NULL;
    struct dreq *q = NULL;
    if ((*rc = path_parse(m, rq->path, rp)))
        goto out;
    *rc = -ENOBUFS;
    if (!(rt = route_get(d, rp->route)) || d->nreq >= d->max_queue)
        goto out;
    ln = lane_find(d, rt, rp->major, 0);
    if (ln && ln->qlen + ln->inflight >= d->max_lane_queue)
        goto out;
    if ((q = req_new(d, rq, m, rp, rc))) {
        q->route = rt;
        q->lane = ln ? ln : lane_find(d, rt, rp->major, 1);
    }
out:
    mem_free(rp);
    return q;
}

int drest_request(struct drest *d, const struct drest_req *rq, drest_cb *cb, void *arg)
{
    if (!d || !rq || !cb)
        return -EINVAL;
    if (d->closing)
        return BC_ESHUTDOWN;
    int rc;
    struct dreq *q = req_prepare(d, rq, &rc);
    if (!q)
        return rc;
    q->cb = cb;
    q->arg = arg;
    q->anext = d->all;
    if (d->all)
        d->all->aprev = q;
    d->all = q;
    d->nreq++;
    d->nbytes += q->body_len;
    lane_push_tail(d, q->lane, q);
    drest_kick(d);
    return 0;
}

static int header_safe(const char *s, size_t max)
{
    size_t n = 0;
    for (; s[n]; n++)
        if ((unsigned char)s[n] < 0x20 || (unsigned char)s[n] >= 0x7f)
            return 0;
    return n <= max;
}

static int opts_check(const struct drest_opts *o, const char *base, const char *ver)
{
    if ((strncmp(base, "http://", 7) && strncmp(base, "https://", 8)) || !header_safe(base, 512) ||
        strchr(base, ' ') || !header_safe(ver, 64))
        return -EINVAL;
    if (o->token && o->token->value &&
        (!header_safe(o->token->value, 512) || strchr(o->token->value, ' ')))
        return -EINVAL;
    if (o->cluster_size < 0 || o->cluster_size > 1024 || o->max_attempts < 0 ||
        o->max_attempts > 10 || o->retry_base_ms < 0 || o->global_limit < 0 ||
        o->global_limit > 100000)
        return -EINVAL;
    return 0;
}

static size_t or_default(size_t v, size_t dflt)
{
    return v ? v : dflt;
}

static void drest_limits(struct drest *d, const struct drest_opts *o)
{
    d->cluster_size = o->cluster_size ? o->cluster_size : 4;
    d->max_attempts = o->max_attempts ? o->max_attempts : 3;
    d->retry_base_ms = o->retry_base_ms ? o->retry_base_ms : 500;
    d->global_limit = o->global_limit ? o->global_limit : 50;
    d->max_queue = or_default(o->max_queue, 1024);
    d->max_lane_queue = or_default(o->max_lane_queue, 256);
    d->max_queue_bytes = or_default(o->max_queue_bytes, 256u << 20);
    d->max_body = or_default(o->max_body, 26u << 20);
    d->max_response = or_default(o->max_response, 4u << 20);
}

int drest_new(uv_loop_t *loop, const struct drest_opts *o, struct drest **out)
{
    if (!loop || !o || !o->http || !out)
        return -EINVAL;
    const char *base = o->api_base && *o->api_base ? o->api_base : DREST_DEFAULT_API_BASE;
    const char *ver = o->version ? o->version : BC_VERSION;
    if (opts_check(o, base, ver))
        return -EINVAL;
    struct drest *d = mem_calloc(1, sizeof *d);
    d->loop = loop;
    d->http = o->http;
    d->redis = o->redis;
    d->base = mem_strdup(base);
    for (size_t n = strlen(d->base); n > 8 && d->base[n - 1] == '/';)
        d->base[--n] = '\0';
    struct buf b;
    buf_init(&b, 1024);
    buf_printf(&b, "User-Agent: DiscordBot (%s, %s)", DREST_UA_URL, ver);
    d->ua_hdr = buf_detach(&b);
    if (o->token && o->token->value) {
        buf_printf(&b, "Authorization: Bot %s", o->token->value);
        d->auth_hdr = buf_detach(&b);
    }
    const char *prefix = o->redis_prefix ? o->redis_prefix : "discordbot";
    buf_printf(&b, "%s:rl:global", prefix);
    d->k_log = buf_detach(&b);
    buf_printf(&b, "%s:rl:global:pause", prefix);
    d->k_pause = buf_detach(&b);
    random_hex(d->member, 8);
    drest_limits(d, o);
    d->lcap = d->global_limit / d->cluster_size > 0 ? d->global_limit / d->cluster_size : 1;
    d->lring = mem_calloc((size_t)d->lcap, sizeof *d->lring);
    uv_timer_init(loop, &d->timer);
    d->timer.data = d;
    d->last_gc = uv_now(loop);
    if (!d->redis) {
        d->gfallback = 1;
        log_info("discord: no redis, the global rate limit is enforced per process",
                 LF_INT("per_second", d->lcap));
    }
    *out = d;
    return 0;
}

void drest_stats(const struct drest *d, struct drest_stats *out)
{
    *out = d->st;
    out->invalid_10min = invalid_count(d, uv_now(d->loop));
    out->queued = d->nreq;
    out->in_flight = d->nsend;
    out->lanes = idmap_count(&d->lanes);
    out->global_fallback = d->gfallback;
}

void drest_close(struct drest *d, void (*done)(void *arg), void *arg)
{
    if (d->closing)
        return;
    d->closing = 1;
    d->done = done;
    d->done_arg = arg;
    drest_kick(d);
}
