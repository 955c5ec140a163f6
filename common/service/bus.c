#include "service/bus.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/clock.h"
#include "base/err.h"
#include "base/idmap.h"
#include "base/log.h"
#include "base/mem.h"

#define BUS_MAX_HANDLERS 32
#define BUS_DEAD_MAXLEN "10000"
#define BUS_PEL_BATCH 100

/* Job as the bus keeps it: the public part first, then bookkeeping. */
struct job {
    struct bus_job pub;
    struct bus *bus;
    struct job *prev, *next; /* in-flight list, or (next only) the queue */
    int stream;              /* index into bus->streams */
    int handler;             /* index into bus->handlers */
    uint64_t started_ms;     /* loop time when it was handed out */
    char data[];             /* id, type, payload copies */
};

/* A finished job whose XACK is not confirmed yet. It stays listed while
 * the XACK is on the wire too, so a pending-list re-read racing the ack on
 * the other connection cannot start the job again. */
struct pending_ack {
    struct pending_ack *prev, *next;
    struct bus *bus;
    int stream;
    int sent;
    char id[];
};

struct stream {
    struct bus *bus;
    char role[16];
    char key[128];
    int group_ok;
    int paused;          /* handed back: not read, not reclaimed; its jobs finish */
    char pel_cursor[48]; /* last id re-read from our own pending list */
};

enum reader_state { RD_DOWN, RD_SETUP, RD_READY };

struct bus {
    uv_loop_t *loop;
    /* by (stream, entry id): jobs running, jobs queued, acks unconfirmed;
     * thousands of each at once must not be found by walking the lists */
    struct idmap inflight_ix, queued_ix, acks_ix;
    struct rds *cmd, *rd;
    char *prefix, *consumer;
    char maxlen[16];
    int max_inflight, block_ms, claim_idle_ms, renew_ms;
    int resetup;          /* streams changed while a read was blocked */
    uint64_t last_renew_ms;
    unsigned stall_epoch; /* bumped each time the process is found to have stood still */
    void (*on_finish)(const char *role, const char *type, enum bus_result r, uint64_t ms, void *arg);
    void *finish_arg;
    struct stream streams[BUS_MAX_STREAMS];
    int nstreams;
    struct {
        char *type;
        char role[16]; /* "" = any role */
        bus_handler *fn;
        void *arg;
    } handlers[BUS_MAX_HANDLERS];
    int nhandlers;

    enum reader_state rstate;
    int pel_phase;         /* still re-reading our own pending entries */
    int read_outstanding;  /* an XREADGROUP is on the wire */
    unsigned dead_outstanding; /* dead-letter writes not yet confirmed */
    int setup_outstanding;
    unsigned cmd_outstanding; /* our commands on the shared cmd connection */
    long long client_id;   /* of the reader connection, for CLIENT UNBLOCK */
    struct job *inflight;  /* list head */
    /* Entries read (or claimed) for us when every slot was taken: a read
     * and a reclaim can together bring more than the room there was. They
     * start, in order, as slots free, on the next turn of the loop. */
    struct job *queue, *queue_tail;
    unsigned nqueued;
    struct pending_ack *acks;
    unsigned nacks;
    struct bus_stats st;

    uv_timer_t renew_timer, claim_timer;
    uv_timer_t kick_timer; /* 0 ms: start queued jobs, then read, next turn */
    uv_timer_t unblock_timer; /* CLIENT UNBLOCK came before the read blocked: again */
    int draining, closing, handles_open, rd_open;
    void (*drain_done)(void *);
    void *drain_arg;
    void (*close_done)(void *);
    void *close_arg;
};

static void reader_next(struct bus *b);
static void job_unlink(struct bus *b, struct job *j);
static int cmd_send(struct bus *b, rds_reply_cb *cb, void *arg, int argc, const char **argv);
static int cmd_done(struct bus *b);
static void on_unblock(struct rds *r, int status, const redisReply *reply, void *arg);
static void send_unblock(struct bus *b);
static void on_read(struct rds *r, int status, const redisReply *reply, void *arg);
static void maybe_drained(struct bus *b);
static void start_setup(struct bus *b);
static void bus_free(struct bus *b);
static void start_job(struct bus *b, struct job *j);
static void schedule_kick(struct bus *b);

void bus_stream_key(const struct bus *b, const char *role, char *out, size_t len)
{
    snprintf(out, len, "%s:jobs:%s", b->prefix, role);
}

static unsigned capacity(const struct bus *b)
{
    return b->st.inflight >= (unsigned)b->max_inflight ? 0 : (unsigned)b->max_inflight - b->st.inflight;
}

static struct job *find_inflight(struct bus *b, int stream, const char *id)
{
    return idmap_get(&b->inflight_ix, stream, id);
}

static struct job *find_queued(struct bus *b, int stream, const char *id)
{
    return idmap_get(&b->queued_ix, stream, id);
}

/* Drop j from the queue (another consumer owns it now). */
static void queue_remove(struct bus *b, struct job *j)
{
    struct job **pp = &b->queue, *prev = NULL;
    while (*pp && *pp != j) {
        prev = *pp;
        pp = &(*pp)->next;
    }
    if (!*pp)
        return;
    *pp = j->next;
    if (b->queue_tail == j)
        b->queue_tail = prev;
    b->nqueued--;
    idmap_del(&b->queued_ix, j->stream, j->pub.id);
}

static struct pending_ack *find_ack(struct bus *b, int stream, const char *id)
{
    return idmap_get(&b->acks_ix, stream, id);
}

/* ---- the shared command connection -------------------------------------- */

/* The caller owns the command connection and may keep it after bus_close, so
 * replies to our commands can come after it: the bus is freed only once
 * each of their callbacks ran. */
static int cmd_send(struct bus *b, rds_reply_cb *cb, void *arg, int argc, const char **argv)
{
    int rc = rds_cmd(b->cmd, cb, arg, argc, argv, NULL);
    if (rc == 0)
        b->cmd_outstanding++;
    return rc;
}

