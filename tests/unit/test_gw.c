/* test_gw: the gateway client against the Discord simulator.
 *
 * Each case starts tests/sim/discord_sim.py (ws://127.0.0.1:PORT/gateway)
 * as a child process, drives the client on its own loop, and checks what a
 * user would notice through the simulator's control API (/_sim/...): what
 * Identify carried, heartbeats, what was resumed or replayed, which close
 * codes went over the wire. The test code is straight-line: RUN_UNTIL turns
 * the loop (ut_loop.h; a 5 ms tick keeps each turn short) until a condition
 * holds; control requests are small blocking HTTP calls made between turns.
 * At the end the client is closed and the loop run dry, so ASan/LSan see any
 * leak, libwebsockets' included. */
#include <errno.h>
#include <fcntl.h>
#include <json.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "base/err.h"
#include "io/gw.h"
#include "base/log.h"
#include "base/mem.h"
#include "base/secret.h"
#include "ut.h"
#include "ut_log.h"
#include "ut_loop.h"
#include "ut_dsim.h"
#include "ut_sys.h"

#define TOKEN "Bot.sim-token.xyz"
#define INTENTS ((1 << 0) | (1 << 9) | (1 << 12) | (1 << 15))

/* ---- fixture ------------------------------------------------------------------ */

enum gate_mode { GATE_AT_ONCE, GATE_LATER, GATE_NEVER };

struct fx {
    uv_loop_t loop;
    struct utloop lp;
    uv_timer_t gate_timer;
    struct utdsim sim;
    struct secret token;
    struct gw *g;
    enum gate_mode gate_mode;
    int gates, readies, resumes, ups, downs, fatals, fatal_code, closed;
    char fatal_why[256];
    char session[80];
    int dispatches, order_errors;
    int64_t last_seq, first_flood_seq;
    char last_type[64];
    char last_content[256];
    char fragmented[256];
    int fragmented_len;
    int raw_ok;
    uint64_t flood_t0, flood_t1;
    int flood_count;
    char logpath[PATH_MAX]; /* the client's log lines, checked for the token */
    struct utdsim proxy;       /* TLS in front of the simulator, when a case needs it */
    char cert[PATH_MAX], key[PATH_MAX];
};

static void dispatch_body(struct fx *fx, int64_t seq, const char *type, struct json_object *d, const char *raw,
                          size_t raw_len);

static void on_dispatch(struct gw *g, const struct gw_event *ev, void *arg)
{
    (void)g;
    struct fx *fx = arg;
    int64_t seq = ev->seq;
    const char *type = ev->type, *raw = ev->raw;
    size_t raw_len = ev->raw_len;
    /* the client hands d over as bytes: parse it as a consumer would */
    struct json_tokener *tok = json_tokener_new();
    struct json_object *d = json_tokener_parse_ex(tok, ev->d, (int)ev->d_len);
    json_tokener_free(tok);
    dispatch_body(fx, seq, type, d, raw, raw_len);
    json_object_put(d);
}

static void dispatch_body(struct fx *fx, int64_t seq, const char *type, struct json_object *d, const char *raw,
                          size_t raw_len)
{
    struct json_object *c;
    if (!strcmp(type, "FRAGMENTED")) { /* injected by a test, without a seq */
        if (d && json_object_object_get_ex(d, "content", &c)) {
            snprintf(fx->fragmented, sizeof fx->fragmented, "%s", json_object_get_string(c));
            fx->fragmented_len = json_object_get_string_len(c);
        }
        return;
    }
    if (fx->dispatches && seq != fx->last_seq + 1 && strcmp(type, "READY"))
        fx->order_errors++;
    fx->dispatches++;
    fx->last_seq = seq;
    snprintf(fx->last_type, sizeof fx->last_type, "%s", type);
    if (!strcmp(type, "MESSAGE_CREATE")) {
        if (!fx->flood_count++)
            fx->flood_t0 = uv_hrtime();
        fx->flood_t1 = uv_hrtime();
        if (d && json_object_object_get_ex(d, "content", &c))
            snprintf(fx->last_content, sizeof fx->last_content, "%s", json_object_get_string(c));
    }
    /* raw is the whole message as received */
    char needle[96];
    snprintf(needle, sizeof needle, "\"t\":\"%s\"", type);
    fx->raw_ok = raw_len > 10 && raw[0] == '{' && memmem(raw, raw_len, needle, strlen(needle));
}

static void on_ready(struct gw *g, const struct gw_resume *r, struct json_object *d, void *arg)
{
    (void)g;
    struct fx *fx = arg;
    fx->readies++;
    snprintf(fx->session, sizeof fx->session, "%s", r->session_id);
    UT_ASSERT(r->resume_url[0]);
    UT_ASSERT(d && json_object_is_type(d, json_type_object));
}

static void on_resumed(struct gw *g, void *arg)
{
    (void)g;
    ((struct fx *)arg)->resumes++;
}

static void on_gate_timer(uv_timer_t *t)
{
    struct fx *fx = t->data;
    gw_identify_go(fx->g);
}

static void on_gate(struct gw *g, void *arg)
{
    struct fx *fx = arg;
    fx->gates++;
    if (fx->gate_mode == GATE_AT_ONCE)
        gw_identify_go(g);
    else if (fx->gate_mode == GATE_LATER)
        uv_timer_start(&fx->gate_timer, on_gate_timer, 300, 0);
}

static void on_state(struct gw *g, int up, void *arg)
{
    (void)g;
    struct fx *fx = arg;
    if (up)
        fx->ups++;
    else
        fx->downs++;
}

static void on_fatal(struct gw *g, int code, const char *why, void *arg)
{
    (void)g;
    struct fx *fx = arg;
    fx->fatals++;
    fx->fatal_code = code;
    snprintf(fx->fatal_why, sizeof fx->fatal_why, "%s", why);
}

static const struct gw_cbs cbs = {
    .dispatch = on_dispatch,
    .ready = on_ready,
    .resumed = on_resumed,
    .identify_gate = on_gate,
    .state = on_state,
    .fatal = on_fatal,
};

#define RUN_UNTIL(fx, cond, ms) UTLOOP_WAIT_FOR(&(fx)->lp, cond, ms)

static void run_for(struct fx *fx, int ms)
{
    utloop_run_for(&fx->lp, ms);
}

