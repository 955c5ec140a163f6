#include "process/failover.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "service/bus.h"
#include "base/clock.h"
#include "base/err.h"
#include "base/log.h"
#include "base/mem.h"
#include "io/rds.h"

#define TICK_MS 250
#define MAX_PEERS 64
#define BOOT_WINDOW_MS 15000   /* beats read back at start */
#define FORGET_MS (3600 * 1000) /* a peer silent this long is dropped */
#define RECLAIM_EVERY_MS 1000  /* claims from a dead consumer are repeated this often */
#define EVENTS_MAXLEN "10000"
#define READ_COUNT 1000

struct pnode {
    struct peer p;
    int64_t beat_ms;      /* wall time of its last beat (the entry id) */
    int64_t up_since_ms;  /* wall time it started beating again after being away */
    int draining;
    int64_t claimed_ms;   /* when we last claimed its entries */
    int seen_live;        /* it was up or suspect while we watched */
};

struct failover {
    uv_loop_t *loop;
    struct rds *redis;
    struct bus *bus;
    const struct config *cfg;
    int64_t (*clock)(void *arg);
    void *clock_arg;
    void (*takeover)(enum role r, int on, const char *dead, void *arg);
    void *takeover_arg;
    uv_timer_t tick;
    char last_id[48];
    int reading;          /* an XRANGE is out */
    struct pnode peers[MAX_PEERS];
    int n;
    int taken[ROLE_LAST + 1];   /* we read this role's stream as a taker */
    int64_t started_ms;
    int64_t watching_ms;  /* when a read first reached the end of the stream; 0 before */
    int closing, stopping;
};

/* The default failover_opts.clock: the system's wall clock. */
static int64_t wall_clock(void *arg)
{
    (void)arg;
    return clock_wall_ms();
}

static int64_t now_ms(const struct failover *f)
{
    return f->clock(f->clock_arg);
}

const char *failover_role_state_name(enum failover_role_state s)
{
    switch (s) {
    case FO_ROLE_UNJUDGED:
        return "unjudged";
    case FO_ROLE_ALIVE:
        return "alive";
    case FO_ROLE_STARTING:
        return "starting";
    case FO_ROLE_DEAD:
        return "dead";
    case FO_ROLE_ABSENT:
        return "absent";
    }
    return "unknown";
}

const char *failover_state_name(enum peer_state s)
{
    switch (s) {
    case PEER_UP:
        return "up";
    case PEER_SUSPECT:
        return "suspect";
    case PEER_DOWN:
        return "down";
    case PEER_DRAINING:
        return "draining";
    }
    return "unknown";
}

static enum role role_of(const char *name)
{
    for (int r = ROLE_FIRST; r <= ROLE_LAST; r++)
        if (!strcmp(name, role_name((enum role)r)))
            return (enum role)r;
    return (enum role)0;
}

/* ---- the peer table ------------------------------------------------------ */

static struct pnode *peer_get(struct failover *f, const char *name)
{
    for (int i = 0; i < f->n; i++)
        if (!strcmp(f->peers[i].p.name, name))
            return &f->peers[i];
    if (f->n == MAX_PEERS)
        return NULL;
    struct pnode *n = &f->peers[f->n++];
    memset(n, 0, sizeof(*n));
    snprintf(n->p.name, sizeof(n->p.name), "%s", name);
    return n;
}

static const redisReply *fv(const redisReply *fields, const char *key)
{
    for (size_t i = 0; fields && i + 1 < fields->elements; i += 2)
        if (fields->element[i]->type == REDIS_REPLY_STRING && !strcmp(fields->element[i]->str, key) &&
            fields->element[i + 1]->type == REDIS_REPLY_STRING)
            return fields->element[i + 1];
    return NULL;
}

static const char *fs(const redisReply *fields, const char *key)
{
    const redisReply *v = fv(fields, key);
    return v ? v->str : "";
}