/* A callback of cmd_send is over. Returns 1 when that freed the bus. */
static int cmd_done(struct bus *b)
{
    b->cmd_outstanding--;
    if (!b->closing || b->cmd_outstanding || b->handles_open || b->rd_open)
        return 0;
    bus_free(b);
    return 1;
}

/* ---- acks ---------------------------------------------------------------- */

static void ack_unlink(struct bus *b, struct pending_ack *a)
{
    if (a->prev)
        a->prev->next = a->next;
    else
        b->acks = a->next;
    if (a->next)
        a->next->prev = a->prev;
    b->nacks--;
    idmap_del(&b->acks_ix, a->stream, a->id);
}

static void on_ack(struct rds *r, int status, const redisReply *reply, void *arg)
{
    (void)r;
    struct pending_ack *a = arg;
    struct bus *b = a->bus;
    if (cmd_done(b) || b->closing || status == BC_ESHUTDOWN)
        return; /* bus_free releases it */
    if (status || rds_reply_error(reply)) {
        a->sent = 0; /* bus_cmd_up sends it again */
        return;
    }
    ack_unlink(b, a);
    mem_free(a);
    if (b->draining)
        maybe_drained(b);
}

static void send_ack(struct bus *b, struct pending_ack *a)
{
    const struct stream *s = &b->streams[a->stream];
    const char *av[4] = {"XACK", s->key, BUS_GROUP, a->id};
    a->sent = cmd_send(b, on_ack, a, 4, av) == 0;
}

static void ack(struct bus *b, int stream, const char *id)
{
    size_t n = strlen(id) + 1;
    struct pending_ack *a = mem_alloc(sizeof(*a) + n);
    a->bus = b;
    a->stream = stream;
    a->sent = 0;
    memcpy(a->id, id, n);
    a->prev = NULL;
    a->next = b->acks;
    if (b->acks)
        b->acks->prev = a;
    b->acks = a;
    b->nacks++;
    idmap_put(&b->acks_ix, stream, a->id, a);
    send_ack(b, a);
}

void bus_cmd_up(struct bus *b)
{
    unsigned resend = 0;
    for (struct pending_ack *a = b->acks; a; a = a->next)
        if (!a->sent) {
            send_ack(b, a);
            resend++;
        }
    if (resend)
        log_info("sent acks kept while redis was away", LF_INT("count", resend));
    reader_next(b);
}

/* ---- dead letters -------------------------------------------------------- */

struct dead_ctx {
    struct bus *bus;
    int stream;
    char id[];
};

static void on_dead(struct rds *r, int status, const redisReply *reply, void *arg)
{
    (void)r;
    struct dead_ctx *c = arg;
    struct bus *b = c->bus;
    b->dead_outstanding--;
    if (status == BC_ESHUTDOWN) {
        mem_free(c);
        cmd_done(b);
        return;
    }
    if (status || rds_reply_error(reply))
        log_warn("dead-letter write failed; the entry stays pending", LF_STR("id", c->id),
                 LF_STR("error", status ? bc_strerror(status) : rds_reply_error(reply)));
    else
        ack(b, c->stream, c->id); /* acked only once the dead letter is safe */
    mem_free(c);
    if (cmd_done(b))
        return;
    if (b->draining && !b->closing)
        maybe_drained(b);
}

static void dead_letter(struct bus *b, int stream, const char *id, const char *type, const char *payload,
                        const char *reason)
{
    char key[160];
    snprintf(key, sizeof(key), "%s:dead", b->prefix);
    const struct stream *s = &b->streams[stream];
    log_warn("job dead-lettered", LF_STR("stream", s->key), LF_STR("id", id), LF_STR("type", type ? type : ""),
             LF_STR("reason", reason));
    const char *av[] = {"XADD", key, "MAXLEN", "~", BUS_DEAD_MAXLEN, "*", "stream", s->key, "id", id,
                        "type", type ? type : "", "reason", reason, "consumer", b->consumer,
                        "payload", payload ? payload : ""};
    size_t n = strlen(id) + 1;
    struct dead_ctx *c = mem_alloc(sizeof(*c) + n);
    c->bus = b;
    c->stream = stream;
    memcpy(c->id, id, n);
    if (cmd_send(b, on_dead, c, (int)(sizeof(av) / sizeof(av[0])), av))
        mem_free(c); /* redis away: the entry stays pending and comes back */
    else
        b->dead_outstanding++;
    b->st.dead++;
}

/* ---- dispatch ------------------------------------------------------------ */

static const redisReply *field(const redisReply *fields, const char *name)
{
    if (!fields || fields->type != REDIS_REPLY_ARRAY)
        return NULL;
    for (size_t i = 0; i + 1 < fields->elements; i += 2) {
        const redisReply *k = fields->element[i], *v = fields->element[i + 1];
        if (k->type == REDIS_REPLY_STRING && !strcmp(k->str, name) && v->type == REDIS_REPLY_STRING)
            return v;
    }
    return NULL;
}

/* The handler for type on role's stream: a role's own first, then one for any role. */
static int find_handler(const struct bus *b, const char *role, const char *type)
{
    int any = -1;
    for (int i = 0; i < b->nhandlers; i++) {
        if (strcmp(b->handlers[i].type, type))
            continue;
        if (role && !strcmp(b->handlers[i].role, role))
            return i;
        if (!b->handlers[i].role[0])
            any = i;
    }
    return any;
}

static void run_job(struct bus *b, struct job *j)
{
    log_debug("job started", LF_STR("id", j->pub.id), LF_STR("type", j->pub.type),
              LF_BOOL("redelivered", j->pub.redelivered));
    b->handlers[j->handler].fn(b, &j->pub, b->handlers[j->handler].arg);
}

static void done_key(const struct bus *b, const struct job *j, char *out, size_t len)
{
    snprintf(out, len, "%s:done:%s:%s", b->prefix, b->streams[j->stream].role, j->pub.id);
}

struct check_ctx {
    struct bus *b;
    int stream;
    char id[48];
};

