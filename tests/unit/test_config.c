#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/config.h"
#include "base/err.h"
#include "base/log.h"
#include "ut.h"

static char *noenv[] = {NULL};

static int load(struct config *c, enum role role, char **argv, char **envp)
{
    int argc = 0;
    while (argv[argc])
        argc++;
    struct buf out;
    buf_init(&out, 1 << 20);
    int rc = cfg_load(c, role, argc, argv, envp, &out);
    buf_free(&out);
    return rc;
}

static char *write_tmp(const char *content)
{
    static char path[64];
    snprintf(path, sizeof(path), "/tmp/ut-config-%d-XXXXXX", (int)getpid());
    int fd = mkstemp(path);
    UT_ASSERT(fd >= 0);
    UT_ASSERT(write(fd, content, strlen(content)) == (ssize_t)strlen(content));
    close(fd);
    return path;
}

static void test_role_defaults(void)
{
    struct config c;
    char *argv[] = {"x", NULL};
    UT_EQ_INT(load(&c, ROLE_CHAT, argv, noenv), CFG_RUN);
    UT_EQ_INT(c.instance, 1);
    UT_EQ_INT(c.key_index, 1);
    UT_EQ_INT(c.health_port, 8001);
    UT_EQ_STR(c.name, "chat-1");
    UT_EQ_STR(c.health_bind, "127.0.0.1");
    UT_EQ_INT(c.heartbeat_interval_ms, 1000);
    cfg_free(&c);
    UT_EQ_INT(load(&c, ROLE_ADMIN, argv, noenv), CFG_RUN);
    UT_EQ_INT(c.health_port, 8004);
    UT_EQ_STR(c.name, "admin-4");
    cfg_free(&c);
    char *env[] = {"INSTANCE_NUMBER=7", NULL};
    UT_EQ_INT(load(&c, ROLE_IMAGE, argv, env), CFG_RUN);
    UT_EQ_INT(c.health_port, 8007);
    UT_EQ_INT(c.key_index, 2); /* the role's key set, not the instance number */
    UT_EQ_STR(c.name, "image-7");
    cfg_free(&c);
}

static void test_precedence_file_env_flag(void)
{
    char *path = write_tmp("# operators' file\nexport LOG_LEVEL=debug\nMAX_INFLIGHT = 5\n"
                           "REDIS_PREFIX='botfile'  # comment\nJOB_BLOCK_MS=\"700\"\n\n");
    char *argv[] = {"x", "--env-file", path, "--job-block-ms=900", NULL};
    char *env[] = {"MAX_INFLIGHT=6", "UNRELATED=1", NULL};
    struct config c;
    UT_EQ_INT(load(&c, ROLE_CHAT, argv, env), CFG_RUN);
    UT_EQ_INT(c.log_level, LOG_DEBUG);   /* file */
    UT_EQ_STR(c.redis_prefix, "botfile"); /* file, quoted, comment stripped */
    UT_EQ_INT(c.max_inflight, 6);        /* env beats file */
    UT_EQ_INT(c.job_block_ms, 900);      /* flag beats file */
    cfg_free(&c);
    unlink(path);
}

static void test_bad_int_names_key(void)
{
    char *argv[] = {"x", "--HEALTH_PORT", "99999", NULL};
    struct config c;
    UT_EQ_INT(load(&c, ROLE_CHAT, argv, noenv), BC_ECONFIG);
    UT_CONTAINS(buf_str(&c.problems), "HEALTH_PORT\tmust be an integer from 1 to 65535");
    cfg_free(&c);
}

static void test_example_value_rejected_without_echo(void)
{
    char *env[] = {"OPENAI_API_KEY_1=your_openai_key_here", NULL};
    char *argv[] = {"x", NULL};
    struct config c;
    UT_EQ_INT(load(&c, ROLE_CHAT, argv, env), BC_ECONFIG);
    UT_CONTAINS(buf_str(&c.problems), "OPENAI_API_KEY_1\tstill has the example value");
    UT_NOT_CONTAINS(buf_str(&c.problems), "your_openai_key_here");
    cfg_free(&c);
}