static void take_beat(struct failover *f, const redisReply *e)
{
    if (e->type != REDIS_REPLY_ARRAY || e->elements < 2 || e->element[0]->type != REDIS_REPLY_STRING ||
        e->element[1]->type != REDIS_REPLY_ARRAY)
        return;
    const char *id = e->element[0]->str;
    const redisReply *fields = e->element[1];
    const char *name = fs(fields, "name");
    enum role r = role_of(fs(fields, "role"));
    if (!*name || !r || strlen(name) >= sizeof(((struct peer *)0)->name))
        return; /* not a beat we understand: ignored */
    struct pnode *n = peer_get(f, name);
    if (!n)
        return;
    int64_t at = strtoll(id, NULL, 10);
    int64_t every = f->cfg->heartbeat_interval_ms;
    if (!n->beat_ms || at - n->beat_ms > 2 * every + 500 || n->draining)
        n->up_since_ms = at; /* (back) after a gap */
    n->beat_ms = at > n->beat_ms ? at : n->beat_ms;
    n->p.role = r;
    const char *dash = strrchr(name, '-');
    n->p.instance = dash ? atoi(dash + 1) : 0;
    n->draining = !strcmp(fs(fields, "state"), "draining");
    n->p.uptime_s = strtoll(fs(fields, "uptime_s"), NULL, 10);
    n->p.inflight = strtoll(fs(fields, "inflight"), NULL, 10);
    n->p.processed = strtoll(fs(fields, "processed"), NULL, 10);
    n->p.failed = strtoll(fs(fields, "failed"), NULL, 10);
    n->p.pid = atoi(fs(fields, "pid"));
    n->p.health_port = atoi(fs(fields, "health_port"));
    snprintf(n->p.serving, sizeof(n->p.serving), "%s", fs(fields, "serving"));
    snprintf(n->p.version, sizeof(n->p.version), "%s", fs(fields, "version"));
}

static void refresh_states(struct failover *f, int64_t now)
{
    const struct config *cfg = f->cfg;
    int64_t suspect = 2 * (int64_t)cfg->heartbeat_interval_ms + 300, down = cfg->failover_after_ms;
    for (int i = 0; i < f->n; i++) {
        struct pnode *n = &f->peers[i];
        n->p.age_ms = now - n->beat_ms;
        if (!strcmp(n->p.name, cfg->name))
            n->p.state = PEER_UP; /* we are alive by definition */
        else if (n->draining)
            n->p.state = PEER_DRAINING;
        else if (n->p.age_ms > down)
            n->p.state = PEER_DOWN;
        else if (n->p.age_ms > suspect)
            n->p.state = PEER_SUSPECT;
        else
            n->p.state = PEER_UP;
        if (n->p.state == PEER_UP || n->p.state == PEER_SUSPECT)
            n->seen_live = 1;
    }
    /* forget the long gone */
    for (int i = 0; i < f->n;) {
        if (f->peers[i].p.age_ms > FORGET_MS)
            f->peers[i] = f->peers[--f->n];
        else
            i++;
    }
}

static int live(const struct pnode *n)
{
    return n->p.state == PEER_UP || n->p.state == PEER_SUSPECT;
}

/* ---- takeover and handback -------------------------------------------------- */

static void on_event_added(struct rds *r, int status, const redisReply *reply, void *arg)
{
    (void)r;
    (void)status;
    (void)reply;
    (void)arg;
}

static void event(struct failover *f, const char *what, enum role r, const char *why)
{
    char key[160];
    snprintf(key, sizeof(key), "%s:events", f->cfg->redis_prefix);
    const char *av[] = {"XADD", key, "MAXLEN", "~", EVENTS_MAXLEN, "*", "type", what, "role", role_name(r),
                        "by", f->cfg->name, "reason", why};
    rds_cmd(f->redis, on_event_added, NULL, (int)(sizeof(av) / sizeof(av[0])), av, NULL);
}

static void dead_names(struct failover *f, enum role r, char *out, size_t len)
{
    size_t k = 0;
    out[0] = 0;
    for (int i = 0; i < f->n && k < len; i++)
        if (f->peers[i].p.role == r && f->peers[i].p.state == PEER_DOWN)
            k += (size_t)snprintf(out + k, len - k, "%s%s", k ? "," : "", f->peers[i].p.name);
}