static void on_done_check(struct rds *r, int status, const redisReply *reply, void *arg)
{
    (void)r;
    struct check_ctx *c = arg;
    struct bus *b = c->b;
    struct job *j = NULL;
    if (!cmd_done(b) && !b->closing)
        j = find_inflight(b, c->stream, c->id); /* gone if the bus closed meanwhile */
    mem_free(c);
    if (!j)
        return;
    if (!status && reply && reply->type == REDIS_REPLY_INTEGER && reply->integer == 1) {
        /* answered before, by us or a consumer that died before its ack */
        log_info("job was already answered; acked without running it again", LF_STR("id", j->pub.id),
                 LF_STR("type", j->pub.type));
        bus_finish(&j->pub, BUS_DONE, NULL);
        return;
    }
    run_job(b, j);
}

/* One stream entry [id, [k, v, ...]] read for us. */
static void dispatch(struct bus *b, int stream, const redisReply *entry, int redelivered)
{
    if (entry->type != REDIS_REPLY_ARRAY || entry->elements < 2 || entry->element[0]->type != REDIS_REPLY_STRING)
        return;
    if (b->closing)
        return; /* a handler of this same reply closed the bus: it stays pending */
    const char *id = entry->element[0]->str;
    const redisReply *fields = entry->element[1];
    if (find_inflight(b, stream, id) || find_queued(b, stream, id) || find_ack(b, stream, id))
        return; /* already running or waiting here, or finished and its ack not confirmed */
    if (fields->type == REDIS_REPLY_NIL) {
        log_warn("pending job no longer in the stream (trimmed); acking it", LF_STR("id", id),
                 LF_STR("stream", b->streams[stream].key));
        ack(b, stream, id);
        return;
    }
    const redisReply *type = field(fields, "type"), *payload = field(fields, "payload"), *ts = field(fields, "ts");
    if (!type || !type->len) {
        dead_letter(b, stream, id, NULL, payload ? payload->str : NULL, "entry has no type field");
        return;
    }
    int h = find_handler(b, b->streams[stream].role, type->str);
    if (h < 0) {
        dead_letter(b, stream, id, type->str, payload ? payload->str : NULL, "no handler for this job type");
        return;
    }
    size_t idl = strlen(id) + 1, tl = type->len + 1, pl = payload ? payload->len : 0;
    struct job *j = mem_calloc(1, sizeof(*j) + idl + tl + pl + 1);
    char *p = j->data;
    memcpy(p, id, idl);
    j->pub.id = p;
    p += idl;
    memcpy(p, type->str, tl);
    j->pub.type = p;
    p += tl;
    if (pl)
        memcpy(p, payload->str, pl);
    p[pl] = '\0';
    j->pub.payload = p;
    j->pub.payload_len = pl;
    j->pub.role = b->streams[stream].role;
    j->pub.queued_ms = ts ? strtoll(ts->str, NULL, 10) : 0;
    j->pub.redelivered = redelivered;
    j->bus = b;
    j->stream = stream;
    j->handler = h;
    if (!capacity(b) || b->queue) {
        /* A reclaim and a read were each sized for the room there was when
         * they were sent; together they can bring more. The entry is ours
         * now: it waits here (not in Redis for a reclaim) for a free slot. */
        log_debug("no room for the job now; queued until a slot frees", LF_STR("id", j->pub.id));
        if (b->queue_tail)
            b->queue_tail->next = j;
        else
            b->queue = j;
        b->queue_tail = j;
        b->nqueued++;
        idmap_put(&b->queued_ix, j->stream, j->pub.id, j);
        if (capacity(b))
            schedule_kick(b); /* room, but behind others queued: in order */
        return;
    }
    start_job(b, j);
}

static struct job *queue_pop(struct bus *b)
{
    struct job *j = b->queue;
    if (!j)
        return NULL;
    b->queue = j->next;
    if (!b->queue)
        b->queue_tail = NULL;
    j->next = NULL;
    b->nqueued--;
    idmap_del(&b->queued_ix, j->stream, j->pub.id);
    return j;
}

/* Take a slot and hand the job to its handler (after the done-marker check
 * for a redelivered one). */
static void start_job(struct bus *b, struct job *j)
{
    j->started_ms = uv_now(b->loop);
    j->prev = NULL;
    j->next = b->inflight;
    if (b->inflight)
        b->inflight->prev = j;
    b->inflight = j;
    b->st.inflight++;
    idmap_put(&b->inflight_ix, j->stream, j->pub.id, j);
    if (j->pub.redelivered) {
        /* it may have been answered already: look for its done marker */
        char key[256];
        done_key(b, j, key, sizeof(key));
        const char *av[2] = {"EXISTS", key};
        struct check_ctx *c = mem_alloc(sizeof(*c));
        c->b = b;
        c->stream = j->stream;
        snprintf(c->id, sizeof(c->id), "%s", j->pub.id);
        if (cmd_send(b, on_done_check, c, 2, av) == 0)
            return;
        mem_free(c);
    }
    run_job(b, j);
}

static void job_unlink(struct bus *b, struct job *j)
{
    if (j->prev)
        j->prev->next = j->next;
    else
        b->inflight = j->next;
    if (j->next)
        j->next->prev = j->prev;
    b->st.inflight--;
    idmap_del(&b->inflight_ix, j->stream, j->pub.id);
}

void bus_finish(struct bus_job *pub, enum bus_result r, const char *reason)
{
    struct job *j = (struct job *)pub;
    struct bus *b = j->bus;
    if (b->closing)
        return;
    job_unlink(b, j);
    if (r == BUS_RETRY) {
        b->st.retried++;
        log_info("job left pending for a retry", LF_STR("id", pub->id), LF_STR("type", pub->type),
                 LF_STR("reason", reason ? reason : ""));
    } else {
        if (r == BUS_DONE)
            b->st.processed++;
        else
            b->st.failed++;
        if (r == BUS_FAILED)
            log_warn("job failed", LF_STR("id", pub->id), LF_STR("type", pub->type),
                     LF_STR("reason", reason ? reason : ""));
        /* a job another consumer took over is theirs to ack */
        if (!pub->lease_lost)
            ack(b, j->stream, pub->id);
    }
    if (b->on_finish && r != BUS_RETRY)
        b->on_finish(b->streams[j->stream].role, pub->type, r, uv_now(b->loop) - j->started_ms, b->finish_arg);
    mem_free(j);
    /* A slot is free. Never start the next job or read from here: this may
     * be a handler inside the dispatch of a batch (a read sent now would be
     * sized for room the rest of the batch takes). The next turn does it. */
    schedule_kick(b);
    if (b->draining)
        maybe_drained(b);
}