static void test_secret_never_printed(void)
{
    char *env[] = {"OPENAI_API_KEY_1=sk-live-abcdef123456,sk-live-second",
                   "DATABASE_URL=postgresql://bot:hunter2pass@127.0.0.1:5432/bot",
                   "REDIS_URL=redis://:redispass99@127.0.0.1:6379/0", NULL};
    char *argv[] = {"x", NULL};
    struct config c;
    UT_EQ_INT(load(&c, ROLE_CHAT, argv, env), CFG_RUN);
    UT_EQ_STR(c.openai_keys.value, "sk-live-abcdef123456,sk-live-second");
    struct buf d;
    buf_init(&d, 1 << 16);
    UT_EQ_INT(cfg_dump(&c, &d), 0);
    UT_NOT_CONTAINS(buf_str(&d), "sk-live");
    UT_NOT_CONTAINS(buf_str(&d), "hunter2pass");
    UT_NOT_CONTAINS(buf_str(&d), "redispass99");
    UT_CONTAINS(buf_str(&d), "OPENAI_API_KEY_1=sha256:");
    UT_CONTAINS(buf_str(&d), "DATABASE_URL=postgresql://bot:***@127.0.0.1:5432/bot");
    buf_free(&d);
    cfg_free(&c);
}

static void test_secret_with_space_rejected_without_echo(void)
{
    char *env[] = {"MINIMAX_API_KEY_1=abc def-secret", NULL};
    char *argv[] = {"x", NULL};
    struct config c;
    UT_EQ_INT(load(&c, ROLE_CHAT, argv, env), BC_ECONFIG);
    UT_CONTAINS(buf_str(&c.problems), "MINIMAX_API_KEY_1\tcontains whitespace");
    UT_NOT_CONTAINS(buf_str(&c.problems), "def-secret");
    cfg_free(&c);
}

static void test_key_index_selects_keys(void)
{
    char *env[] = {"OPENAI_API_KEY_1=key-one", "OPENAI_API_KEY_4=key-four", NULL};
    char *argv[] = {"x", NULL};
    struct config c;
    UT_EQ_INT(load(&c, ROLE_ADMIN, argv, env), CFG_RUN);
    UT_EQ_STR(c.openai_keys.value, "key-four");
    cfg_free(&c);
    char *argv2[] = {"x", "--key-index=1", NULL};
    UT_EQ_INT(load(&c, ROLE_ADMIN, argv2, env), CFG_RUN);
    UT_EQ_STR(c.openai_keys.value, "key-one");
    cfg_free(&c);
}

static void test_secret_from_file(void)
{
    char *path = write_tmp("sk-from-file\n");
    char var[128];
    snprintf(var, sizeof(var), "OPENAI_API_KEY_1_FILE=%s", path);
    char *env[] = {var, NULL};
    char *argv[] = {"x", NULL};
    struct config c;
    UT_EQ_INT(load(&c, ROLE_CHAT, argv, env), CFG_RUN);
    UT_EQ_STR(c.openai_keys.value, "sk-from-file");
    cfg_free(&c);
    char *env2[] = {var, "OPENAI_API_KEY_1=other", NULL};
    UT_EQ_INT(load(&c, ROLE_CHAT, argv, env2), BC_ECONFIG);
    UT_CONTAINS(buf_str(&c.problems), "not both");
    cfg_free(&c);
    unlink(path);
    UT_EQ_INT(load(&c, ROLE_CHAT, argv, env), BC_ECONFIG);
    UT_CONTAINS(buf_str(&c.problems), "cannot read OPENAI_API_KEY_1_FILE");
    cfg_free(&c);
}