/* Claim what dead consumers of role r still hold (not draining ones: they
 * finish their own jobs), again every RECLAIM_EVERY_MS while they stay down. */
static void claim_dead(struct failover *f, enum role r, int64_t now)
{
    const struct config *cfg = f->cfg;
    for (int i = 0; i < f->n; i++) {
        struct pnode *n = &f->peers[i];
        if (n->p.role != r || n->p.state != PEER_DOWN || !strcmp(n->p.name, cfg->name))
            continue;
        if (now - n->claimed_ms < RECLAIM_EVERY_MS)
            continue;
        n->claimed_ms = now;
        bus_claim_from(f->bus, role_name(r), n->p.name, cfg->failover_after_ms);
    }
}

static void take_over(struct failover *f, enum role r, const char *why)
{
    int rc = bus_consume(f->bus, role_name(r));
    if (rc && rc != -EEXIST) {
        log_error("routing: cannot take over the role", LF_STR("for_role", role_name(r)), LF_ERR(rc));
        return;
    }
    f->taken[r] = 1;
    char dead[256];
    dead_names(f, r, dead, sizeof(dead));
    log_warn("routing: taking over the role", LF_STR("for_role", role_name(r)), LF_STR("by", f->cfg->name),
             LF_STR("dead", dead), LF_STR("reason", why));
    event(f, "takeover", r, why);
    if (f->takeover)
        f->takeover(r, 1, dead, f->takeover_arg);
    for (int i = 0; i < f->n; i++)
        f->peers[i].claimed_ms = 0;
    claim_dead(f, r, now_ms(f));
}

static void hand_back(struct failover *f, enum role r, const char *why)
{
    bus_release(f->bus, role_name(r));
    f->taken[r] = 0;
    log_warn("routing: handing the role back", LF_STR("for_role", role_name(r)), LF_STR("by", f->cfg->name),
             LF_STR("reason", why));
    event(f, "handback", r, why);
    if (f->takeover)
        f->takeover(r, 0, "", f->takeover_arg);
}

/* Until it has watched the heartbeats for a full failover window, an
 * instance judges nobody: a peer that is starting may not have beaten yet.
 * The window counts from the first read that reached the end of the stream
 * (not from the process start: Redis may have come up late). */
static int judging(const struct failover *f, int64_t now)
{
    return f->watching_ms && now - f->watching_ms >= f->cfg->failover_after_ms &&
           now - f->started_ms >= f->cfg->failover_after_ms;
}

/* The last time an instance joined the cluster (its first beat seen, or its
 * first after a gap), or when we began watching. */
static int64_t last_join(const struct failover *f)
{
    int64_t t = f->watching_ms;
    for (int i = 0; i < f->n; i++)
        if (f->peers[i].up_since_ms > t)
            t = f->peers[i].up_since_ms;
    return t;
}

static enum failover_role_state judge(const struct failover *f, enum role r, int64_t now)
{
    if (!judging(f, now))
        return FO_ROLE_UNJUDGED;
    int seen = 0;
    for (int i = 0; i < f->n; i++) {
        const struct pnode *n = &f->peers[i];
        if (n->p.role != r || !strcmp(n->p.name, f->cfg->name))
            continue;
        if (live(n))
            return FO_ROLE_ALIVE;
        seen |= n->seen_live;
    }
    if (seen)
        return FO_ROLE_DEAD; /* it was alive while we watched: it died */
    /* Nobody of the role has beaten while we watched (at most the last
     * beats of a former run, stopped before we came up). While instances
     * are still joining, it is starting, not dead; once the cluster has
     * been settled for a full failover window, nobody serves it. */
    if (now - last_join(f) < f->cfg->failover_after_ms)
        return FO_ROLE_STARTING;
    return FO_ROLE_ABSENT;
}

enum failover_role_state failover_role_state(const struct failover *f, enum role r)
{
    if (r < ROLE_FIRST || r > ROLE_LAST)
        return FO_ROLE_UNJUDGED;
    if (r == f->cfg->role)
        return FO_ROLE_ALIVE; /* ours: we are alive by definition */
    return judge(f, r, now_ms(f));
}