static void on_kick(uv_timer_t *t)
{
    struct bus *b = t->data;
    /* a handler may close the bus: checked after every start */
    while (!b->closing && b->queue && capacity(b))
        start_job(b, queue_pop(b));
    if (b->closing)
        return;
    if (b->draining)
        maybe_drained(b);
    else
        reader_next(b);
}

static void schedule_kick(struct bus *b)
{
    if (!b->closing)
        uv_timer_start(&b->kick_timer, on_kick, 0, 0);
}

/* ---- reading ------------------------------------------------------------- */

static int stream_index(const struct bus *b, const char *key, size_t len)
{
    for (int i = 0; i < b->nstreams; i++)
        if (strlen(b->streams[i].key) == len && !memcmp(b->streams[i].key, key, len))
            return i;
    return -1;
}

/* Handle [[key, [entries...]], ...] from XREADGROUP. Returns entries seen. */
static size_t handle_read_reply(struct bus *b, const redisReply *reply, int pel)
{
    size_t seen = 0;
    if (!reply || reply->type != REDIS_REPLY_ARRAY)
        return 0;
    for (size_t i = 0; i < reply->elements; i++) {
        const redisReply *sr = reply->element[i];
        if (sr->type != REDIS_REPLY_ARRAY || sr->elements != 2 || sr->element[0]->type != REDIS_REPLY_STRING ||
            sr->element[1]->type != REDIS_REPLY_ARRAY)
            continue;
        int s = stream_index(b, sr->element[0]->str, sr->element[0]->len);
        if (s < 0)
            continue;
        const redisReply *entries = sr->element[1];
        for (size_t k = 0; k < entries->elements; k++) {
            const redisReply *e = entries->element[k];
            if (pel && e->type == REDIS_REPLY_ARRAY && e->elements >= 1 && e->element[0]->type == REDIS_REPLY_STRING)
                snprintf(b->streams[s].pel_cursor, sizeof(b->streams[s].pel_cursor), "%s", e->element[0]->str);
            dispatch(b, s, e, pel);
            seen++;
        }
    }
    return seen;
}

static void send_read(struct bus *b, int pel)
{
    unsigned cap = capacity(b);
    char count[16], block[16];
    snprintf(count, sizeof(count), "%u", pel ? (cap < BUS_PEL_BATCH ? cap : BUS_PEL_BATCH) : cap);
    snprintf(block, sizeof(block), "%d", b->block_ms);
    const char *av[9 + 2 * BUS_MAX_STREAMS];
    int n = 0;
    av[n++] = "XREADGROUP";
    av[n++] = "GROUP";
    av[n++] = BUS_GROUP;
    av[n++] = b->consumer;
    av[n++] = "COUNT";
    av[n++] = count;
    if (!pel) {
        av[n++] = "BLOCK";
        av[n++] = block;
    }
    av[n++] = "STREAMS";
    for (int i = 0; i < b->nstreams; i++)
        if (!b->streams[i].paused)
            av[n++] = b->streams[i].key;
    for (int i = 0; i < b->nstreams; i++)
        if (!b->streams[i].paused)
            av[n++] = pel ? b->streams[i].pel_cursor : ">";
    if (rds_cmd(b->rd, on_read, b, n, av, NULL) == 0)
        b->read_outstanding = 1;
    else
        b->rstate = RD_DOWN; /* the reader's state callback restarts us */
}

static void on_read(struct rds *r, int status, const redisReply *reply, void *arg)
{
    (void)r;
    struct bus *b = arg;
    b->read_outstanding = 0;
    if (b->closing)
        return;
    if (status) {
        b->rstate = RD_DOWN; /* connection lost: the state callback restarts */
        maybe_drained(b);
        return;
    }
    const char *e = rds_reply_error(reply);
    if (e) {
        if (!strncmp(e, "NOGROUP", 7)) {
            /* Redis lost the group (restart without persistence): make it again */
            log_warn("consumer group missing, creating it again", LF_STR("error", e));
            start_setup(b);
            return;
        }
        /* e.g. WRONGTYPE: start over after the reconnect backoff */
        log_error("reading jobs failed", LF_STR("error", e));
        b->rstate = RD_DOWN;
        rds_reset(b->rd);
        maybe_drained(b);
        return;
    }
    if (b->resetup) {
        /* the set of streams changed while we were blocked: groups first,
         * then our pending entries of every stream, then new ones */
        b->resetup = 0;
        handle_read_reply(b, reply, b->pel_phase);
        if (!b->draining)
            start_setup(b);
        return;
    }
    size_t seen = handle_read_reply(b, reply, b->pel_phase);
    if (b->pel_phase && seen == 0) {
        log_debug("own pending entries re-read");
        b->pel_phase = 0;
    }
    if (b->draining) {
        maybe_drained(b);
        return;
    }
    reader_next(b);
}

static int bus_nactive(const struct bus *b)
{
    int n = 0;
    for (int i = 0; i < b->nstreams; i++)
        n += !b->streams[i].paused;
    return n;
}

/* Issue the next read if there is room; a finishing job calls us again. */
static void reader_next(struct bus *b)
{
    /* No job is taken while the command connection is down: its handler
     * could neither answer through Redis nor have it acked. */
    if (b->closing || b->draining || b->read_outstanding || b->rstate != RD_READY || !rds_up(b->rd) ||
        !rds_up(b->cmd) || !bus_nactive(b) || capacity(b) == 0 || b->queue)
        return; /* queued jobs take the free slots first (on_kick reads after them) */
    send_read(b, b->pel_phase);
}