/* Poll a simulator value (every 50 ms) until it reaches at least want. */
static int64_t wait_sim(struct fx *fx, const char *path, int64_t want, int ms)
{
    uint64_t dl = utsys_mono_ms() + (uint64_t)ut_scale_ms(ms);
    for (;;) {
        int64_t v = utdsim_gw_int(&fx->sim, path);
        if (v >= want)
            return v;
        if (utsys_mono_ms() > dl)
            UT_FAIL("timed out: simulator %s is %lld, wanted %lld", path, (long long)v,
                    (long long)want);
        run_for(fx, 50);
    }
}

static void fx_init(struct fx *fx, const char *sim_config)
{
    memset(fx, 0, sizeof *fx);
    if (getenv("UT_DEBUG")) {
        log_set_level(LOG_DEBUG);
    } else {
        snprintf(fx->logpath, sizeof fx->logpath, "%s/gw-client.%d.log", utsys_tmp_dir(),
                 (int)getpid());
        utlog_start("test", "gw", fx->logpath);
    }
    utdsim_start(&fx->sim, TOKEN);
    if (sim_config)
        utdsim_post(&fx->sim, "/_sim/config", sim_config);
    UT_EQ_INT(uv_loop_init(&fx->loop), 0);
    utloop_init(&fx->lp, &fx->loop, 5);
    uv_timer_init(&fx->loop, &fx->gate_timer);
    fx->gate_timer.data = fx;
    secret_set(&fx->token, TOKEN);
}

static void fx_url(const struct fx *fx, char *out, size_t cap)
{
    snprintf(out, cap, "ws://127.0.0.1:%d/gateway", fx->sim.port);
}

static void fx_gw_at(struct fx *fx, const char *url, int compress, size_t max_message,
                     const char *ca_file)
{
    struct gw_opts o = {.token = &fx->token,
                        .url = url,
                        .intents = INTENTS,
                        .shard_id = 0,
                        .shard_count = 1,
                        .compress = compress,
                        .max_message = max_message,
                        .ca_file = ca_file};
    UT_EQ_INT(gw_new(&fx->loop, &o, &cbs, fx, &fx->g), 0);
}

static void fx_gw(struct fx *fx, int compress, size_t max_message)
{
    char url[128];
    fx_url(fx, url, sizeof url);
    fx_gw_at(fx, url, compress, max_message, NULL);
}

/* A TLS terminator in front of the simulator with a fresh self-signed
 * certificate for localhost and 127.0.0.1 (openssl CLI + Python's ssl). */
static const char tls_proxy_py[] =
    "import asyncio, ssl, sys\n"
    "cert, key, target = sys.argv[1], sys.argv[2], int(sys.argv[3])\n"
    "async def pipe(r, w):\n"
    "    try:\n"
    "        while True:\n"
    "            d = await r.read(65536)\n"
    "            if not d: break\n"
    "            w.write(d); await w.drain()\n"
    "    except Exception: pass\n"
    "    finally:\n"
    "        try: w.close()\n"
    "        except Exception: pass\n"
    "async def handle(r, w):\n"
    "    try: tr, tw = await asyncio.open_connection('127.0.0.1', target)\n"
    "    except Exception: w.close(); return\n"
    "    await asyncio.gather(pipe(r, tw), pipe(tr, w))\n"
    "async def main():\n"
    "    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER); ctx.load_cert_chain(cert, key)\n"
    "    srv = await asyncio.start_server(handle, '127.0.0.1', 0, ssl=ctx)\n"
    "    print('PROXY READY port=%d' % srv.sockets[0].getsockname()[1], flush=True)\n"
    "    await srv.serve_forever()\n"
    "asyncio.run(main())\n";

