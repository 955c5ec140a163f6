/* ut_pg: a fresh PostgreSQL database per unit-test case.
 *
 * TEST_PG_ADMIN_URL names a superuser connection (tests/run.py exports it).
 * utpg_create_db makes a new, empty UTF-8 database with blocking libpq (fine
 * in test code) and fills the utpg struct with two conninfos for it; it is
 * dropped by utpg_drop_db and, should the case fail or exit early, at exit
 * (atexit). Header-only: everything is static and marked unused. One
 * database at a time per process, which fits tests/run.py running each case
 * in its own process.
 *
 *     utpg_create_db("conv");   (fails the case without TEST_PG_ADMIN_URL)
 *     store_new(..., utpg.kv ...);
 *     utpg_run(utpg.kv, "UPDATE ...", NULL, 0);
 *     utpg_drop_db();
 */
#ifndef UT_PG_H
#define UT_PG_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <libpq-fe.h>

#include "ut.h"

#ifndef UT_UNUSED
#define UT_UNUSED __attribute__((unused))
#endif

struct utpg {
    const char *admin_url; /* TEST_PG_ADMIN_URL, set by utpg_create_db */
    char name[64];         /* this case's database; "" when none */
    char kv[1024];         /* key=value conninfo of that database */
    char uri[1024];        /* the same as a postgresql:// URI */
    char host[256], port[16], user[64];
};

static UT_UNUSED struct utpg utpg;

/* A blocking connection; fails the case if it cannot connect. */
static UT_UNUSED PGconn *utpg_open(const char *conninfo)
{
    PGconn *c = PQconnectdb(conninfo);
    if (PQstatus(c) != CONNECTION_OK)
        UT_FAIL("connect: %s", PQerrorMessage(c));
    return c;
}

/* Run sql on a fresh connection; copy the first cell (if any) into out. */
static UT_UNUSED void utpg_run(const char *conninfo, const char *sql, char *out, size_t outlen)
{
    PGconn *c = utpg_open(conninfo);
    PGresult *r = PQexec(c, sql);
    ExecStatusType st = PQresultStatus(r);
    if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK)
        UT_FAIL("%s: %s", sql, PQresultErrorMessage(r));
    if (out) {
        UT_ASSERT(PQntuples(r) >= 1 && PQnfields(r) >= 1);
        snprintf(out, outlen, "%s", PQgetvalue(r, 0, 0));
    }
    PQclear(r);
    PQfinish(c);
}

/* Drop this case's database, if any (also registered with atexit). */
static UT_UNUSED void utpg_drop_db(void)
{
    if (!utpg.name[0] || !utpg.admin_url)
        return;
    char sql[128];
    snprintf(sql, sizeof(sql), "DROP DATABASE IF EXISTS %s WITH (FORCE)", utpg.name);
    PGconn *c = PQconnectdb(utpg.admin_url);
    if (PQstatus(c) == CONNECTION_OK)
        PQclear(PQexec(c, sql));
    PQfinish(c);
    utpg.name[0] = '\0';
}

static UT_UNUSED void utpg_kv_append(char *out, size_t outlen, const char *key, const char *val)
{
    size_t o = strlen(out);
    o += (size_t)snprintf(out + o, outlen - o, "%s%s='", o ? " " : "", key);
    for (const char *p = val; *p && o + 3 < outlen; p++) {
        if (*p == '\'' || *p == '\\')
            out[o++] = '\\';
        out[o++] = *p;
    }
    snprintf(out + o, outlen - o, "'");
}

static UT_UNUSED void utpg_uri_append_enc(char *out, size_t outlen, const char *val)
{
    size_t o = strlen(out);
    for (const unsigned char *p = (const unsigned char *)val; *p && o + 4 < outlen; p++) {
        if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
            *p == '.' || *p == '-' || *p == '_')
            out[o++] = (char)*p;
        else
            o += (size_t)snprintf(out + o, outlen - o, "%%%02X", *p);
    }
    out[o] = '\0';
}

/* Derive both conninfo forms (utpg.kv, utpg.uri) and the host, port and
 * user for database db from the admin URL. */
static UT_UNUSED void utpg_make_conninfos(const char *db)
{
    char *err = NULL;
    PQconninfoOption *opts = PQconninfoParse(utpg.admin_url, &err);
    if (!opts)
        UT_FAIL("TEST_PG_ADMIN_URL does not parse: %s", err ? err : "?");
    const char *user = NULL, *password = NULL, *host = NULL, *port = NULL;
    utpg.kv[0] = '\0';
    for (PQconninfoOption *o = opts; o->keyword; o++) {
        if (!o->val || !o->val[0] || !strcmp(o->keyword, "dbname"))
            continue;
        utpg_kv_append(utpg.kv, sizeof(utpg.kv), o->keyword, o->val);
        if (!strcmp(o->keyword, "user"))
            user = o->val;
        else if (!strcmp(o->keyword, "password"))
            password = o->val;
        else if (!strcmp(o->keyword, "host"))
            host = o->val;
        else if (!strcmp(o->keyword, "port"))
            port = o->val;
    }
    utpg_kv_append(utpg.kv, sizeof(utpg.kv), "dbname", db);
    snprintf(utpg.host, sizeof(utpg.host), "%s", host ? host : "");
    snprintf(utpg.port, sizeof(utpg.port), "%s", port ? port : "5432");
    snprintf(utpg.user, sizeof(utpg.user), "%s", user ? user : "");

    char *uri = utpg.uri;
    size_t cap = sizeof(utpg.uri);
    snprintf(uri, cap, "postgresql://");
    if (user) {
        utpg_uri_append_enc(uri, cap, user);
        if (password) {
            strncat(uri, ":", cap - strlen(uri) - 1);
            utpg_uri_append_enc(uri, cap, password);
        }
        strncat(uri, "@", cap - strlen(uri) - 1);
    }
    size_t o = strlen(uri);
    int unix_host = host && host[0] == '/';
    int v6 = host && !unix_host && strchr(host, ':');
    snprintf(uri + o, cap - o, "%s%s%s%s%s/%s%s", v6 ? "[" : "",
             host && !unix_host ? host : "", v6 ? "]" : "", port ? ":" : "", port ? port : "",
             db, unix_host ? "?host=" : "");
    if (unix_host)
        utpg_uri_append_enc(uri, cap, host);
    PQconninfoFree(opts);
}

/* The admin URL from the environment; fails the case when it is not set. */
static UT_UNUSED const char *utpg_admin(void)
{
    if (!utpg.admin_url)
        utpg.admin_url = getenv("TEST_PG_ADMIN_URL");
    if (!utpg.admin_url || !utpg.admin_url[0])
        UT_FAIL("TEST_PG_ADMIN_URL is not set (tests/run.py sets it)");
    return utpg.admin_url;
}

/* Create a fresh database "bc_<prefix>_<pid>_<n>" (prefix: lower-case
 * letters, digits, '_') and fill utpg for it. */
static UT_UNUSED void utpg_create_db(const char *prefix)
{
    static int counter, registered;
    const char *admin = utpg_admin();
    if (!registered++)
        atexit(utpg_drop_db);
    snprintf(utpg.name, sizeof(utpg.name), "bc_%s_%d_%d", prefix, (int)getpid(), ++counter);
    char sql[256];
    snprintf(sql, sizeof(sql),
             "CREATE DATABASE %s ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0",
             utpg.name);
    utpg_run(admin, sql, NULL, 0);
    utpg_make_conninfos(utpg.name);
}

#endif