/* ---- setup: groups and client id ---------------------------------------- */

static void setup_step_done(struct bus *b)
{
    if (--b->setup_outstanding > 0 || b->closing)
        return;
    for (int i = 0; i < b->nstreams; i++)
        if (!b->streams[i].group_ok) {
            b->rstate = RD_DOWN;
            rds_reset(b->rd); /* retry the whole setup after a backoff */
            return;
        }
    /* Re-read our own pending entries first: jobs taken before a crash or
     * an outage are ours to finish. */
    for (int i = 0; i < b->nstreams; i++)
        snprintf(b->streams[i].pel_cursor, sizeof(b->streams[i].pel_cursor), "0");
    b->pel_phase = 1;
    b->rstate = RD_READY;
    log_info("consuming jobs", LF_STR("stream", b->streams[0].key), LF_INT("streams", b->nstreams),
             LF_STR("consumer", b->consumer));
    reader_next(b);
}

static void on_group(struct rds *r, int status, const redisReply *reply, void *arg)
{
    (void)r;
    struct stream *s = arg;
    struct bus *b = s->bus;
    const char *e = rds_reply_error(reply);
    if (!status && (!e || !strncmp(e, "BUSYGROUP", 9)))
        s->group_ok = 1;
    else if (e)
        log_error("cannot create consumer group", LF_STR("stream", s->key), LF_STR("error", e));
    setup_step_done(b);
}

static void on_client_id(struct rds *r, int status, const redisReply *reply, void *arg)
{
    (void)r;
    struct bus *b = arg;
    if (!status && reply && reply->type == REDIS_REPLY_INTEGER)
        b->client_id = reply->integer;
    setup_step_done(b);
}

static void start_setup(struct bus *b)
{
    b->rstate = RD_SETUP;
    b->setup_outstanding = 1;
    const char *cid[2] = {"CLIENT", "ID"};
    if (rds_cmd(b->rd, on_client_id, b, 2, cid, NULL) == 0)
        b->setup_outstanding++;
    for (int i = 0; i < b->nstreams; i++) {
        struct stream *s = &b->streams[i];
        s->group_ok = 0;
        const char *av[6] = {"XGROUP", "CREATE", s->key, BUS_GROUP, "0", "MKSTREAM"};
        if (rds_cmd(b->rd, on_group, s, 6, av, NULL) == 0)
            b->setup_outstanding++;
    }
    setup_step_done(b);
}

static void on_reader_state(struct rds *r, int up, void *arg)
{
    (void)r;
    struct bus *b = arg;
    if (b->closing)
        return;
    if (!up) {
        b->rstate = RD_DOWN;
        b->read_outstanding = 0;
        maybe_drained(b);
        return;
    }
    if (b->nstreams && !b->draining)
        start_setup(b);
}

int bus_reader_up(const struct bus *b)
{
    return rds_up(b->rd) && b->rstate == RD_READY;
}

/* ---- lease renewal and reclaim ------------------------------------------ */

/* Renews our pending entries that are still running here, but only those
 * we still own: an entry another consumer claimed is reported back so the
 * job knows not to answer. */
static const char renew_lua[] =
    "local lost = {}\n"
    "for i = 3, #ARGV do\n"
    "  local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)\n"
    "  if #p == 0 or p[1][2] ~= ARGV[2] then lost[#lost + 1] = ARGV[i]\n"
    "  else redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'JUSTID') end\n"
    "end\n"
    "return lost\n";

struct renew_ctx {
    struct bus *b;
    int stream;
    unsigned epoch; /* b->stall_epoch when the renewal was sent */
};

static void on_renew(struct rds *r, int status, const redisReply *reply, void *arg)
{
    (void)r;
    struct renew_ctx *c = arg;
    struct bus *b = c->b;
    int stream = c->stream;
    unsigned epoch = c->epoch;
    mem_free(c);
    if (cmd_done(b) || status || b->closing || !reply || reply->type != REDIS_REPLY_ARRAY)
        return;
    for (size_t i = 0; i < reply->elements; i++) {
        const redisReply *id = reply->element[i];
        struct job *q = id->type == REDIS_REPLY_STRING ? find_queued(b, stream, id->str) : NULL;
        if (q) { /* not started yet: simply not ours to start any more */
            log_warn("queued job taken by another consumer; not started here", LF_STR("id", q->pub.id),
                     LF_STR("type", q->pub.type));
            queue_remove(b, q);
            mem_free(q);
            continue;
        }
        struct job *j = id->type == REDIS_REPLY_STRING ? find_inflight(b, stream, id->str) : NULL;
        if (j && !j->pub.lease_lost) {
            j->pub.lease_lost = 1;
            log_warn("job lease lost to another consumer", LF_STR("id", j->pub.id), LF_STR("type", j->pub.type));
        }
    }
    /* The others are confirmed ours, unless the process stood still after
     * this renewal was sent: Redis answered it before the stall ended, so
     * another consumer may have taken them since. Only a renewal sent
     * after the stall may clear its marks. */
    if (epoch != b->stall_epoch)
        return;
    for (struct job *j = b->inflight; j; j = j->next)
        if (j->stream == stream && !j->pub.lease_lost)
            j->pub.lease_unsure = 0;
    for (struct job *j = b->queue; j; j = j->next)
        if (j->stream == stream)
            j->pub.lease_unsure = 0;
    if (b->queue && capacity(b))
        schedule_kick(b); /* (a lost queued job may have been in the way) */
}

/* The process stood still (stopped, starved) since the last renewal: another
 * consumer may own our jobs by now; none may answer until Redis confirms.
 * The loop's clock is brought up to date first: after a stop it is stale. */