static void test_envfile_errors(void)
{
    char *path = write_tmp("GOOD=1\nthis line has sk-secret-text and no equals\nQ=\"unterminated\n"
                           "LOG_LEVEL=verbose\n");
    char *argv[] = {"x", "--env-file", path, NULL};
    struct config c;
    UT_EQ_INT(load(&c, ROLE_CHAT, argv, noenv), BC_ECONFIG);
    const char *p = buf_str(&c.problems);
    UT_CONTAINS(p, "--env-file line 2\texpected KEY=VALUE");
    UT_NOT_CONTAINS(p, "sk-secret-text");
    UT_CONTAINS(p, "Q\tunterminated");
    UT_CONTAINS(p, "LOG_LEVEL\tmust be debug, info, warn or error");
    UT_CONTAINS(buf_str(&c.warnings), "GOOD\tunknown setting");
    cfg_free(&c);
    unlink(path);
    char *argv2[] = {"x", "--env-file", "/nonexistent/.env.multi", NULL};
    UT_EQ_INT(load(&c, ROLE_CHAT, argv2, noenv), BC_ECONFIG);
    UT_CONTAINS(buf_str(&c.problems), "cannot read /nonexistent/.env.multi");
    cfg_free(&c);
}

static void test_unknown_flag_and_urls(void)
{
    char *argv[] = {"x", "--no-such-thing=1", "--redis-url", "http://x", "stray", NULL};
    struct config c;
    UT_EQ_INT(load(&c, ROLE_VIDEO, argv, noenv), BC_ECONFIG);
    const char *p = buf_str(&c.problems);
    UT_CONTAINS(p, "NO_SUCH_THING\tunknown setting");
    UT_CONTAINS(p, "REDIS_URL\tmust start with redis://");
    UT_CONTAINS(p, "stray\tunknown argument");
    cfg_free(&c);
}

static void test_chat_settings_defaults(void)
{
    char *argv[] = {"x", NULL};
    struct config c;
    UT_EQ_INT(load(&c, ROLE_CHAT, argv, noenv), CFG_RUN);
    UT_EQ_INT(c.has_llm_temperature, 0); /* not sent: the server's default */
    UT_EQ_INT(c.context_max_tokens, 3000);
    UT_EQ_INT(c.context_max_turns, 10);
    UT_EQ_INT(c.session_ttl_minutes, 60);
    UT_EQ_INT(c.moderation, 0);
    UT_EQ_STR(c.moderation_model, "omni-moderation-latest");
    UT_EQ_INT(c.queue_wait_max_sec, 600);
    struct buf d;
    buf_init(&d, 1 << 16);
    UT_EQ_INT(cfg_dump(&c, &d), 0);
    UT_CONTAINS(buf_str(&d), "\nLLM_TEMPERATURE=\n");
    buf_free(&d);
    cfg_free(&c);
    char *env[] = {"CONTEXT_MAX_TURNS=0", "MODERATION=on", "MODERATION_MODEL=text-moderation-stable",
                   "SESSION_TTL_MINUTES=525600", NULL};
    UT_EQ_INT(load(&c, ROLE_CHAT, argv, env), CFG_RUN);
    UT_EQ_INT(c.context_max_turns, 0);
    UT_EQ_INT(c.moderation, 1);
    UT_EQ_STR(c.moderation_model, "text-moderation-stable");
    UT_EQ_INT(c.session_ttl_minutes, 525600);
    cfg_free(&c);
    char *bad[] = {"CONTEXT_MAX_TOKENS=99", "CONTEXT_MAX_TURNS=201", "SESSION_TTL_MINUTES=0",
                   "QUEUE_WAIT_MAX_SEC=841", "MODERATION_MODEL=", NULL};
    UT_EQ_INT(load(&c, ROLE_CHAT, argv, bad), BC_ECONFIG);
    const char *p = buf_str(&c.problems);
    UT_CONTAINS(p, "CONTEXT_MAX_TOKENS\tmust be an integer from 100 to 1000000");
    UT_CONTAINS(p, "CONTEXT_MAX_TURNS\tmust be an integer from 0 to 200");
    UT_CONTAINS(p, "SESSION_TTL_MINUTES\tmust be an integer from 1 to 525600");
    UT_CONTAINS(p, "QUEUE_WAIT_MAX_SEC\tmust be an integer from 1 to 840");
    UT_CONTAINS(p, "MODERATION_MODEL\tmust not be empty");
    cfg_free(&c);
}