static void decide(struct failover *f, int64_t now)
{
    const struct config *cfg = f->cfg;
    enum role me = cfg->role;
    if (!judging(f, now))
        return; /* give the others time to be seen before judging them */
    int64_t back_after = (int64_t)HANDBACK_BEATS * cfg->heartbeat_interval_ms;
    for (int r = ROLE_FIRST; r <= ROLE_LAST; r++) {
        int settled = 0;
        const struct pnode *lowest = NULL;
        for (int i = 0; i < f->n; i++) {
            const struct pnode *n = &f->peers[i];
            if (live(n) && (!lowest || n->p.instance < lowest->p.instance))
                lowest = n;
            if (n->p.role != (enum role)r || !live(n) || !strcmp(n->p.name, cfg->name))
                continue;
            settled |= now - n->up_since_ms >= back_after;
        }
        enum failover_role_state st = judge(f, (enum role)r, now);
        int alive = st == FO_ROLE_ALIVE;
        if ((enum role)r == me) {
            claim_dead(f, (enum role)r, now); /* a dead replica's jobs */
            continue;
        }
        /* who takes a role with nobody alive: the role whose row says
         * takes_over (admin) for the others, the lowest-numbered live
         * instance for that role itself */
        int taker = (enum role)r == role_taker() ? lowest && !strcmp(lowest->p.name, cfg->name) : me == role_taker();
        if (!f->taken[r]) {
            if ((st == FO_ROLE_DEAD || st == FO_ROLE_ABSENT) && taker)
                take_over(f, (enum role)r,
                          st == FO_ROLE_DEAD ? "no live instance of the role" : "the role has no instance");
        } else if (alive && settled) {
            hand_back(f, (enum role)r, "its own instance is back");
        } else if (!taker) {
            hand_back(f, (enum role)r, "another instance is the taker now");
        } else {
            claim_dead(f, (enum role)r, now);
        }
    }
}

/* ---- reading the heartbeats ----------------------------------------------------- */

static void on_beats(struct rds *r, int status, const redisReply *reply, void *arg)
{
    (void)r;
    struct failover *f = arg;
    f->reading = 0;
    if (f->closing) {
        mem_free(f);
        return;
    }
    if (status || f->stopping || !reply || reply->type != REDIS_REPLY_ARRAY)
        return;
    int64_t now = now_ms(f);
    for (size_t i = 0; i < reply->elements; i++) {
        take_beat(f, reply->element[i]);
        const redisReply *e = reply->element[i];
        if (e->type == REDIS_REPLY_ARRAY && e->elements && e->element[0]->type == REDIS_REPLY_STRING)
            snprintf(f->last_id, sizeof(f->last_id), "(%s", e->element[0]->str);
    }
    if (!f->watching_ms && reply->elements < READ_COUNT)
        f->watching_ms = now; /* the picture is complete from here on */
    refresh_states(f, now);
    if (f->bus && rds_up(f->redis))
        decide(f, now);
}

static void on_tick(uv_timer_t *t)
{
    struct failover *f = t->data;
    if (f->reading || !rds_up(f->redis))
        return;
    char key[160], count[16];
    snprintf(key, sizeof(key), "%s:heartbeats", f->cfg->redis_prefix);
    snprintf(count, sizeof(count), "%d", READ_COUNT);
    const char *av[] = {"XRANGE", key, f->last_id, "+", "COUNT", count};
    if (!rds_cmd(f->redis, on_beats, f, 6, av, NULL))
        f->reading = 1;
}

/* ---- public ------------------------------------------------------------------ */