static void check_stall(struct bus *b)
{
    uv_update_time(b->loop);
    uint64_t now = uv_now(b->loop);
    if (!b->last_renew_ms || now - b->last_renew_ms <= (uint64_t)(2 * b->renew_ms + 500))
        return;
    int n = 0;
    b->stall_epoch++;
    for (struct job *j = b->inflight; j; j = j->next, n++)
        j->pub.lease_unsure = 1;
    for (struct job *j = b->queue; j; j = j->next)
        j->pub.lease_unsure = 1;
    if (n)
        log_warn("the process stood still; jobs hold their answers until their leases are confirmed",
                 LF_INT("stalled_ms", now - b->last_renew_ms), LF_INT("jobs", n));
    b->last_renew_ms = now; /* noticed once; the renewal timer is due and confirms or loses them */
}

void bus_job_recheck(struct bus_job *pub)
{
    struct job *j = (struct job *)pub;
    if (j && !j->bus->closing)
        check_stall(j->bus);
}

static void on_renew_timer(uv_timer_t *t)
{
    struct bus *b = t->data;
    check_stall(b);
    uint64_t now = uv_now(b->loop);
    b->last_renew_ms = now;
    if ((!b->inflight && !b->queue) || !rds_up(b->cmd))
        return;
    /* queued jobs are ours too: renewed so no reclaim takes them meanwhile */
    for (int s = 0; s < b->nstreams; s++) {
        unsigned n = 0;
        for (struct job *j = b->inflight; j; j = j->next)
            n += j->stream == s;
        for (struct job *j = b->queue; j; j = j->next)
            n += j->stream == s;
        if (!n)
            continue;
        const char **av = mem_alloc(sizeof(char *) * (n + 6));
        int k = 0;
        av[k++] = "EVAL";
        av[k++] = renew_lua;
        av[k++] = "1";
        av[k++] = b->streams[s].key;
        av[k++] = BUS_GROUP;
        av[k++] = b->consumer;
        for (struct job *j = b->inflight; j; j = j->next)
            if (j->stream == s)
                av[k++] = j->pub.id;
        for (struct job *j = b->queue; j; j = j->next)
            if (j->stream == s)
                av[k++] = j->pub.id;
        struct renew_ctx *c = mem_alloc(sizeof(*c));
        c->b = b;
        c->stream = s;
        c->epoch = b->stall_epoch;
        if (cmd_send(b, on_renew, c, k, av))
            mem_free(c);
        mem_free(av);
    }
}

static void on_claim(struct rds *r, int status, const redisReply *reply, void *arg)
{
    (void)r;
    struct renew_ctx *c = arg;
    struct bus *b = c->b;
    int s = c->stream;
    mem_free(c);
    if (cmd_done(b) || status || b->closing || b->draining || !reply || reply->type != REDIS_REPLY_ARRAY ||
        reply->elements < 2)
        return;
    const redisReply *entries = reply->element[1];
    if (entries->type != REDIS_REPLY_ARRAY || !entries->elements)
        return;
    log_info("reclaimed idle jobs", LF_STR("stream", b->streams[s].key), LF_INT("count", entries->elements));
    b->st.reclaimed += entries->elements;
    for (size_t i = 0; i < entries->elements; i++)
        dispatch(b, s, entries->element[i], 1);
}

static void on_claim_timer(uv_timer_t *t)
{
    struct bus *b = t->data;
    if (b->draining || !rds_up(b->cmd) || !bus_reader_up(b))
        return;
    for (int s = 0; s < b->nstreams; s++) {
        unsigned cap = capacity(b);
        if (!cap)
            return;
        if (b->streams[s].paused)
            continue;
        char idle[16], count[16];
        snprintf(idle, sizeof(idle), "%d", b->claim_idle_ms);
        snprintf(count, sizeof(count), "%u", cap);
        const char *av[8] = {"XAUTOCLAIM", b->streams[s].key, BUS_GROUP, b->consumer, idle, "0-0", "COUNT", count};
        struct renew_ctx *c = mem_alloc(sizeof(*c));
        c->b = b;
        c->stream = s;
        if (cmd_send(b, on_claim, c, 8, av))
            mem_free(c);
    }
}

/* ---- public -------------------------------------------------------------- */

int bus_new(uv_loop_t *loop, struct rds *cmd, const struct bus_opts *o, struct bus **out, char *err,
            size_t errlen)
{
    struct bus *b = mem_calloc(1, sizeof(*b));
    b->loop = loop;
    b->cmd = cmd;
    b->prefix = mem_strdup(o->prefix);
    b->consumer = mem_strdup(o->consumer);
    snprintf(b->maxlen, sizeof(b->maxlen), "%d", o->stream_maxlen);
    b->max_inflight = o->max_inflight > 0 ? o->max_inflight : 1;
    b->block_ms = o->block_ms;
    b->claim_idle_ms = o->claim_idle_ms;
    b->renew_ms = o->renew_ms > 0 && o->renew_ms < o->claim_idle_ms / 3 ? o->renew_ms : o->claim_idle_ms / 3;
    if (b->renew_ms < 100)
        b->renew_ms = 100;
    b->on_finish = o->on_finish;
    b->finish_arg = o->finish_arg;
    b->rstate = RD_DOWN;
    struct rds_opts ro = {.url = o->redis_url, .name = "jobs", .stall_timeout_ms = o->block_ms + 5000};
    int rc = rds_new(loop, &ro, on_reader_state, b, &b->rd, err, errlen);
    if (rc) {
        mem_free(b->prefix);
        mem_free(b->consumer);
        mem_free(b);
        return rc;
    }
    b->rd_open = 1;
    uv_timer_init(loop, &b->renew_timer);
    uv_timer_init(loop, &b->claim_timer);
    uv_timer_init(loop, &b->kick_timer);
    uv_timer_init(loop, &b->unblock_timer);
    b->unblock_timer.data = b;
    b->renew_timer.data = b->claim_timer.data = b->kick_timer.data = b;
    b->handles_open = 4;
    uint64_t renew = (uint64_t)b->renew_ms, claim = (uint64_t)(b->claim_idle_ms / 2);
    uv_timer_start(&b->renew_timer, on_renew_timer, renew, renew);
    uv_timer_start(&b->claim_timer, on_claim_timer, claim, claim);
    *out = b;
    return 0;
}