static void test_llm_temperature(void)
{
    char *argv[] = {"x", "--llm-temperature=0.7", NULL};
    struct config c;
    UT_EQ_INT(load(&c, ROLE_CHAT, argv, noenv), CFG_RUN);
    UT_EQ_INT(c.has_llm_temperature, 1);
    UT_ASSERT(c.llm_temperature > 0.69 && c.llm_temperature < 0.71);
    struct buf d;
    buf_init(&d, 1 << 16);
    UT_EQ_INT(cfg_dump(&c, &d), 0);
    UT_CONTAINS(buf_str(&d), "\nLLM_TEMPERATURE=0.7\n");
    buf_free(&d);
    cfg_free(&c);
    /* the bounds themselves are valid; 0 is a real setting, not "unset" */
    const char *ok[] = {"0", "2", "1e0", ".5"};
    const double want[] = {0, 2, 1, 0.5};
    for (int i = 0; i < 4; i++) {
        char var[64];
        snprintf(var, sizeof(var), "LLM_TEMPERATURE=%s", ok[i]);
        char *env[] = {var, NULL};
        char *plain[] = {"x", NULL};
        UT_EQ_INT(load(&c, ROLE_CHAT, plain, env), CFG_RUN);
        UT_EQ_INT(c.has_llm_temperature, 1);
        UT_ASSERT(c.llm_temperature == want[i]);
        cfg_free(&c);
    }
    /* empty, as from an env file line "LLM_TEMPERATURE=", is "not sent" */
    char *empty[] = {"LLM_TEMPERATURE=", NULL};
    char *plain[] = {"x", NULL};
    UT_EQ_INT(load(&c, ROLE_CHAT, plain, empty), CFG_RUN);
    UT_EQ_INT(c.has_llm_temperature, 0);
    cfg_free(&c);
    const char *bad[] = {"2.5", "-0.1", "warm", "0.7x", "nan", "inf", "0x1p0", " ", "1,5"};
    for (int i = 0; i < 9; i++) {
        char var[64];
        snprintf(var, sizeof(var), "LLM_TEMPERATURE=%s", bad[i]);
        char *env[] = {var, NULL};
        UT_EQ_INT(load(&c, ROLE_CHAT, plain, env), BC_ECONFIG);
        UT_CONTAINS(buf_str(&c.problems), "LLM_TEMPERATURE\tmust be a number from 0 to 2, or empty");
        cfg_free(&c);
    }
}

static void test_help_lists_every_setting(void)
{
    char *argv[] = {"x", "--help", NULL};
    struct config c;
    struct buf out;
    buf_init(&out, 1 << 20);
    UT_EQ_INT(cfg_load(&c, ROLE_CHAT, 2, argv, noenv, &out), CFG_EXIT_OK);
    struct buf md;
    buf_init(&md, 1 << 20);
    UT_EQ_INT(cfg_markdown(&md), 0);
    /* every setting named in the markdown table appears in --help */
    const char *p = buf_str(&md);
    int n = 0;
    while ((p = strstr(p, "| `"))) {
        p += 3;
        const char *e = strchr(p, '`');
        char name[64];
        snprintf(name, sizeof(name), "%.*s", (int)(e - p), p);
        char *lt = strstr(name, "_<n>");
        if (lt)
            *lt = '\0';
        UT_CONTAINS(buf_str(&out), name);
        n++;
    }
    UT_ASSERT(n >= 15);
    buf_free(&md);
    buf_free(&out);
    cfg_free(&c);
}

/* A list of ids longer than any fixed buffer is kept whole, never cut
 * short (a cut list silently drops admins). */
