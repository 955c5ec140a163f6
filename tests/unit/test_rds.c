/* Unit tests for rds, against a real redis-server (never a mock).
 *
 * TEST_REDIS_URL names the shared server (tests/run.py exports it). Cases
 * run in parallel on it, so each one uses its own key prefix
 * "t<pid>_<case>" and deletes its keys at the end, also when it fails
 * (atexit). A case that has to break Redis (kill it, stop it, give it a
 * password or a unix socket) starts a redis-server of its own on a free
 * port and kills it at exit, whatever happened (ut_redis.h). Raw checks use
 * a blocking hiredis context, which is fine in test code. The loop runs
 * under a guard timer (ut_loop.h), so a case waiting for something that
 * never happens fails instead of hanging, and every case closes what it
 * opened and checks that the loop closes with no handle left (ASan/LSan
 * stay clean). */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <hiredis/hiredis.h>
#include <uv.h>

#include "base/err.h"
#include "base/log.h"
#include "io/rds.h"
#include "ut.h"
#include "ut_log.h"
#include "ut_loop.h"
#include "ut_redis.h"
#include "ut_sys.h"

static uv_loop_t loop;
static struct utloop lp;
static char shared_host[256];
static int shared_port;
static char prefix[64];     /* "t<pid>_<case>": every key this case touches starts with it */
static unsigned dbs_used;   /* databases this case wrote to (bit n: db n), for the cleanup */
static char sock_path[108]; /* unix socket of an own server, removed at the end */

#define WAIT_FOR(cond, ms) UTLOOP_WAIT_FOR(&lp, cond, ms)

static void run_for(int ms)
{
    utloop_run_for(&lp, ms);
}

/* ---- raw blocking client ---------------------------------------------------- */

static redisContext *raw_tcp(const char *host, int port)
{
    return utredis_connect(host, port, 5000);
}

static redisContext *raw_shared(void)
{
    return raw_tcp(shared_host, shared_port);
}

/* Run a command that must answer OK / a status, then free the reply. */
static void raw_ok(redisContext *c, const char *a0, const char *a1, const char *a2)
{
    redisReply *r = utredis_cmd(c, a0, a1, a2, (const char *)NULL);
    if (r->type == REDIS_REPLY_ERROR)
        UT_FAIL("raw %s: %s", a0, r->str);
    freeReplyObject(r);
}

/* GET key in db, as a string into out ("(nil)" when missing). */
static void raw_get(redisContext *c, int db, const char *key, char *out, size_t len)
{
    char dbs[12];
    snprintf(dbs, sizeof(dbs), "%d", db);
    raw_ok(c, "SELECT", dbs, NULL);
    redisReply *r = utredis_cmd(c, "GET", key, (const char *)NULL);
    if (r->type == REDIS_REPLY_STRING)
        snprintf(out, len, "%.*s", (int)r->len, r->str);
    else
        snprintf(out, len, "(nil)");
    freeReplyObject(r);
}

/* Delete every key of this case on the shared server, in every db it used. */
static void cleanup_keys(void)
{
    utredis_del_prefix(shared_host, shared_port, dbs_used, prefix);
    dbs_used = 0;
}

static void at_exit(void)
{
    utredis_kill_all(); /* before the unlink: a killed server leaves its socket behind */
    if (sock_path[0])
        unlink(sock_path);
    cleanup_keys();
}

/* ---- per-case environment ---------------------------------------------- */

static void shared_url(int db, char *out, size_t len)
{
    snprintf(out, len, "redis://%s:%d/%d", shared_host, shared_port, db);
}

static void key_of(const char *name, char *out, size_t len)
{
    snprintf(out, len, "%s:%s", prefix, name);
}

static void env_setup(const char *name)
{
    static int registered;
    utlog_setup("test", "rds", LOG_INFO);
    utredis_shared(shared_host, &shared_port);
    snprintf(prefix, sizeof(prefix), "t%d_%s", (int)getpid(), name);
    dbs_used = 1u << 0;
    if (!registered++)
        atexit(at_exit);
    UT_EQ_INT(uv_loop_init(&loop), 0);
    utloop_init(&lp, &loop, 20);
}

static void env_teardown(void)
{
    utlog_stop(LOG_INFO);
    utloop_shutdown(&lp); /* every handle of every rds was released */
    at_exit();
    sock_path[0] = '\0';
}

/* ---- rds helpers ------------------------------------------------------------ */

struct tstate {
    int ups, downs, up;
    int close_on_up, close_on_down; /* rds_close from inside the callback */
    int closed;                     /* its done callback ran */
};

static void on_closed(void *arg)
{
    (*(int *)arg)++;
}

