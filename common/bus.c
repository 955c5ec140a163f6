#include "bus.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include "err.h"
#include "log.h"
#include "mem.h"

#define BUS_MAX_HANDLERS 32
#define BUS_DEAD_MAXLEN "10000"
#define BUS_PEL_BATCH 100

/* Job as the bus keeps it: the public part first, then bookkeeping. */
struct job {
    struct bus_job pub;
    struct bus *bus;
    struct job *prev, *next; /* in-flight list */
    int stream;              /* index into bus->streams */
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
    char pel_cursor[48]; /* last id re-read from our own pending list */
};

enum reader_state { RD_DOWN, RD_SETUP, RD_READY };

struct bus {
    uv_loop_t *loop;
    struct rds *cmd, *rd;
    char *prefix, *consumer;
    char maxlen[16];
    int max_inflight, block_ms, claim_idle_ms;
    struct stream streams[BUS_MAX_STREAMS];
    int nstreams;
    struct {
        char *type;
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
    struct pending_ack *acks;
    unsigned nacks;
    struct bus_stats st;

    uv_timer_t renew_timer, claim_timer;
    int draining, closing, handles_open, rd_open;
    void (*drain_done)(void *);
    void *drain_arg;
    void (*close_done)(void *);
    void *close_arg;
};

static void reader_next(struct bus *b);
static void on_read(struct rds *r, int status, const redisReply *reply, void *arg);
static void maybe_drained(struct bus *b);
static void start_setup(struct bus *b);
static void bus_free(struct bus *b);

static int64_t wall_ms(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (int64_t)tv.tv_sec * 1000 + tv.tv_usec / 1000;
}

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
    for (struct job *j = b->inflight; j; j = j->next)
        if (j->stream == stream && !strcmp(j->pub.id, id))
            return j;
    return NULL;
}

