/* fuzz_config: configuration values (common/base/config.c): the environment,
 * --SETTING=value flags and an --env-file (quotes, comments, export,
 * escapes), every value type's validator (numbers, booleans, URLs, enums,
 * snowflakes, hex keys, secrets and keyed secret lists), then cfg_dump.
 *
 * Input: [role][options] then lines. A line starting with "--" is a flag,
 * any other line an environment entry; with options bit 0 the text after
 * the first NUL is written to a temporary file passed as --env-file.
 * "_FILE" is rewritten to "_FILX" everywhere so no setting makes cfg_load
 * read an arbitrary path (a FIFO would hang the fuzzer), and the target
 * alone passes --env-file.
 * Checks: cfg_load returns one of its documented results; secrets given
 * (a marker the input does not contain) never show in the dump, the
 * problems or the warnings; cfg_free releases everything. */
#include <stdio.h>
#include <stdlib.h>
#include "base/buf.h"
#include "base/config.h"
#include "base/err.h"
#include "fuzz.h"

#define SECRET "FZSECRETxq7Hk2"
static char envfile[64];

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    fuzz_setup();
    snprintf(envfile, sizeof(envfile), "/dev/shm/fuzz_config.%d.env", (int)getpid());
    return 0;
}

static void no_secret(const struct buf *b)
{
    if (b->len && memmem(b->p, b->len, SECRET, strlen(SECRET)))
        abort(); /* a secret reached text meant for a log or a terminal */
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct fz f = {data, size};
    enum role role = (enum role)(ROLE_CHAT + fz_byte(&f) % 4);
    unsigned opt = fz_byte(&f);
    char *text = mem_strndup((const char *)f.p, f.n);
    for (char *p = text; (p = memmem(p, f.n - (size_t)(p - text), "_FILE", 5)) != NULL;)
        p[4] = 'X';
    int has_marker = memmem(text, f.n, "FZSECRET", 8) != NULL;
    size_t tlen = strnlen(text, f.n);
    if ((opt & 1) && tlen < f.n) {
        FILE *fp = fopen(envfile, "w");
        if (!fp)
            abort();
        fwrite(text + tlen + 1, 1, f.n - tlen - 1, fp);
        fclose(fp);
    }
    /* secrets first, so the input can override them */
    char *env[72] = {"DISCORD_TOKEN=" SECRET ".tok", "OPENAI_API_KEY=sk-" SECRET "a,sk-" SECRET "b",
                     "REDIS_URL=redis://:" SECRET "@127.0.0.1:6379/0",
                     "DATABASE_URL=postgresql://bot:" SECRET "@127.0.0.1/bot"};
    char *argv[72] = {"fuzz-instance"};
    int ne = 4, na = 1;
    if ((opt & 1) && tlen < f.n) {
        argv[na++] = "--env-file";
        argv[na++] = envfile;
    }
    for (char *line = text, *next; line && *line && ne < 71 && na < 71; line = next) {
        next = strchr(line, '\n');
        if (next)
            *next++ = '\0';
        if (!strncmp(line, "--", 2)) {
            if (strncmp(line, "--env-file", 10))
                argv[na++] = line;
        } else {
            env[ne++] = line;
        }
    }
    env[ne] = NULL;
    argv[na] = NULL;
    struct config cfg;
    struct buf out;
    buf_init(&out, (size_t)1 << 20);
    int rc = cfg_load(&cfg, role, na, argv, env, &out);
    if (rc != CFG_RUN && rc != CFG_EXIT_OK && rc != CFG_CHECK_ONLY && rc != BC_ECONFIG)
        abort();
    if (!has_marker) {
        no_secret(&cfg.problems);
        no_secret(&cfg.warnings);
        if (rc == CFG_RUN || rc == CFG_CHECK_ONLY) {
            struct buf dump;
            buf_init(&dump, (size_t)1 << 20);
            if (cfg_dump(&cfg, &dump) == 0) /* a failed (too big) dump is reported, not cut */
                no_secret(&dump);
            buf_free(&dump);
        }
    }
    cfg_free(&cfg);
    buf_free(&out);
    mem_free(text);
    return 0;
}