static void on_state(struct rds *r, int up, void *arg)
{
    struct tstate *t = arg;
    t->up = up;
    if (up)
        t->ups++;
    else
        t->downs++;
    if ((up && t->close_on_up) || (!up && t->close_on_down)) {
        t->close_on_up = t->close_on_down = 0;
        rds_close(r, on_closed, &t->closed);
    }
}

struct res {
    int called;
    int status;
    int type;
    long long integer;
    char str[512];
    size_t len;
    /* what to do from inside the callback */
    int close_it;
    int reset_it; /* rds_reset from inside the callback */
    int *closed;
    int cmd_after_close; /* rds_cmd's result right after the close or reset */
    struct res *after;   /* callback for that command: must never run */
};

static void on_res(struct rds *r, int status, const redisReply *reply, void *arg)
{
    struct res *x = arg;
    x->called++;
    x->status = status;
    x->type = reply ? reply->type : -1;
    if (reply && reply->type == REDIS_REPLY_INTEGER)
        x->integer = reply->integer;
    if (reply && (reply->type == REDIS_REPLY_STRING || reply->type == REDIS_REPLY_STATUS ||
                  reply->type == REDIS_REPLY_ERROR)) {
        x->len = reply->len < sizeof(x->str) - 1 ? reply->len : sizeof(x->str) - 1;
        memcpy(x->str, reply->str, x->len);
        x->str[x->len] = '\0';
    }
    if (x->reset_it) {
        x->reset_it = 0;
        rds_reset(r);
        const char *av[1] = {"PING"};
        x->cmd_after_close = rds_cmd(r, on_res, x->after, 1, av, NULL);
    }
    if (x->close_it) {
        x->close_it = 0;
        rds_close(r, on_closed, x->closed);
        const char *av[1] = {"PING"};
        x->cmd_after_close = rds_cmd(r, on_res, x->after, 1, av, NULL);
    }
}

#define NARGS(...) ((int)(sizeof((const char *[]){__VA_ARGS__}) / sizeof(const char *)))
#define SEND(r, x, ...) rds_cmd((r), on_res, (x), NARGS(__VA_ARGS__), (const char *[]){__VA_ARGS__}, NULL)
#define CMD(r, ...) cmd_wait((r), NARGS(__VA_ARGS__), (const char *[]){__VA_ARGS__})

/* Run one command and the loop until its callback ran; it must succeed. */
static struct res cmd_wait(struct rds *r, int argc, const char **argv)
{
    struct res x;
    memset(&x, 0, sizeof(x));
    int rc = rds_cmd(r, on_res, &x, argc, argv, NULL);
    if (rc)
        UT_FAIL("rds_cmd %s: %s (%s)", argv[0], bc_strerror(rc), rds_errstr(r));
    WAIT_FOR(x.called, 10000);
    UT_EQ_INT(x.called, 1);
    if (x.status)
        UT_FAIL("%s: status %s", argv[0], bc_strerror(x.status));
    return x;
}

static struct rds *open_rds(const char *url, const struct rds_opts *base, struct tstate *st)
{
    struct rds_opts o = {0};
    if (base)
        o = *base;
    o.url = url;
    o.name = "test";
    struct rds *r = NULL;
    char err[200] = "";
    int rc = rds_new(&loop, &o, on_state, st, &r, err, sizeof(err));
    if (rc)
        UT_FAIL("rds_new(%s): %s: %s", url, bc_strerror(rc), err);
    UT_ASSERT(r != NULL);
    return r;
}

static void wait_up(struct rds *r, struct tstate *st, int ups)
{
    WAIT_FOR(st->ups >= ups, 15000);
    UT_ASSERT(rds_up(r));
    UT_EQ_INT(st->up, 1);
}

static void close_wait(struct rds *r)
{
    int done = 0;
    rds_close(r, on_closed, &done);
    UT_EQ_INT(done, 0); /* done comes from the loop, after the handles closed */
    WAIT_FOR(done, 5000);
    UT_EQ_INT(done, 1);
}

/* A listener that never accepts: the kernel completes the TCP handshake
 * (the connection waits in the backlog), then nobody ever answers. */
