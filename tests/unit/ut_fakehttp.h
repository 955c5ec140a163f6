/* ut_fakehttp: a fake HTTP provider for a unit test, with the client that
 * talks to it.
 *
 * utfake_init gives a case its own libuv loop (with a ut_loop guard), an
 * httpd on 127.0.0.1 at a port the kernel picks, and an hcl client on the
 * same loop. Routes answer with a canned response (struct utfake_canned):
 * utfake_route with no handler serves f->cn; a test that needs more (two
 * routes with two answers, a query argument to keep) routes its own handler
 * and calls utfake_answer from it. Either way the last request is recorded
 * in the struct (method, path, a few headers, the raw body) for the case to
 * check, and a canned answer with hold set keeps the request unanswered in
 * f->held, so the client times out, is cancelled or is shut down while it
 * waits.
 *
 * utfake_shutdown closes client and server (once) and answers a held
 * request; utfake_end does that, lets the loop finish and fails the case
 * unless every handle was released, so the sanitizers see any leak. What
 * was recorded stays readable until utfake_free.
 *
 * Two checks that clients of different providers share: a table of error
 * answers and what the client must report for each (struct utfake_err), and
 * what a client logged of a key the fake echoed back. Header-only: every
 * function is static and marked unused. */
#ifndef UT_FAKEHTTP_H
#define UT_FAKEHTTP_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "io/hcl.h"
#include "io/httpd.h"
#include "base/log.h"
#include "base/mem.h"
#include "base/secret.h"
#include "ut.h"
#include "ut_loop.h"

#ifndef UT_UNUSED
#define UT_UNUSED __attribute__((unused))
#endif

/* One answer of the fake. The first fields come in the order a positional
 * initializer wants them: {429, "application/json", body, "Retry-After", "2"}. */
struct utfake_canned {
    int status;                 /* 0 = 200 */
    const char *ctype;          /* NULL = the fake's default type */
    const void *body;           /* NULL = an empty body */
    const char *hname, *hval;   /* an extra response header, optional */
    const char *hname2, *hval2; /* a second one, optional */
    size_t len;                 /* 0 = strlen(body): set it for a binary body */
    int hold;                   /* never answer: keep the request in held */
};

struct utfake {
    uv_loop_t loop;
    struct utloop ul; /* no tick: the fake's sockets wake the loop */
    struct httpd *h;  /* the fake provider */
    struct hcl *c;    /* the client under test talks through this */
    int port, shut;
    const char *default_ctype; /* borrowed: a string literal */
    struct utfake_canned cn;   /* what utfake_route's own handler answers */
    struct httpd_req *held;    /* the request a hold kept, until answered */
    int nreq;                  /* requests that reached a route */
    /* The last request; headers "" when absent. */
    char method[8], path[128], auth[256], accept[64], ctype[160];
    char *body; /* mem_ allocated and NUL-terminated; NULL before any */
    size_t body_len;
};

static UT_UNUSED void utfake__copy_header(char *out, size_t n, struct httpd_req *r,
                                          const char *name)
{
    const char *v = httpd_req_header(r, name);
    snprintf(out, n, "%s", v ? v : "");
}

/* Record r as the last request (utfake_answer does it first). */
static UT_UNUSED void utfake_record(struct utfake *f, struct httpd_req *r)
{
    f->nreq++;
    snprintf(f->method, sizeof f->method, "%s", httpd_req_method(r));
    snprintf(f->path, sizeof f->path, "%s", httpd_req_path(r));
    utfake__copy_header(f->auth, sizeof f->auth, r, "Authorization");
    utfake__copy_header(f->accept, sizeof f->accept, r, "Accept");
    utfake__copy_header(f->ctype, sizeof f->ctype, r, "Content-Type");
    size_t n;
    const char *b = httpd_req_body(r, &n);
    mem_free(f->body);
    f->body = mem_alloc(n + 1);
    memcpy(f->body, b, n + 1); /* httpd promises the NUL after the body */
    f->body_len = n;
}

/* Record r, then answer it with cn, or keep it in f->held when cn->hold. */
static UT_UNUSED void utfake_answer(struct utfake *f, struct httpd_req *r,
                                    const struct utfake_canned *cn)
{
    utfake_record(f, r);
    if (cn->hold) {
        UT_ASSERT(!f->held);
        f->held = r;
        return;
    }
    if (cn->hname)
        httpd_req_add_header(r, cn->hname, cn->hval);
    if (cn->hname2)
        httpd_req_add_header(r, cn->hname2, cn->hval2);
    const char *b = cn->body ? cn->body : "";
    httpd_respond(r, cn->status ? cn->status : 200, cn->ctype ? cn->ctype : f->default_ctype, b,
                  cn->len ? cn->len : strlen(b));
}

static UT_UNUSED void utfake__serve(struct httpd_req *r, void *arg)
{
    struct utfake *f = arg;
    utfake_answer(f, r, &f->cn);
}