int failover_new(const struct failover_opts *o, struct failover **out)
{
    if (!o || !o->loop || !o->redis || !o->cfg || !o->cfg->redis_prefix || !o->cfg->name[0] ||
        o->cfg->role < ROLE_FIRST || o->cfg->role > ROLE_LAST || o->tick_ms < 0)
        return -EINVAL;
    struct failover *f = mem_calloc(1, sizeof(*f));
    f->loop = o->loop;
    f->redis = o->redis;
    f->bus = o->bus;
    f->cfg = o->cfg;
    f->clock = o->clock ? o->clock : wall_clock;
    f->clock_arg = o->clock_arg;
    f->takeover = o->takeover;
    f->takeover_arg = o->takeover_arg;
    f->started_ms = now_ms(f);
    snprintf(f->last_id, sizeof(f->last_id), "%lld", (long long)(f->started_ms - BOOT_WINDOW_MS));
    uv_timer_init(f->loop, &f->tick);
    f->tick.data = f;
    uint64_t tick = o->tick_ms ? (uint64_t)o->tick_ms : TICK_MS;
    uv_timer_start(&f->tick, on_tick, 0, tick);
    uv_unref((uv_handle_t *)&f->tick);
    *out = f;
    return 0;
}

static void on_tick_closed(uv_handle_t *h)
{
    struct failover *f = h->data;
    if (!f->reading)
        mem_free(f);
    else
        f->closing = 1; /* freed when the read comes back (the command connection closes after us) */
}

void failover_close(struct failover *f)
{
    f->stopping = 1;
    uv_close((uv_handle_t *)&f->tick, on_tick_closed);
}

static int by_instance(const void *a, const void *b)
{
    const struct peer *x = a, *y = b;
    return x->instance != y->instance ? (x->instance < y->instance ? -1 : 1) : strcmp(x->name, y->name);
}

size_t failover_peers(const struct failover *f, struct peer *out, size_t max)
{
    struct peer all[MAX_PEERS];
    size_t k = 0;
    for (int i = 0; i < f->n; i++)
        all[k++] = f->peers[i].p;
    qsort(all, k, sizeof(*all), by_instance);
    if (k > max)
        k = max;
    memcpy(out, all, k * sizeof(*out));
    return k;
}

void failover_servers(const struct failover *f, enum role r, char *out, size_t len)
{
    size_t k = 0;
    out[0] = 0;
    for (int i = 0; i < f->n && k < len; i++) {
        const struct pnode *n = &f->peers[i];
        if (!live(n))
            continue;
        /* "serving" lists the streams it reads; an instance too old to say
         * serves its own role */
        const char *want = role_name(r), *s = n->p.serving;
        size_t wl = strlen(want);
        int serves = !*s ? n->p.role == r : 0;
        while (*s && !serves) {
            size_t l = strcspn(s, ",");
            serves = l == wl && !strncmp(s, want, wl);
            s += l + (s[l] == ',');
        }
        if (serves)
            k += (size_t)snprintf(out + k, len - k, "%s%s", k ? "," : "", n->p.name);
    }
}

void failover_metrics(const struct failover *f, struct buf *out)
{
    buf_puts(out, "# HELP discordbot_peer_heartbeat_age_seconds Time since each instance's last heartbeat.\n"
                  "# TYPE discordbot_peer_heartbeat_age_seconds gauge\n");
    for (int i = 0; i < f->n; i++)
        buf_printf(out, "discordbot_peer_heartbeat_age_seconds{peer=\"%s\",role=\"%s\"} %.3f\n", f->peers[i].p.name,
                   role_name(f->peers[i].p.role), (double)f->peers[i].p.age_ms / 1000.0);
    buf_puts(out, "# HELP discordbot_peer_up 1 while an instance is up or suspect, 0 when down or draining.\n"
                  "# TYPE discordbot_peer_up gauge\n");
    for (int i = 0; i < f->n; i++)
        buf_printf(out, "discordbot_peer_up{peer=\"%s\",role=\"%s\",state=\"%s\"} %d\n", f->peers[i].p.name,
                   role_name(f->peers[i].p.role), failover_state_name(f->peers[i].p.state), live(&f->peers[i]));
    buf_puts(out, "# HELP discordbot_takeover 1 while this instance serves the role for a dead instance.\n"
                  "# TYPE discordbot_takeover gauge\n");
    for (int r = ROLE_FIRST; r <= ROLE_LAST; r++)
        buf_printf(out, "discordbot_takeover{role=\"%s\"} %d\n", role_name((enum role)r), f->taken[r]);
}