static int silent_listener(int *port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(a);
    UT_EQ_INT(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    UT_EQ_INT(listen(fd, 16), 0);
    UT_EQ_INT(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    *port = ntohs(a.sin_port);
    return fd;
}

/* ---- cases: URL -------------------------------------------------------------- */

static void test_url_malformed(void)
{
    env_setup("urlbad");
    static const char *const bad[] = {
        "",
        "http://127.0.0.1:6379",
        "redis:/127.0.0.1",
        "redis://",
        "redis:///0",
        "redis://:sekrit-pw-1@",
        "redis://:sekrit-pw-1@:6379/0",
        "redis://:sekrit-pw-1@127.0.0.1:0/0",
        "redis://:sekrit-pw-1@127.0.0.1:65536",
        "redis://:sekrit-pw-1@127.0.0.1:12x/0",
        "redis://:sekrit-pw-1@127.0.0.1:/0",
        "redis://:sekrit-pw-1@127.0.0.1:-5",
        "redis://:sekrit-pw-1@127.0.0.1:6379/abc",
        "redis://:sekrit-pw-1@127.0.0.1:6379/-1",
        "redis://:sekrit-pw-1@127.0.0.1:6379/99999",
        "redis://:sekrit-pw-1@127.0.0.1:6379/0x",
        "redis://:sekrit%zzpw-1@127.0.0.1:6379",
        "redis://:sekrit-pw-1%4@127.0.0.1:6379",
        "redis://sekrit-user:sekrit-pw-1@[::1:6379",
        "redis://:sekrit-pw-1@[::1]x:6379",
        "redis://[::1]:",
        "redis://[]:6379",
        "unix://",
        "unix://?db=2",
        "unix:///tmp/redis.sock?db=x",
        "unix:///tmp/redis.sock?db=-1",
        "unix:///tmp/redis.sock?password=sekrit-pw-1",
        NULL,
    };
    for (int i = 0; bad[i]; i++) {
        struct rds_opts o = {.url = bad[i], .name = "bad"};
        struct rds *r = NULL;
        char err[200];
        memset(err, 'x', sizeof(err));
        err[sizeof(err) - 1] = '\0';
        int rc = rds_new(&loop, &o, on_state, NULL, &r, err, sizeof(err));
        if (rc != BC_ECONFIG)
            UT_FAIL("%s: rds_new returned %d, not BC_ECONFIG", bad[i], rc);
        UT_ASSERT(r == NULL);
        UT_ASSERT(err[0] != 'x' && err[0] != '\0');
        UT_CONTAINS(err, "REDIS_URL");
        UT_NOT_CONTAINS(err, "sekrit");
    }
    env_teardown(); /* a refused URL leaves no handle behind */
}

static void test_url_forms_accepted(void)
{
    env_setup("urlok");
    /* Each is accepted and starts connecting; closing at once must be
     * clean whatever state it is in (resolving, connecting, retrying). */
    static const char *const good[] = {
        "redis://127.0.0.1",
        "redis://127.0.0.1:6380",
        "redis://127.0.0.1:6380/",
        "redis://127.0.0.1:6380/15",
        "redis://:pw@127.0.0.1",
        "redis://:p%40ss%3A%2F@127.0.0.1:6380/2",
        "redis://user:pw@127.0.0.1:6380/3",
        "redis://user@127.0.0.1:6380",
        "redis://[::1]",
        "redis://[::1]:6380/1",
        "redis://:pw@[::1]:6380/1",
        "redis://localhost:6380/0",
        "unix:///nonexistent/redis.sock",
        "unix:///nonexistent/redis.sock?db=2",
        NULL,
    };
    for (int i = 0; good[i]; i++) {
        struct tstate st = {0};
        struct rds *r = open_rds(good[i], NULL, &st);
        UT_EQ_INT(rds_up(r), 0);
        close_wait(r);
        UT_EQ_INT(st.ups, 0);
    }
    env_teardown();
}

/* ---- cases: connecting ----------------------------------------------------- */

static void test_connect_and_cmd(void)
{
    env_setup("cmd");
    char url[300], key[128];
    shared_url(0, url, sizeof(url));
    key_of("k", key, sizeof(key));
    struct tstate st = {0};
    struct res early = {0};
    struct rds *r = open_rds(url, NULL, &st);
    UT_EQ_INT(rds_up(r), 0);
    UT_EQ_INT(SEND(r, &early, "PING"), -ENOTCONN); /* not up yet */
    wait_up(r, &st, 1);
    UT_EQ_INT(st.ups, 1);
    UT_EQ_INT(st.downs, 0);
    UT_EQ_STR(rds_errstr(r), "");

    struct res x = CMD(r, "PING");
    UT_EQ_INT(x.type, REDIS_REPLY_STATUS);
    UT_EQ_STR(x.str, "PONG");

    /* binary-safe arguments with explicit lengths */
    const char *av[3] = {"SET", key, "a\0b\xff"};
    size_t lens[3] = {3, strlen(key), 4};
    struct res s = {0};
    UT_EQ_INT(rds_cmd(r, on_res, &s, 3, av, lens), 0);
    WAIT_FOR(s.called, 5000);
    UT_EQ_INT(s.status, 0);
    UT_EQ_STR(s.str, "OK");
    x = CMD(r, "GET", key);
    UT_EQ_INT(x.type, REDIS_REPLY_STRING);
    UT_EQ_INT(x.len, 4);
    UT_ASSERT(!memcmp(x.str, "a\0b\xff", 4));
    x = CMD(r, "STRLEN", key);
    UT_EQ_INT(x.integer, 4);

    /* an error reply is a reply: status 0, rds_reply_error tells */
    x = CMD(r, "NOSUCHCOMMAND", "x");
    UT_EQ_INT(x.type, REDIS_REPLY_ERROR);
    UT_CONTAINS(x.str, "unknown command");
    char boom[] = "ERR boom";
    redisReply fake = {.type = REDIS_REPLY_ERROR, .str = boom, .len = 8};
    UT_EQ_STR(rds_reply_error(&fake), "ERR boom");
    fake.type = REDIS_REPLY_STATUS;
    UT_ASSERT(rds_reply_error(&fake) == NULL);
    UT_ASSERT(rds_reply_error(NULL) == NULL);

    /* many commands pipelined: replies in order, each exactly once */
    struct res many[200];
    memset(many, 0, sizeof(many));
    for (int i = 0; i < 200; i++)
        UT_EQ_INT(SEND(r, &many[i], "INCR", key), 0);
    WAIT_FOR(many[199].called, 10000);
    /* the value "a\0b\xff" is not an integer: every INCR is an error reply */
    for (int i = 0; i < 200; i++) {
        UT_EQ_INT(many[i].called, 1);
        UT_EQ_INT(many[i].type, REDIS_REPLY_ERROR);
    }
    x = CMD(r, "DEL", key);
    memset(many, 0, sizeof(many));
    for (int i = 0; i < 50; i++)
        UT_EQ_INT(SEND(r, &many[i], "INCR", key), 0);
    WAIT_FOR(many[49].called, 10000);
    for (int i = 0; i < 50; i++) {
        UT_EQ_INT(many[i].called, 1);
        UT_EQ_INT(many[i].integer, i + 1);
    }

    close_wait(r);
    UT_EQ_INT(early.called, 0);
    UT_EQ_INT(st.downs, 0); /* rds_close does not report down */
    env_teardown();
}

static void test_select_db(void)
{
    env_setup("select");
    char url[300], key[128], got[64];
    shared_url(3, url, sizeof(url));
    key_of("db3", key, sizeof(key));
    dbs_used |= 1u << 3;
    struct tstate st = {0};
    struct rds *r = open_rds(url, NULL, &st);
    wait_up(r, &st, 1);
    struct res x = CMD(r, "SET", key, "in-db-3");
    UT_EQ_STR(x.str, "OK");
    x = CMD(r, "CLIENT", "INFO");
    UT_CONTAINS(x.str, " db=3 ");

    redisContext *c = raw_shared();
    raw_get(c, 3, key, got, sizeof(got));
    UT_EQ_STR(got, "in-db-3");
    raw_get(c, 0, key, got, sizeof(got));
    UT_EQ_STR(got, "(nil)");
    redisFree(c);
    close_wait(r);

    /* no db in the URL, or a bare "/": db 0 */
    for (int i = 0; i < 2; i++) {
        struct tstate st0 = {0};
        snprintf(url, sizeof(url), "redis://%s:%d%s", shared_host, shared_port, i ? "/" : "");
        r = open_rds(url, NULL, &st0);
        wait_up(r, &st0, 1);
        x = CMD(r, "CLIENT", "INFO");
        UT_CONTAINS(x.str, " db=0 ");
        close_wait(r);
    }
    env_teardown();
}

static void test_localhost_resolves(void)
{
    env_setup("localhost");
    char url[300], key[128];
    snprintf(url, sizeof(url), "redis://localhost:%d/0", shared_port);
    key_of("lh", key, sizeof(key));
    struct tstate st = {0};
    struct rds *r = open_rds(url, NULL, &st);
    /* resolved on the loop: nothing happened synchronously */
    UT_EQ_INT(rds_up(r), 0);
    UT_EQ_INT(st.ups + st.downs, 0);
    wait_up(r, &st, 1);
    CMD(r, "SET", key, "via-localhost");
    struct res x = CMD(r, "GET", key);
    UT_EQ_STR(x.str, "via-localhost");
    close_wait(r);

    /* closing while the name is being resolved is clean too */
    struct tstate st2 = {0};
    r = open_rds(url, NULL, &st2);
    close_wait(r);
    UT_EQ_INT(st2.ups, 0);
    env_teardown();
}

static void test_auth_ok(void)
{
    env_setup("authok");
    /* a password with characters that must be percent-encoded in a URL */
    static const char *const extra[] = {"--requirepass", "p@ss:w/rd%x", NULL};
    struct utredis_srv *s = utredis_start(prefix, extra);
    char url[300], got[64];
    utredis_url(s, ":p%40ss%3Aw%2Frd%25x", 2, url, sizeof(url));
    struct tstate st = {0};
    struct rds *r = open_rds(url, NULL, &st);
    wait_up(r, &st, 1);
    CMD(r, "SET", "k", "authed");
    struct res x = CMD(r, "ACL", "WHOAMI");
    UT_EQ_STR(x.str, "default");
    close_wait(r);

    redisContext *c = raw_tcp("127.0.0.1", s->port);
    raw_ok(c, "AUTH", "p@ss:w/rd%x", NULL);
    raw_get(c, 2, "k", got, sizeof(got));
    UT_EQ_STR(got, "authed");
    redisReply *rep =
        utredis_cmd(c, "ACL", "SETUSER", "alice", "on", ">alice-pw", "~*", "&*", "+@all", (const char *)NULL);
    UT_ASSERT(rep->type == REDIS_REPLY_STATUS);
    freeReplyObject(rep);
    redisFree(c);

    /* user:password (ACL) */
    struct tstate st2 = {0};
    utredis_url(s, "alice:alice-pw", 0, url, sizeof(url));
    r = open_rds(url, NULL, &st2);
    wait_up(r, &st2, 1);
    x = CMD(r, "ACL", "WHOAMI");
    UT_EQ_STR(x.str, "alice");
    close_wait(r);
    env_teardown();
}

static void test_auth_failure(void)
{
    env_setup("authbad");
    static const char *const extra[] = {"--requirepass", "right-pw-42", NULL};
    struct utredis_srv *s = utredis_start(prefix, extra);
    utlog_start("test", "rds", NULL);
    const char *users[2] = {":wrong-pw-99", "bob:wrong-pw-99"};
    for (int i = 0; i < 2; i++) {
        char url[300];
        utredis_url(s, users[i], i + 1, url, sizeof(url));
        struct tstate st = {0};
        struct rds_opts o = {.connect_timeout_ms = 1000};
        struct rds *r = open_rds(url, &o, &st);
        run_for(1500); /* several attempts */
        UT_EQ_INT(st.ups, 0);
        UT_EQ_INT(rds_up(r), 0);
        struct res x = {0};
        UT_EQ_INT(SEND(r, &x, "PING"), -ENOTCONN);
        UT_CONTAINS(rds_errstr(r), "handshake failed");
        UT_NOT_CONTAINS(rds_errstr(r), "wrong-pw");
        UT_NOT_CONTAINS(rds_errstr(r), "right-pw");
        close_wait(r);
        UT_EQ_INT(x.called, 0);
    }
    const char *text = utlog_text();
    UT_CONTAINS(text, "redis unavailable");
    UT_NOT_CONTAINS(text, "wrong-pw");
    UT_NOT_CONTAINS(text, "right-pw");
    env_teardown();
}

static void test_unix_socket_db(void)
{
    env_setup("unix");
    const char *dir = strlen(utsys_tmp_dir()) < 60 ? utsys_tmp_dir() : "/tmp";
    snprintf(sock_path, sizeof(sock_path), "%s/%s.sock", dir, prefix);
    const char *path = sock_path;
    const char *extra[] = {"--unixsocket", path, "--unixsocketperm", "700", NULL};
    utredis_start(prefix, extra);
    char url[300], got[64];
    snprintf(url, sizeof(url), "unix://%s?db=2", path);
    struct tstate st = {0};
    struct rds *r = open_rds(url, NULL, &st);
    wait_up(r, &st, 1);
    CMD(r, "SET", "k", "over-unix");
    struct res x = CMD(r, "CLIENT", "INFO");
    UT_CONTAINS(x.str, " db=2 ");
    UT_CONTAINS(x.str, path); /* laddr is the socket path */
    close_wait(r);

    struct timeval tv = {5, 0};
    redisContext *c = redisConnectUnixWithTimeout(path, tv);
    UT_ASSERT(c && !c->err);
    raw_get(c, 2, "k", got, sizeof(got));
    UT_EQ_STR(got, "over-unix");
    raw_get(c, 0, "k", got, sizeof(got));
    UT_EQ_STR(got, "(nil)");
    redisFree(c);
    env_teardown();
}

static void test_ipv6_literal(void)
{
    env_setup("ipv6");
    static const char *const extra[] = {"--bind", "127.0.0.1", "::1", NULL};
    struct utredis_srv *s = utredis_start(prefix, extra);
    char url[300], got[64];
    snprintf(url, sizeof(url), "redis://[::1]:%d/1", s->port);
    struct tstate st = {0};
    struct rds *r = open_rds(url, NULL, &st);
    wait_up(r, &st, 1);
    CMD(r, "SET", "k", "over-v6");
    struct res x = CMD(r, "CLIENT", "INFO");
    UT_CONTAINS(x.str, " addr=[::1]:");
    close_wait(r);
    redisContext *c = raw_tcp("127.0.0.1", s->port);
    raw_get(c, 1, "k", got, sizeof(got));
    UT_EQ_STR(got, "over-v6");
    redisFree(c);
    env_teardown();
}

/* ---- cases: failures -------------------------------------------------------- */

static void test_server_killed_and_restarted(void)
{
    env_setup("killed");
    struct utredis_srv *s = utredis_start(prefix, NULL);
    char url[300];
    utredis_url(s, NULL, 0, url, sizeof(url));
    struct tstate st = {0};
    struct rds_opts o = {.connect_timeout_ms = 1000, .stall_timeout_ms = 30000};
    struct rds *r = open_rds(url, &o, &st);
    wait_up(r, &st, 1);

    struct res blocked = {0}, queued = {0}, down = {0};
    UT_EQ_INT(SEND(r, &blocked, "BLPOP", "never-pushed", "20"), 0);
    run_for(200); /* it is on the wire, blocked in the server */
    UT_EQ_INT(blocked.called, 0);
    UT_EQ_INT(SEND(r, &queued, "PING"), 0); /* queued behind the BLPOP */
    utredis_kill(s);
    WAIT_FOR(blocked.called && queued.called && st.downs >= 1, 5000);
    UT_EQ_INT(blocked.status, -ENOTCONN);
    UT_EQ_INT(queued.status, -ENOTCONN);
    UT_EQ_INT(st.up, 0);
    UT_EQ_INT(rds_up(r), 0);
    UT_ASSERT(rds_errstr(r)[0] != '\0');

    /* while down: refused at once, the callback never runs */
    UT_EQ_INT(SEND(r, &down, "PING"), -ENOTCONN);
    run_for(1500); /* reconnect attempts fail meanwhile */
    UT_EQ_INT(blocked.called, 1);
    UT_EQ_INT(queued.called, 1);
    UT_EQ_INT(down.called, 0);
    UT_EQ_INT(st.ups, 1);
    UT_EQ_INT(rds_up(r), 0);

    utredis_restart(s); /* same port */
    wait_up(r, &st, 2);
    UT_EQ_INT(st.ups, 2);
    struct res x = CMD(r, "PING");
    UT_EQ_STR(x.str, "PONG");
    UT_EQ_STR(rds_errstr(r), "");
    close_wait(r);
    UT_EQ_INT(blocked.called, 1);
    UT_EQ_INT(down.called, 0);
    env_teardown();
}

static void test_stalled_server_reset(void)
{
    env_setup("stall");
    struct utredis_srv *s = utredis_start(prefix, NULL);
    char url[300];
    utredis_url(s, NULL, 0, url, sizeof(url));
    struct tstate st = {0};
    struct rds_opts o = {.connect_timeout_ms = 400, .stall_timeout_ms = 300};
    struct rds *r = open_rds(url, &o, &st);
    wait_up(r, &st, 1);

    utredis_signal(s, SIGSTOP); /* alive, connected, silent */
    struct res x = {0};
    uint64_t t0 = utsys_mono_ms();
    UT_EQ_INT(SEND(r, &x, "PING"), 0);
    WAIT_FOR(x.called, 5000);
    UT_EQ_INT(x.called, 1);
    UT_EQ_INT(x.status, -ENOTCONN);
    UT_ASSERT(utsys_mono_ms() - t0 >= 200); /* not long before the stall timeout */
    UT_ASSERT(st.downs >= 1);
    UT_EQ_INT(rds_up(r), 0);
    UT_CONTAINS(rds_errstr(r), "no reply");

    /* While it stays silent, new connections are accepted by the kernel
     * but the handshake is never answered: each attempt must give up
     * after connect_timeout_ms and try again, not wait forever. */
    int downs = st.downs;
    WAIT_FOR(strstr(rds_errstr(r), "timed out") != NULL, 5000);
    WAIT_FOR(st.downs >= downs + 2, 5000);
    UT_EQ_INT(st.ups, 1);

    utredis_signal(s, SIGCONT);
    wait_up(r, &st, 2);
    x = CMD(r, "PING");
    UT_EQ_STR(x.str, "PONG");
    close_wait(r);
    env_teardown();
}

static void test_handshake_timeout(void)
{
    env_setup("hstimeout");
    int port;
    int fd = silent_listener(&port);
    char url[300];
    snprintf(url, sizeof(url), "redis://127.0.0.1:%d/2", port);
    struct tstate st = {0};
    struct rds_opts o = {.connect_timeout_ms = 200};
    struct rds *r = open_rds(url, &o, &st);
    run_for(1000);
    UT_EQ_INT(st.ups, 0);
    UT_EQ_INT(rds_up(r), 0);
    UT_CONTAINS(rds_errstr(r), "timed out");
    UT_ASSERT(st.downs >= 2); /* it gave up and tried again */
    close_wait(r);
    close(fd);
    env_teardown();
}

static void test_reset_reconnects(void)
{
    env_setup("reset");
    char url[300], k[128];
    shared_url(0, url, sizeof(url));
    key_of("never", k, sizeof(k));
    struct tstate st = {0};
    struct rds *r = open_rds(url, NULL, &st);
    wait_up(r, &st, 1);

    /* from outside any callback */
    struct res blocked = {0};
    UT_EQ_INT(SEND(r, &blocked, "BLPOP", k, "10"), 0);
    run_for(100);
    rds_reset(r);
    WAIT_FOR(blocked.called && st.downs == 1, 5000);
    UT_EQ_INT(blocked.status, -ENOTCONN);
    wait_up(r, &st, 2);

    /* from inside a reply callback, with more commands behind it */
    struct res first = {0}, second = {0}, after = {0};
    first.reset_it = 1;
    first.after = &after;
    UT_EQ_INT(SEND(r, &first, "PING"), 0);
    UT_EQ_INT(SEND(r, &second, "BLPOP", k, "10"), 0);
    WAIT_FOR(first.called && second.called && st.downs == 2, 5000);
    UT_EQ_INT(first.status, 0);
    UT_EQ_INT(second.status, -ENOTCONN);
    UT_ASSERT(first.cmd_after_close < 0); /* refused: its callback never runs */
    wait_up(r, &st, 3);
    struct res x = CMD(r, "PING");
    UT_EQ_STR(x.str, "PONG");
    close_wait(r);
    UT_EQ_INT(first.called, 1);
    UT_EQ_INT(second.called, 1);
    UT_EQ_INT(blocked.called, 1);
    UT_EQ_INT(after.called, 0);
    env_teardown();
}

/* ---- cases: closing -------------------------------------------------------- */

static void test_close_with_outstanding(void)
{
    env_setup("closeout");
    char url[300], k1[128], k2[128];
    shared_url(0, url, sizeof(url));
    key_of("never1", k1, sizeof(k1));
    key_of("never2", k2, sizeof(k2));
    struct tstate st = {0};
    struct rds *r = open_rds(url, NULL, &st);
    wait_up(r, &st, 1);
    struct res wire[5], queued = {0}, ping = {0};
    memset(wire, 0, sizeof(wire));
    UT_EQ_INT(SEND(r, &ping, "PING"), 0);
    for (int i = 0; i < 5; i++)
        UT_EQ_INT(SEND(r, &wire[i], "BLPOP", i % 2 ? k1 : k2, "10"), 0);
    run_for(200); /* the PING answered, the BLPOPs blocked in the server */
    UT_EQ_INT(ping.called, 1);
    UT_EQ_INT(ping.status, 0);
    UT_EQ_INT(SEND(r, &queued, "PING"), 0); /* not even written yet */
    int done = 0;
    rds_close(r, on_closed, &done);
    WAIT_FOR(done, 5000);
    run_for(100);
    UT_EQ_INT(done, 1);
    for (int i = 0; i < 5; i++) {
        UT_EQ_INT(wire[i].called, 1);
        UT_EQ_INT(wire[i].status, BC_ESHUTDOWN);
        UT_EQ_INT(wire[i].type, -1); /* no reply */
    }
    UT_EQ_INT(queued.called, 1);
    UT_EQ_INT(queued.status, BC_ESHUTDOWN);
    UT_EQ_INT(ping.called, 1);
    UT_EQ_INT(st.downs, 0);
    env_teardown();
}

static void test_close_while_not_up(void)
{
    env_setup("closenotup");
    char url[300];
    /* nothing listens there: not up, retrying */
    snprintf(url, sizeof(url), "redis://127.0.0.1:%d/0", utsys_free_port());
    struct tstate st = {0};
    struct rds *r = open_rds(url, NULL, &st);
    run_for(400);
    UT_EQ_INT(rds_up(r), 0);
    UT_ASSERT(rds_errstr(r)[0] != '\0');
    close_wait(r);
    /* in the handshake, never answered */
    int port;
    int fd = silent_listener(&port);
    snprintf(url, sizeof(url), "redis://127.0.0.1:%d/0", port);
    struct tstate st2 = {0};
    r = open_rds(url, NULL, &st2);
    run_for(200);
    close_wait(r);
    close(fd);
    UT_EQ_INT(st.ups + st2.ups, 0);
    env_teardown();
}

static void test_close_from_reply_callback(void)
{
    env_setup("closecb");
    char url[300], k[128];
    shared_url(0, url, sizeof(url));
    key_of("never", k, sizeof(k));
    struct tstate st = {0};
    struct rds *r = open_rds(url, NULL, &st);
    wait_up(r, &st, 1);
    int closed = 0;
    struct res after = {0}, first = {0}, second = {0}, third = {0};
    first.close_it = 1;
    first.closed = &closed;
    first.after = &after;
    UT_EQ_INT(SEND(r, &first, "PING"), 0);
    UT_EQ_INT(SEND(r, &second, "BLPOP", k, "10"), 0);
    UT_EQ_INT(SEND(r, &third, "PING"), 0);
    WAIT_FOR(closed, 5000);
    run_for(100);
    UT_EQ_INT(closed, 1);
    UT_EQ_INT(first.called, 1);
    UT_EQ_INT(first.status, 0);
    UT_EQ_STR(first.str, "PONG");
    UT_ASSERT(first.cmd_after_close < 0); /* refused after rds_close ... */
    UT_EQ_INT(after.called, 0);           /* ... so its callback never runs */
    UT_EQ_INT(second.called, 1);
    UT_EQ_INT(second.status, BC_ESHUTDOWN);
    UT_EQ_INT(third.called, 1);
    UT_EQ_INT(third.status, BC_ESHUTDOWN);
    env_teardown();
}

static void test_close_from_state_callback(void)
{
    env_setup("closestate");
    char url[300];
    /* on up */
    shared_url(0, url, sizeof(url));
    struct tstate st = {.close_on_up = 1};
    struct rds *r = open_rds(url, NULL, &st);
    WAIT_FOR(st.closed, 5000);
    (void)r;
    run_for(100);
    UT_EQ_INT(st.closed, 1);
    UT_EQ_INT(st.ups, 1);

    /* on down: the server dies with a command outstanding */
    struct utredis_srv *s = utredis_start(prefix, NULL);
    utredis_url(s, NULL, 0, url, sizeof(url));
    struct tstate st2 = {0};
    struct rds_opts o = {.stall_timeout_ms = 30000};
    r = open_rds(url, &o, &st2);
    wait_up(r, &st2, 1);
    struct res blocked = {0};
    UT_EQ_INT(SEND(r, &blocked, "BLPOP", "never", "20"), 0);
    run_for(100);
    st2.close_on_down = 1;
    utredis_kill(s);
    WAIT_FOR(st2.closed, 5000);
    run_for(100);
    UT_EQ_INT(st2.closed, 1);
    UT_EQ_INT(st2.downs, 1);
    UT_EQ_INT(blocked.called, 1);
    UT_EQ_INT(blocked.status, -ENOTCONN);

    /* on down, when the handshake is refused (wrong password) */
    static const char *const extra[] = {"--requirepass", "right-pw-42", NULL};
    struct utredis_srv *s2 = utredis_start(prefix, extra);
    utredis_url(s2, ":wrong-pw-99", 0, url, sizeof(url));
    struct tstate st3 = {.close_on_down = 1};
    r = open_rds(url, NULL, &st3);
    WAIT_FOR(st3.closed, 5000);
    run_for(100);
    UT_EQ_INT(st3.closed, 1);
    UT_EQ_INT(st3.ups, 0);
    env_teardown();
}

static const struct ut_case cases[] = {
    UT_CASE(test_url_malformed),
    UT_CASE(test_url_forms_accepted),
    UT_CASE(test_connect_and_cmd),
    UT_CASE(test_select_db),
    UT_CASE(test_localhost_resolves),
    UT_CASE(test_auth_ok),
    UT_CASE(test_auth_failure),
    UT_CASE(test_unix_socket_db),
    UT_CASE(test_ipv6_literal),
    UT_CASE(test_server_killed_and_restarted),
    UT_CASE(test_stalled_server_reset),
    UT_CASE(test_handshake_timeout),
    UT_CASE(test_reset_reconnects),
    UT_CASE(test_close_with_outstanding),
    UT_CASE(test_close_while_not_up),
    UT_CASE(test_close_from_reply_callback),
    UT_CASE(test_close_from_state_callback),
    {NULL, NULL},
};

UT_MAIN(cases)