int bus_register(struct bus *b, const char *type, bus_handler *fn, void *arg)
{
    return bus_register_role(b, NULL, type, fn, arg);
}

int bus_register_role(struct bus *b, const char *role, const char *type, bus_handler *fn, void *arg)
{
    for (int i = 0; i < b->nhandlers; i++)
        if (!strcmp(b->handlers[i].type, type) && !strcmp(b->handlers[i].role, role ? role : ""))
            return -EEXIST;
    if (b->nhandlers == BUS_MAX_HANDLERS)
        return -ENOSPC;
    b->handlers[b->nhandlers].type = mem_strdup(type);
    snprintf(b->handlers[b->nhandlers].role, sizeof(b->handlers[0].role), "%s", role ? role : "");
    b->handlers[b->nhandlers].fn = fn;
    b->handlers[b->nhandlers].arg = arg;
    b->nhandlers++;
    return 0;
}

/* The streams changed: set up the groups again and re-read our pending
 * entries, now or as soon as the blocked read returns. */
static void streams_changed(struct bus *b)
{
    if (b->closing || b->draining || !rds_up(b->rd))
        return;
    if (b->read_outstanding) {
        b->resetup = 1;
        send_unblock(b);
        return;
    }
    if (b->rstate != RD_SETUP)
        start_setup(b);
}

int bus_consume(struct bus *b, const char *role)
{
    char key[128];
    bus_stream_key(b, role, key, sizeof(key));
    int i = stream_index(b, key, strlen(key));
    if (i >= 0) {
        if (!b->streams[i].paused)
            return -EEXIST;
        b->streams[i].paused = 0; /* taken again after a handback */
        streams_changed(b);
        return 0;
    }
    if (b->nstreams == BUS_MAX_STREAMS)
        return -ENOSPC;
    struct stream *s = &b->streams[b->nstreams++];
    memset(s, 0, sizeof(*s));
    s->bus = b;
    snprintf(s->role, sizeof(s->role), "%s", role);
    snprintf(s->key, sizeof(s->key), "%s", key);
    streams_changed(b);
    return 0;
}

int bus_release(struct bus *b, const char *role)
{
    char key[128];
    bus_stream_key(b, role, key, sizeof(key));
    int i = stream_index(b, key, strlen(key));
    if (i < 0 || b->streams[i].paused)
        return -ENOENT;
    b->streams[i].paused = 1;
    streams_changed(b);
    return 0;
}

int bus_consuming(const struct bus *b, const char *role)
{
    for (int i = 0; i < b->nstreams; i++)
        if (!b->streams[i].paused && !strcmp(b->streams[i].role, role))
            return 1;
    return 0;
}

void bus_roles(const struct bus *b, char *out, size_t len)
{
    size_t n = 0;
    out[0] = 0;
    for (int i = 0; i < b->nstreams && n < len; i++)
        if (!b->streams[i].paused)
            n += (size_t)snprintf(out + n, len - n, "%s%s", n ? "," : "", b->streams[i].role);
}

/* ---- claiming a dead consumer's jobs -------------------------------------- */

/* KEYS: stream. ARGV: group, dead consumer, us, min idle, count. The dead
 * consumer's entries idle at least min idle become ours; returns them as
 * XCLAIM does. */
static const char claim_from_lua[] =
    "local p = redis.call('XPENDING', KEYS[1], ARGV[1], 'IDLE', ARGV[4], '-', '+', ARGV[5], ARGV[2])\n"
    "if #p == 0 then return {} end\n"
    "local ids = {}\n"
    "for i = 1, #p do ids[#ids + 1] = p[i][1] end\n"
    "return redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[3], ARGV[4], unpack(ids))\n";

static void on_claim_from(struct rds *r, int status, const redisReply *reply, void *arg)
{
    (void)r;
    struct renew_ctx *c = arg;
    struct bus *b = c->b;
    int s = c->stream;
    mem_free(c);
    if (cmd_done(b) || b->closing)
        return;
    const char *e = rds_reply_error(reply);
    if (status || e || !reply || reply->type != REDIS_REPLY_ARRAY) {
        if (e)
            log_warn("claiming a dead consumer's jobs failed", LF_STR("error", e));
        return;
    }
    if (reply->elements)
        log_info("claimed the jobs of a dead consumer", LF_STR("stream", b->streams[s].key),
                 LF_INT("count", reply->elements));
    b->st.reclaimed += reply->elements;
    for (size_t i = 0; i < reply->elements; i++)
        dispatch(b, s, reply->element[i], 1);
}

int bus_claim_from(struct bus *b, const char *role, const char *dead, int min_idle_ms)
{
    char key[128], idle[16], count[16];
    bus_stream_key(b, role, key, sizeof(key));
    int s = stream_index(b, key, strlen(key));
    if (s < 0 || b->streams[s].paused || b->draining || b->closing)
        return -ENOENT;
    unsigned cap = capacity(b);
    if (!cap)
        return -EBUSY; /* what stays pending is reclaimed later */
    snprintf(idle, sizeof(idle), "%d", min_idle_ms);
    snprintf(count, sizeof(count), "%u", cap);
    const char *av[] = {"EVAL", claim_from_lua, "1", key, BUS_GROUP, dead, b->consumer, idle, count};
    struct renew_ctx *c = mem_alloc(sizeof(*c));
    c->b = b;
    c->stream = s;
    int rc = cmd_send(b, on_claim_from, c, 9, av);
    if (rc)
        mem_free(c);
    return rc;
}

static void on_mark(struct rds *r, int status, const redisReply *reply, void *arg)
{
    (void)r;
    (void)status;
    (void)reply;
    cmd_done(arg);
}

void bus_mark_done(struct bus_job *pub)
{
    struct job *j = (struct job *)pub;
    struct bus *b = j->bus;
    if (b->closing)
        return;
    char key[256];
    done_key(b, j, key, sizeof(key));
    const char *av[5] = {"SET", key, "1", "EX", "86400"};
    cmd_send(b, on_mark, b, 5, av);
}