static void fx_tls_proxy(struct fx *fx)
{
    snprintf(fx->cert, sizeof fx->cert, "%s/gw-cert.%d.pem", utsys_tmp_dir(), (int)getpid());
    snprintf(fx->key, sizeof fx->key, "%s/gw-key.%d.pem", utsys_tmp_dir(), (int)getpid());
    pid_t pid = fork();
    UT_ASSERT(pid >= 0);
    if (pid == 0) {
        int nul = open("/dev/null", O_WRONLY);
        dup2(nul, 1);
        dup2(nul, 2);
        execl("/usr/bin/openssl", "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
              "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", fx->key, "-out", fx->cert,
              "-days", "2", "-subj", "/CN=localhost", "-addext",
              "subjectAltName=DNS:localhost,IP:127.0.0.1", (char *)NULL);
        _exit(127);
    }
    int st = 0;
    waitpid(pid, &st, 0);
    UT_ASSERT(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    char port[16];
    snprintf(port, sizeof port, "%d", fx->sim.port);
    char *argv[] = {"/usr/bin/python3", "-c", (char *)tls_proxy_py, fx->cert, fx->key, port, NULL};
    utdsim_child_start(&fx->proxy, argv, "tls_proxy", "PROXY READY");
}

static void on_closed(void *arg)
{
    ((struct fx *)arg)->closed++;
}

static void on_closed_count(void *arg)
{
    ++*(int *)arg;
}

static void fx_close_gw(struct fx *fx)
{
    if (!fx->g)
        return;
    int before = fx->closed;
    gw_close(fx->g, on_closed, fx);
    UT_EQ_INT(fx->closed, before); /* never from inside gw_close */
    RUN_UNTIL(fx, fx->closed == before + 1, 10000);
    fx->g = NULL;
}

static void fx_done(struct fx *fx)
{
    fx_close_gw(fx);
    const char *log = utlog_text(); /* "" when not captured */
    UT_NOT_CONTAINS(log, TOKEN);    /* the token never reaches a log line */
    UT_NOT_CONTAINS(log, "sim-token");
    utlog_stop(LOG_WARN);
    utdsim_stop(&fx->proxy);
    uv_close((uv_handle_t *)&fx->gate_timer, NULL);
    utloop_shutdown(&fx->lp); /* nothing of lws left on our loop */
    secret_clear(&fx->token);
    utdsim_stop(&fx->sim);
}

/* Connect, identify, wait for READY. */
static void fx_ready(struct fx *fx, int compress)
{
    fx_gw(fx, compress, 0);
    UT_EQ_INT(gw_start(fx->g, NULL), 0);
    UT_EQ_INT(gw_start(fx->g, NULL), -EALREADY);
    RUN_UNTIL(fx, fx->readies == 1, 10000);
    UT_ASSERT(gw_connected(fx->g));
}

static int64_t sim_dispatch(struct fx *fx, const char *content)
{
    char body[512];
    snprintf(body, sizeof body,
             "{\"t\":\"MESSAGE_CREATE\",\"session_id\":\"%s\",\"d\":{\"id\":\"1\","
             "\"channel_id\":\"2\",\"content\":\"%s\"}}",
             fx->session, content);
    struct json_object *r = utdsim_http(&fx->sim, "POST", "/_sim/dispatch", body);
    int64_t seq = utdsim_jint(r, "seq");
    json_object_put(r);
    UT_ASSERT(seq > 0);
    return seq;
}


static void base64(const unsigned char *in, size_t n, char *out)
{
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t o = 0;
    for (size_t i = 0; i < n; i += 3) {
        unsigned v = (unsigned)in[i] << 16 | (i + 1 < n ? (unsigned)in[i + 1] << 8 : 0) |
                     (i + 2 < n ? in[i + 2] : 0);
        out[o++] = tab[v >> 18 & 63];
        out[o++] = tab[v >> 12 & 63];
        out[o++] = i + 1 < n ? tab[v >> 6 & 63] : '=';
        out[o++] = i + 2 < n ? tab[v & 63] : '=';
    }
    out[o] = '\0';
}

/* One gateway message written on the wire as three WebSocket frames: a
 * text frame without FIN and two continuations (uncompressed connection). */
static void sim_send_fragmented(struct fx *fx, const char *msg)
{
    size_t n = strlen(msg), cut1 = n / 3, cut2 = 2 * n / 3;
    UT_ASSERT(n < 3 * 125);
    unsigned char wire[512];
    size_t w = 0;
    const size_t at[4] = {0, cut1, cut2, n};
    const unsigned char op[3] = {0x01, 0x00, 0x80};
    for (int i = 0; i < 3; i++) {
        wire[w++] = op[i];
        wire[w++] = (unsigned char)(at[i + 1] - at[i]);
        memcpy(wire + w, msg + at[i], at[i + 1] - at[i]);
        w += at[i + 1] - at[i];
    }
    char b64[800], body[900];
    base64(wire, w, b64);
    snprintf(body, sizeof body, "{\"data\":\"%s\",\"base64\":true,\"wire\":true}", b64);
    utdsim_post(&fx->sim, "/_sim/gateway/raw", body);
}

/* A WebSocket server that completes the upgrade and then says nothing. */
static const char silent_py[] =
    "import asyncio, base64, hashlib\n"
    "G = b'258EAFA5-E914-47DA-95CA-C5AB0DC85B11'\n"
    "async def h(r, w):\n"
    "    req = await r.readuntil(b'\\r\\n\\r\\n')\n"
    "    key = [l.split(b':', 1)[1].strip() for l in req.split(b'\\r\\n')\n"
    "           if l.lower().startswith(b'sec-websocket-key:')][0]\n"
    "    acc = base64.b64encode(hashlib.sha1(key + G).digest())\n"
    "    w.write(b'HTTP/1.1 101 Switching Protocols\\r\\nUpgrade: websocket\\r\\n'\n"
    "            b'Connection: Upgrade\\r\\nSec-WebSocket-Accept: ' + acc + b'\\r\\n\\r\\n')\n"
    "    try:\n"
    "        while await r.read(65536): pass\n"
    "    except Exception: pass\n"
    "    w.close()\n"
    "async def main():\n"
    "    s = await asyncio.start_server(h, '127.0.0.1', 0)\n"
    "    print('SILENT READY port=%d' % s.sockets[0].getsockname()[1], flush=True)\n"
    "    await s.serve_forever()\n"
    "asyncio.run(main())\n";

/* ---- cases -------------------------------------------------------------------- */

static void check_identify(struct fx *fx, int compress)
{
    struct json_object *st = utdsim_http(&fx->sim, "GET", "/_sim/gateway", NULL);
    UT_EQ_INT(utdsim_jint(st, "identifies"), 1);
    UT_ASSERT(json_object_get_boolean(utdsim_jget(st, "identify_log.-1.token_matched")));
    UT_EQ_INT(utdsim_jint(st, "identify_log.-1.intents"), INTENTS);
    UT_EQ_INT(utdsim_jint(st, "identify_log.-1.shard.0"), 0);
    UT_EQ_INT(utdsim_jint(st, "identify_log.-1.shard.1"), 1);
    UT_EQ_STR(json_object_get_string(utdsim_jget(st, "identify_log.-1.properties.os")), "linux");
    UT_EQ_STR(json_object_get_string(utdsim_jget(st, "identify_log.-1.properties.browser")),
              "discordbot-c");
    UT_EQ_STR(json_object_get_string(utdsim_jget(st, "identify_log.-1.properties.device")),
              "discordbot-c");
    UT_EQ_STR(json_object_get_string(utdsim_jget(st, "connections.-1.query.v")), "10");
    UT_EQ_STR(json_object_get_string(utdsim_jget(st, "connections.-1.query.encoding")), "json");
    UT_EQ_INT(json_object_get_boolean(utdsim_jget(st, "connections.-1.compress")), compress);
    UT_EQ_INT(json_object_array_length(utdsim_jget(st, "connections.-1.violations")), 0);
    json_object_put(st);
}

static void identify_and_dispatch(int compress)
{
    struct fx fx;
    fx_init(&fx, NULL);
    if (compress) {
        fx_ready(&fx, compress);
    } else { /* a host name: resolved on libuv's thread pool */
        char url[128];
        snprintf(url, sizeof url, "ws://localhost:%d/gateway", fx.sim.port);
        fx_gw_at(&fx, url, 0, 0, NULL);
        UT_EQ_INT(gw_start(fx.g, NULL), 0);
        RUN_UNTIL(&fx, fx.readies == 1, 10000);
    }
    UT_EQ_INT(fx.gates, 1);
    UT_EQ_INT(fx.ups, 1);
    check_identify(&fx, compress);
    int64_t seq = sim_dispatch(&fx, "안녕하세요 🤖");
    RUN_UNTIL(&fx, fx.last_seq == seq, 5000);
    UT_EQ_STR(fx.last_type, "MESSAGE_CREATE");
    UT_EQ_STR(fx.last_content, "안녕하세요 🤖");
    UT_ASSERT(fx.raw_ok);
    struct gw_resume r;
    gw_get_resume(fx.g, &r);
    UT_EQ_INT(r.seq, seq);
    UT_EQ_STR(r.session_id, fx.session);
    UT_EQ_INT(fx.order_errors, 0);
    fx_done(&fx);
}

/* Identify carries the token, intents, shard and properties; a dispatch
 * arrives with its seq and type; with zlib-stream ... */
static void test_identify_dispatch_zlib(void)
{
    identify_and_dispatch(1);
}

/* ... and without compression. */
static void test_identify_dispatch_plain(void)
{
    identify_and_dispatch(0);
}

/* Heartbeats keep time: interval 300 ms -> about one beat per 300 ms, d is
 * the last seq, every beat ACKed; a server op 1 is answered at once. */
static void test_heartbeats(void)
{
    struct fx fx;
    fx_init(&fx, "{\"heartbeat_interval_ms\":300}");
    fx_ready(&fx, 1);
    int64_t seq = sim_dispatch(&fx, "beat");
    RUN_UNTIL(&fx, fx.last_seq == seq, 5000);
    uint64_t t0 = utsys_mono_ms();
    int64_t h0 = utdsim_gw_int(&fx.sim, "connections.-1.heartbeats");
    run_for(&fx, 2100);
    int64_t h1 = utdsim_gw_int(&fx.sim, "connections.-1.heartbeats");
    double expect = (double)(utsys_mono_ms() - t0) / 300.0;
    UT_ASSERT(h1 - h0 >= (int64_t)expect - 1 && h1 - h0 <= (int64_t)expect + 2);
    UT_EQ_INT(utdsim_gw_int(&fx.sim, "connections.-1.last_heartbeat_d"), seq);
    UT_ASSERT(gw_latency_ms(fx.g) >= 0 && gw_latency_ms(fx.g) < ut_scale_ms(1000));
    utdsim_post(&fx.sim, "/_sim/gateway/heartbeat_request", "{}");
    wait_sim(&fx, "connections.-1.heartbeat_request_latency_ms", 0, 3000);
    struct json_object *st = utdsim_http(&fx.sim, "GET", "/_sim/gateway", NULL);
    double lat = json_object_get_double(utdsim_jget(st, "connections.-1.heartbeat_request_latency_ms"));
    UT_ASSERT(lat < ut_scale_ms(250)); /* answered at once, not at the next beat */
    UT_EQ_INT(json_object_array_length(utdsim_jget(st, "connections.-1.violations")), 0);
    UT_EQ_INT(utdsim_jint(st, "connections.-1.heartbeat_acks_sent"),
              utdsim_jint(st, "connections.-1.heartbeats"));
    json_object_put(st);
    fx_done(&fx);
}

/* The server closes with 4000; events dispatched meanwhile are replayed on
 * resume, in order, and there is still only one identify. */
static void test_resume_after_4000(void)
{
    struct fx fx;
    fx_init(&fx, NULL);
    fx_ready(&fx, 1);
    utdsim_post(&fx.sim, "/_sim/gateway/close", "{\"code\":4000}");
    int64_t s1 = sim_dispatch(&fx, "missed one");
    int64_t s2 = sim_dispatch(&fx, "missed two");
    int64_t s3 = sim_dispatch(&fx, "missed three");
    UT_ASSERT(s1 > 0 && s2 == s1 + 1 && s3 == s2 + 1);
    RUN_UNTIL(&fx, fx.resumes == 1, 10000);
    RUN_UNTIL(&fx, fx.last_seq >= s3 + 1, 5000); /* the replay, then RESUMED */
    UT_EQ_STR(fx.last_type, "RESUMED");
    UT_EQ_INT(fx.order_errors, 0);
    UT_EQ_STR(fx.last_content, "missed three");
    UT_EQ_INT(utdsim_gw_int(&fx.sim, "identifies"), 1);
    UT_EQ_INT(utdsim_gw_int(&fx.sim, "resumes"), 1);
    UT_EQ_INT(utdsim_gw_int(&fx.sim, "sessions.-1.events_replayed"), 3);
    UT_EQ_INT(fx.gates, 1);
    UT_EQ_INT(fx.downs, 1);
    UT_EQ_INT(fx.ups, 2);
    int64_t seq = sim_dispatch(&fx, "after");
    RUN_UNTIL(&fx, fx.last_seq == seq, 5000);
    fx_done(&fx);
}

/* op 7: the client closes with a non-1000 code itself and resumes; so it
 * does for op 9 with d=true. */
static void test_reconnect_op7(void)
{
    struct fx fx;
    fx_init(&fx, NULL);
    fx_ready(&fx, 1);
    utdsim_post(&fx.sim, "/_sim/gateway/reconnect", "{}");
    RUN_UNTIL(&fx, fx.resumes == 1, 10000);
    struct json_object *st = utdsim_http(&fx.sim, "GET", "/_sim/gateway", NULL);
    UT_EQ_INT(utdsim_jint(st, "identifies"), 1);
    UT_EQ_INT(utdsim_jint(st, "resumes"), 1);
    UT_EQ_STR(json_object_get_string(utdsim_jget(st, "closes.0.by")), "client");
    UT_EQ_INT(utdsim_jint(st, "closes.0.code"), 4000);
    json_object_put(st);
    utdsim_post(&fx.sim, "/_sim/gateway/invalid_session", "{\"resumable\":true}");
    RUN_UNTIL(&fx, fx.resumes == 2, 10000);
    UT_EQ_INT(utdsim_gw_int(&fx.sim, "identifies"), 1);
    UT_EQ_INT(fx.gates, 1);
    fx_done(&fx);
}

/* A server close that ends the session (4009): a new Identify through the
 * gate, not a resume. */
static void test_server_close_new_session(void)
{
    struct fx fx;
    fx_init(&fx, NULL);
    fx_ready(&fx, 0);
    utdsim_post(&fx.sim, "/_sim/gateway/close", "{\"code\":4009}");
    RUN_UNTIL(&fx, fx.readies == 2, 10000);
    UT_EQ_INT(fx.gates, 2);
    UT_EQ_INT(utdsim_gw_int(&fx.sim, "identifies"), 2);
    UT_EQ_INT(utdsim_gw_int(&fx.sim, "resume_attempts"), 0);
    UT_EQ_INT(fx.downs, 1);
    fx_done(&fx);
}

/* op 9 d=false: the session is forgotten; after 1-5 s a new Identify goes
 * through the gate again. */
static void test_invalid_session(void)
{
    struct fx fx;
    fx_init(&fx, NULL);
    fx_ready(&fx, 1);
    char first[80];
    snprintf(first, sizeof first, "%s", fx.session);
    uint64_t t0 = utsys_mono_ms();
    utdsim_post(&fx.sim, "/_sim/gateway/invalid_session", "{\"resumable\":false}");
    RUN_UNTIL(&fx, fx.readies == 2, 10000);
    uint64_t took = utsys_mono_ms() - t0;
    UT_ASSERT(took >= 1000 && took < (uint64_t)ut_scale_ms(7000));
    UT_EQ_INT(fx.gates, 2);
    UT_ASSERT(strcmp(first, fx.session) != 0);
    UT_EQ_INT(utdsim_gw_int(&fx.sim, "identifies"), 2);
    UT_EQ_INT(utdsim_gw_int(&fx.sim, "resume_attempts"), 0);
    fx_done(&fx);
}

/* The gate decides when Identify goes out: nothing before gw_identify_go. */
static void test_gate_later(void)
{
    struct fx fx;
    fx_init(&fx, NULL);
    fx.gate_mode = GATE_NEVER;
    fx_gw(&fx, 1, 0);
    UT_EQ_INT(gw_start(fx.g, NULL), 0);
    RUN_UNTIL(&fx, fx.gates == 1, 5000);
    run_for(&fx, 400);
    UT_EQ_INT(utdsim_gw_int(&fx.sim, "identify_attempts"), 0);
    UT_EQ_INT(fx.gates, 1); /* not asked twice while an answer is outstanding */
    gw_identify_go(fx.g);
    RUN_UNTIL(&fx, fx.readies == 1, 5000);
    UT_EQ_INT(utdsim_gw_int(&fx.sim, "identifies"), 1);
    fx_done(&fx);
}

/* A bad token: 4004 -> the fatal callback once, with what to fix, and no
 * reconnect loop (the simulator sees one attempt over a few seconds). */
static void test_fatal_4004(void)
{
    struct fx fx;
    fx_init(&fx, NULL);
    secret_set(&fx.token, "wrong-token");
    fx_gw(&fx, 1, 0);
    UT_EQ_INT(gw_start(fx.g, NULL), 0);
    RUN_UNTIL(&fx, fx.fatals == 1, 10000);
    UT_EQ_INT(fx.fatal_code, 4004);
    UT_CONTAINS(fx.fatal_why, "DISCORD_TOKEN");
    run_for(&fx, 2500);
    UT_EQ_INT(fx.fatals, 1);
    UT_EQ_INT(fx.readies, 0);
    UT_EQ_INT(utdsim_gw_int(&fx.sim, "identify_attempts"), 1);
    struct json_object *st = utdsim_http(&fx.sim, "GET", "/_sim/gateway", NULL);
    UT_EQ_INT(json_object_array_length(utdsim_jget(st, "connections")), 1);
    json_object_put(st);
    UT_EQ_INT(gw_start(fx.g, NULL), BC_ESHUTDOWN);
    UT_EQ_INT(gw_send(fx.g, "{}", 2), BC_ESHUTDOWN);
    fx_done(&fx);
}

/* Privileged intents not enabled: 4014 names MESSAGE_CONTENT. */
static void test_fatal_4014(void)
{
    struct fx fx;
    fx_init(&fx, "{\"privileged_intents_allowed\":0}");
    fx_gw(&fx, 0, 0);
    UT_EQ_INT(gw_start(fx.g, NULL), 0);
    RUN_UNTIL(&fx, fx.fatals == 1, 10000);
    UT_EQ_INT(fx.fatal_code, 4014);
    UT_CONTAINS(fx.fatal_why, "MESSAGE_CONTENT");
    run_for(&fx, 1500);
    UT_EQ_INT(utdsim_gw_int(&fx.sim, "identify_attempts"), 1);
    fx_done(&fx);
}

/* ACKs withheld: at the next beat the connection is a zombie; the client
 * closes it with 4000 and resumes. */
static void test_zombie(void)
{
    struct fx fx;
    fx_init(&fx, "{\"heartbeat_interval_ms\":300}");
    fx_ready(&fx, 1);
    int64_t conn = utdsim_gw_int(&fx.sim, "connections.-1.id");
    char body[64];
    snprintf(body, sizeof body, "{\"on\":true,\"conn_id\":%lld}", (long long)conn);
    utdsim_post(&fx.sim, "/_sim/gateway/withhold_acks", body);
    RUN_UNTIL(&fx, fx.resumes == 1, 5000);
    struct json_object *st = utdsim_http(&fx.sim, "GET", "/_sim/gateway", NULL);
    UT_EQ_STR(json_object_get_string(utdsim_jget(st, "closes.0.by")), "client");
    UT_EQ_INT(utdsim_jint(st, "closes.0.code"), 4000);
    UT_EQ_INT(utdsim_jint(st, "identifies"), 1);
    UT_ASSERT(utdsim_jint(st, "connections.0.acks_withheld") >= 1);
    json_object_put(st);
    fx_done(&fx);
}

/* Untrusted input: malformed JSON and unknown opcodes are skipped on the
 * same connection; an oversized message and a corrupt zlib stream reset
 * the connection, which then resumes. Nothing crashes, nothing is lost. */
static void test_malformed_and_huge(void)
{
    struct fx fx;
    fx_init(&fx, NULL);
    fx_gw(&fx, 1, 256 * 1024);
    UT_EQ_INT(gw_start(fx.g, NULL), 0);
    RUN_UNTIL(&fx, fx.readies == 1, 10000);
    utdsim_post(&fx.sim, "/_sim/gateway/raw", "{\"data\":\"{not json\"}");
    utdsim_post(&fx.sim, "/_sim/gateway/raw", "{\"data\":\"{\\\"op\\\":42,\\\"d\\\":null}\"}");
    utdsim_post(&fx.sim, "/_sim/gateway/raw", "{\"data\":\"[1,2,3]\"}");
    utdsim_post(&fx.sim, "/_sim/gateway/raw", "{\"data\":\"{\\\"op\\\":0,\\\"s\\\":5}\"}");
    int64_t seq = sim_dispatch(&fx, "still here");
    RUN_UNTIL(&fx, fx.last_seq == seq, 5000);
    UT_EQ_INT(utdsim_gw_int(&fx.sim, "resume_attempts"), 0); /* same connection */

    /* 1 MiB of JSON against a 256 KiB cap */
    size_t big = 1024 * 1024;
    char *body = mem_alloc(big + 64);
    int n = snprintf(body, 64, "{\"data\":\"{\\\"op\\\":0,\\\"t\\\":\\\"X\\\",\\\"d\\\":\\\"");
    memset(body + n, 'a', big);
    strcpy(body + n + big, "\\\"}\"}");
    utdsim_post(&fx.sim, "/_sim/gateway/raw", body);
    mem_free(body);
    RUN_UNTIL(&fx, fx.resumes == 1, 10000);
    seq = sim_dispatch(&fx, "after the big one");
    RUN_UNTIL(&fx, fx.last_seq == seq, 5000);

    /* bytes that are not zlib data, in a binary frame */
    utdsim_post(&fx.sim, "/_sim/gateway/raw",
             "{\"data\":\"bm90IHpsaWIgZGF0YQAA//8=\",\"base64\":true,\"compress\":false,"
             "\"opcode\":2}");
    RUN_UNTIL(&fx, fx.resumes == 2, 10000);
    seq = sim_dispatch(&fx, "after the corrupt one");
    RUN_UNTIL(&fx, fx.last_seq == seq, 5000);
    UT_EQ_STR(fx.last_content, "after the corrupt one");
    UT_EQ_INT(utdsim_gw_int(&fx.sim, "identifies"), 1);
    UT_EQ_INT(fx.order_errors, 0);
    fx_done(&fx);
}

/* gw_close ends the connection with 4000 and leaves the session
 * resumable: a second client (another process) resumes it from
 * gw_get_resume, and what was dispatched in between is replayed. */
static void test_close_then_resume_elsewhere(void)
{
    struct fx fx;
    fx_init(&fx, NULL);
    fx_ready(&fx, 1);
    int64_t seq = sim_dispatch(&fx, "before the handover");
    RUN_UNTIL(&fx, fx.last_seq == seq, 5000);
    struct gw_resume r;
    gw_get_resume(fx.g, &r);
    fx_close_gw(&fx);
    UT_EQ_INT(utdsim_gw_int(&fx.sim, "closes.-1.code"), 4000);
    int64_t missed = sim_dispatch(&fx, "during the handover");
    fx_gw(&fx, 0, 0);
    UT_EQ_INT(gw_start(fx.g, &r), 0);
    RUN_UNTIL(&fx, fx.resumes == 1, 10000);
    UT_EQ_INT(fx.gates, 1); /* resuming needs no gate */
    UT_EQ_INT(utdsim_gw_int(&fx.sim, "identifies"), 1);
    UT_EQ_STR(fx.last_content, "during the handover");
    UT_ASSERT(fx.last_seq == missed + 1); /* RESUMED after the replay */
    fx_done(&fx);
}

/* Starting from a stale session (another process saved it long ago): the
 * Resume is refused with op 9 d=false, and after 1-5 s a new session is
 * identified through the gate. */
static void test_stale_session(void)
{
    struct fx fx;
    fx_init(&fx, NULL);
    fx_gw(&fx, 1, 0);
    struct gw_resume r = {.session_id = "0123456789abcdef", .seq = 42};
    fx_url(&fx, r.resume_url, sizeof r.resume_url);
    UT_EQ_INT(gw_start(fx.g, &r), 0);
    RUN_UNTIL(&fx, fx.readies == 1, 10000);
    UT_EQ_INT(fx.resumes, 0);
    UT_EQ_INT(fx.gates, 1);
    UT_EQ_INT(utdsim_gw_int(&fx.sim, "resume_attempts"), 1);
    UT_EQ_INT(utdsim_gw_int(&fx.sim, "identifies"), 1);
    struct gw_resume now;
    gw_get_resume(fx.g, &now);
    UT_EQ_STR(now.session_id, fx.session);
    UT_ASSERT(now.seq >= 1 && now.seq < 42);
    fx_done(&fx);
}

/* 120 sends per 60 s: a burst of owner payloads stops below the limit
 * (room stays for heartbeats), the simulator never closes with 4008, and
 * the queue and payload caps answer with errors. */
static void test_send_limit(void)
{
    struct fx fx;
    fx_init(&fx, "{\"heartbeat_interval_ms\":1000}");
    fx_ready(&fx, 1);
    static const char presence[] = "{\"op\":3,\"d\":{\"since\":null,\"activities\":[],"
                                   "\"status\":\"online\",\"afk\":false}}";
    int rc = 0, queued = 0;
    while ((rc = gw_send(fx.g, presence, sizeof presence - 1)) == 0)
        queued++;
    UT_EQ_INT(rc, -ENOBUFS);
    UT_EQ_INT(queued, GW_SEND_QUEUE_MAX);
    char big[GW_MAX_SEND + 1];
    memset(big, ' ', sizeof big);
    UT_EQ_INT(gw_send(fx.g, big, sizeof big), -EMSGSIZE);
    run_for(&fx, 2500);
    struct json_object *st = utdsim_http(&fx.sim, "GET", "/_sim/gateway", NULL);
    int64_t ops3 = utdsim_jint(st, "connections.-1.ops.3"), beats = utdsim_jint(st, "connections.-1.ops.1");
    int64_t total = utdsim_jint(st, "connections.-1.messages_received");
    UT_ASSERT(ops3 >= GW_SEND_LIMIT - GW_SEND_RESERVE - 4);
    UT_ASSERT(ops3 <= GW_SEND_LIMIT - GW_SEND_RESERVE);
    UT_ASSERT(beats >= 1); /* heartbeats still got through */
    UT_ASSERT(total <= GW_SEND_LIMIT);
    UT_EQ_INT(json_object_array_length(utdsim_jget(st, "closes")), 0);
    UT_EQ_INT(fx.downs, 0);
    json_object_put(st);
    fx_done(&fx);
}

/* Dispatch throughput through the whole client (zlib-stream, json-c parse,
 * callback): the simulator floods 50,000 MESSAGE_CREATEs (15,000 under
 * ASan); all arrive in order. The rate is printed; the assertion is loose (shared CI cores). */
static void test_flood(void)
{
    struct fx fx;
    fx_init(&fx, "{\"heartbeat_interval_ms\":41250}");
    fx_ready(&fx, 1);
#ifdef __SANITIZE_ADDRESS__
    const int count = 15000; /* ASan makes every malloc several times dearer */
#else
    const int count = 50000;
#endif
    int64_t base = fx.last_seq;
    char body[256];
    snprintf(body, sizeof body,
             "{\"count\":%d,\"channel_id\":\"500\",\"guild_id\":\"600\","
             "\"content\":\"hi\"}",
             count);
    /* the simulator answers once everything is written: run the client meanwhile */
    struct rusage ru0, ru1;
    getrusage(RUSAGE_SELF, &ru0);
    pid_t helper = fork();
    UT_ASSERT(helper >= 0);
    if (helper == 0) {
        json_object_put(utdsim_http(&fx.sim, "POST", "/_sim/gateway/flood", body));
        _exit(0);
    }
    RUN_UNTIL(&fx, fx.flood_count >= count, 30000);
    getrusage(RUSAGE_SELF, &ru1);
    double cpu = (double)(ru1.ru_utime.tv_sec - ru0.ru_utime.tv_sec + ru1.ru_stime.tv_sec -
                          ru0.ru_stime.tv_sec) +
                 (double)(ru1.ru_utime.tv_usec - ru0.ru_utime.tv_usec + ru1.ru_stime.tv_usec -
                          ru0.ru_stime.tv_usec) / 1e6;
    int st = 0;
    waitpid(helper, &st, 0);
    UT_ASSERT(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    UT_EQ_INT(fx.order_errors, 0);
    UT_EQ_INT(fx.last_seq, base + count);
    double s = (double)(fx.flood_t1 - fx.flood_t0) / 1e9;
    fprintf(stderr,
            "test_flood: %d dispatches in %.3f s = %.0f/s; client CPU %.3f s = %.0f "
            "dispatches per CPU second\n",
            count, s, count / (s > 0 ? s : 1e-9), cpu, count / (cpu > 0 ? cpu : 1e-9));
    fx_done(&fx);
}


/* A message in three WebSocket fragments is reassembled into one. */
static void test_fragmented(void)
{
    struct fx fx;
    fx_init(&fx, NULL);
    fx_ready(&fx, 0);
    sim_send_fragmented(&fx, "{\"op\":0,\"t\":\"FRAGMENTED\",\"s\":null,\"d\":{\"content\":"
                             "\"one message, three frames, reassembled\"}}");
    RUN_UNTIL(&fx, fx.fragmented[0], 5000);
    UT_EQ_STR(fx.fragmented, "one message, three frames, reassembled");
    /* one 300 KB frame: lws hands it over in pieces, only the last final */
    size_t big = 300 * 1000;
    char *body = mem_alloc(big + 128);
    int n = snprintf(body, 128, "{\"compress\":false,\"data\":\"{\\\"op\\\":0,\\\"t\\\":"
                                "\\\"FRAGMENTED\\\",\\\"d\\\":{\\\"content\\\":\\\"");
    memset(body + n, 'x', big);
    strcpy(body + n + big, "\\\"}}\"}");
    utdsim_post(&fx.sim, "/_sim/gateway/raw", body);
    mem_free(body);
    RUN_UNTIL(&fx, fx.fragmented_len == (int)big, 5000);
    int64_t seq = sim_dispatch(&fx, "next");
    RUN_UNTIL(&fx, fx.last_seq == seq, 5000);
    UT_EQ_INT(utdsim_gw_int(&fx.sim, "resume_attempts"), 0);
    fx_done(&fx);
}

/* The upgrade succeeds but no Hello comes: the client gives up on the
 * connection after hello_timeout_ms and tries again later. */
static void test_no_hello(void)
{
    struct fx fx;
    fx_init(&fx, NULL);
    char *argv[] = {"/usr/bin/python3", "-c", (char *)silent_py, NULL};
    utdsim_child_start(&fx.proxy, argv, "silent_ws", "SILENT READY");
    char url[128];
    snprintf(url, sizeof url, "ws://127.0.0.1:%d/gateway", fx.proxy.port);
    struct gw_opts o = {.token = &fx.token, .url = url, .intents = INTENTS,
                        .hello_timeout_ms = 300};
    UT_EQ_INT(gw_new(&fx.loop, &o, &cbs, &fx, &fx.g), 0);
    UT_EQ_INT(gw_start(fx.g, NULL), 0);
    run_for(&fx, 2000);
    UT_EQ_INT(fx.gates + fx.readies + fx.ups + fx.downs, 0);
    if (utlog_active())
        UT_ASSERT(utlog_count("gateway sent no Hello") >= 2);
    fx_done(&fx);
}

/* wss:// through TLS (lws' OpenSSL) with a host name: the certificate is
 * checked against the given CA and the name; then the usual session. */
static void test_wss(void)
{
    struct fx fx;
    fx_init(&fx, NULL);
    fx_tls_proxy(&fx);
    char url[128];
    snprintf(url, sizeof url, "wss://localhost:%d/gateway", fx.proxy.port);
    fx_gw_at(&fx, url, 1, 0, fx.cert);
    UT_EQ_INT(gw_start(fx.g, NULL), 0);
    RUN_UNTIL(&fx, fx.readies == 1, 10000);
    check_identify(&fx, 1);
    int64_t seq = sim_dispatch(&fx, "over TLS");
    RUN_UNTIL(&fx, fx.last_seq == seq, 5000);
    UT_EQ_STR(fx.last_content, "over TLS");
    /* a second client in the same process (TLS still works after the
     * first context is gone) resumes over wss: an empty resume_url means
     * the gateway url */
    struct gw_resume r;
    gw_get_resume(fx.g, &r);
    r.resume_url[0] = '\0';
    fx_close_gw(&fx);
    fx_gw_at(&fx, url, 1, 0, fx.cert);
    UT_EQ_INT(gw_start(fx.g, &r), 0);
    RUN_UNTIL(&fx, fx.resumes == 1, 10000);
    UT_EQ_INT(utdsim_gw_int(&fx.sim, "identifies"), 1);
    fx_done(&fx);
}

/* A certificate the system store does not trust: no connection, no
 * Identify, retries with backoff, and a clean close meanwhile. */
static void test_wss_untrusted(void)
{
    struct fx fx;
    fx_init(&fx, NULL);
    fx_tls_proxy(&fx);
    char url[128];
    snprintf(url, sizeof url, "wss://localhost:%d/gateway", fx.proxy.port);
    fx_gw_at(&fx, url, 1, 0, NULL);
    UT_EQ_INT(gw_start(fx.g, NULL), 0);
    run_for(&fx, 2200);
    UT_EQ_INT(fx.gates, 0);
    UT_EQ_INT(fx.readies, 0);
    UT_EQ_INT(utdsim_gw_int(&fx.sim, "identify_attempts"), 0);
    if (utlog_active()) {
        UT_ASSERT(utlog_count("\"gateway connecting\"") >= 2);
        UT_ASSERT(utlog_count("\"gateway connection lost\"") >= 1);
    }
    fx_done(&fx);
}

/* Nobody listens: backoff retries (0.5-1 s, then 1-2 s), no callbacks. */
static void test_connect_refused(void)
{
    struct fx fx;
    fx_init(&fx, NULL);
    char url[128];
    snprintf(url, sizeof url, "ws://127.0.0.1:%d/gateway", utsys_free_port());
    fx_gw_at(&fx, url, 1, 0, NULL);
    UT_EQ_INT(gw_start(fx.g, NULL), 0);
    run_for(&fx, 2200);
    UT_EQ_INT(fx.gates + fx.readies + fx.ups + fx.downs + fx.fatals, 0);
    if (utlog_active()) {
        int attempts = utlog_count("\"gateway connecting\"");
        UT_ASSERT(attempts >= 2 && attempts <= 4);
    }
    fx_done(&fx);
}

/* gw_stop ends the session (close 1000) and never reconnects; no callback
 * runs after it. */
static void test_stop(void)
{
    struct fx fx;
    fx_init(&fx, NULL);
    fx_ready(&fx, 1);
    int ups = fx.ups;
    gw_stop(fx.g);
    UT_EQ_INT(gw_connected(fx.g), 0);
    run_for(&fx, 1500);
    struct json_object *st = utdsim_http(&fx.sim, "GET", "/_sim/gateway", NULL);
    UT_EQ_STR(json_object_get_string(utdsim_jget(st, "closes.0.by")), "client");
    UT_EQ_INT(utdsim_jint(st, "closes.0.code"), 1000);
    UT_EQ_STR(json_object_get_string(utdsim_jget(st, "sessions.0.state")), "ended");
    UT_EQ_INT(json_object_array_length(utdsim_jget(st, "connections")), 1);
    json_object_put(st);
    UT_EQ_INT(fx.ups, ups);
    UT_EQ_INT(fx.downs, 0);
    UT_EQ_INT(gw_send(fx.g, "{}", 2), BC_ESHUTDOWN);
    fx_done(&fx);
}

/* Argument checks and closing a client that never started. */
static void test_api_misuse(void)
{
    uv_loop_t loop;
    UT_EQ_INT(uv_loop_init(&loop), 0);
    struct secret tok = {0};
    secret_set(&tok, TOKEN);
    struct gw *g = NULL;
    struct gw_opts o = {.token = &tok, .url = "ws://127.0.0.1:1/gateway"};
    UT_EQ_INT(gw_new(&loop, &o, &(struct gw_cbs){0}, NULL, &g), -EINVAL);
    o.url = "http://discord.com/";
    UT_EQ_INT(gw_new(&loop, &o, &cbs, NULL, &g), -EINVAL);
    o.url = "wss://gateway.discord.gg";
    o.shard_id = 2, o.shard_count = 2;
    UT_EQ_INT(gw_new(&loop, &o, &cbs, NULL, &g), -EINVAL);
    o.shard_id = 0;
    struct secret none = {0};
    o.token = &none;
    UT_EQ_INT(gw_new(&loop, &o, &cbs, NULL, &g), -EINVAL);
    o.token = &tok;
    UT_EQ_INT(gw_new(&loop, &o, &cbs, NULL, &g), 0);
    struct gw_resume r;
    gw_get_resume(g, &r);
    UT_EQ_STR(r.session_id, "");
    UT_ASSERT(gw_latency_ms(g) < 0);
    UT_EQ_INT(gw_connected(g), 0);
    int closed = 0;
    gw_close(g, on_closed_count, &closed);
    UT_EQ_INT(closed, 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    UT_EQ_INT(closed, 1);
    UT_EQ_INT(uv_loop_close(&loop), 0);
    secret_clear(&tok);
}

static const struct ut_case cases[] = {
    UT_CASE(test_identify_dispatch_zlib),
    UT_CASE(test_identify_dispatch_plain),
    UT_CASE(test_heartbeats),
    UT_CASE(test_resume_after_4000),
    UT_CASE(test_reconnect_op7),
    UT_CASE(test_server_close_new_session),
    UT_CASE(test_invalid_session),
    UT_CASE(test_gate_later),
    UT_CASE(test_fatal_4004),
    UT_CASE(test_fatal_4014),
    UT_CASE(test_zombie),
    UT_CASE(test_malformed_and_huge),
    UT_CASE(test_close_then_resume_elsewhere),
    UT_CASE(test_stale_session),
    UT_CASE(test_send_limit),
    UT_CASE(test_flood),
    UT_CASE(test_fragmented),
    UT_CASE(test_no_hello),
    UT_CASE(test_wss),
    UT_CASE(test_wss_untrusted),
    UT_CASE(test_connect_refused),
    UT_CASE(test_stop),
    UT_CASE(test_api_misuse),
    {0},
};
UT_MAIN(cases)