static void test_long_id_list_kept_whole(void)
{
    enum { N = 5000 };
    size_t len = sizeof("ADMIN_ROLE_IDS=") + (size_t)N * 19;
    char *v = malloc(len), *p = v;
    p += sprintf(p, "ADMIN_ROLE_IDS=");
    for (int i = 0; i < N; i++)
        p += sprintf(p, "%s%018d", i ? "," : "", 100000000 + i);
    char *argv[] = {"x", NULL}, *env[] = {v, NULL};
    struct config c;
    UT_EQ_INT(load(&c, ROLE_ADMIN, argv, env), CFG_RUN);
    UT_EQ_STR(c.admin_role_ids, v + strlen("ADMIN_ROLE_IDS="));
    cfg_free(&c);
    free(v);
}

/* So many problems that they do not all fit: every line kept is whole
 * ("KEY\tproblem\n", which the core splits on the tab and the newline)
 * and the last one says that more were left out. */
static void test_too_many_problems_end_with_a_note(void)
{
    enum { N = 4000 };
    char **argv = calloc(N + 2, sizeof(char *));
    argv[0] = "x";
    for (int i = 1; i <= N; i++) {
        argv[i] = malloc(48);
        snprintf(argv[i], 48, "--no-such-setting-%d=1", i);
    }
    struct config c;
    UT_EQ_INT(load(&c, ROLE_CHAT, argv, noenv), BC_ECONFIG);
    const char *t = buf_str(&c.problems);
    UT_ASSERT(c.problems.len > 0 && t[c.problems.len - 1] == '\n');
    int lines = 0;
    for (const char *l = t; *l; lines++) {
        const char *nl = strchr(l, '\n'), *tab = strchr(l, '\t');
        UT_ASSERT(nl && tab && tab < nl);
        l = nl + 1;
    }
    UT_ASSERT(lines > 100 && lines < N);
    UT_CONTAINS(t, "NO_SUCH_SETTING_1\tunknown setting");
    const char *last = t + c.problems.len - 1;
    while (last > t && last[-1] != '\n')
        last--;
    UT_CONTAINS(last, "more problems");
    cfg_free(&c);
    for (int i = 1; i <= N; i++)
        free(argv[i]);
    free(argv);
}

/* The dump (what --check-config prints) says when it did not fit. */
static void test_dump_into_a_small_buffer_fails(void)
{
    char *argv[] = {"x", NULL};
    struct config c;
    UT_EQ_INT(load(&c, ROLE_CHAT, argv, noenv), CFG_RUN);
    struct buf d;
    buf_init(&d, 1 << 20);
    UT_EQ_INT(cfg_dump(&c, &d), 0);
    size_t whole = d.len;
    buf_free(&d);
    buf_init(&d, whole - 1);
    UT_EQ_INT(cfg_dump(&c, &d), BC_ETOOBIG);
    buf_free(&d);
    buf_init(&d, 100);
    UT_EQ_INT(cfg_markdown(&d), BC_ETOOBIG);
    buf_free(&d);
    cfg_free(&c);
}

static const struct ut_case cases[] = {
    UT_CASE(test_role_defaults),
    UT_CASE(test_precedence_file_env_flag),
    UT_CASE(test_bad_int_names_key),
    UT_CASE(test_example_value_rejected_without_echo),
    UT_CASE(test_secret_never_printed),
    UT_CASE(test_secret_with_space_rejected_without_echo),
    UT_CASE(test_key_index_selects_keys),
    UT_CASE(test_secret_from_file),
    UT_CASE(test_envfile_errors),
    UT_CASE(test_unknown_flag_and_urls),
    UT_CASE(test_help_lists_every_setting),
    UT_CASE(test_chat_settings_defaults),
    UT_CASE(test_llm_temperature),
    UT_CASE(test_long_id_list_kept_whole),
    UT_CASE(test_too_many_problems_end_with_a_note),
    UT_CASE(test_dump_into_a_small_buffer_fails),
    {0},
};
UT_MAIN(cases)