struct add_ctx {
    bus_add_cb *cb;
    void *arg;
};

static void on_add(struct rds *r, int status, const redisReply *reply, void *arg)
{
    (void)r;
    struct add_ctx *c = arg;
    const char *e = rds_reply_error(reply);
    if (!status && e)
        status = BC_EREDIS;
    if (c->cb)
        c->cb(status, !status && reply->type == REDIS_REPLY_STRING ? reply->str : NULL, c->arg);
    mem_free(c);
}

int bus_add(struct bus *b, const char *role, const char *type, const char *payload, size_t len, bus_add_cb *cb,
            void *arg)
{
    char key[128], ts[24];
    bus_stream_key(b, role, key, sizeof(key));
    snprintf(ts, sizeof(ts), "%lld", (long long)clock_wall_ms());
    const char *av[] = {"XADD", key, "MAXLEN", "~", b->maxlen, "*", "type", type, "payload", payload, "ts", ts};
    size_t lens[12];
    for (int i = 0; i < 12; i++)
        lens[i] = strlen(av[i]);
    lens[9] = len;
    struct add_ctx *c = mem_alloc(sizeof(*c));
    c->cb = cb;
    c->arg = arg;
    int rc = rds_cmd(b->cmd, on_add, c, 12, av, lens);
    if (rc)
        mem_free(c);
    return rc;
}

void bus_stats(const struct bus *b, struct bus_stats *out)
{
    *out = b->st;
}

/* Drained means: nothing running, and every ack and dead letter confirmed
 * by Redis (while Redis is away they wait for it, up to the caller's drain
 * timeout). */
static void maybe_drained(struct bus *b)
{
    if (!b->draining || b->st.inflight || b->nqueued || b->nacks || b->dead_outstanding || !b->drain_done)
        return;
    if (b->read_outstanding && rds_up(b->rd))
        return; /* the unblocked read still has to come back */
    void (*done)(void *) = b->drain_done;
    b->drain_done = NULL;
    done(b->drain_arg);
}

/* CLIENT UNBLOCK goes on the command connection, the read on its own: the
 * unblock can reach Redis before the read has blocked, and then finds
 * nothing to unblock (0) while the read goes on to block for block_ms.
 * So while a read we want back is still out, ask again shortly. */
static void on_unblock_timer(uv_timer_t *t)
{
    send_unblock(t->data);
}

static void on_unblock(struct rds *r, int status, const redisReply *reply, void *arg)
{
    (void)r;
    struct bus *b = arg;
    if (cmd_done(b) || status || b->closing || !reply)
        return;
    if (reply->type == REDIS_REPLY_INTEGER && reply->integer == 0 && b->read_outstanding &&
        (b->draining || b->resetup))
        uv_timer_start(&b->unblock_timer, on_unblock_timer, 20, 0);
}

static void send_unblock(struct bus *b)
{
    if (b->closing || !b->read_outstanding || !b->client_id)
        return;
    char id[24];
    snprintf(id, sizeof(id), "%lld", b->client_id);
    const char *av[3] = {"CLIENT", "UNBLOCK", id};
    cmd_send(b, on_unblock, b, 3, av);
}

void bus_drain(struct bus *b, void (*done)(void *arg), void *arg)
{
    b->draining = 1;
    b->drain_done = done;
    b->drain_arg = arg;
    log_info("draining: no new jobs are taken", LF_INT("inflight", b->st.inflight));
    send_unblock(b);
    maybe_drained(b);
}

static void bus_free(struct bus *b)
{
    void (*done)(void *) = b->close_done;
    void *arg = b->close_arg;
    while (b->acks) {
        struct pending_ack *a = b->acks;
        b->acks = a->next;
        mem_free(a);
    }
    for (int i = 0; i < b->nhandlers; i++)
        mem_free(b->handlers[i].type);
    idmap_free(&b->inflight_ix);
    idmap_free(&b->queued_ix);
    idmap_free(&b->acks_ix);
    mem_free(b->prefix);
    mem_free(b->consumer);
    mem_free(b);
    if (done)
        done(arg);
}

static void on_part_closed(struct bus *b)
{
    if (--b->handles_open == 0 && !b->rd_open && !b->cmd_outstanding)
        bus_free(b);
}

static void on_timer_closed(uv_handle_t *h)
{
    on_part_closed(h->data);
}

static void on_rd_closed(void *arg)
{
    struct bus *b = arg;
    b->rd_open = 0;
    if (!b->handles_open && !b->cmd_outstanding)
        bus_free(b);
}

void bus_close(struct bus *b, void (*done)(void *arg), void *arg)
{
    if (b->closing)
        return;
    b->closing = 1;
    b->close_done = done;
    b->close_arg = arg;
    while (b->inflight) {
        struct job *j = b->inflight;
        job_unlink(b, j);
        log_warn("job abandoned at shutdown; it stays pending for a later reclaim", LF_STR("id", j->pub.id),
                 LF_STR("type", j->pub.type));
        if (j->pub.cancel)
            j->pub.cancel(&j->pub, j->pub.cancel_arg);
        mem_free(j);
    }
    if (b->nqueued)
        log_warn("jobs read but not started at shutdown; they stay pending for a later reclaim",
                 LF_INT("count", b->nqueued));
    while (b->queue)
        mem_free(queue_pop(b));
    unsigned unsent = 0;
    for (struct pending_ack *a = b->acks; a; a = a->next)
        unsent += !a->sent;
    if (unsent)
        log_warn("acks not delivered at shutdown; those jobs may run again", LF_INT("count", unsent));
    uv_close((uv_handle_t *)&b->renew_timer, on_timer_closed);
    uv_close((uv_handle_t *)&b->claim_timer, on_timer_closed);
    uv_close((uv_handle_t *)&b->kick_timer, on_timer_closed);
    uv_close((uv_handle_t *)&b->unblock_timer, on_timer_closed);
    rds_close(b->rd, on_rd_closed, b);
}