/* Answer the held request, if any, with a late 200 (discarded when the
 * server was closed meanwhile). */
static UT_UNUSED void utfake_release(struct utfake *f)
{
    if (f->held)
        httpd_respond(f->held, 200, "text/plain", "late", 4);
    f->held = NULL;
}

/* Start the fake: user_agent for the client, default_ctype (a literal) for
 * answers that name none. UT_DEBUG in the environment turns the log up. */
static UT_UNUSED void utfake_init(struct utfake *f, const char *user_agent,
                                  const char *default_ctype)
{
    memset(f, 0, sizeof *f);
    if (getenv("UT_DEBUG"))
        log_set_level(LOG_DEBUG);
    f->default_ctype = default_ctype;
    UT_EQ_INT(uv_loop_init(&f->loop), 0);
    utloop_init(&f->ul, &f->loop, 0);
    UT_EQ_INT(httpd_start(&f->loop, &(struct httpd_opts){.bind = "127.0.0.1"}, &f->h), 0);
    f->port = httpd_port(f->h);
    UT_EQ_INT(hcl_new(&f->loop, &(struct hcl_opts){.user_agent = user_agent}, &f->c), 0);
}

/* Route method + path to fn(arg), or, fn NULL, to an answer of f->cn. */
static UT_UNUSED void utfake_route(struct utfake *f, const char *method, const char *path,
                                   httpd_handler *fn, void *arg)
{
    UT_EQ_INT(httpd_route(f->h, method, path, fn ? fn : utfake__serve, fn ? arg : f), 0);
}

/* "http://127.0.0.1:<port><suffix>", in a buffer of ut_fakehttp's that the
 * next call overwrites (with the same text, for the same suffix). */
static UT_UNUSED const char *utfake_url(const struct utfake *f, const char *suffix)
{
    static char url[256];
    snprintf(url, sizeof url, "http://127.0.0.1:%d%s", f->port, suffix);
    return url;
}

/* Close client and server, the first time only (the client's calls end
 * with their shutdown status, later, from the loop), and answer a held
 * request. Safe from inside a client callback. */
static UT_UNUSED void utfake_shutdown(struct utfake *f)
{
    if (!f->shut) {
        f->shut = 1;
        hcl_close(f->c, NULL, NULL);
        httpd_close(f->h, NULL, NULL);
    }
    utfake_release(f);
}

/* The end of a case: shut down, let the loop finish (the client's last
 * callbacks run now) and fail the case unless every handle was released.
 * The last request stays readable until utfake_free. */
static UT_UNUSED void utfake_end(struct utfake *f)
{
    utfake_shutdown(f);
    utloop_close(&f->ul);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    UT_EQ_INT(uv_loop_close(&f->loop), 0);
}

/* Free what was recorded of the last request. */
static UT_UNUSED void utfake_free(struct utfake *f)
{
    mem_free(f->body);
    f->body = NULL;
}

/* A row of a table of error answers: what the fake sends (HTTP status,
 * body, one optional header) and what the client must report for it. */
struct utfake_err {
    int http;
    const char *body, *hname, *hval;
    int status;      /* the client's status */
    long retry;      /* its retry-after in ms; -1 for none */
    const char *msg; /* its message */
};

/* The fake's answer for row e; ctype NULL = the fake's default type. */
static UT_UNUSED struct utfake_canned utfake_err_answer(const struct utfake_err *e,
                                                        const char *ctype)
{
    return (struct utfake_canned){.status = e->http, .ctype = ctype, .body = e->body,
                                  .hname = e->hname, .hval = e->hval};
}

/* Fails the case unless the client reported what row e wants: status,
 * http, retry and msg are what it reported; name turns a status into words
 * for the failure message. */
static UT_UNUSED void utfake_expect_err(const struct utfake_err *e, const char *(*name)(int),
                                        int status, long http, long retry, const char *msg)
{
    if (status != e->status)
        UT_FAIL("HTTP %d: %s, want %s", e->http, name(status), name(e->status));
    UT_EQ_INT(http, e->http);
    UT_EQ_INT(retry, e->retry);
    UT_EQ_STR(msg, e->msg);
}

/* What a client's log must show after the fake echoed its API key back in
 * an auth error: the key's fingerprint, the auth outcome and, unless NULL,
 * what (the client's own words for the request), and nowhere key_part (a
 * piece of the key that nothing else contains). */
static UT_UNUSED void utfake_expect_key_hidden(const char *log, const char *key,
                                               const char *key_part, const char *what)
{
    UT_NOT_CONTAINS(log, key_part);
    char fp[SECRET_FP_LEN];
    secret_fingerprint(key, strlen(key), fp);
    UT_CONTAINS(log, fp);
    UT_CONTAINS(log, "\"kind\":\"auth\"");
    if (what)
        UT_CONTAINS(log, what);
}

#endif