static struct pending_ack *find_ack(struct bus *b, int stream, const char *id)
{
    for (struct pending_ack *a = b->acks; a; a = a->next)
        if (a->stream == stream && !strcmp(a->id, id))
            return a;
    return NULL;
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

static int find_handler(const struct bus *b, const char *type)
{
    for (int i = 0; i < b->nhandlers; i++)
        if (!strcmp(b->handlers[i].type, type))
            return i;
    return -1;
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
    if (find_inflight(b, stream, id) || find_ack(b, stream, id))
        return; /* already running here, or finished and its ack not confirmed */
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
    int h = find_handler(b, type->str);
    if (h < 0) {
        dead_letter(b, stream, id, type->str, payload ? payload->str : NULL, "no handler for this job type");
        return;
    }
    if (!capacity(b)) {
        /* A reclaim and a blocked read were each sized for the room there
         * was when they were sent; together they can bring more. The entry
         * stays pending on us and our reclaim takes it after claim_idle_ms. */
        log_debug("no room for the job now; it stays pending", LF_STR("id", id));
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
    j->next = b->inflight;
    if (b->inflight)
        b->inflight->prev = j;
    b->inflight = j;
    b->st.inflight++;
    log_debug("job started", LF_STR("id", j->pub.id), LF_STR("type", j->pub.type),
              LF_BOOL("redelivered", redelivered));
    b->handlers[h].fn(b, &j->pub, b->handlers[h].arg);
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
    mem_free(j);
    if (b->draining)
        maybe_drained(b);
    else
        reader_next(b);
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
    const char *av[8 + 2 * BUS_MAX_STREAMS];
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
        av[n++] = b->streams[i].key;
    for (int i = 0; i < b->nstreams; i++)
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

/* Issue the next read if there is room; a finishing job calls us again. */
static void reader_next(struct bus *b)
{
    /* No job is taken while the command connection is down: its handler
     * could neither answer through Redis nor have it acked. */
    if (b->closing || b->draining || b->read_outstanding || b->rstate != RD_READY || !rds_up(b->rd) ||
        !rds_up(b->cmd) || b->nstreams == 0 || capacity(b) == 0)
        return;
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
};

static void on_renew(struct rds *r, int status, const redisReply *reply, void *arg)
{
    (void)r;
    struct renew_ctx *c = arg;
    struct bus *b = c->b;
    int stream = c->stream;
    mem_free(c);
    if (cmd_done(b) || status || b->closing || !reply || reply->type != REDIS_REPLY_ARRAY)
        return;
    for (size_t i = 0; i < reply->elements; i++) {
        const redisReply *id = reply->element[i];
        struct job *j = id->type == REDIS_REPLY_STRING ? find_inflight(b, stream, id->str) : NULL;
        if (j && !j->pub.lease_lost) {
            j->pub.lease_lost = 1;
            log_warn("job lease lost to another consumer", LF_STR("id", j->pub.id), LF_STR("type", j->pub.type));
        }
    }
}

static void on_renew_timer(uv_timer_t *t)
{
    struct bus *b = t->data;
    if (!b->inflight || !rds_up(b->cmd))
        return;
    for (int s = 0; s < b->nstreams; s++) {
        unsigned n = 0;
        for (struct job *j = b->inflight; j; j = j->next)
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
        struct renew_ctx *c = mem_alloc(sizeof(*c));
        c->b = b;
        c->stream = s;
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
    b->renew_timer.data = b->claim_timer.data = b;
    b->handles_open = 2;
    uint64_t renew = (uint64_t)(b->claim_idle_ms / 3), claim = (uint64_t)(b->claim_idle_ms / 2);
    uv_timer_start(&b->renew_timer, on_renew_timer, renew, renew);
    uv_timer_start(&b->claim_timer, on_claim_timer, claim, claim);
    *out = b;
    return 0;
}

int bus_register(struct bus *b, const char *type, bus_handler *fn, void *arg)
{
    if (find_handler(b, type) >= 0)
        return -EEXIST;
    if (b->nhandlers == BUS_MAX_HANDLERS)
        return -ENOSPC;
    b->handlers[b->nhandlers].type = mem_strdup(type);
    b->handlers[b->nhandlers].fn = fn;
    b->handlers[b->nhandlers].arg = arg;
    b->nhandlers++;
    return 0;
}

int bus_consume(struct bus *b, const char *role)
{
    char key[128];
    bus_stream_key(b, role, key, sizeof(key));
    if (stream_index(b, key, strlen(key)) >= 0)
        return -EEXIST;
    if (b->nstreams == BUS_MAX_STREAMS)
        return -ENOSPC;
    struct stream *s = &b->streams[b->nstreams++];
    memset(s, 0, sizeof(*s));
    s->bus = b;
    snprintf(s->role, sizeof(s->role), "%s", role);
    snprintf(s->key, sizeof(s->key), "%s", key);
    if (rds_up(b->rd) && !b->read_outstanding && b->rstate != RD_SETUP)
        start_setup(b);
    return 0;
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
    snprintf(ts, sizeof(ts), "%lld", (long long)wall_ms());
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
    if (!b->draining || b->st.inflight || b->nacks || b->dead_outstanding || !b->drain_done)
        return;
    if (b->read_outstanding && rds_up(b->rd))
        return; /* the unblocked read still has to come back */
    void (*done)(void *) = b->drain_done;
    b->drain_done = NULL;
    done(b->drain_arg);
}

static void on_unblock(struct rds *r, int status, const redisReply *reply, void *arg)
{
    (void)r;
    (void)status;
    (void)reply;
    (void)arg;
}

void bus_drain(struct bus *b, void (*done)(void *arg), void *arg)
{
    b->draining = 1;
    b->drain_done = done;
    b->drain_arg = arg;
    log_info("draining: no new jobs are taken", LF_INT("inflight", b->st.inflight));
    if (b->read_outstanding && b->client_id) {
        char id[24];
        snprintf(id, sizeof(id), "%lld", b->client_id);
        const char *av[3] = {"CLIENT", "UNBLOCK", id};
        rds_cmd(b->cmd, on_unblock, NULL, 3, av, NULL);
    }
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
    unsigned unsent = 0;
    for (struct pending_ack *a = b->acks; a; a = a->next)
        unsent += !a->sent;
    if (unsent)
        log_warn("acks not delivered at shutdown; those jobs may run again", LF_INT("count", unsent));
    uv_close((uv_handle_t *)&b->renew_timer, on_timer_closed);
    uv_close((uv_handle_t *)&b->claim_timer, on_timer_closed);
    rds_close(b->rd, on_rd_closed, b);
}
